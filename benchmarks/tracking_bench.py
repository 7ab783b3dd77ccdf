"""What a tracker costs the training loop: seconds per metrics row on the host, per sink.

    python benchmarks/tracking_bench.py [--rows 2000] [--out results/bench/tracking_overhead.json]

Each sink (W&B in offline mode, TensorBoard) is opened in a temporary directory and fed
rows shaped like the loop's (step, tokens, FLOPs in both conventions, lr, loss, grad_norm,
tokens_per_s, wall_time_s); the time of `log_row` calls is what the loop pays per logged
step (the trackers write in background threads/processes). Open and close are timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.config import LoggingConfig, WandbConfig  # noqa: E402
from research.train.tracking import Tracking, sinks_for  # noqa: E402


def row(step: int) -> dict:
    tokens = step * 4096
    return {"step": step, "tokens": tokens, "flops_6n": 6.0 * 1e6 * tokens, "flops_chinchilla": 6.3e6 * tokens,
            "lr": 1e-3, "loss": 3.0 + 1.0 / step, "grad_norm": 0.5, "tokens_per_s": 1.2e5, "wall_time_s": 0.01 * step}


def measure(logging: LoggingConfig, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tracking = Tracking(sinks_for(logging, run_name="bench", group=None, job_type="bench")).open(Path(tmp), {}, 0)
        t1 = time.perf_counter()
        for step in range(1, rows + 1):
            tracking.log_row(step, row(step))
        t2 = time.perf_counter()
        tracking.close()
        t3 = time.perf_counter()
        assert tracking.sinks == [], "close() did not finish the sinks"
    return {"open_s": t1 - t0, "per_row_s": (t2 - t1) / rows, "close_s": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--out", default="results/bench/tracking_overhead.json")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    results = {
        "tensorboard": measure(LoggingConfig(tensorboard=True), args.rows),
        "wandb_offline": measure(LoggingConfig(wandb=WandbConfig(project="bench")), args.rows),
    }
    record = {"rows": args.rows, "host": platform.node(), "cpus": os.cpu_count(),
              "load_average_1m": os.getloadavg()[0],  # > cpus: the numbers are inflated by other work
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for name, r in results.items():
        print(f"{name:14} open {r['open_s']:.2f} s, {r['per_row_s'] * 1e6:.0f} us per row, close {r['close_s']:.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
