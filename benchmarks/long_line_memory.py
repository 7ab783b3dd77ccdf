"""Peak memory of `scaling data prepare` on a JSONL corpus holding one very long line (issue 23).

    python benchmarks/long_line_memory.py --line-mb 200 --batch-mb 4 13 --label after \
        --out results/bench/long_line_memory.json

Writes a corpus to a temporary directory (deleted afterwards): one JSON line whose "text" is
`--line-mb` MB of ASCII words (no line breaks), and 40 short lines so both splits have documents;
then prepares it with `--tokenizer bytes` once per `--batch-mb`, in a fresh subprocess each, and
records that process's peak resident set size (its own `wait4` rusage), exit status, wall time and
last stderr line. Results are merged into `--out` under `--label` (e.g. "before" / "after" a change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_corpus(directory: Path, line_mb: float) -> int:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9))) for _ in range(5000)]
    block = " ".join(rng.choice(words) for _ in range(200_000))[: 1 << 20] + " "  # ~1 MiB of words
    target = int(line_mb * 1e6)
    path = directory / "long.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for i in range(40):
            out.write(json.dumps({"text": f"short document {i}: " + " ".join(rng.choices(words, k=200))}) + "\n")
        out.write('{"id": "long", "text": "')
        written = 0
        while written < target:
            piece = block[: target - written]
            out.write(piece)
            written += len(piece)
        out.write('"}\n')
    return path.stat().st_size


def run_once(corpus: Path, data_dir: Path, batch_mb: float) -> dict:
    cmd = [sys.executable, "-m", "research", "data", "prepare", str(corpus), "--tokenizer", "bytes",
           "--data-dir", str(data_dir), "--batch-mb", str(batch_mb)]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    return {"batch_mb": batch_mb, "exit_code": proc.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "wall_s": round(time.perf_counter() - started, 2), "last_stderr_line": lines[-1][:400] if lines else "",
            "traceback": any(line.startswith("Traceback") for line in lines)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--line-mb", type=float, default=200.0)
    parser.add_argument("--batch-mb", type=float, nargs="+", default=[4.0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="long-line-"))
    try:
        (work / "corpus").mkdir()
        size = write_corpus(work / "corpus", args.line_mb)
        runs = []
        for batch_mb in args.batch_mb:
            shutil.rmtree(work / "data", ignore_errors=True)
            runs.append(run_once(work / "corpus" / "long.jsonl", work / "data", batch_mb))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.label] = {"line_mb": args.line_mb, "corpus_bytes": size, "tokenizer": "bytes", "runs": runs,
                          "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
                          "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
