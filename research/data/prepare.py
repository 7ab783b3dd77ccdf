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
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import itertools
import json
import math
import os
import queue
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from research.data import shards
from research.data.corpora import CorpusSource, resolve_corpus
from research.data.formats import Document, ReadOptions, check_token_dtype, open_token_file
from research.data.tokenizer import (
    TOKENIZER_FILE, TokenizerSpec, load_tokenizer, parse_tokenizer_spec, token_dtype, train_tokenizer,
)
from research.errors import UserError
from research.fsutil import atomic_write_json, read_json

DEFAULT_DATA_DIR = "~/.cache/scaling/data"
SPLITS = ("train", "val")
DEFAULT_BATCH_BYTES = 1 << 22  # text per tokenizer batch: sets peak memory (its encodings take ~20x)
BPE_SAMPLE_BYTES = 1 << 30  # training text a bpe:V tokenizer learns from, at most
TOKEN_CHUNK = 1 << 20  # split unit of an already tokenized corpus, in tokens
MAX_LISTED_DOCUMENTS = 20_000  # documents.json lists documents only up to this many
QUEUE_BATCHES = 2
CHECKPOINT_SECONDS = 10.0  # how often a preparation records how far it got (resume point)
PROGRESS_FILE = "progress.json"


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


# --- the split ------------------------------------------------------------------------------------------


def exact_val_groups(groups: list[str], val_fraction: float, seed: int) -> set[str]:
    """round(val_fraction * groups) groups (at least 1, at most all but 1), chosen by a seeded shuffle."""
    groups = sorted(set(groups))
    if len(groups) < 2:
        raise UserError(
            f"the corpus has {len(groups)} document(s); a train/validation split needs at least 2 documents"
        )
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    order = np.random.default_rng([int(seed), 7]).permutation(len(groups))
    return {groups[i] for i in order[:n_val]}


def hash_is_val(key: bytes, val_fraction: float, seed: int) -> bool:
    """Stable hash split: sha256(seed, key) read as a fraction in [0, 1) below val_fraction."""
    digest = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True) + key).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


@dataclass
class Splitter:
    """Decides the side of each document: by a known group set, else by the stable hash."""

    val_fraction: float
    seed: int
    val_groups: set[str] | None = None

    def is_val(self, doc: Document, data: bytes) -> bool:
        if self.val_groups is not None:
            return doc.group in self.val_groups
        key = doc.group.encode("utf-8") if doc.group is not None else hashlib.sha256(data).digest()
        return hash_is_val(key, self.val_fraction, self.seed)


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
            build_dataset(source, spec, val_fraction, seed, key, staging, log=log, batch_bytes=batch_bytes,
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


# --- progress -------------------------------------------------------------------------------------------------


class Progress:
    """Bytes read, tokens written and throughput on stderr: one rewritten line on a terminal, else a line per 30 s."""

    def __init__(self, total_bytes: int | None = None, stream=None):
        self.total_bytes = total_bytes
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = self.last = time.monotonic()
        self.bytes = self.tokens = 0

    def update(self, n_bytes: int, n_tokens: int, final: bool = False) -> None:
        self.bytes += n_bytes
        self.tokens += n_tokens
        now = time.monotonic()
        if not final and now - self.last < (1.0 if self.tty else 30.0):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        share = f" ({100 * self.bytes / self.total_bytes:.0f}%)" if self.total_bytes else ""
        line = (f"  read {self.bytes / 1e6:,.1f} MB{share}, {self.tokens:,} tokens written, "
                f"{self.bytes / 1e6 / elapsed:.1f} MB/s, {elapsed:.0f} s")
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


# --- building --------------------------------------------------------------------------------------------------


@dataclass
class SplitWriter:
    """Appends one split's ids to its file, hashing as it writes."""

    path: Path
    dtype: np.dtype
    tokens: int = 0
    documents: int = 0
    bytes: int = 0
    track_groups: bool = True  # False: every document is its own group (local corpora), nothing is kept
    groups: set = field(default_factory=set)
    hashed_groups: int = 0  # documents that are their own group
    listed: list = field(default_factory=list)
    resume_state: dict | None = None  # a checkpoint of a killed run: continue its file

    def __post_init__(self):
        self.digest = hashlib.sha256()
        if self.resume_state is None:
            self.handle = open(self.path, "wb")
        else:
            self._restore(self.resume_state)

    def flush(self) -> None:
        """Everything written so far reaches the file system (a checkpoint may then point past it)."""
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def state(self) -> dict:
        return {"size": self.handle.tell(), "tokens": self.tokens, "documents": self.documents, "bytes": self.bytes,
                "groups": sorted(self.groups), "hashed_groups": self.hashed_groups, "listed": self.listed}

    def _restore(self, state: dict) -> None:
        """Continue a killed run: keep the checkpointed prefix of the file (re-hashed), drop what followed."""
        self.handle = open(self.path, "r+b")
        self.handle.truncate(state["size"])
        self.digest = hashlib.sha256()
        for block in iter(lambda: self.handle.read(1 << 22), b""):
            self.digest.update(block)
        self.handle.seek(state["size"])
        self.tokens, self.documents, self.bytes = state["tokens"], state["documents"], state["bytes"]
        self.groups, self.hashed_groups, self.listed = set(state["groups"]), state["hashed_groups"], state["listed"]

    def write(self, ids: np.ndarray) -> None:
        data = np.asarray(ids).astype(self.dtype, copy=False).tobytes()
        self.handle.write(data)
        self.digest.update(data)
        self.tokens += len(data) // self.dtype.itemsize

    def count_document(self, doc: Document, n_bytes: int) -> None:
        self.bytes += n_bytes
        if not doc.end:
            return
        self.documents += 1
        if doc.group is None or not self.track_groups:
            self.hashed_groups += 1
        else:
            self.groups.add(doc.group)
        if self.listed is not None:
            self.listed.append([doc.name, doc.group])
            if len(self.listed) > MAX_LISTED_DOCUMENTS:
                self.listed = None  # too many to list: documents.json is left out

    def close(self) -> None:
        self.handle.close()

    def record(self) -> dict:
        return {
            "file": self.path.name,
            "documents": self.documents,
            "groups": len(self.groups) + self.hashed_groups,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "bytes_per_token": self.bytes / self.tokens if self.tokens and self.bytes else None,
            "sha256": self.digest.hexdigest(),
        }


@dataclass
class StreamStats:
    """What the reader thread saw: documents and bytes of text, and a hash of all of it."""

    documents: int = 0
    bytes: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)


def labelled_documents(source: CorpusSource, splitter: Splitter, stats: StreamStats) -> Iterator[tuple[int, Document, int]]:
    """(0 = train | 1 = val, document, its UTF-8 length) for every document piece of the corpus, in order."""
    for doc in source.documents():
        data = doc.text.encode("utf-8")
        stats.bytes += len(data)
        stats.documents += int(doc.end)
        for part in (doc.name, data):
            encoded = part.encode("utf-8") if isinstance(part, str) else part
            stats.digest.update(len(encoded).to_bytes(8, "little"))
            stats.digest.update(encoded)
        yield int(splitter.is_val(doc, data)), doc, len(data)


def batches(items: Iterator, batch_bytes: int) -> Iterator[list]:
    """Lists of labelled documents holding about batch_bytes of text each."""
    batch, size = [], 0
    for item in items:
        batch.append(item)
        size += item[2]
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Reader(threading.Thread):
    """Fills a bounded queue with batches (or the exception that stopped it); stops when told."""

    _DONE = object()

    def __init__(self, items: Iterator):
        super().__init__(daemon=True, name="corpus-reader")
        self.items = items
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as err:  # handed to the consuming thread, which re-raises it
            self._put(err)

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        self.start()
        try:
            while True:
                item = self.queue.get()
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stopped.set()


class Checkpoint:
    """`progress.json` in the staging directory: how many document pieces the shards hold, and their state.

    Written at most every CHECKPOINT_SECONDS, after the shards are flushed, by an atomic rename; a
    run that finds one with its own key resumes from it (the pieces before it are read again but
    not tokenized again), so a killed preparation of a large corpus loses at most a few seconds.
    """

    def __init__(self, directory: Path, key: str):
        self.path = directory / PROGRESS_FILE
        self.key = key
        self.last = time.monotonic()

    def load(self, paths: list[Path]) -> dict | None:
        """The saved state when it belongs to this dataset and the shard files still hold what it counts."""
        try:
            state = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if state.get("key") != self.key or len(state.get("writers", [])) != len(paths):
            return None
        if any(not p.is_file() or p.stat().st_size < st["size"] for p, st in zip(paths, state["writers"])):
            return None
        return state

    def save(self, pieces: int, writers: list[SplitWriter], extra: dict, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < CHECKPOINT_SECONDS:
            return
        self.last = now
        for writer in writers:
            writer.flush()
        state = {"key": self.key, "pieces": pieces, "writers": [w.state() for w in writers], **extra}
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _train_texts(source: CorpusSource, splitter: Splitter, limit: int, used: dict) -> Iterator[str]:
    """Texts of training documents in corpus order, until `limit` bytes (recorded in used['bytes'])."""
    used["bytes"] = 0
    for side, doc, n_bytes in labelled_documents(source, splitter, StreamStats()):
        if side == 0:
            used["bytes"] += n_bytes
            yield doc.text
            if used["bytes"] >= limit:
                used["capped"] = True
                return


def _splitter(source: CorpusSource, val_fraction: float, seed: int) -> Splitter:
    groups = source.groups() if source.groups is not None else None
    return Splitter(val_fraction, seed, exact_val_groups(groups, val_fraction, seed) if groups is not None else None)


def build_dataset(
    source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int, key: str, directory: Path,
    log=None, batch_bytes: int = DEFAULT_BATCH_BYTES, meter: Progress | None = None,
) -> dict:
    """Write shards, tokenizer and manifest for source into directory; return the manifest."""
    say = log or (lambda message: None)
    started = time.time()
    splitter = _splitter(source, val_fraction, seed)
    checkpoint = Checkpoint(directory, key)
    paths = [directory / f"{name}.bin" for name in SPLITS]
    saved = checkpoint.load(paths)
    if saved is not None and spec.kind == "bpe" and not (directory / TOKENIZER_FILE).is_file():
        saved = None  # shards made with a tokenizer that is gone: start again
    bpe_used: dict = saved.get("bpe_used", {}) if saved is not None else {}
    if saved is not None and spec.kind == "bpe":
        tokenizer = load_tokenizer("bpe", directory)  # trained by the killed run this one resumes
    else:
        if spec.kind == "bpe":
            say(f"training tokenizer {spec.name} on up to {BPE_SAMPLE_BYTES / 2**30:g} GiB of training text")
        tokenizer = train_tokenizer(spec, _train_texts(source, splitter, BPE_SAMPLE_BYTES, bpe_used))
    tokenizer_files = tokenizer.save(directory)
    dtype = token_dtype(tokenizer.vocab_size)
    separator_id = tokenizer.separator_id if source.join_with_separator else None
    states = saved["writers"] if saved is not None else [None] * len(paths)
    writers = [SplitWriter(path, dtype, track_groups=source.groups is not None, resume_state=state)
               for path, state in zip(paths, states)]
    skip = saved["pieces"] if saved is not None else 0
    if skip:
        say(f"resuming a killed preparation after {skip:,} document pieces")
    stats = StreamStats()
    say(f"reading corpus {source.name}")
    try:
        if source.token_files is not None:
            _copy_tokens(source, tokenizer.vocab_size, splitter, writers, stats, meter, skip, checkpoint)
        else:
            _encode_stream(source, tokenizer, splitter, writers, stats, separator_id, batch_bytes, meter, skip,
                           checkpoint, {"bpe_used": bpe_used})
    finally:
        for writer in writers:
            writer.close()
    if meter is not None:
        meter.update(0, 0, final=True)
    _check_not_empty(source, stats, writers)
    checkpoint.remove()

    split_records = {name: writer.record() for name, writer in zip(SPLITS, writers)}
    listed = all(writer.listed is not None for writer in writers)
    if listed:
        (directory / "documents.json").write_text(
            json.dumps({name: w.listed for name, w in zip(SPLITS, writers)}, indent=0) + "\n"
        )
    known = {f"{name}.bin": split_records[name]["sha256"] for name in SPLITS}
    files = {
        name: {"size": (directory / name).stat().st_size, "sha256": known[name]} if name in known
        else shards.file_record(directory / name)
        for name in list(known) + tokenizer_files + (["documents.json"] if listed else [])
    }
    entropy_per_byte = source.entropy_rate_nats_per_byte
    manifest = {
        "format": shards.FORMAT,
        "key": key,
        "fingerprint": shards.fingerprint_of(key, files),
        "corpus": source.name,
        "corpus_info": source.info,
        "source_sha256": source.source_sha256 or stats.digest.hexdigest(),
        "tokenizer": {
            "spec": spec.name,
            "kind": spec.kind,
            "requested_vocab_size": spec.requested_vocab if spec.kind == "bpe" else None,
            "files": tokenizer_files,
            "sha256": files[tokenizer_files[0]]["sha256"] if tokenizer_files else None,
            "source_sha256": spec.sha256,
            "separator_token": getattr(tokenizer, "separator_token", None) if separator_id is not None else None,
            "bpe_training_bytes": bpe_used.get("bytes") if spec.kind == "bpe" else None,
            "bpe_training_capped": bool(bpe_used.get("capped")) if spec.kind == "bpe" else None,
        },
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "separator_id": separator_id,
        "val_fraction": val_fraction,
        "seed": int(seed),
        "split_unit": source.split_unit,
        "split_rule": "exact" if splitter.val_groups is not None else "hash",
        "splits": split_records,
        "documents_listed": listed,
        "entropy_rate_nats_per_byte": entropy_per_byte,
        "entropy_rate_nats_per_token": entropy_per_byte if spec.kind == "bytes" else None,
        "files": files,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "prepare_seconds": round(time.time() - started, 3),
    }
    shards.write_manifest(directory, manifest)
    return manifest


def _encode_stream(source, tokenizer, splitter, writers, stats, separator_id, batch_bytes, meter, skip, checkpoint,
                   extra) -> None:
    """Tokenize the labelled document stream batch by batch and append the ids to the split files.

    The first `skip` pieces are already in the shards (a resumed run): they are read, not encoded.
    """
    separator = None if separator_id is None else np.array([separator_id], dtype=np.int64)
    items = itertools.islice(labelled_documents(source, splitter, stats), skip, None)
    reader = _Reader(batches(items, batch_bytes))
    done = skip
    for batch in reader:
        encoded = tokenizer.encode_batch([doc.text for _, doc, _ in batch])
        pieces: tuple[list, list] = ([], [])
        n_bytes = 0
        for (side, doc, size), ids in zip(batch, encoded):
            pieces[side].append(ids)
            if doc.end and separator is not None:
                pieces[side].append(separator)
            writers[side].count_document(doc, size)
            n_bytes += size
        written = 0
        for side, parts in enumerate(pieces):
            if parts:
                ids = np.concatenate(parts)
                writers[side].write(ids)
                written += len(ids)
        if meter is not None:
            meter.update(n_bytes, written)
        done += len(batch)
        checkpoint.save(done, writers, extra)


def _copy_tokens(source, vocab_size, splitter, writers, stats, meter, skip, checkpoint) -> None:
    """Copy an already tokenized corpus chunk by chunk, checking every id against the vocabulary."""
    index = 0
    for path in source.token_files:
        array = open_token_file(path, source.read_options)
        name = path.relative_to(source.root).as_posix() if source.root else str(path)
        for start in range(0, len(array), TOKEN_CHUNK):
            chunk = np.asarray(array[start : start + TOKEN_CHUNK])
            low, high = int(chunk.min()), int(chunk.max())
            if low < 0 or high >= vocab_size:
                bad = start + int(np.flatnonzero((chunk < 0) | (chunk >= vocab_size))[0])
                raise UserError(f"{path}: token {bad} has id {int(array[bad])}, outside the vocabulary of "
                                f"{vocab_size}; pass the right vocabulary size (--tokenizer ids:V) or tokenizer")
            stats.documents += 1
            stats.bytes += chunk.nbytes
            stats.digest.update(chunk.tobytes())
            index += 1
            if index <= skip:
                continue  # copied by the killed run this one resumes
            doc = Document(f"{name}@{start}", f"{name}@{start // TOKEN_CHUNK}", "")
            side = int(splitter.is_val(doc, b""))
            writers[side].write(chunk)
            writers[side].count_document(doc, 0)
            if meter is not None:
                meter.update(chunk.nbytes, len(chunk))
            checkpoint.save(index, writers, {})


def _check_not_empty(source: CorpusSource, stats: StreamStats, writers: list[SplitWriter]) -> None:
    if stats.documents == 0 or stats.bytes == 0:
        raise UserError(f"corpus {source.name!r} is empty: {stats.documents} documents, {stats.bytes} bytes of "
                        "text or tokens; check the files (and --text-field)")
    for name, writer in zip(SPLITS, writers):
        if writer.documents == 0:
            unit = source.split_unit + ("s" if not source.split_unit.endswith("s") else "")
            raise UserError(
                f"the {name} split of corpus {source.name!r} is empty: the stable hash sent all {stats.documents} "
                f"{unit} to the other side; a split needs more of them, or another --val-fraction or --seed"
            )


def bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Convert a loss in nats/token to bits/byte: nats_per_token / ln 2 / bytes_per_token."""
    if not bytes_per_token or bytes_per_token <= 0 or math.isnan(bytes_per_token):
        raise UserError(f"bytes_per_token must be positive, got {bytes_per_token}")
    return nats_per_token / math.log(2) / bytes_per_token
