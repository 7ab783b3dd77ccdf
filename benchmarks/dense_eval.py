"""What evaluating a trunk densely (every ~50 steps on the fixed eval set) costs in trial time.

A curve law fitted to every evaluated step wants trunks evaluated often. This trains the same
run (a study-cpu-like shape: seq_len 128, batch 16) with evaluations only at the end and with
evaluations every `--every` steps, for two eval-set sizes, alternating the variants so the
machine's load hits them alike, and records the wall time of each whole trial (process-internal:
init, compile, steps, evaluations, checkpoints, summary).

    python benchmarks/dense_eval.py [--steps 500] [--every 50] [--repeats 2]
        [--out results/bench/dense_eval_cpu2.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from research.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def config(steps: int, eval_every: int, eval_tokens: int, d_model: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(corpus="shakespeare", tokenizer="bytes"),
        model=ModelConfig(layers=max(1, d_model // 32 + 1), d_model=d_model, heads=max(1, d_model // 8), seq_len=128),
        train=dataclasses.replace(TrainConfig(), batch_size=16, steps=steps, lr=0.01, schedule="constant",
                                  warmup_steps=max(1, steps // 20), eval_every=eval_every, eval_tokens=eval_tokens,
                                  log_every=10, checkpoint_every=500))


def timed_run(cfg: RunConfig) -> dict:
    from research.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = train(cfg, Path(tmp) / "run", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        evals = sum(1 for line in open(Path(tmp) / "run" / "metrics.jsonl") if '"eval_loss"' in line)
    return {"wall_s": wall, "cpu_s": cpu, "summary_wall_time_s": summary["wall_time_s"], "evaluations": evals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, nargs="+", default=[65536, 16384])
    ap.add_argument("--out", default="results/bench/dense_eval_cpu2.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    timed_run(config(20, 10, 2048, args.d_model))  # warm the data cache and JAX
    cells = {}
    for _ in range(args.repeats):
        for tokens in args.eval_tokens:
            for every in (args.steps, args.every):  # evaluated at the end only / every `every` steps
                r = timed_run(config(args.steps, every, tokens, args.d_model))
                cells.setdefault((tokens, every), []).append(r)
                print(f"eval_tokens {tokens} every {every}: {r['wall_s']:.1f}s wall, {r['cpu_s']:.1f}s CPU "
                      f"({r['evaluations']} evaluations)", flush=True)
    rows = []
    for tokens in args.eval_tokens:
        sparse = statistics.median(r["wall_s"] for r in cells[(tokens, args.steps)])
        dense = statistics.median(r["wall_s"] for r in cells[(tokens, args.every)])
        cpu_sparse = statistics.median(r["cpu_s"] for r in cells[(tokens, args.steps)])
        cpu_dense = statistics.median(r["cpu_s"] for r in cells[(tokens, args.every)])
        rows.append({"eval_tokens": tokens, "eval_every": args.every, "steps": args.steps,
                     "trial_s_final_eval_only": sparse, "trial_s_dense": dense,
                     "overhead_fraction": (dense - sparse) / sparse,
                     "cpu_s_final_eval_only": cpu_sparse, "cpu_s_dense": cpu_dense,
                     "cpu_overhead_fraction": (cpu_dense - cpu_sparse) / cpu_sparse,
                     "runs": {"final_only": cells[(tokens, args.steps)], "dense": cells[(tokens, args.every)]}})
        print(f"eval_tokens {tokens}: every {args.every} steps costs {100 * (dense - sparse) / sparse:+.1f}% "
              f"of the trial's wall time ({sparse:.1f}s -> {dense:.1f}s), "
              f"{100 * (cpu_dense - cpu_sparse) / cpu_sparse:+.1f}% of its CPU time")
    record = {"benchmark": "dense_eval", "d_model": args.d_model, "seq_len": 128, "batch_size": 16,
              "machine": platform.machine(), "cpus": os.cpu_count(), "load_before": load_before,
              "load_after": os.getloadavg(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
