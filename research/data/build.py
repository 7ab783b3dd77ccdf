"""Building a dataset's files: stream the documents, split, tokenize in batches, write train.bin /
val.bin and the manifest, with a checkpoint to resume from and a progress line (the streaming design
is described in research/data/prepare.py's docstring)."""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from research.data import shards
from research.data.corpora import CorpusSource
from research.data.formats import Document, open_token_file, utf8_of
from research.data.split import SPLITS, Splitter, make_splitter
from research.data.tokenizer import TOKENIZER_FILE, TokenizerSpec, load_tokenizer, token_dtype, train_tokenizer
from research.errors import UserError

DEFAULT_BATCH_BYTES = 1 << 22  # text per tokenizer batch: sets peak memory (its encodings take ~20x)
BPE_SAMPLE_BYTES = 1 << 30  # training text a bpe:V tokenizer learns from, at most
MAX_LISTED_DOCUMENTS = 20_000  # documents.json lists documents only up to this many
QUEUE_BATCHES = 2
PROGRESS_FILE = "progress.json"


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
        data = utf8_of(doc.name, doc.text)
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

    Written at most every `every` seconds (prepare.CHECKPOINT_SECONDS), after the shards are flushed, by an atomic rename; a
    run that finds one with its own key resumes from it (the pieces before it are read again but
    not tokenized again), so a killed preparation of a large corpus loses at most a few seconds.
    """

    def __init__(self, directory: Path, key: str, every: float):
        self.every = every
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
        if not force and now - self.last < self.every:
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


def build_dataset(
    source: CorpusSource, spec: TokenizerSpec, val_fraction: float, seed: int, key: str, directory: Path,
    *, token_chunk: int, checkpoint_seconds: float, log=None, batch_bytes: int = DEFAULT_BATCH_BYTES,
    meter: Progress | None = None,
) -> dict:
    """Write shards, tokenizer and manifest for source into directory; return the manifest.
    `token_chunk`: split unit of an already tokenized corpus (tokens); `checkpoint_seconds`: how often
    the resume point is recorded (both set by research.data.prepare)."""
    say = log or (lambda message: None)
    started = time.time()
    splitter = make_splitter(source, val_fraction, seed)
    checkpoint = Checkpoint(directory, key, checkpoint_seconds)
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
            _copy_tokens(source, tokenizer.vocab_size, splitter, writers, stats, meter, skip, checkpoint,
                         token_chunk)
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


def _copy_tokens(source, vocab_size, splitter, writers, stats, meter, skip, checkpoint, token_chunk: int) -> None:
    """Copy an already tokenized corpus chunk by chunk, checking every id against the vocabulary."""
    index = 0
    for path in source.token_files:
        array = open_token_file(path, source.read_options)
        name = path.relative_to(source.root).as_posix() if source.root else str(path)
        for start in range(0, len(array), token_chunk):
            chunk = np.asarray(array[start : start + token_chunk])
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
            doc = Document(f"{name}@{start}", f"{name}@{start // token_chunk}", "")
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


