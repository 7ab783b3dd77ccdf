"""Benchmark: does variable projection reach the multi-start L-BFGS objective on every table the tests
and references hold? (The rule for making it the default, issue 21.)

Not a test. Runs both Approach-3 solvers (research/fit/varpro.py and the 4,500-start jax L-BFGS of
research/fit/approach3.py, tight tolerances, sum-reduced Huber) on:

* tests/data/sweep_small and tests/data/external_chinchilla_like.csv (the fixture tables);
* results/reference/*/results.csv that hold an Approach-3 fit (the committed references);
* the synthetic tables the tests draw (research.fit.synthetic.synthetic_table, seeds 0-4, and the
  243-run benchmark table), and the mean-reduced objective on two of them;

and writes results/bench/varpro_vs_lbfgs.json: per table both objectives (as each solver reports it,
and both evaluated by one stable log-sum-exp), their relative difference, and E, alpha, beta, a from
each, with the committed reference's numbers beside for the references.

    python benchmarks/varpro_vs_lbfgs.py [--out results/bench/varpro_vs_lbfgs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("E", "A", "B", "alpha", "beta", "a")
ULPS = 1e-14  # relative: float64 rounding of a sum of a few hundred Huber terms


def stable_objective(p: dict, lnN, lnD, lnL, w=None, delta=1e-3) -> float:
    """The Approach-3 objective at a result's (E, A, B, alpha, beta), evaluated the same way for both
    solvers: log-sum-exp of the three terms relative to their maximum (np.logaddexp), so no rounding of
    e + log(1 + e^(t - e)) at E -> 0 favours either (summed Huber, or mean with w = 1/n)."""
    lE = np.log(p["E"]) if p["E"] > 0 else -np.inf
    pred = np.logaddexp(np.logaddexp(np.log(p["A"]) - p["alpha"] * lnN, np.log(p["B"]) - p["beta"] * lnD), lE)
    r = np.abs(pred - lnL)
    w = np.ones_like(lnN) if w is None else w
    return float(np.sum(w * np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))))


def tables():
    from research.fit.data import load_table
    from research.fit.synthetic import synthetic_table

    out = [("tests/data/sweep_small", load_table(ROOT / "tests/data/sweep_small", quiet=True).df),
           ("tests/data/external_chinchilla_like.csv",
            load_table(ROOT / "tests/data/external_chinchilla_like.csv", "Model Size", "Training Tokens", "Loss",
                       "FLOPs", quiet=True).df)]
    for ref in sorted((ROOT / "results/reference").iterdir()):
        if (ref / "fit.json").exists() and "approach3" in json.loads((ref / "fit.json").read_text()):
            out.append((f"results/reference/{ref.name}", load_table(ref, quiet=True).df))
    for seed in range(5):
        df = synthetic_table(seed=seed)
        out.append((f"synthetic_table(seed={seed})", df.rename(columns={"loss": "L"})))
    df = synthetic_table(seed=0, noise=0.01, per_budget=27)
    out.append(("synthetic_table(seed=0, noise=0.01, per_budget=27) [243 runs]", df.rename(columns={"loss": "L"})))
    # the collapse-prone study design of tests/test_fit_warnings.py (E -> 0 over one decade of N)
    sys.path.insert(0, str(ROOT))
    from tests.test_fit_warnings import _study_like_table

    for seed in (101, 102, 103):
        out.append((f"tests/test_fit_warnings._study_like_table({seed})", _study_like_table(seed)[0]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "results/bench/varpro_vs_lbfgs.json"))
    args = ap.parse_args()

    from research.fit import approach3 as a3
    from research.fit import varpro

    rows = []
    for name, df in tables():
        for reduction in ("sum", "mean") if name.startswith("synthetic_table(seed=0") else ("sum",):
            N, D, L = (df[c].to_numpy(float) for c in ("N", "D", "L"))
            t0 = time.perf_counter()
            vp = varpro.fit_result(N, D, L, reduction=reduction, profile=False)
            t1 = time.perf_counter()
            lb = a3.fit_approach3(N, D, L, grid="full", reduction=reduction, tol="tight")
            t2 = time.perf_counter()
            lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
            w = np.full(len(N), 1.0 / len(N)) if reduction == "mean" else None
            sv, sl = stable_objective(vp, lnN, lnD, lnL, w), stable_objective(lb, lnN, lnD, lnL, w)
            row = {"table": name, "n_points": int(len(N)), "reduction": reduction,
                   "objective_varpro": vp["objective"], "objective_lbfgs": lb["objective"],
                   "stable_objective_varpro": sv, "stable_objective_lbfgs": sl,
                   "relative": (sv - sl) / sl,
                   "relative_as_reported": (vp["objective"] - lb["objective"]) / lb["objective"],
                   "varpro": {k: vp[k] for k in KEYS}, "lbfgs": {k: lb[k] for k in KEYS},
                   "seconds": {"varpro": t1 - t0, "lbfgs": t2 - t1}}
            ref = ROOT / name / "fit.json"
            if name.startswith("results/reference") and ref.exists():
                committed = json.loads(ref.read_text())["approach3"]
                row["committed"] = {k: committed.get(k) for k in (*KEYS, "objective")}
            rows.append(row)
            print(f"{name} [{reduction}]: varpro {sv:.12g}  lbfgs {sl:.12g}  rel {row['relative']:+.2e} "
                  f"(as reported {row['relative_as_reported']:+.2e})  a {vp['a']:.4f} / {lb['a']:.4f}", flush=True)
    worst = max(r["relative"] for r in rows)
    out = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
           "rule": f"varpro becomes the default only if stable_objective_varpro <= stable_objective_lbfgs * "
                   f"(1 + {ULPS:g}) on every table (a few ulps: the objective's own summation rounding); both "
                   "optima evaluated by the same stable log-sum-exp (stable_objective), since each solver's own "
                   "e-relative evaluation carries |e| * eps rounding at E -> 0",
           "worst_relative_excess": worst, "varpro_never_worse": bool(worst <= ULPS), "tables": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"worst relative excess of varpro over lbfgs: {worst:.3g}; wrote {args.out}")


if __name__ == "__main__":
    main()
