"""Benchmark: the test suite's wall time and its slowest tests.

Not a test. Runs `pytest -q --durations=N` (plus any extra pytest arguments, e.g. `-n 2`) from
the repository root, or reads the output of such a run from --log, and records the summary
line's counts, the wall time, the machine's load average before and after (a contended
machine inflates every number) and the N slowest setup/call/teardown phases. A run it starts
also records each test's CPU seconds (benchmarks/pytest_cpu_times.py; with --log, give the
plugin's directory as --cpu-times): the total, and the N tests that took most, which a busy
machine inflates far less than wall times.

    python benchmarks/test_suite_times.py --tag after [--durations 40] [-- -n 2]
    python benchmarks/test_suite_times.py --tag before --log pytest-output.txt [--cpu-times DIR]

Writes (or adds the tag to) results/bench/test_suite_times.json. With --write-durations it also
rewrites tests/durations.json, each test's wall seconds (those of a second or more) from the CPU-time
records: tests/conftest.py hands the longest tests to the xdist workers first from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.pytest_cpu_times import ENV as CPU_TIMES_ENV, read_cpu_times  # noqa: E402
OUT = REPO / "results" / "bench" / "test_suite_times.json"
DURATIONS = REPO / "tests" / "durations.json"
MIN_LISTED_S = 1.0  # shorter tests take conftest's default
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S.*)$")
_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|warnings?)")
_WALL = re.compile(r" in (\d+(?:\.\d+)?)s")


def parse(text: str) -> dict:
    """The durations table and the summary line of pytest's output."""
    slowest = [{"seconds": float(m[1]), "phase": m[2], "test": m[3].strip()}
               for m in map(_DURATION.match, text.splitlines()) if m]
    summary = next((line for line in reversed(text.splitlines()) if _WALL.search(line) and _SUMMARY.search(line)), "")
    counts = {kind.rstrip("s") if kind != "errors" else "error": int(n) for n, kind in _SUMMARY.findall(summary)}
    wall = _WALL.search(summary)
    return {"summary": summary.strip("= "), "counts": counts, "pytest_wall_s": float(wall[1]) if wall else None,
            "slowest": slowest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", required=True, help="the key this run is recorded under (e.g. before, after)")
    ap.add_argument("--durations", type=int, default=40)
    ap.add_argument("--log", type=Path, help="read a finished run's pytest output instead of running")
    ap.add_argument("--note", default="", help="recorded as is (say whether the machine was contended)")
    ap.add_argument("--cpu-times", type=Path, help="with --log: the directory benchmarks/pytest_cpu_times.py wrote")
    ap.add_argument("--load", default="", help="with --log: the load averages seen during that run (recorded as is)")
    ap.add_argument("--write-durations", action="store_true",
                    help="rewrite tests/durations.json from this run's per-test wall seconds")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = ap.parse_args()
    record = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "note": args.note}
    cpu_dir = args.cpu_times
    if args.log:
        text = args.log.read_text(errors="replace")
        record["command"] = f"(from {args.log.name})"
        if args.load:
            record["load"] = args.load
    else:
        cpu_dir = Path(tempfile.mkdtemp(prefix="cpu-times-"))
        cmd = [sys.executable, "-m", "pytest", "-q", f"--durations={args.durations}", "-p", "benchmarks.pytest_cpu_times",
               *args.pytest_args]
        record["command"] = " ".join(["pytest", *cmd[3:]])
        record["load_before"] = os.getloadavg()
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, **{CPU_TIMES_ENV: str(cpu_dir)}))
        record["wall_s"] = round(time.monotonic() - t0, 1)
        record["load_after"] = os.getloadavg()
        text = proc.stdout + proc.stderr
    record.update(parse(text))
    if cpu_dir is not None:
        rows = read_cpu_times(cpu_dir)
        record["cpu_s_total"] = round(sum(r["cpu_s"] for r in rows), 1)
        record["cpu_tests"] = len(rows)
        record["most_cpu"] = [{k: r[k] for k in ("cpu_s", "cpu_self_s", "cpu_children_s", "wall_s", "test")}
                              for r in rows[:args.durations]]
        if args.write_durations:
            durations = {r["test"]: round(r["wall_s"], 1) for r in sorted(rows, key=lambda r: r["test"])
                         if r["wall_s"] >= MIN_LISTED_S}
            DURATIONS.write_text(json.dumps(durations, indent=0) + "\n")
            print(f"{len(durations)} tests of {MIN_LISTED_S:g} s or more -> {DURATIONS}")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[args.tag] = record
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{args.tag}: {record['summary']}; {len(record['slowest'])} slowest phases -> {OUT}")


if __name__ == "__main__":
    main()
