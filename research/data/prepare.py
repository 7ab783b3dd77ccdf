"""Prepare a dataset: stream a corpus, split it by document, tokenize in batches, write shards + manifest.

Streaming. Documents are read one at a time by a reader thread, labelled train
or val, and gathered into batches of about `batch_bytes` of text; the main
thread encodes each batch with the `tokenizers` library's batch encoder (its
Rust threads run without the GIL while the reader fills the next batch) and
appends the ids to ``train.bin`` / ``val.bin``. At most two batches wait in the
queue, so peak memory is set by `batch_bytes`, not by the corpus. A ``bpe:V``
tokenizer is trained first, on a stream of the training documents capped at
`BPE_SAMPLE_BYTES` of text (the first ones in corpus order; the manifest
records how much was used), so BPE reads the corpus twice.

Split. Corpora whose groups are known before reading (shakespeare plays,
stdlib files, site-packages packages, synthetic documents) send exactly
round(val_fraction * groups) groups to validation, chosen by `seed`. Local
corpora are split as they stream: a document goes to validation when a stable
hash of (seed, its group) falls below val_fraction, the group being the file
name of a .txt file and the content of a record (so duplicates land together).
Already tokenized corpora are split the same way in chunks of
`TOKEN_CHUNK` tokens.

Cache layout: ``$SCALING_DATA_DIR`` (default ``~/.cache/scaling/data``) holds
one directory per (corpus, tokenizer, val_fraction, seed), named readably plus
a hash of everything that determines its content, e.g.
``shakespeare-bpe4096-1a2b3c4d``; ``downloads/`` holds fetched sources and
``.locks/`` the lock files.

A dataset is built in a temporary sibling directory (named by the dataset key)
and renamed into place, under an exclusive `fcntl` lock, so concurrent
preparations of the same dataset do not clash (the second waits, then reuses
the first one's result), and a killed preparation leaves no manifest. It
leaves a `Checkpoint` instead, from which the next run resumes.

By stage: the split is `research.data.split`, the streaming build (reader thread, tokenizer
batches, writers, checkpoint, progress) `research.data.build`; this module keys, locks and
caches datasets and calls the build.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from research.data import shards
from research.data.build import BPE_SAMPLE_BYTES, DEFAULT_BATCH_BYTES, Progress, build_dataset
from research.data.corpora import CorpusSource, resolve_corpus
from research.data.formats import ReadOptions, check_token_dtype
from research.data.tokenizer import TokenizerSpec, parse_tokenizer_spec
from research.errors import UserError
from research.fsutil import atomic_write_json, read_json

DEFAULT_DATA_DIR = "~/.cache/scaling/data"
TOKEN_CHUNK = 1 << 20  # split unit of an already tokenized corpus, in tokens
CHECKPOINT_SECONDS = 10.0  # how often a preparation records how far it got (resume point)


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: data_dir, else $SCALING_DATA_DIR, else ~/.cache/scaling/data."""
    chosen = data_dir or os.environ.get("SCALING_DATA_DIR") or DEFAULT_DATA_DIR
    try:
        root = Path(chosen).expanduser()
    except RuntimeError:  # no HOME and no home directory in the password database
        raise UserError(f"the data cache {chosen} needs a home directory and this user has none; set "
                        "SCALING_DATA_DIR (or pass --data-dir) to a writable directory") from None
    for parent in (root, *root.parents):  # a file where the cache (or a folder above it) should be
        if parent.exists():
            if not parent.is_dir():
                where = "--data-dir" if data_dir else ("$SCALING_DATA_DIR" if os.environ.get("SCALING_DATA_DIR")
                                                        else "the data cache")
                raise UserError(f"{where} {root} cannot be a directory: {parent} is a file; choose another path")
            break
    return root


def check_val_fraction(val_fraction: float) -> float:
    value = float(val_fraction)
    if not 0.0 < value < 1.0:
        raise UserError(f"--val-fraction {val_fraction} must be strictly between 0 and 1, e.g. 0.1")
    return value


def dataset_key(source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int,
                corpus_identity: dict | None = None) -> str:
    """sha256 of everything that determines the prepared content (`corpus_identity`: the corpus's
    identity by content, in place of the one by path, size and mtime; see `content_key`)."""
    identity = {
        "format": shards.FORMAT,
        "corpus": source.identity if corpus_identity is None else corpus_identity,
        "tokenizer": spec.identity,
        "val_fraction": val_fraction,
        "seed": int(seed),
    }
    if source.groups is None and spec.kind == "bpe":
        identity["bpe_sample_bytes"] = BPE_SAMPLE_BYTES
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


# --- locking and the cache ----------------------------------------------------------------------------------


@contextmanager
def _exclusive_lock(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


CONTENT_FILE = "content.json"  # in a prepared dataset of local files: its key by the files' content


def content_key(source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int) -> str | None:
    """The dataset key with each local corpus file named by path, size and sha256 instead of
    mtime: the same for a file touched, checked out again or copied without its times. None for
    corpora that are not local files. Reads every file once: computed only when the key by
    mtime finds no dataset, where preparing would read them all anyway."""
    files = source.identity.get("files") if source.identity.get("corpus") == "local" else None
    if not files:
        return None
    by_content = [(path, size, shards.sha256_file(Path(path))) for path, size, _mtime in files]
    return dataset_key(source, spec, val_fraction, seed, dict(source.identity, files=by_content))


def _same_content(target: Path, key: str | None) -> Path | None:
    """A prepared dataset beside `target` (same corpus and tokenizer slug) whose corpus files had
    the same content, intact: what a touched but unchanged corpus resumes with."""
    if key is None:
        return None
    prefix = target.name.rsplit("-", 1)[0] + "-"
    for candidate in sorted(target.parent.glob(prefix + "*")):
        record = read_json(candidate / CONTENT_FILE)
        if isinstance(record, dict) and record.get("content_key") == key:
            manifest_key = (read_json(candidate / shards.MANIFEST_FILE) or {}).get("key")
            if isinstance(manifest_key, str) and _is_reusable(candidate, manifest_key):
                return candidate
    return None


def _is_reusable(path: Path, key: str) -> bool:
    if not (path / shards.MANIFEST_FILE).is_file():
        return False
    try:
        manifest = shards.read_manifest(path)
    except UserError:
        return False
    return manifest.get("key") == key and not shards.check_files(path, manifest)


def resolve_dataset(corpus: str, tokenizer: str, val_fraction: float, seed: int, data_dir=None,
                    options: ReadOptions = ReadOptions()):
    """(corpus source, tokenizer spec, dataset key, cache directory) for a request; validates everything."""
    spec = parse_tokenizer_spec(tokenizer)
    val_fraction = check_val_fraction(val_fraction)
    check_token_dtype(options.token_dtype)
    root = data_root(data_dir)
    source = resolve_corpus(corpus, root, options)
    if source.token_files is not None and spec.kind not in ("ids", "file"):
        raise UserError(f"corpus {corpus!r} is already tokenized (.bin/.npy); use --tokenizer ids:V with V its "
                        "vocabulary size (e.g. ids:50257 for GPT-2) or file:PATH with the tokenizer that made it")
    if source.token_files is None and spec.kind == "ids":
        raise UserError(f"tokenizer {spec.name!r} is for already tokenized .bin/.npy files; corpus {corpus!r} is "
                        "text: use bytes, bpe:V or file:PATH")
    key = dataset_key(source, spec, val_fraction, seed)
    return source, spec, key, root / f"{source.slug}-{spec.slug}-{key[:8]}"


def prepare_dataset(
    corpus: str,
    tokenizer: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    log=None,
    options: ReadOptions = ReadOptions(),
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    progress: bool = False,
) -> tuple[Path, bool]:
    """Prepare (or find) a dataset; return (its directory, whether an existing one was reused).

    `out` writes the dataset to that directory instead of the cache; it must
    be absent, empty, or hold this very dataset already. `progress` prints
    bytes read, tokens written and throughput to stderr as it goes.
    """
    source, spec, key, cached_path = resolve_dataset(corpus, tokenizer, val_fraction, seed, data_dir, options)
    val_fraction = check_val_fraction(val_fraction)
    if out is None:
        target = cached_path
        lock_path = target.parent / ".locks" / f"{target.name}.lock"
    else:
        target = Path(out).expanduser().resolve()
        out_hash = hashlib.sha256(str(target).encode()).hexdigest()[:12]
        lock_path = data_root(data_dir) / ".locks" / f"out-{target.name}-{out_hash}.lock"
    if _is_reusable(target, key):
        return target, True
    by_content = content_key(source, spec, val_fraction, seed)
    same = _same_content(target, by_content) if out is None else None
    if same is not None:  # the files' times changed, not their content: the prepared data stands
        print(f"note: corpus {corpus!r} has new file times but the same content; using {same}", file=sys.stderr)
        return same, True
    with _exclusive_lock(lock_path):
        if _is_reusable(target, key):  # another process finished it while we waited
            return target, True
        if out is not None and target.exists() and any(target.iterdir()):
            raise UserError(
                f"--out {target} already holds other files (or a different or incomplete dataset); "
                "choose a new or empty directory, or delete it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".tmp-{target.name}-{key[:12]}"
        for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a killed run; we hold the lock
            if stale != staging:
                shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(exist_ok=True)  # an existing one holds a killed run of this very dataset: resumed
        try:
            meter = Progress(source.total_bytes) if progress else None
            build_dataset(source, spec, val_fraction, seed, key, staging, token_chunk=TOKEN_CHUNK,
                          checkpoint_seconds=CHECKPOINT_SECONDS, log=log, batch_bytes=batch_bytes,
                          meter=meter)
            if by_content is not None:
                atomic_write_json(staging / CONTENT_FILE, {"content_key": by_content})
            staging.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)  # stale, incomplete or differently-keyed dataset
            os.rename(staging, target)
        except KeyboardInterrupt:
            raise  # the staging directory stays: the next run resumes from its last checkpoint
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target, False


def bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Convert a loss in nats/token to bits/byte: nats_per_token / ln 2 / bytes_per_token."""
    if not bytes_per_token or bytes_per_token <= 0 or math.isnan(bytes_per_token):
        raise UserError(f"bytes_per_token must be positive, got {bytes_per_token}")
    return nats_per_token / math.log(2) / bytes_per_token
