"""Prepare a dataset: read a corpus, split it by document, tokenize, write shards + manifest.

Cache layout: ``$SCALING_DATA_DIR`` (default ``~/.cache/scaling/data``) holds
one directory per (corpus, tokenizer, val_fraction, seed), named readably plus
a hash of everything that determines its content, e.g.
``shakespeare-bpe4096-1a2b3c4d``; ``downloads/`` holds fetched sources and
``.locks/`` the lock files.

A dataset is built in a temporary sibling directory and renamed into place,
under an exclusive `fcntl` lock, so concurrent preparations of the same
dataset do not clash: the second waits, then reuses the first one's result.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from research.data import shards
from research.data.corpora import CorpusSource, Document, resolve_corpus
from research.data.tokenizer import TokenizerSpec, parse_tokenizer_spec, token_dtype, train_tokenizer
from research.errors import UserError

DEFAULT_DATA_DIR = "~/.cache/scaling/data"
SPLITS = ("train", "val")


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: data_dir, else $SCALING_DATA_DIR, else ~/.cache/scaling/data."""
    chosen = data_dir or os.environ.get("SCALING_DATA_DIR") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def check_val_fraction(val_fraction: float) -> float:
    value = float(val_fraction)
    if not 0.0 < value < 1.0:
        raise UserError(f"--val-fraction {val_fraction} must be strictly between 0 and 1, e.g. 0.1")
    return value


def dataset_key(source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int) -> str:
    """sha256 of everything that determines the prepared content."""
    identity = {
        "format": shards.FORMAT,
        "corpus": source.identity,
        "tokenizer": spec.name,
        "val_fraction": val_fraction,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def split_documents(documents: list[Document], val_fraction: float, seed: int) -> dict[str, list[Document]]:
    """Deterministic split by group: round(val_fraction * groups) groups (at least 1) go to val.

    Groups are sorted by name, then shuffled with `seed`; every document of a
    group lands on the same side. Document order within a split follows the
    corpus order.
    """
    groups = sorted({doc.group for doc in documents})
    if len(groups) < 2:
        raise UserError(
            f"the corpus has {len(groups)} document(s); a train/validation split needs at least 2 documents"
        )
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    order = np.random.default_rng([int(seed), 7]).permutation(len(groups))
    val_groups = {groups[i] for i in order[:n_val]}
    return {
        "train": [doc for doc in documents if doc.group not in val_groups],
        "val": [doc for doc in documents if doc.group in val_groups],
    }


@contextmanager
def _exclusive_lock(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_reusable(path: Path, key: str) -> bool:
    if not (path / shards.MANIFEST_FILE).is_file():
        return False
    try:
        manifest = shards.read_manifest(path)
    except UserError:
        return False
    return manifest.get("key") == key and not shards.check_files(path, manifest)


def resolve_dataset(corpus: str, tokenizer: str, val_fraction: float, seed: int, data_dir=None):
    """(corpus source, tokenizer spec, dataset key, cache directory) for a request; validates everything."""
    spec = parse_tokenizer_spec(tokenizer)
    val_fraction = check_val_fraction(val_fraction)
    root = data_root(data_dir)
    source = resolve_corpus(corpus, root)
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
) -> tuple[Path, bool]:
    """Prepare (or find) a dataset; return (its directory, whether an existing one was reused).

    `out` writes the dataset to that directory instead of the cache; it must
    be absent, empty, or hold this very dataset already.
    """
    source, spec, key, cached_path = resolve_dataset(corpus, tokenizer, val_fraction, seed, data_dir)
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
    with _exclusive_lock(lock_path):
        if _is_reusable(target, key):  # another process finished it while we waited
            return target, True
        if out is not None and target.exists() and any(target.iterdir()):
            raise UserError(
                f"--out {target} already holds other files (or a different or incomplete dataset); "
                "choose a new or empty directory, or delete it"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a killed run; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        try:
            build_dataset(source, spec, val_fraction, seed, key, staging, log=log)
            staging.chmod(0o755)  # mkdtemp makes it private; a shared cache should be readable
            if target.exists():
                shutil.rmtree(target)  # stale, incomplete or differently-keyed dataset
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target, False


def build_dataset(
    source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int, key: str, directory: Path, log=None
) -> dict:
    """Write shards, tokenizer and manifest for source into directory; return the manifest."""
    say = log or (lambda message: None)
    started = time.time()
    say(f"reading corpus {source.name}")
    loaded = source.load()
    split = split_documents(loaded.documents, val_fraction, seed)
    say(f"training tokenizer {spec.name}" if spec.kind == "bpe" else "tokenizing")
    tokenizer = train_tokenizer(spec, [doc.text for doc in split["train"]])
    dtype = token_dtype(tokenizer.vocab_size)
    separator_id = tokenizer.separator_id if loaded.join_with_separator else None

    split_records = {}
    for name in SPLITS:
        docs = split[name]
        file_name = f"{name}.bin"
        ids = tokenizer.encode_batch([doc.text for doc in docs])
        n_tokens = shards.write_token_file(directory / file_name, ids, dtype, separator_id)
        n_bytes = sum(len(doc.text.encode("utf-8")) for doc in docs)
        split_records[name] = {
            "file": file_name,
            "documents": len(docs),
            "groups": len({doc.group for doc in docs}),
            "tokens": n_tokens,
            "bytes": n_bytes,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else None,
        }
    tokenizer_files = tokenizer.save(directory)
    (directory / "documents.json").write_text(
        json.dumps({name: [[doc.name, doc.group] for doc in split[name]] for name in SPLITS}, indent=0) + "\n"
    )
    files = {
        name: shards.file_record(directory / name)
        for name in [f"{s}.bin" for s in SPLITS] + tokenizer_files + ["documents.json"]
    }
    for name in SPLITS:
        split_records[name]["sha256"] = files[split_records[name]["file"]]["sha256"]

    entropy_per_byte = None
    if "synthetic" in loaded.info:
        entropy_per_byte = loaded.info["synthetic"]["entropy_rate_nats_per_symbol"]  # one symbol = one byte
    manifest = {
        "format": shards.FORMAT,
        "key": key,
        "fingerprint": shards.fingerprint_of(key, files),
        "corpus": source.name,
        "corpus_info": loaded.info,
        "source_sha256": loaded.source_sha256,
        "tokenizer": {
            "spec": spec.name,
            "kind": spec.kind,
            "requested_vocab_size": spec.requested_vocab,
            "files": tokenizer_files,
        },
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "separator_id": separator_id,
        "val_fraction": val_fraction,
        "seed": int(seed),
        "split_unit": loaded.info.get("split_unit", "document"),
        "splits": split_records,
        "entropy_rate_nats_per_byte": entropy_per_byte,
        "entropy_rate_nats_per_token": entropy_per_byte if spec.kind == "bytes" else None,
        "files": files,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "prepare_seconds": round(time.time() - started, 3),
    }
    shards.write_manifest(directory, manifest)
    return manifest


def bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Convert a loss in nats/token to bits/byte: nats_per_token / ln 2 / bytes_per_token."""
    if not bytes_per_token or bytes_per_token <= 0 or math.isnan(bytes_per_token):
        raise UserError(f"bytes_per_token must be positive, got {bytes_per_token}")
    return nats_per_token / math.log(2) / bytes_per_token
