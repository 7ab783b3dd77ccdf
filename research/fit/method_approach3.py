"""Chinchilla Approach 3 (Hoffmann et al. 2022 §3.3): fit L(N, D) = E + A/N^alpha + B/D^beta
(research/fit/approach3.py: Huber loss in log space, L-BFGS from a grid of starts), and the
compute-optimal allocation it implies."""

from __future__ import annotations

import time

from research.errors import UserError
from research.fit import approach3 as a3
from research.fit.allocation import SIX_N, allocation_params, compute_optimal, optimal_row
from research.fit.diagnostics import approach3_warnings, noise_and_range
from research.fit.method import FitInput, Law, Method, param_lines, register

MIN_POINTS_A3 = 8


def run_approach3(df, *, bootstrap=0, seed=0, grid="full", reduction="sum", backend="jax", level=0.95,
                  budgets=(), bootstrap_starts=8, tol="tight", per_token=None, shared_seeds=True):
    """Approach 3; its optimum is computed in the convention of the budgets (`per_token`, default 6n).
    `shared_seeds`: the bootstrap draws a size's seeds once per resample (approach3.bootstrap_weights)."""
    per_token = per_token or SIX_N

    n = len(df)
    if n < MIN_POINTS_A3 or df["N"].nunique() < 3 or df["D"].nunique() < 3:
        raise UserError(f"Approach 3 needs >= {MIN_POINTS_A3} runs spanning >= 3 sizes and >= 3 token counts; "
                        f"got {n} runs, {df['N'].nunique()} sizes, {df['D'].nunique()} token counts")
    res = a3.fit_approach3(df["N"], df["D"], df["L"], grid=grid, reduction=reduction, backend=backend,
                           n_optima=bootstrap_starts, tol=tol)
    optima = res.pop("_optima")
    res.update({k: float(v) for k, v in allocation_params(res["A"], res["B"], res["alpha"], res["beta"],
                                                              per_token).items()})
    res["flops_convention"] = per_token.convention
    res["flops_per_token"] = per_token.to_dict()
    res["optimal_convention"] = (f"{per_token.describe()}: N_opt = G*(C/k)^a with a = beta/(alpha + p*beta), "
                                 "D_opt = C/(k*N_opt^p)")
    res["optimal"] = [optimal_row(c, *compute_optimal(res["A"], res["B"], res["alpha"], res["beta"], c, per_token),
                                  per_token.convention) for c in budgets]
    if bootstrap:
        t0 = time.perf_counter()
        weights, resampling = a3.bootstrap_weights(df, bootstrap, seed, shared_seeds)
        thetas, _ = a3.bootstrap_approach3(df["N"], df["D"], df["L"], optima, n_resamples=bootstrap,
                                           seed=seed, reduction=reduction, backend=backend, tol=tol,
                                           weights=weights)
        bs = a3.summarize_bootstrap(thetas, level, budgets, per_token)
        bs.update(n_resamples=int(bootstrap), seed=seed, seconds=time.perf_counter() - t0,
                  resampling=resampling,
                  starts=f"each resample refitted from the {len(optima)} best distinct local optima "
                         "of the full-data grid fit")
        res["bootstrap"] = bs
    return res


def fit(inp: FitInput) -> dict:
    o = inp.options
    return run_approach3(inp.table.df, bootstrap=o.bootstrap, seed=o.seed, grid=o.grid, reduction=o.reduction,
                         backend=o.backend, level=o.level, budgets=inp.budgets, tol=o.tol, per_token=inp.per_token)


def annotate(block: dict, df, kaplan_df) -> list[str]:
    return noise_and_range(block, "chinchilla", df, 5) + approach3_warnings(block, df)


def describe(r: dict) -> list[str]:
    return [f"approach3: L(N, D) = E + A/N^alpha + B/D^beta  ({r['n_points']} runs, {r['n_starts']} starts, "
            f"{r['reduction']}-reduced Huber delta={r['delta']:g}, objective {r['objective']:.6g})",
            *param_lines(r, ("E", "A", "B", "alpha", "beta", "a", "b", "G"))]


def law(block: dict) -> Law:
    return Law("chinchilla", block, "Approach 3 fit")


METHOD = register(Method("approach3", "Chinchilla Approach 3 (parametric L(N, D))", fit, annotate=annotate,
                         describe=describe, allocation=True, law=law, min_train=MIN_POINTS_A3,
                         figures=("approach3_contours", "residuals")))
