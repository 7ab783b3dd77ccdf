"""Local corpus files: find them, and stream their documents or token ids.

Text formats (one `Document` per file or record, read as a stream):

* ``.txt``: one document per file; a file larger than ``chunk_bytes`` is read
  in pieces cut at line ends (the pieces form one document, so one separator).
* ``.jsonl`` / ``.ndjson``, also ``.gz`` or ``.zst`` compressed: one document
  per line, in field ``text`` (``--text-field`` chooses another). A line is
  parsed whole, so it may hold at most ``max_line_bytes`` (32 x ``--batch-mb``;
  a longer one is refused, naming it, before it is read into memory); a text
  longer than ``chunk_bytes`` characters is handed on in pieces cut at line
  ends (or spaces), which stay one document on one side of the split.
* ``.parquet`` and ``.arrow`` (Arrow IPC file or stream): one document per row,
  column ``text`` by default, read batch by batch through ``pyarrow``.
* a HuggingFace ``datasets`` directory written by ``save_to_disk``: the
  ``.arrow`` files its ``state.json`` lists (read with ``pyarrow``; the
  ``datasets`` library is not needed). A ``DatasetDict`` directory is read
  split by split, in the order its ``dataset_dict.json`` lists them.

Token formats (already tokenized; copied through memory maps):

* llm.c ``.bin`` shards: a header of 256 int32 (magic 20240520, version 1 =
  uint16 tokens or 2 = uint32, token count), then the tokens.
* raw ``.bin`` (nanoGPT): a headerless array of ``token_dtype`` (uint16 unless
  told otherwise); ``.npy``: any 1-D integer array.

Every problem with a file raises `UserError` naming the file (and line or row).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from research.errors import UserError

TEXT_SUFFIXES = (".txt", ".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst",
                 ".parquet", ".arrow")
TOKEN_SUFFIXES = (".bin", ".npy")
LLMC_MAGIC = 20240520
LLMC_HEADER_INTS = 256
LLMC_VERSION_DTYPES = {1: np.dtype(np.uint16), 2: np.dtype(np.uint32)}
RAW_TOKEN_DTYPES = ("uint16", "uint32")
HF_STATE_FILE = "state.json"
HF_DICT_FILE = "dataset_dict.json"


@dataclass
class Document:
    name: str  # unique within the corpus, e.g. a file name or file:line
    group: str | None  # split unit; None: the document's own content hash decides
    text: str
    end: bool = True  # False: more pieces of the same document follow
    content_sha256: bytes | None = None  # a piece of a record: its whole text's hash (what the split reads)


LINE_BATCHES = 32  # a JSON line may hold up to this many --batch-mb
DEFAULT_MAX_LINE_BYTES = LINE_BATCHES << 22  # at the default 4 MiB batches


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"
    token_dtype: str = "uint16"  # raw .bin files without a header
    chunk_bytes: int = 1 << 24  # a .txt file above this is read in pieces (a record's text above this many characters)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES  # a longer JSON line is refused (it is parsed whole)


def suffix_of(path: Path) -> str | None:
    """The known suffix of a file name (longest match), or None."""
    name = path.name.lower()
    matches = [s for s in TEXT_SUFFIXES + TOKEN_SUFFIXES if name.endswith(s)]
    return max(matches, key=len) if matches else None


# --- finding files ----------------------------------------------------------------------------------


def _hf_data_files(directory: Path) -> list[Path] | None:
    """The .arrow files of a `save_to_disk` directory, or None when directory is not one."""
    dict_file, state_file = directory / HF_DICT_FILE, directory / HF_STATE_FILE
    if dict_file.is_file():
        splits = _read_json(dict_file).get("splits")
        if not isinstance(splits, list) or not splits:
            raise UserError(f"{dict_file} lists no 'splits'; is this a datasets save_to_disk directory?")
        files = []
        for split in splits:
            found = _hf_data_files(directory / str(split))
            if found is None:
                raise UserError(f"{directory / str(split)} (split {split!r} of {dict_file}) has no {HF_STATE_FILE}")
            files.extend(found)
        return files
    if not state_file.is_file():
        return None
    entries = _read_json(state_file).get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "filename" in e for e in entries):
        raise UserError(f"{state_file} has no '_data_files' list; is this a datasets save_to_disk directory?")
    files = [directory / e["filename"] for e in entries]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]} is listed in {state_file} but missing")
    return files


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} should hold a JSON object")
    return value


def _walk(directory: Path, seen: set | None = None) -> list[Path]:
    """Known files below directory, in sorted path order; save_to_disk directories contribute their data files.
    A directory reached twice (a link to itself or to an ancestor: `ln -s . again`) is walked once."""
    seen = set() if seen is None else seen
    try:
        real = directory.resolve(strict=True)
    except (OSError, RuntimeError):  # a link loop or a dangling link: nothing to walk
        return []
    if real in seen:
        return []
    seen.add(real)
    hf = _hf_data_files(directory)
    if hf is not None:
        return hf
    found = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found.extend(_walk(entry, seen))
        elif entry.is_file() and suffix_of(entry):
            found.append(entry)
    return found


def _glob(pattern: Path) -> list[Path]:
    """Matches of a glob, sorted, with `**` never descending through a symbolic link (pathlib's
    rule; glob.glob follows them, so a link to `.` or `..` multiplies the walk without end).
    Names starting with a dot are left out, as the shell does."""
    parts = [part if part == "**" else re.sub(r"\*\*+", "*", part) for part in pattern.parts]  # `a**` is `a*`
    first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
    base = Path(*parts[:first]) if first else Path(".")
    rest = str(Path(*parts[first:]))
    if not base.is_dir():
        return []
    try:
        matches = list(base.glob(rest))
    except ValueError as err:
        raise UserError(f"corpus glob {str(pattern)!r} is not a valid pattern ({err})") from None
    return sorted(m for m in matches if not any(p.startswith(".") for p in m.relative_to(base).parts))


def _unique(files: list[Path]) -> list[Path]:
    """Resolved files, each once, in first-seen order: a glob with `**` or two links to one file read it once."""
    return list(dict.fromkeys(f.resolve() for f in files))


def find_files(corpus: str) -> list[Path]:
    """Files of a local corpus string (file, directory or glob), sorted; UserError when none match."""
    path = Path(corpus).expanduser()
    if path.is_symlink() and not path.exists():
        raise UserError(f"corpus path {corpus!r} is a symbolic link that leads nowhere (dangling, or a loop of links)")
    if any(ch in corpus for ch in "*?["):
        files, seen = [], set()
        for match_path in _glob(path):
            if match_path.is_dir():
                files.extend(_walk(match_path, seen))
            elif match_path.is_file() and suffix_of(match_path):
                files.append(match_path)
        if not files:
            raise UserError(f"corpus glob {corpus!r} matches no corpus files ({', '.join(TEXT_SUFFIXES + TOKEN_SUFFIXES)}); "
                            "check the pattern")
    elif path.is_dir():
        files = _walk(path)
        if not files:
            raise UserError(f"corpus directory {corpus!r} holds no corpus files "
                            f"({', '.join(TEXT_SUFFIXES + TOKEN_SUFFIXES)}) and is not a datasets save_to_disk directory")
    elif path.is_file():
        if not suffix_of(path):
            raise UserError(f"corpus file {corpus!r} has an unknown type; use one of "
                            f"{', '.join(TEXT_SUFFIXES + TOKEN_SUFFIXES)}")
        files = [path]
    else:
        raise FileNotFoundError(corpus)
    files = _unique(files)
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:
        raise UserError(f"corpus file {unreadable[0]} is not readable (permissions); fix them or leave it out"
                        + (f" ({len(unreadable)} such files)" if len(unreadable) > 1 else ""))
    kinds = {suffix_of(f) in TOKEN_SUFFIXES for f in files}
    if len(kinds) > 1:
        first_tok = next(f for f in files if suffix_of(f) in TOKEN_SUFFIXES)
        first_text = next(f for f in files if suffix_of(f) not in TOKEN_SUFFIXES)
        raise UserError(f"corpus {corpus!r} mixes token files ({first_tok.name}) with text files ({first_text.name}); "
                        "prepare them separately")
    return files


def is_token_corpus(files: list[Path]) -> bool:
    return bool(files) and suffix_of(files[0]) in TOKEN_SUFFIXES


# --- text documents ----------------------------------------------------------------------------------


def read_documents(path: Path, root: Path, options: ReadOptions) -> Iterator[Document]:
    """Stream the documents of one text file."""
    suffix = suffix_of(path)
    if suffix == ".txt":
        yield from _read_txt(path, root, options.chunk_bytes)
    elif suffix == ".parquet":
        yield from _read_parquet(path, options.text_field)
    elif suffix == ".arrow":
        yield from _read_arrow(path, options.text_field)
    else:
        yield from _read_jsonl(path, options.text_field, options.max_line_bytes, options.chunk_bytes)


def _decode(raw: bytes, path: Path, line_offset: int) -> str:
    if b"\x00" in raw:
        line = line_offset + raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise UserError(f"{path}:{line} holds a NUL byte: a binary file among text files; remove it from the corpus")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = line_offset + raw[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line} is not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                        "convert it to UTF-8 or remove it from the corpus") from None


def _read_txt(path: Path, root: Path, chunk_bytes: int) -> Iterator[Document]:
    name = _relative(path, root)
    lines_before = 0
    with open(path, "rb") as handle:
        carry = b""
        while True:
            block = handle.read(chunk_bytes)
            data = carry + block
            if not block:
                yield Document(name, name, _decode(data, path, lines_before), end=True)
                return
            cut = data.rfind(b"\n") + 1  # pieces end at a line end (or carry on until one does)
            if cut == 0:
                carry = data
                continue
            piece, carry = data[:cut], data[cut:]
            yield Document(name, name, _decode(piece, path, lines_before), end=False)
            lines_before += piece.count(b"\n")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _open_lines(path: Path):
    suffix = suffix_of(path)
    if suffix.endswith(".gz"):
        return gzip.open(path, "rb")
    if suffix.endswith(".zst"):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


def _lines(handle, path: Path, max_line_bytes: int) -> Iterator[bytes]:
    """The lines of a binary stream, none longer than max_line_bytes (a longer one is refused
    after counting its length, without holding it)."""
    line_no = 0
    while raw := handle.readline(max_line_bytes + 1):
        line_no += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            size = len(raw)
            while not raw.endswith(b"\n") and (raw := handle.readline(1 << 20)):
                size += len(raw)
            batch_mb = max_line_bytes / LINE_BATCHES / 2**20
            need_mb = -(-size * 10 // (LINE_BATCHES << 20)) / 10  # rounded up to a tenth
            raise UserError(
                f"{path}:{line_no} is a JSON line of {_size(size)}, over the {_size(max_line_bytes)} a line may hold "
                f"at --batch-mb {batch_mb:.3g} (a line is parsed whole: {LINE_BATCHES} x --batch-mb); pass "
                f"--batch-mb {need_mb:g} or more, or split the document over several lines")
        yield raw


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB" if n_bytes >= 1 << 20 else f"{n_bytes:,} bytes"


def _text_pieces(text: str, size: int) -> Iterator[str]:
    """text in pieces of at most `size` characters, cut after a line break, else after a space."""
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind("\n", start, end) + 1 or text.rfind(" ", start, end) + 1 or end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _read_jsonl(path: Path, field: str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                chunk_chars: int = 1 << 24) -> Iterator[Document]:
    import zstandard

    line_no = 0
    try:
        with _open_lines(path) as handle:
            for line_no, raw in enumerate(_lines(handle, path, max_line_bytes), start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except UnicodeDecodeError:
                    raise UserError(f"{path}:{line_no} is not UTF-8 text; convert the file to UTF-8") from None
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}:{line_no} is not valid JSON ({err.msg}); fix or remove that line") from None
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    raise UserError(f"{path}:{line_no} has no string field {field!r}; each JSON line needs one "
                                    "(--text-field chooses the field)")
                raw = record = None  # a long line: only its text is kept while its pieces are handed on
                yield from _record_documents(f"{path}:{line_no}", text, chunk_chars)
    except (OSError, EOFError, zstandard.ZstdError) as err:
        raise UserError(f"{path}: cannot decompress after line {line_no} ({err}); the file is damaged") from None


def utf8_of(name: str, text: str) -> bytes:
    """text as UTF-8; a JSON escape of a lone surrogate (\\ud800), which has none, is refused naming the document."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UserError(f"{name} holds a lone surrogate (U+{ord(text[err.start]):04X}, from a \\u escape) at "
                        f"character {err.start}, which is not text; fix or remove that record") from None


def _record_documents(name: str, text: str, chunk_chars: int) -> Iterator[Document]:
    """One record's document, in pieces when its text is longer than chunk_chars (so the tokenizer,
    which takes about 20 bytes per byte of text, holds a piece at a time). The pieces carry the
    whole text's hash, so the split sends them, together, where the whole document would go."""
    if len(text) <= chunk_chars:
        yield Document(name, None, text)
        return
    digest = hashlib.sha256()
    for piece in _text_pieces(text, chunk_chars):
        digest.update(utf8_of(name, piece))
    whole = digest.digest()
    pieces = _text_pieces(text, chunk_chars)
    piece = next(pieces)
    for following in pieces:
        yield Document(name, None, piece, end=False, content_sha256=whole)
        piece = following
    yield Document(name, None, piece, end=True, content_sha256=whole)


def _text_column(batch, path: Path, field: str, first_row: int) -> list[str]:
    import pyarrow as pa

    names = batch.schema.names
    if field not in names:
        raise UserError(f"{path} has no column {field!r} (columns: {', '.join(names)}); choose one with --text-field")
    column = batch.column(names.index(field))
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"{path}: column {field!r} holds {column.type}, not text; choose another with --text-field")
    values = column.to_pylist()
    if column.null_count:
        row = first_row + next(i for i, v in enumerate(values) if v is None)
        raise UserError(f"{path}: row {row} has no {field!r} (null); drop null rows first")
    return values


def _read_parquet(path: Path, field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not a readable Parquet file ({err})") from None
    names = parquet.schema_arrow.names
    if field not in names:
        raise UserError(f"{path} has no column {field!r} (columns: {', '.join(names)}); choose one with --text-field")
    yield from _rows(_guarded(parquet.iter_batches(batch_size=4096, columns=[field]), path), path, field)


def _guarded(batches, path: Path):
    """Record batches, a damaged file's error turned into a UserError naming it."""
    import pyarrow as pa

    count = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise UserError(f"{path}: data damaged after {count} record batches ({err})") from None
        count += 1
        yield batch


def _rows(batches, path: Path, field: str) -> Iterator[Document]:
    row = 0
    for batch in batches:
        for text in _text_column(batch, path, field, row):
            yield Document(f"{path}:{row}", None, text)
            row += 1


def _arrow_batches(path: Path):
    import pyarrow as pa

    source = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_file(source)
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (pa.ArrowException, OSError):
        source.seek(0)
    try:
        return iter(pa.ipc.open_stream(source))  # what datasets' save_to_disk writes
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not an Arrow IPC file or stream ({err})") from None


def _read_arrow(path: Path, field: str) -> Iterator[Document]:
    yield from _rows(_guarded(_arrow_batches(path), path), path, field)


# --- token files ------------------------------------------------------------------------------------------


def open_token_file(path: Path, options: ReadOptions) -> np.ndarray:
    """Read-only 1-D memory map of an already tokenized file's ids (header checked)."""
    if suffix_of(path) == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise UserError(f"{path} is not a readable .npy array ({err})") from None
        if array.ndim != 1 or array.dtype.kind not in "ui":
            raise UserError(f"{path} holds a {array.ndim}-D {array.dtype} array; token files need 1-D integers")
        return array
    size = path.stat().st_size
    with open(path, "rb") as handle:
        first = handle.read(4 * LLMC_HEADER_INTS)
    head = np.frombuffer(first[: len(first) // 4 * 4], dtype="<i4")
    if len(head) and head[0] == LLMC_MAGIC:
        if len(head) < LLMC_HEADER_INTS:
            raise UserError(f"{path} has the llm.c magic number but a truncated header ({size} bytes)")
        version, count = int(head[1]), int(head[2])
        if version not in LLMC_VERSION_DTYPES:
            raise UserError(f"{path}: llm.c header version {version} is unknown (1 = uint16 tokens, 2 = uint32)")
        dtype = LLMC_VERSION_DTYPES[version]
        expected = 4 * LLMC_HEADER_INTS + count * dtype.itemsize
        if count < 0 or size != expected:
            raise UserError(f"{path}: llm.c header says {count} {dtype.name} tokens ({expected} bytes with the header) "
                            f"but the file has {size} bytes; the file is truncated or the header is wrong")
        return np.memmap(path, dtype=dtype, mode="r", offset=4 * LLMC_HEADER_INTS, shape=(count,)) if count else \
            np.zeros(0, dtype)
    dtype = np.dtype(options.token_dtype)
    if size % dtype.itemsize:
        raise UserError(f"{path} has {size} bytes, not a whole number of {dtype.name} tokens; "
                        "check --token-dtype (raw .bin files hold uint16 unless told otherwise)")
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype)


def check_token_dtype(name: str) -> str:
    if name not in RAW_TOKEN_DTYPES:
        raise UserError(f"--token-dtype {name!r} is not one of {', '.join(RAW_TOKEN_DTYPES)}")
    return name
