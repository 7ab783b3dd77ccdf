"""The loss-curve laws on the project's own small training runs: fit on some schedules, predict another.

Trains one shape (seq_len 128, batch 16, byte-level Shakespeare) under a constant, a cosine and
a WSD schedule with the same peak LR, seed and data order. The eval loss is logged every
`--eval-every` steps on a fixed eval set, and the training loss every step. Each law is
fitted to two schedules of one loss and predicts the third (every combination), scored as in
issue 20 over the held-out run's logged steps after warmup (or after --from-steps, which also
skips the early plateau of these short runs). Writes
results/bench/curves_own_runs_cpu2.json.

    python benchmarks/curves_own_runs.py [--steps 600] [--eval-every 20] [--dir /tmp/curve-runs]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
from pathlib import Path

import numpy as np

from research.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from research.curves.record import fit_curve_law
from research.curves.table import load_curves

SCHEDULES = ("constant", "cosine", "wsd")


def config(schedule: str, steps: int, eval_every: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(corpus="shakespeare", tokenizer="bytes"),
        model=ModelConfig(layers=1, d_model=32, heads=4, seq_len=128),
        train=dataclasses.replace(TrainConfig(), batch_size=16, steps=steps, lr=0.01, schedule=schedule,
                                  warmup_steps=steps // 20, min_lr_ratio=0.0, decay_fraction=0.2,
                                  eval_every=eval_every, eval_tokens=8192, log_every=1, checkpoint_every=10 * steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--dir", default="/tmp/curve-runs")
    ap.add_argument("--from-steps", type=int, nargs="+", default=[0, 200],
                    help="fit from these steps (0: from the end of warmup, the default of `scaling curves fit`)")
    ap.add_argument("--out", default="results/bench/curves_own_runs_cpu2.json")
    args = ap.parse_args()
    from research.train.loop import train

    root = Path(args.dir)
    for s in SCHEDULES:
        if not (root / "trials" / s / "summary.json").exists():
            train(config(s, args.steps, args.eval_every), root / "trials" / s, progress=False)
    results = []
    for loss_col, from_step in itertools.product(("eval_loss", "loss"), args.from_steps):
        curves = load_curves(root, loss_col=loss_col).curves
        for law, fit_on in itertools.product(("multipower", "annealing"), itertools.combinations(SCHEDULES, 2)):
            if not any(curves[r].decays for r in fit_on):
                continue
            (held,) = [s for s in SCHEDULES if s not in fit_on]
            fitted = fit_curve_law(law, [curves[r] for r in fit_on], from_step=from_step or None)
            c = curves[held].after(max(from_step - 1, int(np.argmax(curves[held].lr_T)) + 1))
            err = np.abs(fitted.loss(c.sums, c.step_M) - c.loss_M) / c.loss_M
            final = float(fitted.loss(c.sums, np.array([c.lr_T.size]))[0])
            results.append({"loss": loss_col, "from_step": from_step or "end of warmup", "law": law, "fit_on": list(fit_on), "held_out": held,
                            "avg_rel_err": float(err.mean()), "max_rel_err": float(err.max()),
                            "final_pred": final, "final_measured": float(c.loss_M[-1]), "n_logged": int(c.step_M.size)})
            r = results[-1]
            print(f"{loss_col:9s} from {from_step:3d} {law:10s} fit {'+'.join(fit_on):16s} -> {held:8s}: avg {100 * r['avg_rel_err']:.3f}% "
                  f"max {100 * r['max_rel_err']:.3f}%; final {final:.4f} vs {r['final_measured']:.4f}", flush=True)
    record = {"benchmark": "curves_own_runs", "steps": args.steps, "eval_every": args.eval_every,
              "config": config("cosine", args.steps, args.eval_every).to_dict(),
              "machine": platform.machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
