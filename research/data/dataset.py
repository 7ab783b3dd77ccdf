"""`Dataset`: a prepared dataset opened for training, with stateless batching.

Batching semantics. A split's token stream is cut into non-overlapping
windows of ``seq_len + 1`` tokens (the tail that does not fill a window is
unused). Training visits windows in epochs: epoch e is a permutation of all
window indices seeded by (seed, e), and the batch at step s holds entries
``[s*B, (s+1)*B)`` of the concatenated permutations. So a batch is a pure
function of (seed, step, batch_size, seq_len): resuming needs no iterator
state, and no window repeats until ``windows_available`` windows have been
used. Validation uses the first windows of the val stream in order, the same
for every seed.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np

from research.data import shards
from research.data.formats import ReadOptions
from research.data.prepare import bits_per_byte, prepare_dataset
from research.data.split import SPLITS
from research.data.tokenizer import load_tokenizer
from research.errors import UserError
from research.fsutil import atomic_write_json, read_json


@functools.lru_cache(maxsize=8)
def epoch_permutation(seed: int, epoch: int, n_windows: int) -> np.ndarray:
    """Order in which epoch `epoch` visits the n_windows windows (cached, read-only)."""
    order = np.random.default_rng([int(seed), int(epoch), 0x5CA1E]).permutation(n_windows)
    order.flags.writeable = False
    return order


class Dataset:
    """A prepared dataset directory: token memmaps + manifest + tokenizer."""

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._tokens: dict[str, np.ndarray] = {}
        self._tokenizer = None

    def __repr__(self) -> str:
        return f"Dataset({self.manifest['corpus']!r}, {self.manifest['tokenizer']['spec']!r}, path={str(self.path)!r})"

    # --- facts from the manifest -------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Real vocabulary size (embedding rows); may be below a BPE request."""
        return int(self.manifest["vocab_size"])

    @property
    def fingerprint(self) -> str:
        """Short hash of the prepared content, for run configs."""
        return self.manifest["fingerprint"]

    @property
    def entropy_rate_nats_per_token(self) -> float | None:
        """Exact entropy rate of the source per token (synthetic corpus with bytes tokenizer only)."""
        return self.manifest.get("entropy_rate_nats_per_token")

    def _split(self, split: str) -> dict:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use 'train' or 'val'")
        return self.manifest["splits"][split]

    def n_tokens(self, split: str) -> int:
        return int(self._split(split)["tokens"])

    def n_documents(self, split: str) -> int:
        return int(self._split(split)["documents"])

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of the split's text per token (separators count as tokens)."""
        value = self._split(split)["bytes_per_token"]
        return float(value) if value is not None else math.nan

    def bits_per_byte(self, nats_per_token: float, split: str = "val") -> float:
        """Convert a loss on `split` from nats/token to bits/byte."""
        return bits_per_byte(nats_per_token, self.bytes_per_token(split))

    def token_byte_lengths(self) -> np.ndarray | None:
        """UTF-8 bytes of text each token id stands for (the document separator: 0); None for a
        corpus that came already tokenized (`ids:V`), whose text is unknown."""
        if not hasattr(self.tokenizer, "token_byte_lengths"):
            return None
        lengths = np.asarray(self.tokenizer.token_byte_lengths(), dtype=np.int64).copy()
        separator = self.manifest.get("separator_id")
        if separator is not None:
            lengths[int(separator)] = 0
        return lengths

    def bytes_per_token_of(self, tokens) -> float:
        """UTF-8 bytes of text per token in `tokens` (arrays of ids), e.g. the targets an
        evaluation scores; nan when there are none or the text is unknown (`ids:V`)."""
        lengths = self.token_byte_lengths()
        if lengths is None:
            return math.nan
        n = sum(int(np.size(t)) for t in tokens)
        n_bytes = sum(int(lengths[np.asarray(t, dtype=np.int64)].sum()) for t in tokens)
        return n_bytes / n if n else math.nan

    # --- tokens --------------------------------------------------------------------
    def tokens(self, split: str) -> np.ndarray:
        """The split's whole token stream as a read-only memmap."""
        if split not in self._tokens:
            record = self._split(split)
            tokens = shards.open_token_file(
                self.path / record["file"], self.manifest["dtype"], int(record["tokens"])
            )
            self._check_ids(self.path / record["file"], tokens)
            self._tokens[split] = tokens
        return self._tokens[split]

    ID_CHECK_STAMP = ".ids-checked.json"

    def _check_ids(self, path: Path, tokens: np.ndarray) -> None:
        """Refuse a shard holding ids outside the vocabulary (overwritten, or from another
        tokenizer) before a step trains on it. One pass over the shard, then a stamp records its
        size, mtime and inode so later opens of the unchanged file skip the pass."""
        info = path.stat()
        stamp = [info.st_size, info.st_mtime_ns, info.st_ino, self.vocab_size]
        stamps = read_json(self.path / self.ID_CHECK_STAMP) or {}
        if isinstance(stamps, dict) and stamps.get(path.name) == stamp:
            return
        chunk = 1 << 24
        top = max((int(tokens[i:i + chunk].max()) for i in range(0, len(tokens), chunk)), default=-1)
        if top >= self.vocab_size:
            raise UserError(f"dataset {self.path}: {path.name} holds token id {top}, outside the vocabulary of "
                            f"{self.vocab_size} (the file was overwritten or comes from another tokenizer; "
                            f"`scaling data info {self.path} --verify` names the damaged file); delete the "
                            "dataset and prepare it again")
        try:  # best effort: a read-only dataset is simply checked again next time
            atomic_write_json(self.path / self.ID_CHECK_STAMP, {**(stamps if isinstance(stamps, dict) else {}),
                                                                path.name: stamp})
        except OSError:
            pass

    @property
    def tokenizer(self):
        """The tokenizer that produced the shards (has encode/decode)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.manifest["tokenizer"]["kind"], self.path, self.vocab_size)
        return self._tokenizer

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    # --- batching --------------------------------------------------------------------
    def windows_available(self, split: str, seq_len: int) -> int:
        """Non-overlapping windows of seq_len+1 tokens in a split (train: per epoch, without repetition)."""
        _check_positive(seq_len=seq_len)
        return self.n_tokens(split) // (seq_len + 1)

    def _require_windows(self, split: str, seq_len: int) -> int:
        available = self.windows_available(split, seq_len)
        if available < 1:
            raise UserError(
                f"seq_len {seq_len} needs {seq_len + 1} tokens per window but the {split} split of "
                f"{self.manifest['corpus']} has only {self.n_tokens(split)} tokens; use a shorter seq_len "
                "(or a larger corpus / val-fraction)"
            )
        return available

    def _windows(self, split: str, indices: np.ndarray, seq_len: int) -> np.ndarray:
        width = seq_len + 1
        offsets = indices.astype(np.int64)[:, None] * width + np.arange(width, dtype=np.int64)[None, :]
        return np.asarray(self.tokens(split)[offsets], dtype=np.int32)

    def train_batch(self, step: int, batch_size: int, seq_len: int, seed: int) -> np.ndarray:
        """int32 [batch_size, seq_len+1] training windows for `step`; a pure function of the arguments."""
        _check_positive(batch_size=batch_size, seq_len=seq_len)
        if step < 0:
            raise UserError(f"step must be >= 0, got {step}")
        n_windows = self._require_windows("train", seq_len)
        positions = int(step) * int(batch_size) + np.arange(batch_size, dtype=np.int64)
        epochs, within = np.divmod(positions, n_windows)
        indices = np.empty(batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            indices[mask] = epoch_permutation(int(seed), int(epoch), n_windows)[within[mask]]
        return self._windows("train", indices, seq_len)

    def val_batches(self, batch_size: int, seq_len: int, max_tokens: int) -> list[np.ndarray]:
        """Fixed validation batches, int32 [batch_size, seq_len+1] each, independent of any seed.

        Uses the first min(available, max_tokens // seq_len) windows of the val
        stream, in full batches (a partial last batch is dropped), but always
        at least one batch; if the split has fewer than batch_size windows,
        that single batch has fewer rows.
        """
        _check_positive(batch_size=batch_size, seq_len=seq_len, max_tokens=max_tokens)
        available = self._require_windows("val", seq_len)
        wanted = min(available, max_tokens // seq_len)
        n_batches = max(1, wanted // batch_size)
        n_windows = min(available, n_batches * batch_size)
        indices = np.arange(n_windows, dtype=np.int64)
        return [self._windows("val", indices[i : i + batch_size], seq_len) for i in range(0, n_windows, batch_size)]

    # --- integrity -------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems found by re-hashing every file (empty list: all hashes match)."""
        return shards.verify_files(self.path, self.manifest)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise UserError(f"{name} must be a positive integer, got {value}")


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Open a prepared dataset directory (file sizes are checked; hashes only by `verify`)."""
    path = Path(path).expanduser()
    manifest = shards.read_manifest(path)
    problems = shards.check_files(path, manifest)
    if problems:
        raise UserError(f"dataset {path} is damaged ({problems[0]}); delete it and prepare again")
    return Dataset(path, manifest)


def get_dataset(
    corpus: str,
    tokenizer: str,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    options: ReadOptions = ReadOptions(),
) -> Dataset:
    """The prepared dataset for (corpus, tokenizer, val_fraction, seed): loaded from cache, else prepared.

    A corpus that is itself a prepared dataset directory (one with a manifest,
    e.g. written by `scaling data prepare --out DIR`) is opened as it is; its
    own tokenizer, split and preparation options apply.
    """
    if (Path(str(corpus)).expanduser() / shards.MANIFEST_FILE).is_file():
        return load_dataset(corpus)
    path, _ = prepare_dataset(corpus, tokenizer, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                              options=options)
    return load_dataset(path)
