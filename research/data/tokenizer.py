"""Tokenizers: `bytes` (one token per UTF-8 byte) and `bpe:V` (byte-level BPE).

A spec string names the tokenizer: ``bytes`` or ``bpe:V`` with V >= 257 (the
256 byte symbols plus the ``<|endoftext|>`` special token). BPE is trained
with the HuggingFace ``tokenizers`` library on the training split only and is
saved as ``tokenizer.json`` beside the shards. The library may stop short of V
(when no pair is left to merge); ``vocab_size`` is always the real size.

Documents are joined into one token stream with a separator: id 0 (the NUL
byte) for ``bytes``, the ``<|endoftext|>`` token for ``bpe``. A corpus may ask
for no separator (the synthetic Markov source does, so that its stream stays a
Markov chain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from research.errors import UserError

END_OF_TEXT = "<|endoftext|>"
BYTE_SEPARATOR_ID = 0
MIN_BPE_VOCAB = 257  # 256 byte symbols + <|endoftext|>
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenizerSpec:
    """Parsed tokenizer spec: kind is 'bytes' or 'bpe'; vocab is the BPE target."""

    kind: str
    requested_vocab: int | None = None

    @property
    def name(self) -> str:
        """Canonical spec string, e.g. 'bytes' or 'bpe:4096'."""
        return "bytes" if self.kind == "bytes" else f"bpe:{self.requested_vocab}"

    @property
    def slug(self) -> str:
        """Directory-safe short name, e.g. 'bytes' or 'bpe4096'."""
        return "bytes" if self.kind == "bytes" else f"bpe{self.requested_vocab}"


def parse_tokenizer_spec(spec: str) -> TokenizerSpec:
    """Parse 'bytes' or 'bpe:V'; raise UserError naming the fix otherwise."""
    text = str(spec).strip().lower()
    if text in ("bytes", "byte"):
        return TokenizerSpec("bytes")
    match = re.fullmatch(r"bpe:(.*)", text)
    if not match:
        raise UserError(
            f"unknown tokenizer {spec!r}: use 'bytes' or 'bpe:V' with V the vocabulary size, e.g. 'bpe:4096'"
        )
    try:
        vocab = int(match.group(1).replace("_", ""))
    except ValueError:
        raise UserError(
            f"bad tokenizer {spec!r}: the vocabulary size after 'bpe:' must be an integer, e.g. 'bpe:4096'"
        ) from None
    if vocab < MIN_BPE_VOCAB:
        raise UserError(
            f"bad tokenizer {spec!r}: a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} entries "
            f"(256 bytes + {END_OF_TEXT}); use e.g. 'bpe:4096'"
        )
    if vocab > 2**31 - 1:
        raise UserError(f"bad tokenizer {spec!r}: vocabulary size too large for int32 batches")
    return TokenizerSpec("bpe", vocab)


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids 0..vocab_size-1: uint16 up to 65536 entries, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


class ByteTokenizer:
    """One token per UTF-8 byte; vocabulary 256; documents separated by byte 0."""

    kind = "bytes"
    vocab_size = 256
    separator_id = BYTE_SEPARATOR_ID

    def encode(self, text: str) -> np.ndarray:
        """Token ids (uint8 values as int32) of the UTF-8 bytes of text."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text from ids; invalid UTF-8 (e.g. a window cut mid-character) is replaced."""
        return bytes(np.asarray(ids, dtype=np.uint8).tobytes()).decode("utf-8", errors="replace")

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for (1 each; see Dataset.token_byte_lengths for the separator)."""
        return np.ones(self.vocab_size, dtype=np.int64)

    def save(self, directory: Path) -> list[str]:
        """Nothing to save: the byte tokenizer has no learned state."""
        return []


class BPETokenizer:
    """Byte-level BPE from the `tokenizers` library, with an <|endoftext|> separator."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        # Text that happens to contain "<|endoftext|>" is tokenized as plain text,
        # so the separator id appears only where documents are joined.
        hf_tokenizer.encode_special_tokens = True
        self._tok = hf_tokenizer
        self.vocab_size = int(hf_tokenizer.get_vocab_size(with_added_tokens=True))
        eot = hf_tokenizer.token_to_id(END_OF_TEXT)
        if eot is None:
            raise UserError(f"tokenizer has no {END_OF_TEXT} token; delete the dataset directory and prepare again")
        self.separator_id = int(eot)

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int) -> "BPETokenizer":
        """Train byte-level BPE on texts (the training split only) up to vocab_size entries."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return cls(tok)

    @classmethod
    def load(cls, directory: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise UserError(f"{path} is missing; delete {directory} and prepare the dataset again")
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [np.asarray(e.ids, dtype=np.int32) for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for: byte-level BPE spells every byte as one
        symbol, so a token's length in symbols is its length in bytes; special tokens are 0."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = {t.content for t in self._tok.get_added_tokens_decoder().values()}
        for symbols, token_id in self._tok.get_vocab(with_added_tokens=True).items():
            lengths[token_id] = 0 if symbols in special else len(symbols)
        return lengths

    def save(self, directory: Path) -> list[str]:
        """Write tokenizer.json into directory; return the file names written."""
        self._tok.save(str(Path(directory) / TOKENIZER_FILE))
        return [TOKENIZER_FILE]


def train_tokenizer(spec: TokenizerSpec, train_texts: Sequence[str]):
    """A tokenizer for spec, trained on train_texts when it has learned state."""
    if spec.kind == "bytes":
        return ByteTokenizer()
    return BPETokenizer.train(train_texts, spec.requested_vocab)


def load_tokenizer(kind: str, directory: Path):
    """The tokenizer saved with a prepared dataset (kind from its manifest)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.load(directory)
    raise UserError(f"unknown tokenizer kind {kind!r} in {directory}; prepare the dataset again")
