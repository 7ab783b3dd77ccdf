"""A pytest plugin for benchmarks/test_suite_times.py: each test's CPU seconds, which a busy
machine inflates far less than its wall seconds.

    pytest -p benchmarks.pytest_cpu_times ...      (SCALING_CPU_TIMES_DIR: where to write)

Every process running tests (each xdist worker) appends one JSON line per test to
$SCALING_CPU_TIMES_DIR/cpu-<pid>.jsonl: its node id, wall seconds, and CPU seconds of the
process itself and of the child processes it waited for (`scaling ...` subprocesses, sweep
runners and their trials; Slurm jobs run under slurmd and are not counted).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ENV = "SCALING_CPU_TIMES_DIR"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0, w0 = os.times(), time.monotonic()
    yield
    t1, w1 = os.times(), time.monotonic()
    where = os.environ.get(ENV)
    if not where:
        return
    record = {"test": item.nodeid, "wall_s": round(w1 - w0, 2),
              "cpu_self_s": round(t1.user - t0.user + t1.system - t0.system, 2),
              "cpu_children_s": round(t1.children_user - t0.children_user + t1.children_system - t0.children_system, 2),
              "worker": os.environ.get("PYTEST_XDIST_WORKER", "main")}
    with open(Path(where) / f"cpu-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_cpu_times(where: Path) -> list[dict]:
    """Every record under `where`, most CPU first."""
    rows = [json.loads(line) for path in sorted(Path(where).glob("cpu-*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row["cpu_s"] = round(row["cpu_self_s"] + row["cpu_children_s"], 2)
    return sorted(rows, key=lambda r: -r["cpu_s"])
