"""What evaluating a trunk densely (every ~50 steps on the fixed eval set) costs in trial time.

A curve law fitted to every evaluated step wants trunks evaluated often. This trains a
demo-sized run (1 layer, d_model 32, seq_len 128, batch 16, constant LR) evaluated every
`--every` steps and logged every 10, and measures the cost two ways:

- whole trial: the same run trained again with no evaluation but the last (eval_every =
  steps), and the two trials' process CPU time and wall time compared:
      cost = (trial with dense evaluation - trial without) / trial with dense evaluation
  Compilation and the final full evaluation are in both. CPU time (all threads of the process)
  is the more robust of the two on a shared machine: another job's load stretches the wall
  time but not this process's CPU seconds.
- inside the run, from its own metrics.jsonl: each row carries the wall time, so the 10-step
  intervals that hold an evaluation can be set against those that do not:
      overhead = (median interval with an eval - median without) / (every / 10 * median without)

A short run first takes the process's one-off costs (loading the data, first compilations).
Each repeat (`--repeats`) runs the baseline and every setting in turn (interleaved, so that a
change in the machine's load touches them alike); the record gives each setting's medians. A
setting is EVAL_TOKENS, or EVAL_TOKENS:DENSE_EVAL_TOKENS for `[train] dense_eval_tokens` (the
evaluations before the last on a prefix of the eval set; the last on all of it).

Cost grows with the count of evaluations, so a run evaluated every 10 steps shows five times the
cost of one every 50, above the noise of whole-trial times on a loaded machine; the record scales
each setting's cost to every 50 steps.

    python benchmarks/dense_eval.py [--steps 1000] [--every 50 10] [--settings 65536:16384 65536:8192]
        [--repeats 3] [--out results/bench/dense_eval_demo_cpu2.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from research.config import DataConfig, ModelConfig, RunConfig, TrainConfig

LOG_EVERY = 10


def config(steps: int, eval_every: int, eval_tokens: int, d_model: int, dense: int | None = None) -> RunConfig:
    return RunConfig(
        data=DataConfig(corpus="shakespeare", tokenizer="bytes"),
        model=ModelConfig(layers=max(1, d_model // 32), d_model=d_model, heads=max(1, d_model // 8), seq_len=128),
        train=dataclasses.replace(TrainConfig(), batch_size=16, steps=steps, lr=0.01, schedule="constant",
                                  warmup_steps=max(1, steps // 20), eval_every=eval_every, eval_tokens=eval_tokens,
                                  dense_eval_tokens=dense, log_every=LOG_EVERY, checkpoint_every=10 * steps))


def measure(cfg: RunConfig, every: int) -> dict:
    from research.fsutil import read_jsonl
    from research.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        train(cfg, Path(tmp) / "run", progress=False)
        trial = {"trial_wall_s": time.perf_counter() - wall0, "trial_cpu_s": time.process_time() - cpu0}
        rows = [r for r in read_jsonl(Path(tmp) / "run" / "metrics.jsonl") if "wall_time_s" in r]
    if every >= cfg.train.steps:  # the baseline: no evaluation but the last
        return trial
    steps = cfg.train.steps
    with_eval, without = [], []
    for prev, row in zip(rows, rows[1:]):
        if prev["step"] < 2 * LOG_EVERY or row["step"] == steps or row["step"] - prev["step"] != LOG_EVERY:
            continue  # compilation, the final evaluation, irregular intervals
        (with_eval if row["step"] % every == 0 else without).append(row["wall_time_s"] - prev["wall_time_s"])
    if not with_eval or not without:  # every interval holds an evaluation (every <= LOG_EVERY): whole trial only
        return {**trial, "eval_s": None, "step_s": None, "overhead_fraction": None}
    plain = statistics.median(without)
    eval_s = statistics.median(with_eval) - plain
    return {**trial, "intervals_with_eval": len(with_eval), "intervals_without": len(without),
            "median_interval_s": plain, "eval_s": eval_s, "step_s": plain / LOG_EVERY,
            "overhead_fraction": eval_s / (every / LOG_EVERY * plain)}


def scaled_to_every_50(cost: float, every: int) -> float:
    """A cost measured as a share of the trial (E / (T + E)) at one evaluation every `every` steps, as
    the share it would be at one every 50: E scales with the count of evaluations, T does not."""
    extra = cost / (1.0 - cost) * every / 50  # E / T at every 50
    return extra / (1.0 + extra)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def setting(text: str) -> tuple[int, int | None]:
    full, _, dense = text.partition(":")
    return int(full), int(dense) if dense else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, nargs="+", default=[50, 10],
                    help="evaluate every this many steps; a denser setting than the goal's 50 magnifies the cost "
                         "above the noise of whole-trial times (the cost is proportional to the evaluations' count)")
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--settings", type=setting, nargs="+", default=[(65536, 16384), (65536, 8192)],
                    help="EVAL_TOKENS or EVAL_TOKENS:DENSE_EVAL_TOKENS, each measured in turn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/bench/dense_eval_demo_cpu2.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows, baselines = [], []
    measure(config(30, 30, 8192, args.d_model), 30)  # one-off costs of the process (data, first compilations)
    for repeat in range(args.repeats):
        base = measure(config(args.steps, args.steps, args.settings[0][0], args.d_model), args.steps)
        base.update(repeat=repeat, eval_tokens=args.settings[0][0], eval_every=args.steps)
        baselines.append(base)
        print(f"baseline (one evaluation, at the end): {base['trial_cpu_s']:.1f} CPU s, {base['trial_wall_s']:.1f} s wall",
              flush=True)
        for (tokens, dense), every in itertools.product(args.settings, args.every):
            r = measure(config(args.steps, every, tokens, args.d_model, dense), every)
            per_eval = dense or tokens
            r.update(repeat=repeat, eval_tokens=tokens, dense_eval_tokens=dense, eval_every=every,
                     forward_share_estimate=per_eval / (3 * every * 16 * 128),  # eval fwd vs train fwd+bwd
                     trial_cpu_cost=(r["trial_cpu_s"] - base["trial_cpu_s"]) / r["trial_cpu_s"],
                     trial_wall_cost=(r["trial_wall_s"] - base["trial_wall_s"]) / r["trial_wall_s"])
            rows.append(r)
            print(f"eval_tokens {tokens}, dense_eval_tokens {dense}, every {every} steps: "
                  f"{r['trial_cpu_s']:.1f} CPU s ({100 * r['trial_cpu_cost']:.1f}% more than the baseline's, as a share "
                  f"of this trial), {r['trial_wall_s']:.1f} s wall ({100 * r['trial_wall_cost']:.1f}%); inside the run "
                  f"{_pct(r['overhead_fraction'])} of training time (FLOP estimate "
                  f"{100 * r['forward_share_estimate']:.1f}%)", flush=True)
    summary = []
    for (tokens, dense), every in itertools.product(args.settings, args.every):
        mine = [r for r in rows if (r["eval_tokens"], r["dense_eval_tokens"], r["eval_every"]) == (tokens, dense, every)]
        cpu_cost = statistics.median(r["trial_cpu_cost"] for r in mine)
        summary.append({"eval_tokens": tokens, "dense_eval_tokens": dense, "eval_every": every,
                        "median_trial_cpu_cost": statistics.median(r["trial_cpu_cost"] for r in mine),
                        "median_trial_wall_cost": statistics.median(r["trial_wall_cost"] for r in mine),
                        "median_interval_overhead_fraction": _median(r["overhead_fraction"] for r in mine),
                        "median_eval_s": _median(r["eval_s"] for r in mine),
                        "forward_share_estimate": mine[0]["forward_share_estimate"],
                        "median_trial_cpu_cost_scaled_to_every_50": scaled_to_every_50(cpu_cost, every),
                        "goal_le_10pct_met_cpu": scaled_to_every_50(cpu_cost, every) <= 0.10})
        s_ = summary[-1]
        print(f"{tokens}:{dense} every {every}: median cost {100 * s_['median_trial_cpu_cost']:.1f}% of trial CPU "
              f"time, {100 * s_['median_trial_wall_cost']:.1f}% of trial wall time, "
              f"{_pct(s_['median_interval_overhead_fraction'])} inside the run; scaled to every 50 steps "
              f"{100 * s_['median_trial_cpu_cost_scaled_to_every_50']:.1f}% of trial CPU time")
    record = {"benchmark": "dense_eval", "d_model": args.d_model, "layers": max(1, args.d_model // 32), "seq_len": 128,
              "batch_size": 16, "steps": args.steps, "machine": platform.machine(), "cpus": os.cpu_count(),
              "load_before": load_before, "load_after": os.getloadavg(), "summary": summary,
              "baselines": baselines, "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
