"""Benchmark: Approach-3 fit and bootstrap, vectorised jax L-BFGS vs a plain scipy L-BFGS-B loop.

Not a test. Writes results/bench/fit_<tag>.json. The data is a synthetic Chinchilla-sized table
(9 budgets x 27 sizes = 243 runs, about as many as the ~240 digitised Chinchilla runs Epoch refit).
The scipy loop over all 4,500 starts (and over 1,000 resamples) takes too long to run in full on a
small machine, so it is timed on a random subset and scaled linearly by the number of L-BFGS runs;
the JSON records which numbers are measured and which are extrapolated.

    python benchmarks/fit_bench.py [--resamples 1000] [--scipy-starts 300] [--scipy-resamples 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--scipy-starts", type=int, default=300)
    ap.add_argument("--scipy-resamples", type=int, default=20)
    ap.add_argument("--tag", default=f"cpu{os.cpu_count()}")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import jax

    from research.fit import approach3 as a3
    from research.fit.synthetic import synthetic_table

    df = synthetic_table(seed=0, noise=0.01, per_budget=27)
    N, D, L = df.N.to_numpy(), df.D.to_numpy(), df.loss.to_numpy()
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    starts = a3.grid_starts("full")
    res = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                       "jax_backend": jax.default_backend()},
           "data": {"n_points": int(len(df)), "n_starts": int(len(starts))}}

    t0 = time.perf_counter()
    fit = a3.fit_approach3(N, D, L, grid="full")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = a3.fit_approach3(N, D, L, grid="full")
    warm = time.perf_counter() - t0
    res["jax_fit_4500_starts_s"] = {"first_call_incl_compile": first, "warm": warm}
    res["fit"] = {k: fit[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b", "objective")}
    print(f"jax full-grid fit: {first:.1f}s first call, {warm:.1f}s warm")

    rng = np.random.default_rng(0)
    sub = starts[rng.choice(len(starts), args.scipy_starts, replace=False)]
    t0 = time.perf_counter()
    xs, fs, _ = a3.solve_scipy(sub, lnN, lnD, lnL)
    t_sub = time.perf_counter() - t0
    xj, fj, _ = a3.solve_jax(sub, lnN, lnD, lnL)
    res["scipy_fit"] = {"measured_starts": args.scipy_starts, "measured_s": t_sub,
                        "extrapolated_4500_starts_s": t_sub * len(starts) / args.scipy_starts,
                        "best_objective_scipy_subset": float(np.min(fs)),
                        "best_objective_jax_same_subset": float(np.min(fj))}
    print(f"scipy loop: {t_sub:.1f}s for {args.scipy_starts} starts -> "
          f"{res['scipy_fit']['extrapolated_4500_starts_s']:.0f}s for 4,500 (extrapolated)")

    optima = fit["_optima"]
    t0 = time.perf_counter()
    th, _ = a3.bootstrap_approach3(N, D, L, optima, n_resamples=args.resamples, seed=0)
    t_bs = time.perf_counter() - t0
    iv = a3.summarize_bootstrap(th)["intervals"]
    res["jax_bootstrap"] = {"resamples": args.resamples, "starts_per_resample": int(len(optima)), "s": t_bs,
                            "intervals": {k: iv[k] for k in ("alpha", "beta", "E", "a")}}
    print(f"jax bootstrap: {t_bs:.1f}s for {args.resamples} resamples x {len(optima)} starts")

    W = a3.resample_weights(len(N), args.scipy_resamples, seed=1)
    t0 = time.perf_counter()
    a3.bootstrap_approach3(N, D, L, optima, weights=W, backend="scipy")
    t_sbs = time.perf_counter() - t0
    res["scipy_bootstrap"] = {"measured_resamples": args.scipy_resamples, "starts_per_resample": int(len(optima)),
                              "measured_s": t_sbs,
                              "extrapolated_s": t_sbs * args.resamples / args.scipy_resamples}
    print(f"scipy bootstrap: {t_sbs:.1f}s for {args.scipy_resamples} resamples -> "
          f"{res['scipy_bootstrap']['extrapolated_s']:.0f}s for {args.resamples} (extrapolated)")
    res["speedup"] = {"fit": res["scipy_fit"]["extrapolated_4500_starts_s"] / warm,
                      "bootstrap": res["scipy_bootstrap"]["extrapolated_s"] / t_bs}
    out = Path(args.out or Path(__file__).resolve().parents[1] / "results" / "bench" / f"fit_{args.tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
