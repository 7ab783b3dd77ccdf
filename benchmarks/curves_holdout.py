"""Held-out schedule error of the loss-curve laws on curves with a known truth, and fit time.

For each scenario: curves of five schedules (constant, cosine, WSD 20% 1-sqrt, WSD 10% linear,
cosine to half the horizon) drawn from a law with AR(1) noise; each law is fitted on some of
them and predicts the others. Reported as in issue 20: the mean over held-out curves of each
curve's mean |pred - meas| / meas over its logged steps ("avg"), and of each curve's largest
("worst"), against the noisy measurements and against the noiseless truth, over all steps and
after warmup. Writes results/bench/curves_holdout.json.

A second part ("published_like") follows Luo et al.'s protocol: fitted on constant + cosine only,
predict a two-stage step schedule and WSD, over several noise draws, with the Multi-Power Law's
shape prior on and off; once with Luo et al.'s 400M fit as the truth (the prior's centre) and once
with a shape far from it (beta 1.8, gamma 0.3, C 0.5), where the prior can only hurt.

    python benchmarks/curves_holdout.py [--steps 20000] [--out results/bench/curves_holdout.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from research.curves.fitting import Curve, fit_law, relative_errors
from research.curves.record import CurveLaw, fit_curve_law
from research.curves.laws import ANNEALING, CurveSums, law_loss
from research.curves.synthetic import LUO_400M, SCHEDULE_SET, TRUTH, published_like_curves, synthetic_curves

ANNEALING_TRUTH = {"L0": 2.8, "A": 0.45, "alpha": 0.5, "C": 0.4, "lam": 0.999}


def curves(rows, col):
    frame = pd.DataFrame(rows)
    out = {}
    for name, f in frame.groupby("run", sort=False):
        m = f[col].notna()
        out[name] = Curve(name, f.lr.to_numpy(), f.step[m].to_numpy(), f[col][m].to_numpy(float))
    return out


def errors(law: CurveLaw, curve, after):
    c = curve.after(after) if after else curve
    err = np.abs(law.loss(c.sums, c.step_M) - c.loss_M) / c.loss_M
    return float(err.mean()), float(err.max())


def scenario(name, rows, fit_on, laws=("multipower", "annealing")):
    noisy, clean = curves(rows, "loss"), curves(rows, "true_loss")
    held = [n for n in noisy if n not in fit_on]
    out = {"scenario": name, "fit_on": list(fit_on), "held_out": held, "laws": {}}
    for law in laws:
        t0 = time.perf_counter()
        fit = fit_curve_law(law, [noisy[n] for n in fit_on])
        seconds = time.perf_counter() - t0
        res = {"fit_seconds": round(seconds, 2), "params": fit.params}
        for ref, data in (("measured", noisy), ("truth", clean)):
            for part, after in (("all_steps", 0), ("after_warmup", int(np.argmax(noisy[held[0]].lr_T)) + 1)):
                errs = np.array([errors(fit, data[n], after) for n in held])
                res[f"{ref}_{part}"] = {"avg": float(errs[:, 0].mean()), "worst": float(errs[:, 1].mean())}
        out["laws"][law] = res
        print(f"{name} {law}: fit {seconds:.1f}s; vs measured (after warmup) avg "
              f"{100 * res['measured_after_warmup']['avg']:.3f}% worst {100 * res['measured_after_warmup']['worst']:.3f}%;"
              f" vs truth avg {100 * res['truth_after_warmup']['avg']:.3f}% worst "
              f"{100 * res['truth_after_warmup']['worst']:.3f}%", flush=True)
    return out


def annealing_rows(steps, noise, seed):
    """The same schedules with the annealing law as the truth (a law the MPL does not contain)."""
    rows = synthetic_curves(steps=steps, noise=noise, seed=seed)
    frame = pd.DataFrame(rows)
    rng = np.random.default_rng(seed + 100)
    for name, f in frame.groupby("run", sort=False):
        lr = f.lr.to_numpy()
        clean = np.minimum(law_loss(ANNEALING, CurveSums.of(lr), f.step.to_numpy(), ANNEALING_TRUTH), np.log(32768))
        frame.loc[f.index, "true_loss"] = clean
        frame.loc[f.index, "loss"] = clean * (1 + noise * rng.standard_normal(clean.size))
    return frame.to_dict("records")


FAR_SHAPE = dict(LUO_400M, B=400.0, C=0.5, beta=1.8, gamma=0.3)


def published_like(truth_name, truth, steps, noise, seeds):
    """Fit constant + cosine, predict two-stage and WSD; per prior setting, the mean over draws of the
    held-out curves' avg and worst error against the noiseless truth."""
    out = {"truth": truth_name, "params": truth, "steps": steps, "noise": noise, "seeds": seeds, "prior": {}}
    for prior in (False, True):
        rows = []
        for seed in range(seeds):
            noisy, clean = published_like_curves(truth, steps=steps, noise=noise, seed=seed)
            fit = fit_law("multipower", [noisy["constant"], noisy["cosine"]], shape_prior=prior)
            errs = [relative_errors("multipower", fit.params, clean[n]) for n in ("two-stage", "wsd")]
            rows.append({"seed": seed, "beta": fit.params["beta"], "gamma": fit.params["gamma"], "C": fit.params["C"],
                         "avg": float(np.mean([e[0] for e in errs])), "worst": float(np.mean([e[1] for e in errs])),
                         "two_stage_worst": errs[0][1]})
        key = "on" if prior else "off"
        out["prior"][key] = {"avg": float(np.mean([r["avg"] for r in rows])),
                             "worst": float(np.mean([r["worst"] for r in rows])),
                             "worst_max_over_draws": float(max(r["worst"] for r in rows)), "draws": rows}
        print(f"published-like, truth {truth_name}, noise {100 * noise:.2f}%, prior {key}: avg "
              f"{100 * out['prior'][key]['avg']:.3f}%, worst {100 * out['prior'][key]['worst']:.3f}% "
              f"(largest draw {100 * out['prior'][key]['worst_max_over_draws']:.3f}%)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--out", default="results/bench/curves_holdout.json")
    ap.add_argument("--draws", type=int, default=6, help="noise draws per published-like case (default 6)")
    args = ap.parse_args()
    T = args.steps
    results = []
    base = synthetic_curves(steps=T, noise=0.003, rho=0.9, seed=0)
    results.append(scenario("mpl-truth, noise 0.3% AR(0.9), fit constant+cosine", base, ["constant", "cosine"]))
    results.append(scenario("mpl-truth, noise 0.3% AR(0.9), fit cosine+wsd-0.2", base, ["cosine", "wsd-0.2"]))
    hi_lr = synthetic_curves(steps=T, noise=0.01, rho=0.5, seed=1, peak_lr=1e-3,
                             truth=dict(TRUTH, B=120.0))
    results.append(scenario("mpl-truth, peak 1e-3, noise 1% AR(0.5), fit constant+cosine+wsd-0.2", hi_lr,
                            ["constant", "cosine", "wsd-0.2"]))
    results.append(scenario("annealing-truth, noise 0.3%, fit constant+cosine", annealing_rows(T, 0.003, 2),
                            ["constant", "cosine"]))
    published = [published_like(name, truth, 24000, noise, args.draws)
                 for name, truth in (("Luo et al. 400M", LUO_400M), ("far from the prior", FAR_SHAPE))
                 for noise in (0.001, 0.002)]
    record = {"benchmark": "curves_holdout", "steps": T, "schedules": list(SCHEDULE_SET), "truth_mpl": TRUTH,
              "truth_annealing": ANNEALING_TRUTH, "machine": platform.machine(), "python": platform.python_version(),
              "results": results, "published_like": published}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
