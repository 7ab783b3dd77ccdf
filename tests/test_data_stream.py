"""Streaming preparation: bounded memory, killed-and-restarted preparation, progress, python-site.

Peak memory is measured in a real subprocess (resource.getrusage of that process), and the killed
preparation is a real subprocess stopped with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from research.data import load_dataset, prepare_dataset

REPO = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, n_bytes: int, doc_bytes: int = 8000, seed: int = 0) -> int:
    """JSON Lines of distinct random-word documents of about doc_bytes each, n_bytes in all; returns documents."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(2000)]
    pool = [" ".join(rng.choice(words, doc_bytes // 6)) for _ in range(200)]
    written = count = 0
    with open(path, "w") as handle:
        while written < n_bytes:
            line = json.dumps({"text": f"{count}: {pool[count % len(pool)]}"}) + "\n"
            handle.write(line)
            written += len(line)
            count += 1
    return count


PEAK_SCRIPT = """
import resource, sys
from research.data import prepare_dataset
prepare_dataset(sys.argv[1], "bytes", data_dir=sys.argv[2], out=sys.argv[3], batch_bytes=int(sys.argv[4]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss_of_prepare(corpus: Path, tmp: Path, batch_bytes: int) -> int:
    out = tmp / f"out-{corpus.stem}"
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(corpus), str(tmp / "cache"), str(out),
                             str(batch_bytes)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_peak_memory_is_set_by_the_batch_not_the_corpus(tmp_path):
    """A corpus 5x larger (and 40x the batch) costs no more memory: the old preparation held it all."""
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    write_corpus(small, 8 << 20)
    write_corpus(large, 40 << 20, seed=1)
    batch = 1 << 20
    peak_small = peak_rss_of_prepare(small, tmp_path, batch)
    peak_large = peak_rss_of_prepare(large, tmp_path, batch)
    assert peak_large - peak_small < 6 << 20, (peak_small, peak_large)  # the extra 32 MB of text is not held
    ds = load_dataset(tmp_path / "out-large")
    splits = ds.manifest["splits"].values()
    text_bytes = sum(r["bytes"] for r in splits)
    assert text_bytes > 0.95 * large.stat().st_size  # all the text went through (less JSON syntax)
    assert sum(r["tokens"] for r in splits) == text_bytes + sum(r["documents"] for r in splits)  # + separators


KILL_SCRIPT = """
import sys
import research.data.prepare as prepare
prepare.CHECKPOINT_SECONDS = 0.1  # checkpoint often, so that the kill lands after some
prepare.prepare_dataset(sys.argv[1], sys.argv[4], data_dir=sys.argv[2], out=sys.argv[3], batch_bytes=1 << 16)
"""


@pytest.mark.parametrize("tokenizer, corpus_mb", [("bytes", 24), ("bpe:300", 3)])
def test_killed_preparation_leaves_no_manifest_and_a_rerun_resumes_it(tmp_path, tokenizer, corpus_mb):
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, corpus_mb << 20)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(corpus), str(tmp_path / "cache"), str(out),
                             tokenizer], env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 240
    staged = []
    while time.time() < deadline and proc.poll() is None:  # wait until it has checkpointed part of the shards
        staged = list(tmp_path.glob(".tmp-out-*/progress.json"))
        if staged:
            break
        time.sleep(0.02)
    assert staged and proc.poll() is None, "preparation finished before it could be killed; use a larger corpus"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing in place, in particular no manifest
    staging = list(tmp_path.glob(".tmp-out-*"))
    assert len(staging) == 1 and not (staging[0] / "manifest.json").exists()
    checkpointed = json.loads((staging[0] / "progress.json").read_text())["pieces"]
    assert checkpointed > 0

    messages = []
    path, reused = prepare_dataset(str(corpus), tokenizer, data_dir=tmp_path / "cache", out=out, log=messages.append)
    assert (path, reused) == (out.resolve(), False)
    assert f"resuming a killed preparation after {checkpointed:,} document pieces" in messages
    assert not (out / "progress.json").exists()
    assert not list(tmp_path.glob(".tmp-out-*"))  # the re-run cleared the killed run's files
    ds = load_dataset(out)
    assert ds.verify() == []
    # the same content as an uninterrupted preparation
    fresh, _ = prepare_dataset(str(corpus), tokenizer, data_dir=tmp_path / "cache", out=tmp_path / "fresh")
    for split in ("train", "val"):
        assert ds.manifest["splits"][split]["sha256"] == load_dataset(fresh).manifest["splits"][split]["sha256"]
    assert ds.manifest["files"] == load_dataset(fresh).manifest["files"]  # tokenizer.json too
    assert ds.manifest["splits"]["train"]["bytes"] + ds.manifest["splits"]["val"]["bytes"] == sum(
        len(json.loads(line)["text"].encode()) for line in corpus.open())


def test_cli_progress_reports_bytes_tokens_and_throughput(tmp_path):
    corpus = tmp_path / "c.jsonl"
    n_docs = write_corpus(corpus, 1 << 20)
    scaling = Path(sys.executable).with_name("scaling")
    result = subprocess.run([str(scaling), "data", "prepare", str(corpus), "--tokenizer", "bytes", "--batch-mb", "0.25",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SCALING_DATA_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    final = [line for line in result.stderr.splitlines() if "tokens written" in line][-1]
    ds = load_dataset(tmp_path / "out")
    total_tokens = ds.n_tokens("train") + ds.n_tokens("val")
    assert f"{total_tokens:,} tokens written" in final and "MB/s" in final and "(100%)" in final
    assert ds.n_documents("train") + ds.n_documents("val") == n_docs
    mb = float(final.split("read ")[1].split(" MB")[0].replace(",", ""))
    assert mb == pytest.approx((ds.manifest["splits"]["train"]["bytes"] + ds.manifest["splits"]["val"]["bytes"]) / 1e6,
                               abs=0.05)


def test_python_site_corpus_holds_out_whole_packages(tmp_path):
    from research.data.corpora import resolve_corpus

    source = resolve_corpus("python-site", tmp_path)
    groups = source.groups()
    assert "numpy" in groups and "jax" in groups and "tokenizers" in groups
    path, _ = prepare_dataset("python-site", "bytes", val_fraction=0.05, data_dir=tmp_path / "cache",
                              out=tmp_path / "site")
    ds = load_dataset(path)
    assert ds.manifest["split_unit"] == "package" and ds.manifest["split_rule"] == "exact"
    record = ds.manifest["splits"]
    assert record["train"]["groups"] + record["val"]["groups"] <= len(groups)
    assert record["val"]["groups"] == max(1, round(0.05 * len(groups)))
    assert ds.n_tokens("train") > 10_000_000  # tens of millions of tokens without a download
    names = json.loads((path / "documents.json").read_text()) if ds.manifest["documents_listed"] else None
    if names is not None:
        sides = {}
        for split in ("train", "val"):
            for _, package in names[split]:
                sides.setdefault(package, set()).add(split)
        assert all(len(s) == 1 for s in sides.values())
