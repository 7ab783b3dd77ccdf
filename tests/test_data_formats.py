"""Corpus formats, tokenizer files and bad input for `scaling data prepare` (research.data.formats).

Every file is written here with the real writer of its format (json + gzip/zstandard, pyarrow for
Parquet/Arrow and the save_to_disk layout, numpy for nanoGPT/llm.c token files, the `tokenizers`
library for tokenizer.json) and read back through the real preparation; the expected documents
are the ones written, not anything the reader produced.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research.cli import main as scaling_main
from research.data import get_dataset, load_dataset, prepare_dataset
from research.data.formats import LLMC_MAGIC, ReadOptions
from research.errors import UserError

TEXTS = [f"document {i}: " + " ".join(f"w{i}x{j}" for j in range(i % 7 + 3)) + " ünï ✓" for i in range(40)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SCALING_DATA_DIR", str(root))
    return root


def stream_documents(ds, split: str) -> list[str]:
    """A split's documents, cut at the bytes tokenizer's separator (id 0)."""
    raw = np.asarray(ds.tokens(split), dtype=np.uint8).tobytes()
    if not raw:
        return []
    assert raw.endswith(b"\x00")
    return [part.decode("utf-8") for part in raw[:-1].split(b"\x00")]


def all_documents(ds) -> list[str]:
    train, val = stream_documents(ds, "train"), stream_documents(ds, "val")
    assert train and val and not set(train) & set(val)
    return train + val


# --- text formats --------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.ndjson"])
def test_jsonl_plain_and_compressed(data_dir, tmp_path, name):
    path = tmp_path / name
    write_jsonl(path, [{"text": t, "meta": i} for i, t in enumerate(TEXTS)])
    ds = get_dataset(str(path), "bytes", val_fraction=0.3)
    docs = all_documents(ds)
    assert sorted(docs) == sorted(TEXTS)
    assert ds.manifest["splits"]["train"]["documents"] + ds.manifest["splits"]["val"]["documents"] == len(TEXTS)


def test_jsonl_text_field_option(data_dir, tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"content": t} for t in TEXTS])
    ds = get_dataset(str(path), "bytes", val_fraction=0.3, options=ReadOptions(text_field="content"))
    assert sorted(all_documents(ds)) == sorted(TEXTS)
    with pytest.raises(UserError, match=r"c\.jsonl:1 has no string field 'text'.*--text-field"):
        get_dataset(str(path), "bytes", val_fraction=0.3)


def test_parquet_default_column_and_text_field(data_dir, tmp_path):
    table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS, "body": [t.upper() for t in TEXTS]})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=7)  # several row groups
    ds = get_dataset(str(tmp_path / "part-0.parquet"), "bytes", val_fraction=0.3)
    assert sorted(all_documents(ds)) == sorted(TEXTS)
    body = get_dataset(str(tmp_path / "part-0.parquet"), "bytes", val_fraction=0.3,
                       options=ReadOptions(text_field="body"))
    assert sorted(all_documents(body)) == sorted(t.upper() for t in TEXTS)
    with pytest.raises(UserError, match=r"no column 'nope' \(columns: id, text, body\)"):
        get_dataset(str(tmp_path / "part-0.parquet"), "bytes", options=ReadOptions(text_field="nope"))
    with pytest.raises(UserError, match="column 'id' holds int64, not text"):
        get_dataset(str(tmp_path / "part-0.parquet"), "bytes", options=ReadOptions(text_field="id"))


def write_arrow(path: Path, texts: list[str], stream: bool) -> None:
    table = pa.table({"text": texts})
    opener = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(path), "wb") as sink, opener(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=9):
            writer.write_batch(batch)


@pytest.mark.parametrize("stream", [False, True])
def test_arrow_file_and_stream(data_dir, tmp_path, stream):
    write_arrow(tmp_path / "c.arrow", TEXTS, stream)
    ds = get_dataset(str(tmp_path / "c.arrow"), "bytes", val_fraction=0.3)
    assert sorted(all_documents(ds)) == sorted(TEXTS)


def write_save_to_disk(directory: Path, texts: list[str], shards: int = 2) -> None:
    """The layout datasets' Dataset.save_to_disk writes: Arrow stream files + dataset_info.json + state.json."""
    directory.mkdir(parents=True)
    names = []
    for k in range(shards):
        name = f"data-{k:05d}-of-{shards:05d}.arrow"
        write_arrow(directory / name, texts[k::shards], stream=True)
        names.append({"filename": name})
    (directory / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))
    (directory / "state.json").write_text(json.dumps({"_data_files": names, "_fingerprint": "abc", "_split": None}))
    write_arrow(directory / "cache-0123.arrow", ["stale cache file, not part of the dataset"], stream=True)


def test_huggingface_save_to_disk_directories(data_dir, tmp_path):
    write_save_to_disk(tmp_path / "ds", TEXTS)
    ds = get_dataset(str(tmp_path / "ds"), "bytes", val_fraction=0.3)
    assert sorted(all_documents(ds)) == sorted(TEXTS)  # the cache file is not read
    # a DatasetDict: one save_to_disk directory per split, listed in dataset_dict.json
    root = tmp_path / "dd"
    write_save_to_disk(root / "train", TEXTS[:30])
    write_save_to_disk(root / "test", TEXTS[30:], shards=1)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    both = get_dataset(str(root), "bytes", val_fraction=0.3)
    assert sorted(all_documents(both)) == sorted(TEXTS)


def test_large_txt_is_read_in_pieces_as_one_document(data_dir, tmp_path):
    corpus = tmp_path / "books"
    corpus.mkdir()
    texts = []
    for i in range(6):
        text = "".join(f"book {i} line {j} ✓ ünï\n" for j in range(300))
        (corpus / f"book{i}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    path, _ = prepare_dataset(str(corpus), "bytes", val_fraction=0.4, options=ReadOptions(chunk_bytes=512))
    ds = load_dataset(path)
    assert sorted(all_documents(ds)) == sorted(texts)  # one separator per file, nothing lost at the cuts


def long_text(n_words: int) -> str:
    """Words, a few line breaks and non-ASCII characters: cuts can fall after a break, a space or mid-word."""
    return "".join(f"w{j}ü✓{'' if j % 7 else chr(10)}{' ' if j % 5 else ''}" for j in range(n_words))


def test_long_json_record_is_tokenized_in_pieces_as_one_document(data_dir, tmp_path):
    """Issue 23: a record's text longer than chunk_bytes is handed to the tokenizer in pieces (so one
    long line no longer costs ~20x its size at once); the dataset equals the one read whole."""
    records = [{"text": t} for t in TEXTS[:20]] + [{"text": long_text(3000)}] + [{"text": t} for t in TEXTS[20:]]
    write_jsonl(tmp_path / "c.jsonl", records)
    whole, _ = prepare_dataset(str(tmp_path / "c.jsonl"), "bytes", val_fraction=0.3, out=tmp_path / "whole")
    pieces, _ = prepare_dataset(str(tmp_path / "c.jsonl"), "bytes", val_fraction=0.3, out=tmp_path / "pieces",
                                options=ReadOptions(chunk_bytes=257))
    a, b = load_dataset(whole), load_dataset(pieces)
    for split in ("train", "val"):
        np.testing.assert_array_equal(np.asarray(b.tokens(split)), np.asarray(a.tokens(split)))
        assert b.manifest["splits"][split]["documents"] == a.manifest["splits"][split]["documents"]
    assert sorted(all_documents(b)) == sorted(r["text"] for r in records)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_json_line_longer_than_32_batches_is_refused_in_one_line(data_dir, tmp_path, capsys, name):
    """Issue 23: one 200 MB JSON line peaked at 3.5 GB. A line is parsed whole, so it may hold at most
    32 x --batch-mb; a longer one is refused naming it and the --batch-mb that takes it."""
    text = long_text(150_000)  # about 3 MB as JSON
    write_jsonl(tmp_path / name, [{"text": t} for t in TEXTS] + [{"text": text}])
    size = len(json.dumps({"text": text}).encode()) + 1
    assert 2 * 2**20 < size < 3.2 * 2**20
    code = scaling_main(["data", "prepare", str(tmp_path / name), "--tokenizer", "bytes", "--batch-mb", "0.0625"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.startswith("scaling data: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    need = math.ceil(size * 10 / 2**25) / 10
    assert f"{name}:41 is a JSON line of {size / 2**20:.1f} MiB, over the 2.0 MiB a line may hold at --batch-mb " \
           f"0.0625" in lines[0] and f"pass --batch-mb {need:g} or more" in lines[0], lines[0]
    assert not list(data_dir.glob("*/manifest.json")), "a refused corpus left a dataset"

    assert scaling_main(["data", "prepare", str(tmp_path / name), "--tokenizer", "bytes", "--batch-mb", "0.1"]) == 0
    ds = load_dataset(next(data_dir.glob("*/manifest.json")).parent)
    assert sorted(all_documents(ds)) == sorted(TEXTS + [text])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(st.sampled_from("ab ü✓\n\t\"\\"), max_size=400), min_size=1, max_size=12),
       chunk=st.integers(1, 60), max_line=st.integers(8, 1200), surrogate=st.none() | st.integers(0, 11))
def test_any_long_records_prepare_as_if_read_whole_or_are_refused_by_line(tmp_path_factory, texts, chunk, max_line,
                                                                          surrogate):
    """Generated (issue 23): records of any length, pieces of any size, any line cap, some with a lone
    surrogate escape (a traceback before). Either the first line over the cap or not text is named,
    or every document arrives whole, once, on one side."""
    tmp = tmp_path_factory.mktemp("long")
    if surrogate is not None:
        at = surrogate % len(texts)
        texts[at] = texts[at][: len(texts[at]) // 2] + "\ud800" + texts[at][len(texts[at]) // 2:]
    lines = [json.dumps({"text": t}) for t in texts]
    (tmp / "c.jsonl").write_text("".join(line + "\n" for line in lines))
    bad = [(i, "is a JSON line of" if len(line.encode()) > max_line else "holds a lone surrogate")
           for i, (line, t) in enumerate(zip(lines, texts), start=1)
           if len(line.encode()) > max_line or "\ud800" in t]
    try:
        path, _ = prepare_dataset(str(tmp / "c.jsonl"), "bytes", val_fraction=0.5, data_dir=tmp / "cache",
                                  options=ReadOptions(chunk_bytes=chunk, max_line_bytes=max_line))
    except UserError as err:
        message = str(err)
        assert "\n" not in message
        if bad:
            assert f"c.jsonl:{bad[0][0]} {bad[0][1]}" in message, message
        else:
            assert "split" in message or "empty" in message, message  # too few documents for two sides
        assert not list((tmp / "cache").glob("*/manifest.json"))
        return
    assert not bad, f"line {bad[0][0]} should have been refused"
    ds = load_dataset(path)
    docs = stream_documents(ds, "train") + stream_documents(ds, "val")
    assert sorted(docs) == sorted(texts)


def test_directory_and_glob_of_mixed_text_formats(data_dir, tmp_path):
    corpus = tmp_path / "mixed"
    (corpus / "sub").mkdir(parents=True)
    write_jsonl(corpus / "a.jsonl.zst", [{"text": t} for t in TEXTS[:20]])
    pq.write_table(pa.table({"text": TEXTS[20:30]}), corpus / "sub" / "b.parquet")
    for i, t in enumerate(TEXTS[30:]):
        (corpus / "sub" / f"c{i}.txt").write_text(t, encoding="utf-8")
    (corpus / "notes.md").write_text("not a corpus file")
    ds = get_dataset(str(corpus), "bytes", val_fraction=0.3)
    assert sorted(all_documents(ds)) == sorted(TEXTS)
    only_txt = get_dataset(str(corpus / "**" / "*.txt"), "bytes", val_fraction=0.4)
    assert sorted(all_documents(only_txt)) == sorted(TEXTS[30:])


def test_hash_split_is_stable_and_needs_no_order(data_dir, tmp_path):
    """A record's side depends on its content, not on its position: reordering the corpus moves nothing."""
    write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in TEXTS])
    write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in reversed(TEXTS)])
    a = get_dataset(str(tmp_path / "a.jsonl"), "bytes", val_fraction=0.3)
    b = get_dataset(str(tmp_path / "b.jsonl"), "bytes", val_fraction=0.3)
    assert set(stream_documents(a, "val")) == set(stream_documents(b, "val"))
    other_seed = get_dataset(str(tmp_path / "a.jsonl"), "bytes", val_fraction=0.3, seed=1)
    assert set(stream_documents(other_seed, "val")) != set(stream_documents(a, "val"))


# --- already tokenized files ---------------------------------------------------------------------------


def write_llmc(path: Path, tokens: np.ndarray, version: int = 1, count: int | None = None) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = [LLMC_MAGIC, version, len(tokens) if count is None else count]
    path.write_bytes(header.tobytes() + tokens.astype(np.uint16 if version == 1 else np.uint32).tobytes())


def token_stream(ds) -> np.ndarray:
    return np.concatenate([np.asarray(ds.tokens("train")), np.asarray(ds.tokens("val"))])


def test_token_files_nanogpt_and_llmc(data_dir, tmp_path, monkeypatch):
    import research.data.prepare as prepare

    monkeypatch.setattr(prepare, "TOKEN_CHUNK", 1000)  # small chunks, so a small corpus splits
    rng = np.random.default_rng(0)
    raw16 = rng.integers(0, 50257, 12_345).astype(np.uint16)
    (tmp_path / "raw").mkdir()
    raw16.tofile(tmp_path / "raw" / "train.bin")
    ds = get_dataset(str(tmp_path / "raw" / "train.bin"), "ids:50257", val_fraction=0.2)
    assert ds.vocab_size == 50257 and ds.manifest["dtype"] == "uint16" and ds.manifest["split_unit"] == "chunk"
    assert ds.n_tokens("train") + ds.n_tokens("val") == len(raw16)
    assert sorted(token_stream(ds).tolist()) == sorted(raw16.tolist())
    assert ds.train_batch(0, 2, 16, seed=0).max() < 50257

    big = rng.integers(0, 100_000, 5_000).astype(np.uint32)
    big.tofile(tmp_path / "raw" / "big.bin")
    ds32 = get_dataset(str(tmp_path / "raw" / "big.bin"), "ids:100000", val_fraction=0.3,
                       options=ReadOptions(token_dtype="uint32"))
    assert ds32.manifest["dtype"] == "uint32" and sorted(token_stream(ds32).tolist()) == sorted(big.tolist())

    np.save(tmp_path / "raw" / "arr.npy", raw16.astype(np.int64))
    npy = get_dataset(str(tmp_path / "raw" / "arr.npy"), "ids:50257", val_fraction=0.2)
    assert sorted(token_stream(npy).tolist()) == sorted(raw16.tolist())

    shards = tmp_path / "llmc"
    shards.mkdir()
    parts = [rng.integers(0, 50257, n) for n in (3000, 2500, 4100)]
    for k, part in enumerate(parts):
        write_llmc(shards / f"fineweb_train_{k:06d}.bin", part, version=1 if k < 2 else 2)
    llmc = get_dataset(str(shards / "fineweb_train_*.bin"), "ids:50257", val_fraction=0.3)
    assert sorted(token_stream(llmc).tolist()) == sorted(np.concatenate(parts).tolist())
    assert llmc.manifest["corpus_info"]["files"] == 3
    same = get_dataset(str(shards), "ids:50257", val_fraction=0.3)  # the directory: same files, same data
    assert same.fingerprint != "" and np.array_equal(token_stream(same), token_stream(llmc))


# --- tokenizer files -------------------------------------------------------------------------------------


def build_tokenizer_file(path: Path, vocab_size: int = 400, specials=("<|endoftext|>",)) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 3, trainer=trainer)
    tok.save(str(path))
    return path


def test_tokenizer_file_is_used_recorded_and_sets_vocab(data_dir, tmp_path):
    from tokenizers import Tokenizer

    from research.config import RunConfig
    from research.train.loop import resolve

    tok_path = build_tokenizer_file(tmp_path / "my-tok.json")
    reference = Tokenizer.from_file(str(tok_path))
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    ds = get_dataset(str(tmp_path / "c.jsonl"), f"file:{tok_path}", val_fraction=0.3)
    manifest = ds.manifest
    assert manifest["tokenizer"]["kind"] == "file"
    assert manifest["tokenizer"]["source_sha256"] == hashlib.sha256(tok_path.read_bytes()).hexdigest()
    assert ds.vocab_size == reference.get_vocab_size() == manifest["vocab_size"]
    eot = reference.token_to_id("<|endoftext|>")
    assert manifest["separator_id"] == eot and manifest["tokenizer"]["separator_token"] == "<|endoftext|>"
    # the val stream is exactly the reference tokenizer's ids of the val documents, each followed by EOT
    val = np.asarray(ds.tokens("val")).tolist()
    docs, current = [], []
    for i in val:
        if i == eot:
            docs.append(reference.decode(current))
            current = []
        else:
            current.append(i)
    assert docs and set(docs) <= set(TEXTS)
    expected = []
    for doc in docs:
        expected += reference.encode(doc, add_special_tokens=False).ids + [eot]
    assert val == expected
    assert ds.decode(ds.tokenizer.encode(TEXTS[3])) == TEXTS[3]
    # [model] vocab_size follows the tokenizer
    assert resolve(RunConfig(), ds).model.vocab_size == reference.get_vocab_size()
    # another file (same path, new content) is another dataset
    build_tokenizer_file(tok_path, vocab_size=280)
    other = get_dataset(str(tmp_path / "c.jsonl"), f"file:{tok_path}", val_fraction=0.3)
    assert other.path != ds.path and other.vocab_size == 280 < ds.vocab_size


def test_tokenizer_file_without_separator_and_with_token_files(data_dir, tmp_path, monkeypatch):
    import research.data.prepare as prepare

    tok_path = build_tokenizer_file(tmp_path / "plain.json", specials=())
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    ds = get_dataset(str(tmp_path / "c.jsonl"), f"file:{tok_path}", val_fraction=0.3)
    assert ds.manifest["separator_id"] is None  # documents concatenated, and the manifest says so
    # already tokenized ids with the tokenizer that made them: vocabulary from the file, decoding works
    monkeypatch.setattr(prepare, "TOKEN_CHUNK", 64)
    ids = np.concatenate([ds.tokens("train"), ds.tokens("val")]).astype(np.uint16)
    ids.tofile(tmp_path / "ids.bin")
    tokens = get_dataset(str(tmp_path / "ids.bin"), f"file:{tok_path}", val_fraction=0.3)
    assert tokens.vocab_size == ds.vocab_size and tokens.decode(tokens.tokens("train")[:50])


def test_llama_style_tokenizer_file_separates_with_eos_and_adds_no_bos(data_dir, tmp_path):
    """A Llama-like tokenizer.json (<s>/</s>, a post-processor that prepends <s>): documents end in </s>, no <s>."""
    from tokenizers import Tokenizer, processors

    path = build_tokenizer_file(tmp_path / "llama-like.json", specials=("<unk>", "<s>", "</s>"))
    tok = Tokenizer.from_file(str(path))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(str(path))
    assert tok.encode("hello").ids[0] == bos  # the file itself would add BOS
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS])
    ds = get_dataset(str(tmp_path / "c.jsonl"), f"file:{path}", val_fraction=0.3)
    assert ds.manifest["separator_id"] == eos and ds.manifest["tokenizer"]["separator_token"] == "</s>"
    stream = np.concatenate([ds.tokens("train"), ds.tokens("val")])
    assert int(np.sum(stream == eos)) == len(TEXTS) and not np.any(stream == bos)


def test_prepared_directory_as_corpus(data_dir, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"body": t} for t in TEXTS])
    out = tmp_path / "prepared"
    assert scaling_main(["data", "prepare", str(tmp_path / "c.jsonl"), "--tokenizer", "bytes", "--text-field",
                         "body", "--out", str(out), "--val-fraction", "0.3"]) == 0
    ds = get_dataset(str(out), "bpe:4096")  # a training config can point [data] corpus at the directory
    assert ds.path == out.resolve() and sorted(all_documents(ds)) == sorted(TEXTS)


# --- bad input: one line naming the file, nothing left behind ----------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = scaling_main(["data", "prepare", *args])
    return code, capsys.readouterr().err


def assert_nothing_left(data_dir: Path, out: Path | None = None) -> None:
    leftovers = [p.name for p in data_dir.iterdir() if p.name not in (".locks", "downloads")] if data_dir.exists() else []
    assert leftovers == []
    if out is not None:
        assert not out.exists() or not any(out.iterdir())


def bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(corpus, extra args, text the one-line error must hold) for each kind of bad input."""
    cases = []
    (tmp / "empty").mkdir(parents=True)
    (tmp / "empty" / "a.txt").write_text("")
    (tmp / "empty" / "b.jsonl").write_text("\n\n")
    cases.append((str(tmp / "empty"), [], "is empty"))
    cases.append((str(tmp / "nowhere" / "*.jsonl"), [], "matches no corpus files"))
    (tmp / "bin").mkdir()
    (tmp / "bin" / "a.txt").write_text("fine text\n")
    (tmp / "bin" / "b.txt").write_bytes(b"line one\nELF\x00\x01\x02 binary\n")
    cases.append((str(tmp / "bin"), [], "b.txt:2 holds a NUL byte"))
    (tmp / "latin").mkdir()
    (tmp / "latin" / "a.txt").write_text("fine text\n")
    (tmp / "latin" / "b.txt").write_bytes("ok\nstill ok\ncaf\u00e9\n".encode("latin-1"))
    cases.append((str(tmp / "latin"), [], "b.txt:3 is not UTF-8"))
    (tmp / "notjson.jsonl").write_text('{"text": "a"}\n{"text": "b"\n')
    cases.append((str(tmp / "notjson.jsonl"), [], "notjson.jsonl:2 is not valid JSON"))
    cases.append((str(tmp / "notjson.jsonl"), ["--tokenizer", "bpe:300"], "notjson.jsonl:2 is not valid JSON"))
    (tmp / "nofield.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n')
    cases.append((str(tmp / "nofield.jsonl"), [], "nofield.jsonl:3 has no string field 'text'"))
    (tmp / "odd.bin").write_bytes(b"\x01\x00\x02\x00\x03")
    cases.append((str(tmp / "odd.bin"), ["--tokenizer", "ids:300"], "odd.bin has 5 bytes, not a whole number"))
    write_llmc(tmp / "short.bin", np.arange(100), count=200)
    cases.append((str(tmp / "short.bin"), ["--tokenizer", "ids:300"], "header says 200 uint16 tokens"))
    write_llmc(tmp / "v9.bin", np.arange(100), version=9)
    cases.append((str(tmp / "v9.bin"), ["--tokenizer", "ids:300"], "header version 9 is unknown"))
    np.arange(500, dtype=np.uint16).tofile(tmp / "big.bin")
    cases.append((str(tmp / "big.bin"), ["--tokenizer", "ids:300"], "big.bin: token 300 has id 300, outside"))
    (tmp / "tok.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}')
    (tmp / "good.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    cases.append((str(tmp / "good.jsonl"), ["--tokenizer", f"file:{tmp / 'tok.json'}"], "tok.json does not parse"))
    (tmp / "broken.gz.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 50)[:40])
    cases.append((str(tmp / "broken.gz.jsonl.gz"), [], "broken.gz.jsonl.gz: cannot decompress"))
    (tmp / "fake.parquet").write_bytes(b"PAR1 but not really")
    cases.append((str(tmp / "fake.parquet"), [], "fake.parquet is not a readable Parquet file"))
    return cases


def test_bad_inputs_give_one_line_and_leave_nothing(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    for corpus, extra, expected in bad_inputs(tmp_path / "inputs"):
        tokenizer = [] if "--tokenizer" in extra else ["--tokenizer", "bytes"]
        code, err = run_cli([corpus, *tokenizer, *extra, "--out", str(out)], capsys)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("  ")]
        assert code == 2, (corpus, err)
        assert len(lines) == 1 and lines[0].startswith("scaling data: error:"), err
        assert expected in lines[0], (expected, lines[0])
        assert "Traceback" not in err
        assert_nothing_left(data_dir, out)
        assert not out.exists()


def test_bad_input_through_a_real_process(data_dir, tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "a"}\nnot json\n')
    scaling = Path(sys.executable).with_name("scaling")
    result = subprocess.run([str(scaling), "data", "prepare", str(tmp_path / "c.jsonl"), "--tokenizer", "bytes"],
                            capture_output=True, text=True, env={**os.environ, "SCALING_DATA_DIR": str(data_dir)},
                            timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"scaling data: error: {tmp_path / 'c.jsonl'}:2 is not valid JSON (Expecting value); "
                      "fix or remove that line"]
    assert "Traceback" not in result.stderr
    assert_nothing_left(data_dir)


SUFFIXES = [".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".arrow", ".bin", ".npy"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=300), prefix=st.sampled_from(
    [b"", b'{"text": "x"}\n', b"PAR1", b"ARROW1\x00\x00", b"\x93NUMPY", b"\x1f\x8b", b"\x28\xb5\x2f\xfd",
     np.array([LLMC_MAGIC, 1, 3], dtype="<i4").tobytes()]))
def test_any_file_content_prepares_or_fails_with_one_line(tmp_path_factory, suffix, content, prefix):
    """Arbitrary bytes in a corpus file: a dataset, or a UserError naming the file; never another exception."""
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / f"corpus{suffix}"
    path.write_bytes(prefix + content)
    neighbour = tmp / "keep.txt"
    neighbour.write_text("existing file, must not change")
    tokenizer = "ids:65536" if suffix in (".bin", ".npy") else "bytes"
    try:
        prepare_dataset(str(path), tokenizer, val_fraction=0.5, data_dir=tmp / "cache")
    except UserError as err:
        assert "\n" not in str(err)
        assert "corpus" in str(err) or str(path) in str(err) or "split" in str(err)
        leftovers = [p.name for p in (tmp / "cache").iterdir() if p.name != ".locks"] if (tmp / "cache").exists() else []
        assert leftovers == []
    assert neighbour.read_text() == "existing file, must not change"
    assert path.read_bytes() == prefix + content


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["a", "b", "*", "?", "[", "]", "[a-z]", "**", "/", " ", "~", "-", "x.txt",
                                       "r.jsonl", "t.bin", "sub", "empty", "ghost.parquet"]), max_size=6))
def test_any_corpus_path_prepares_or_fails_with_one_line(tmp_path_factory, parts):
    """Corpus strings below a small tree: exit 0 or one error line (status 2), no traceback, nothing touched."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("paths")
    (tmp / "sub").mkdir()
    (tmp / "empty").mkdir()
    (tmp / "sub" / "x.txt").write_text("one document ✓\n")
    (tmp / "sub" / "y.txt").write_text("another document\n")
    (tmp / "r.jsonl").write_text('{"text": "a record"}\n{"text": "b record"}\n{"text": "c"}\n')
    np.arange(5000, dtype=np.uint16).tofile(tmp / "t.bin")
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    corpus = str(tmp) + "/" + "".join(parts)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = scaling_main(["data", "prepare", corpus, "--tokenizer", "bytes", "--out", str(tmp / "out"),
                             "--data-dir", str(tmp / "cache"), "--val-fraction", "0.5", "--json"])
    lines = [line for line in err.getvalue().splitlines() if not line.startswith("  ")]
    assert "Traceback" not in err.getvalue()
    if code == 0:
        assert (tmp / "out" / "manifest.json").is_file()
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("scaling data: error:"), err.getvalue()
        assert not (tmp / "out").exists()
    assert {p: p.read_bytes() for p in before} == before


def test_sentencepiece_style_tokenizer_file_counts_utf8_bytes_per_token(tmp_path):
    """bits/byte needs each token's UTF-8 bytes: a Metaspace (U+2581) tokenizer with accented
    text must count bytes, not symbols (the prepended space of Metaspace is one byte)."""
    from tokenizers import SentencePieceBPETokenizer

    from research.data.tokenizer import HFTokenizer

    texts = ["héllo wörld, ça va? naïve café", "the quick brown fox jumps over the lazy dog"] * 50
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(texts, vocab_size=120, min_frequency=1, special_tokens=["<unk>"])
    sp.save(str(tmp_path / "sp.json"))
    lengths = HFTokenizer.from_file(tmp_path / "sp.json", "file").token_byte_lengths()
    for text in texts[:2]:
        ids = sp.encode(text).ids
        assert sum(int(lengths[i]) for i in ids) == len((" " + text).encode("utf-8"))
