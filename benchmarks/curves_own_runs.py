"""The loss-curve laws on the project's own small training runs: fit on some schedules, predict another.

Trains one shape (seq_len 128, batch 16, byte-level Shakespeare) under a constant, a cosine and
a WSD schedule with the same peak LR, seed and data order. The eval loss is logged every
`--eval-every` steps on a fixed eval set, and the training loss every step. Each law is
fitted to two schedules of one loss and predicts the third (every combination), scored as in
issue 20 over the held-out run's logged steps after warmup (or after --from-steps, which also
skips the early plateau of these short runs). Writes
results/bench/curves_own_runs_cpu2.json.

With `--sweeps DIR ...` it scores instead the issue's goal on finished branch sweeps (read
only): leave one branch out, fit the law to its trunk and the trunk's other branches, predict
the held-out branch's final eval loss (`final_eval_loss` of results.csv). Variants differ in
what the fit sees:
    source   eval: the logged eval losses (sparse in a sweep: every eval_every steps and each
             run's end); train: the training loss of single batches, every log_every steps, its
             prediction moved onto the eval set by the median log gap between the fitting runs'
             eval losses and the law; train+eval: both, each eval point weighted against a
             training-loss point by its tokens (eval_tokens / (batch x seq_len), the inverse
             ratio of their noise variances), or equally (weight 1); dense: the eval set's prefix
             evaluated every eval_every steps (sweeps with [train] dense_eval_tokens), moved onto
             the whole set like train, by the fitting runs' final evaluations.
    from     warmup: each run's steps after its warmup (the default of `scaling curves fit`);
             plateau: from the step the trunk's training loss leaves its early plateau
             (research.curves.fitting.plateau_exit_step, fraction 0.2).
The seed noise is the spread of the two seeds' final eval losses at the same (N, D):
|L_seed0 - L_seed1| / sqrt(2), averaged over points. The JSON keeps the schedule runs'
results and adds the sweeps' under "leave_one_branch_out".

    python benchmarks/curves_own_runs.py [--steps 600] [--eval-every 20] [--dir /tmp/curve-runs]
    python benchmarks/curves_own_runs.py --sweeps /work/runs/demo /work/runs/study-ref [--variants ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from research.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from research.curves.anchor import anchored_for_size
from research.curves.fitting import plateau_exit_step
from research.curves.offsets import eval_log_gap
from research.curves.record import fit_curve_law
from research.curves.table import load_curves
from research.fit.data import read_frame
from research.fsutil import read_json

SCHEDULES = ("constant", "cosine", "wsd")


def config(schedule: str, steps: int, eval_every: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(corpus="shakespeare", tokenizer="bytes"),
        model=ModelConfig(layers=1, d_model=32, heads=4, seq_len=128),
        train=dataclasses.replace(TrainConfig(), batch_size=16, steps=steps, lr=0.01, schedule=schedule,
                                  warmup_steps=steps // 20, min_lr_ratio=0.0, decay_fraction=0.2,
                                  eval_every=eval_every, eval_tokens=8192, log_every=1, checkpoint_every=10 * steps))


# name: (source, from, eval weight)
VARIANTS = {
    "eval/warmup": ("eval", "warmup", None),
    "eval/plateau": ("eval", "plateau", None),
    "train/warmup": ("train", "warmup", None),
    "train/plateau": ("train", "plateau", None),
    "train+eval equal/plateau": ("train+eval", "plateau", 1.0),
    "train+eval by tokens/warmup": ("train+eval", "warmup", "tokens"),
    "train+eval by tokens/plateau": ("train+eval", "plateau", "tokens"),
    "dense/warmup": ("dense", "warmup", None),
    "dense/plateau": ("dense", "plateau", None),
    "anchored/train": ("anchored", "loss", None),
    "anchored/dense": ("anchored", "dense_eval_loss", None),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if not v.endswith("dense") and not v.startswith("dense")]  # dense: sweeps with [train] dense_eval_tokens


def seed_noise(frame) -> dict:
    """The run-to-run spread of the final eval loss: |L_a - L_b| / sqrt(2) over (N, D) points with two seeds."""
    spreads = [float(np.std(g.final_eval_loss, ddof=1)) for _, g in frame.groupby(["n_params", "steps"]) if len(g) >= 2]
    rel = [float(np.std(np.log(g.final_eval_loss), ddof=1)) for _, g in frame.groupby(["n_params", "steps"]) if len(g) >= 2]
    return {"points": len(spreads), "mean_nats": float(np.mean(spreads)), "rms_nats": float(np.sqrt(np.mean(np.square(spreads)))),
            "median_nats": float(np.median(spreads)), "mean_rel": float(np.mean(rel))}


def predict_branch(variant: str, trunk: str, others: list[str], held: str, ev: dict, tr: dict, eval_weight: float,
                   law: str = "multipower", dense: dict | None = None, dense_weight: float | None = None
                   ) -> tuple[float, int | None]:
    source, start, weight = VARIANTS[variant]
    runs = [trunk] + others
    if source == "anchored":  # the trunk's own logged curve as the level, the law for the drop only
        anchor = tr if start == "loss" else dense
        lineage = {r: trunk for r in runs}
        fitted = anchored_for_size(law, anchor, ev, lineage, runs, eval_weight if start == "loss" else dense_weight)
        target = ev[held]
        return float(fitted.loss(trunk, target.sums, np.array([target.lr_T.size]))[0]), None
    from_step = plateau_exit_step(tr[trunk]) if start == "plateau" else None
    if source == "eval":
        curves = [ev[r] for r in runs]
    elif source == "train":
        curves = [tr[r] for r in runs]
    elif source == "dense":
        curves = [dense[r] for r in runs]
    else:
        w = eval_weight if weight == "tokens" else float(weight)
        curves = [tr[r] for r in runs] + [dataclasses.replace(ev[r], run=f"{r}/eval", weight=w) for r in runs]
    fitted = fit_curve_law(law, [c for c in curves if c.step_M.size], from_step=from_step)
    target = ev[held]
    pred = float(fitted.loss(target.sums, np.array([target.lr_T.size]))[0])
    if source in ("train", "dense"):  # onto the eval set: the median log gap of the fitting runs' eval losses
        pred *= math.exp(eval_log_gap(fitted, [ev[r] for r in runs], from_step=from_step))
    return pred, from_step


def held_out(group, every: int) -> set[str]:
    """The branches of one trunk to hold out in turn: every `every`-th by horizon from the shortest,
    and always the longest (a deterministic subsample when `every` > 1)."""
    order = group.sort_values("steps")
    picked = set(order.trial.iloc[::every].astype(str)) | {str(order.trial.iloc[-1])}
    return picked


def leave_one_branch_out(sweep: Path, variants: list[str], every: int = 1) -> dict:
    frame = read_frame(sweep / "results.csv")
    frame = frame[(frame["kind"].astype(str) == "branch") & (frame["status"].astype(str) == "completed")]
    t_start, cpu_start = time.perf_counter(), time.process_time()
    ev = load_curves(sweep, loss_col="eval_loss").curves
    tr = load_curves(sweep, loss_col="loss").curves
    dense = load_curves(sweep, loss_col="dense_eval_loss").curves if any("dense" in v for v in variants) else None
    config = (read_json(sweep / "trials" / str(frame.trial.iloc[0]) / "trial.json") or {})["config"]
    eval_weight = config["train"]["eval_tokens"] / (config["train"]["batch_size"] * config["model"]["seq_len"])
    dense_tokens = config["train"].get("dense_eval_tokens")
    dense_weight = config["train"]["eval_tokens"] / dense_tokens if dense_tokens else None  # full set over its prefix
    noise = seed_noise(frame)
    rows = []
    for trunk, group in frame.groupby("trunk"):
        horizons = sorted(group.steps)
        chosen = held_out(group, every)
        for r in group.itertuples():
            if str(r.trial) not in chosen:
                continue
            others = [str(t) for t in group.trial if t != r.trial]
            for v in variants:
                t0 = time.perf_counter()
                pred, from_step = predict_branch(v, str(trunk), others, str(r.trial), ev, tr, eval_weight, dense=dense,
                                                 dense_weight=dense_weight)
                where = "shortest" if r.steps == horizons[0] else "longest" if r.steps == horizons[-1] else "inside"
                rows.append({"variant": v, "trunk": str(trunk), "trial": str(r.trial), "n_params": int(r.n_params),
                             "steps": int(r.steps), "horizon": where, "from_step": from_step,
                             "pred": pred, "measured": float(r.final_eval_loss), "seconds": time.perf_counter() - t0})
        print(f"{sweep.name}: trunk {trunk} done", flush=True)
    summary = summarise(rows, noise, variants, sweep.name)
    return {"sweep": str(sweep), "held_out_every": every, "n_branches": int(len(frame)),
            "wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start,
            "goal": "RMS over held-out branches of (predicted - measured final eval loss) <= the seed noise's RMS",
            "eval_weight_tokens": eval_weight, "seed_noise": noise, "summary": summary, "rows": rows}


def _errors(rows, noise: dict) -> dict:
    err = np.array([x["pred"] - x["measured"] for x in rows])
    rel = np.abs(err) / np.array([x["measured"] for x in rows])
    rms = float(np.sqrt(np.mean(err ** 2)))
    return {"n": len(rows), "mean_abs_rel_err": float(rel.mean()), "median_abs_rel_err": float(np.median(rel)),
            "mean_abs_err_nats": float(np.abs(err).mean()), "median_abs_err_nats": float(np.median(np.abs(err))),
            "bias_nats": float(err.mean()), "rms_err_nats": rms, "rms_err_over_seed_noise": rms / noise["rms_nats"],
            "goal_met": bool(rms <= noise["rms_nats"]),
            "mean_abs_err_over_seed_noise": float(np.abs(err).mean() / noise["mean_nats"]),
            "within_seed_noise": float(np.mean(np.abs(err) <= noise["mean_nats"]))}


def summarise(rows: list[dict], noise: dict, variants, name: str) -> dict:
    """Per variant: the errors over every held-out branch, and apart those inside a trunk's horizons
    (interpolated) and at its shortest or longest (extrapolated)."""
    summary = {}
    for v in variants:
        mine = [x for x in rows if x["variant"] == v]
        if not mine:
            continue
        s_ = summary[v] = _errors(mine, noise)
        for part, keep in (("inside", ("inside",)), ("ends", ("shortest", "longest")), ("shortest", ("shortest",)),
                           ("longest", ("longest",))):
            sel = [x for x in mine if x["horizon"] in keep]
            s_[part] = _errors(sel, noise) if sel else None
            s_[f"mean_abs_rel_err_{part}"] = s_[part]["mean_abs_rel_err"] if sel else None
        ins, ends = s_["inside"] or {}, s_["ends"] or {}
        print(f"{name} {v:30s}: RMS err {s_['rms_err_nats']:.4f} nats = {s_['rms_err_over_seed_noise']:.1f}x the seed "
              f"noise (goal {'met' if s_['goal_met'] else 'not met'}); mean |err| {100 * s_['mean_abs_rel_err']:.2f}%; "
              f"inside {100 * ins.get('mean_abs_rel_err', math.nan):.2f}% ({ins.get('rms_err_over_seed_noise', math.nan):.1f}x), "
              f"shortest/longest {100 * ends.get('mean_abs_rel_err', math.nan):.2f}% "
              f"({ends.get('rms_err_over_seed_noise', math.nan):.1f}x)", flush=True)
    return summary


def dump(record: dict) -> str:
    """JSON with indent 1, each leave-one-branch-out row on one line (the file stays small)."""
    rows = {}
    shallow = json.loads(json.dumps(record))
    for name, result in shallow.get("leave_one_branch_out", {}).items():
        for i, row in enumerate(result["rows"]):
            key = f"@row {name} {i}"
            rows[json.dumps(key)] = json.dumps(row, separators=(",", ":"))
            result["rows"][i] = key
    text = json.dumps(shallow, indent=1)
    for key, row in rows.items():
        text = text.replace(key, row, 1)
    return text + "\n"


def sweeps_main(args) -> None:
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {"benchmark": "curves_own_runs"}
    done = record.setdefault("leave_one_branch_out", {})
    if args.summarise_only:  # the stored rows summarised again (e.g. after a change to the summary)
        for name, result in done.items():
            result["summary"] = summarise(result["rows"], result["seed_noise"], list(VARIANTS), name)
        out.write_text(dump(record))
        print(f"wrote {out}")
        return
    for sweep in args.sweeps:
        result = leave_one_branch_out(Path(sweep), args.variants, args.every)
        name = Path(sweep).name
        if name in done:  # keep variants measured before (e.g. the previous default) beside the new ones
            done[name]["summary"].update(result["summary"])
            done[name]["rows"] = [r for r in done[name]["rows"] if r["variant"] not in args.variants] + result["rows"]
            done[name]["seed_noise"] = result["seed_noise"]
        else:
            done[name] = result
        out.write_text(dump(record))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--dir", default="/tmp/curve-runs")
    ap.add_argument("--from-steps", type=int, nargs="+", default=[0, 200],
                    help="fit from these steps (0: from the end of warmup, the default of `scaling curves fit`)")
    ap.add_argument("--out", default="results/bench/curves_own_runs_cpu2.json")
    ap.add_argument("--sweeps", nargs="+", default=None, help="finished branch sweeps: leave one branch out")
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                    help="what the fit sees (dense/*: the prefix evaluated every eval_every steps, for sweeps run "
                         "with [train] dense_eval_tokens)")
    ap.add_argument("--summarise-only", action="store_true",
                    help="summarise the stored leave-one-branch-out rows again, training nothing, fitting nothing")
    ap.add_argument("--every", type=int, default=1,
                    help="--sweeps: hold out every k-th branch of each trunk by horizon (and its longest); 1 = all")
    args = ap.parse_args()
    if args.sweeps or args.summarise_only:
        return sweeps_main(args)
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
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    record = {**old, "benchmark": "curves_own_runs", "steps": args.steps, "eval_every": args.eval_every,
              "config": config("cosine", args.steps, args.eval_every).to_dict(),
              "machine": platform.machine(), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(dump(record))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
