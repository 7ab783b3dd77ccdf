"""Tokenizers: `bytes`, `bpe:V`, `file:PATH` and `ids:V`.

A spec string names the tokenizer:

* ``bytes``: one token per UTF-8 byte (vocabulary 256).
* ``bpe:V`` with V >= 257 (the 256 byte symbols plus ``<|endoftext|>``):
  byte-level BPE trained with the HuggingFace ``tokenizers`` library on the
  training split only. The library may stop short of V (when no pair is left to
  merge); ``vocab_size`` is always the real size.
* ``file:PATH``: any HuggingFace ``tokenizer.json`` (GPT-2, Llama, ...) read
  from disk; its sha256 enters the dataset key, so editing the file prepares a
  new dataset. Vocabulary size = highest id + 1.
* ``ids:V``: the corpus is already token ids (``.bin``/``.npy`` shards) from a
  tokenizer with V entries; nothing can be encoded or decoded.

The tokenizer used is saved as ``tokenizer.json`` beside the shards.

Documents are joined into one token stream with a separator: id 0 (the NUL
byte) for ``bytes``, ``<|endoftext|>`` for ``bpe``, and for ``file:`` the first
of `SEPARATOR_CANDIDATES` the file defines (none: documents are concatenated,
and the manifest says so). A corpus may ask for no separator (the synthetic
Markov source does, so that its stream stays a Markov chain).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from research.errors import UserError

END_OF_TEXT = "<|endoftext|>"
BYTE_SEPARATOR_ID = 0
MIN_BPE_VOCAB = 257  # 256 byte symbols + <|endoftext|>
TOKENIZER_FILE = "tokenizer.json"
SEPARATOR_CANDIDATES = (END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")


@dataclass(frozen=True)
class TokenizerSpec:
    """Parsed tokenizer spec: kind is 'bytes', 'bpe', 'file' or 'ids'.

    requested_vocab: the BPE target (bpe) or the given vocabulary (ids);
    path and sha256: the tokenizer.json of a 'file' spec.
    """

    kind: str
    requested_vocab: int | None = None
    path: str | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        """Canonical spec string, e.g. 'bytes', 'bpe:4096', 'file:/abs/tokenizer.json', 'ids:50257'."""
        if self.kind == "bytes":
            return "bytes"
        if self.kind == "file":
            return f"file:{self.path}"
        return f"{self.kind}:{self.requested_vocab}"

    @property
    def identity(self) -> str:
        """What enters the dataset key: the name, plus the file's hash for 'file'."""
        return f"{self.name}@sha256:{self.sha256}" if self.kind == "file" else self.name

    @property
    def slug(self) -> str:
        """Directory-safe short name, e.g. 'bytes', 'bpe4096', 'file-gpt2', 'ids50257'."""
        if self.kind == "bytes":
            return "bytes"
        if self.kind == "file":
            stem = Path(self.path).stem if Path(self.path).stem != "tokenizer" else Path(self.path).parent.name
            return "file-" + ("".join(c if c.isalnum() else "-" for c in stem.lower())[:24] or "tokenizer")
        return f"{self.kind}{self.requested_vocab}"


def parse_tokenizer_spec(spec: str) -> TokenizerSpec:
    """Parse 'bytes', 'bpe:V', 'file:PATH' or 'ids:V'; raise UserError naming the fix otherwise."""
    raw = str(spec).strip()
    if raw[:5].lower() == "file:":
        return _file_spec(raw[5:])
    text = raw.lower()
    if text in ("bytes", "byte"):
        return TokenizerSpec("bytes")
    match = re.fullmatch(r"(bpe|ids):(.*)", text)
    if not match:
        raise UserError(
            f"unknown tokenizer {spec!r}: use 'bytes', 'bpe:V' (train a BPE of V entries, e.g. 'bpe:4096'), "
            "'file:PATH' (a HuggingFace tokenizer.json) or 'ids:V' (corpus already tokenized, vocabulary V)"
        )
    kind = match.group(1)
    try:
        vocab = int(match.group(2).replace("_", ""))
    except ValueError:
        raise UserError(
            f"bad tokenizer {spec!r}: the vocabulary size after '{kind}:' must be an integer, e.g. '{kind}:4096'"
        ) from None
    if kind == "ids":
        if not 1 <= vocab <= 2**31 - 1:
            raise UserError(f"bad tokenizer {spec!r}: the vocabulary size must be between 1 and 2**31-1")
        return TokenizerSpec("ids", vocab)
    if vocab < MIN_BPE_VOCAB:
        raise UserError(
            f"bad tokenizer {spec!r}: a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} entries "
            f"(256 bytes + {END_OF_TEXT}); use e.g. 'bpe:4096'"
        )
    if vocab > 2**31 - 1:
        raise UserError(f"bad tokenizer {spec!r}: vocabulary size too large for int32 batches")
    return TokenizerSpec("bpe", vocab)


def _file_spec(path_text: str) -> TokenizerSpec:
    path = Path(path_text).expanduser()
    if not path_text or not path.is_file():
        raise UserError(f"tokenizer file {path_text!r} does not exist; give the path of a HuggingFace tokenizer.json")
    path = path.resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = TokenizerSpec("file", path=str(path), sha256=digest)
    HFTokenizer.from_file(path)  # fail now, with one line, when the file does not parse
    return spec


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype holding ids 0..vocab_size-1: uint16 up to 65536 entries, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


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


class HFTokenizer:
    """A `tokenizers` library tokenizer (trained BPE or a tokenizer.json from disk).

    separator_id: the first of SEPARATOR_CANDIDATES the vocabulary holds, or None.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer, kind: str = "bpe"):
        # Text that happens to contain "<|endoftext|>" is tokenized as plain text,
        # so the separator id appears only where documents are joined.
        hf_tokenizer.encode_special_tokens = True
        self.kind = kind
        self._tok = hf_tokenizer
        vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(int(hf_tokenizer.get_vocab_size(with_added_tokens=True)), max(vocab.values(), default=-1) + 1)
        self.separator_token = next((t for t in SEPARATOR_CANDIDATES if t in vocab), None)
        self.separator_id = None if self.separator_token is None else int(vocab[self.separator_token])
        if kind == "bpe" and self.separator_token != END_OF_TEXT:
            raise UserError(f"tokenizer has no {END_OF_TEXT} token; delete the dataset directory and prepare again")

    @classmethod
    def from_file(cls, path: Path, kind: str = "file") -> "HFTokenizer":
        """Load a tokenizer.json; UserError naming the file when it does not parse."""
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)), kind)
        except Exception as err:  # the Rust parser raises a bare Exception for any malformed file
            detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise UserError(f"tokenizer file {path} does not parse as a HuggingFace tokenizer.json ({detail})") from None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "HFTokenizer":
        """Train byte-level BPE on texts (an iterable: streamed, the training split only) up to vocab_size entries."""
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
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, directory: Path, kind: str = "bpe") -> "HFTokenizer":
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise UserError(f"{path} is missing; delete {directory} and prepare the dataset again")
        return cls.from_file(path, kind)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        return [np.asarray(e.ids, dtype=np.int32) for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for; special tokens are 0.

        Byte-level BPE (GPT-2 style, and this package's `bpe:V`) spells every byte as one
        symbol, so a token's length in symbols is its length in bytes. Other tokenizer files
        (SentencePiece-style, Llama) spell a space as U+2581 and a fallback byte as `<0xHH>`:
        those are one byte each, and the rest counts its UTF-8 bytes."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = {t.content for t in self._tok.get_added_tokens_decoder().values()}
        byte_level = '"ByteLevel"' in json.dumps(json.loads(self._tok.to_str()).get("decoder"))
        for symbols, token_id in self._tok.get_vocab(with_added_tokens=True).items():
            if symbols in special:
                continue
            if byte_level:
                lengths[token_id] = len(symbols)
            elif _BYTE_FALLBACK.fullmatch(symbols):
                lengths[token_id] = 1
            else:
                lengths[token_id] = len(symbols.replace("\u2581", " ").encode("utf-8"))
        return lengths

    def save(self, directory: Path) -> list[str]:
        """Write tokenizer.json into directory; return the file names written."""
        self._tok.save(str(Path(directory) / TOKENIZER_FILE))
        return [TOKENIZER_FILE]




class IdsTokenizer:
    """Stand-in for the unknown tokenizer of an already tokenized corpus: a vocabulary size, no text."""

    kind = "ids"
    separator_id = None
    separator_token = None

    def __init__(self, vocab_size: int):
        self.vocab_size = int(vocab_size)

    def encode_batch(self, texts):
        raise UserError("tokenizer 'ids:V' reads already tokenized .bin/.npy files; text needs bytes, bpe:V or file:PATH")

    encode = encode_batch

    def decode(self, ids: Iterable[int]) -> str:
        """No text: the ids themselves, space-separated (the corpus came tokenized without its tokenizer)."""
        return " ".join(str(int(i)) for i in ids)

    def save(self, directory: Path) -> list[str]:
        return []


def train_tokenizer(spec: TokenizerSpec, train_texts: Iterable[str]):
    """A tokenizer for spec, trained on train_texts (consumed only by 'bpe')."""
    if spec.kind == "bytes":
        return ByteTokenizer()
    if spec.kind == "file":
        return HFTokenizer.from_file(Path(spec.path), "file")
    if spec.kind == "ids":
        return IdsTokenizer(spec.requested_vocab)
    return HFTokenizer.train(train_texts, spec.requested_vocab)


def load_tokenizer(kind: str, directory: Path, vocab_size: int | None = None):
    """The tokenizer saved with a prepared dataset (kind and vocab_size from its manifest)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind in ("bpe", "file"):
        return HFTokenizer.load(directory, kind)
    if kind == "ids":
        return IdsTokenizer(vocab_size)
    raise UserError(f"unknown tokenizer kind {kind!r} in {directory}; prepare the dataset again")
