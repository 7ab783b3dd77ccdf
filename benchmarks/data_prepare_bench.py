"""Benchmark: streaming `scaling data prepare` on a generated JSON Lines corpus vs a bare tokenizers loop.

Not a test. Generates --gb GB of JSON Lines (Zipf-distributed random words, documents of 0.2-8 KB)
in --workdir, trains a byte-level BPE tokenizer.json on its first 20 MB, then, each in its own
subprocess pinned to --cores cores (sched_setaffinity, RAYON_NUM_THREADS):

* limit:   a bare loop that reads the lines, json.loads them and calls the tokenizer's batch encoder
           on 4 MiB batches, discarding the ids (what preparation cannot beat);
* prepare: research.data.prepare_dataset(corpus, "file:tokenizer.json") writing shards (same batch size).

Records peak resident memory of each subprocess (getrusage ru_maxrss), seconds, MB/s of JSONL read,
the ratio prepare/limit, and the machine's load average (the numbers are only as quiet as the machine).
Writes results/bench/data_prepare_<tag>.json and deletes the corpus unless --keep.

    python benchmarks/data_prepare_bench.py [--gb 2] [--cores 2] [--workdir /tmp/data-prepare-bench] [--tag cpu2]
    python benchmarks/data_prepare_bench.py --tokenizer bytes --tag cpu2-bytes   # pipeline overhead + memory only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH_BYTES = 1 << 22  # research.data.prepare.DEFAULT_BATCH_BYTES

LIMIT_SCRIPT = r"""
import json, os, resource, sys, time
os.sched_setaffinity(0, list(range(int(sys.argv[3]))))
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
tok.encode_special_tokens = True
batch, size, tokens, encode_s = [], 0, 0, 0.0
start = time.perf_counter()
def flush():
    global tokens, encode_s
    t = time.perf_counter()
    tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
    encode_s += time.perf_counter() - t
with open(sys.argv[1], "rb") as f:
    for line in f:
        text = json.loads(line)["text"]
        batch.append(text); size += len(text)
        if size >= int(sys.argv[4]):
            flush(); batch, size = [], 0
if batch:
    flush()
print(json.dumps({"seconds": time.perf_counter() - start, "encode_seconds": encode_s, "tokens": tokens,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

PREPARE_SCRIPT = r"""
import json, os, resource, sys, time
os.sched_setaffinity(0, list(range(int(sys.argv[3]))))
from research.data import load_dataset, prepare_dataset
start = time.perf_counter()
path, _ = prepare_dataset(sys.argv[1], sys.argv[2], data_dir=sys.argv[5], out=sys.argv[6],
                          batch_bytes=int(sys.argv[4]), progress=True)
seconds = time.perf_counter() - start
m = load_dataset(path).manifest
print(json.dumps({"seconds": seconds, "tokens": sum(r["tokens"] for r in m["splits"].values()),
                  "documents": sum(r["documents"] for r in m["splits"].values()),
                  "text_bytes": sum(r["bytes"] for r in m["splits"].values()),
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def generate_corpus(path: Path, n_bytes: int, seed: int = 0) -> int:
    """JSON Lines of Zipf-distributed random words (with punctuation and newlines); returns documents."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, rng.integers(1, 11))) for _ in range(50_000)]
    probs = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    probs /= probs.sum()
    pool = []
    for _ in range(2000):
        words = rng.choice(vocab, size=int(rng.integers(40, 1400)), p=probs).tolist()
        for k in range(0, len(words), 17):
            words[k] = words[k].capitalize() + (". " if k % 3 else ",\n")
        pool.append(" ".join(words))
    written = count = 0
    with open(path, "w", buffering=1 << 22) as handle:
        while written < n_bytes:
            line = json.dumps({"id": count, "text": f"{count} {pool[count % len(pool)]} {pool[(count * 7 + 3) % len(pool)][:500]}"}) + "\n"
            handle.write(line)
            written += len(line)
            count += 1
    return count


def train_tokenizer_file(corpus: Path, out: Path, vocab_size: int, sample_bytes: int = 20 << 20) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts():
        used = 0
        with open(corpus, "rb") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                used += len(text)
                yield text
                if used > sample_bytes:
                    return

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(), trainer=trainer)
    tok.save(str(out))


def run(script: str, args: list[str], cores: int) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": str(cores), "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "true"}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=2.0, help="corpus size in GB (1e9 bytes)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--workdir", default="/tmp/data-prepare-bench")
    ap.add_argument("--tag", default=f"cpu{os.cpu_count()}")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpus and outputs")
    ap.add_argument("--note", default="", help="free text stored with the numbers (e.g. 'contended')")
    ap.add_argument("--tokenizer", choices=("bpe-file", "bytes"), default="bpe-file",
                    help="bytes: prepare with the bytes tokenizer only (no limit loop): the pipeline's own "
                         "overhead and peak memory on a corpus too big to BPE-encode on a slow machine")
    args = ap.parse_args()

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus, tokenizer = work / "corpus.jsonl", work / "tokenizer.json"
    try:
        started = time.perf_counter()
        n_docs = generate_corpus(corpus, int(args.gb * 1e9))
        generate_s = time.perf_counter() - started
        size = corpus.stat().st_size
        print(f"generated {size / 1e9:.2f} GB, {n_docs:,} documents in {generate_s:.0f} s", flush=True)
        bpe = args.tokenizer == "bpe-file"
        if bpe:
            train_tokenizer_file(corpus, tokenizer, args.vocab)
        load_before = os.getloadavg()
        limit = None
        if bpe:
            limit = run(LIMIT_SCRIPT, [str(corpus), str(tokenizer), str(args.cores), str(BATCH_BYTES)], args.cores)
            print(f"limit   {size / 1e6 / limit['seconds']:.1f} MB/s ({limit['seconds']:.0f} s)", flush=True)
        spec = f"file:{tokenizer}" if bpe else "bytes"
        prepare = run(PREPARE_SCRIPT, [str(corpus), spec, str(args.cores), str(BATCH_BYTES),
                                       str(work / "cache"), str(work / "out")], args.cores)
        print(f"prepare {size / 1e6 / prepare['seconds']:.1f} MB/s ({prepare['seconds']:.0f} s), "
              f"peak RSS {prepare['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
        load_after = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if limit is not None:
        assert prepare["tokens"] == limit["tokens"] + prepare["documents"], "prepare wrote other tokens than the loop"
    else:
        assert prepare["tokens"] == prepare["text_bytes"] + prepare["documents"], "bytes: one token per byte + separators"
    from tokenizers import __version__ as tokenizers_version

    record = {
        "benchmark": "data_prepare",
        "corpus": {"format": "jsonl", "bytes": size, "documents": n_docs, "text_bytes": prepare["text_bytes"],
                   "generator": "Zipf(1.1) random words over 50k types, seed 0", "generate_seconds": round(generate_s, 1)},
        "tokenizer": {"kind": "file: byte-level BPE trained on the first 20 MB", "vocab_size": args.vocab,
                      "tokenizers": tokenizers_version} if limit is not None else {"kind": "bytes"},
        "cores": args.cores,
        "batch_bytes": BATCH_BYTES,
        "limit_bare_encode_loop": {**limit, "mb_per_s": size / 1e6 / limit["seconds"]} if limit else None,
        "prepare": {**prepare, "mb_per_s": size / 1e6 / prepare["seconds"]},
        "prepare_over_limit": limit["seconds"] / prepare["seconds"] if limit else None,
        "peak_rss_mib": prepare["peak_rss_bytes"] / 2**20,
        "goals": {"peak_rss_mib_at_most": 1024, "prepare_over_limit_at_least": 0.8},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "note": args.note,
        "command": "python benchmarks/data_prepare_bench.py " + " ".join(sys.argv[1:]),
    }
    out = REPO / "results" / "bench" / f"data_prepare_{args.tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"ratio prepare/limit {record['prepare_over_limit']}; wrote {out}")


if __name__ == "__main__":
    main()
