"""Chinchilla Approach 3 (Hoffmann et al. 2022 §3.3): fit L(N, D) = E + A/N^alpha + B/D^beta
(Huber loss in log space; solved by variable projection, research/fit/varpro.py, or by L-BFGS from a
grid of starts, research/fit/approach3.py), and the
compute-optimal allocation it implies."""

from __future__ import annotations

import time
import typing

import numpy as np

from research.errors import UserError
from research.fit import approach3 as a3
from research.fit import varpro
from research.fit.allocation import SIX_N, allocation_params, compute_optimal, optimal_row
from research.fit.diagnostics import approach3_warnings, noise_and_range
from research.fit.method import FitInput, Law, Method, Solver, param_lines, register
from research.records import Approach3Result

MIN_POINTS_A3 = 8


SOLVERS = typing.get_args(Solver)


def resolve_solver(solver: str | None, tol: str = "tight", grid="full") -> str:
    """The Approach-3 solver: varpro (default) unless asked for lbfgs, for scipy's L-BFGS stopping
    rules (tol="scipy", which only the L-BFGS solver has: it reproduces the published early stop) or
    for an explicit array of L-BFGS start points (`grid` not a named grid)."""
    if solver is None:
        return "lbfgs" if tol == "scipy" or not isinstance(grid, str) else "varpro"
    if solver not in SOLVERS:
        raise UserError(f"unknown Approach 3 solver {solver!r}; use one of {', '.join(SOLVERS)}")
    return solver


def run_approach3(df, *, bootstrap=0, seed=0, grid="full", reduction="sum", backend="jax", level=0.95,
                  budgets=(), bootstrap_starts=8, tol="tight", per_token=None, shared_seeds=True, solver=None):
    """Approach 3; its optimum is computed in the convention of the budgets (`per_token`, default 6n).
    `shared_seeds`: the bootstrap draws a size's seeds once per resample (approach3.bootstrap_weights).
    `solver`: "varpro" (research/fit/varpro.py; default) or "lbfgs" (the multi-start grid of
    research/fit/approach3.py; `grid`, `backend` and `tol` apply to it); the bootstrap uses the same."""
    per_token = per_token or SIX_N

    n = len(df)
    if n < MIN_POINTS_A3 or df["N"].nunique() < 3 or df["D"].nunique() < 3:
        raise UserError(f"Approach 3 needs >= {MIN_POINTS_A3} runs spanning >= 3 sizes and >= 3 token counts; "
                        f"got {n} runs, {df['N'].nunique()} sizes, {df['D'].nunique()} token counts")
    solver = resolve_solver(solver, tol, grid)
    if solver == "varpro":
        res = varpro.fit_result(df["N"], df["D"], df["L"], reduction=reduction)
    else:
        res = a3.fit_approach3(df["N"], df["D"], df["L"], grid=grid, reduction=reduction, backend=backend,
                               n_optima=bootstrap_starts, tol=tol)
        res["solver"] = "lbfgs"
    optima = res.pop("_optima")
    res["local_optima"] = np.asarray(optima).tolist()  # (ln A, ln B, ln E, alpha, beta): the refits' starts
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
        if solver == "varpro":
            thetas, _ = varpro.bootstrap(df["N"], df["D"], df["L"], optima, weights, reduction=reduction)
            starts = (f"each resample refitted by the same LM-IRLS solver in all five parameters from the "
                      f"{min(len(a3.distinct_optima(optima, np.arange(len(optima), dtype=float))), varpro.BOOTSTRAP_STARTS)}"
                      f" distinct polished optima of the full-data fit within {varpro.BOOTSTRAP_BASIN_FACTOR}x its objective")
        else:
            thetas, _ = a3.bootstrap_approach3(df["N"], df["D"], df["L"], optima, n_resamples=bootstrap,
                                               seed=seed, reduction=reduction, backend=backend, tol=tol,
                                               weights=weights)
            starts = f"each resample refitted from the {len(optima)} best distinct local optima of the full-data grid fit"
        bs = a3.summarize_bootstrap(thetas, level, budgets, per_token)
        bs.update(n_resamples=int(bootstrap), seed=seed, seconds=time.perf_counter() - t0,
                  resampling=resampling, solver=solver, starts=starts)
        res["bootstrap"] = bs
    return res


def fit(inp: FitInput) -> Approach3Result:
    o = inp.options
    return Approach3Result.from_json(
        run_approach3(inp.table.df, bootstrap=o.bootstrap, seed=o.seed, grid=o.grid, reduction=o.reduction,
                      backend=o.backend, level=o.level, budgets=inp.budgets, tol=o.tol, per_token=inp.per_token,
                      solver=o.solver), "the Approach 3 fit")


def annotate(rec: Approach3Result, df, kaplan_df) -> list[str]:
    return noise_and_range(rec, "chinchilla", df, 5) + approach3_warnings(rec, df)


def describe(r: Approach3Result) -> list[str]:
    how = f"{r.n_starts} starts" if r.n_starts is not None else f"variable projection, {r.grid_cells} grid cells"
    lines = [f"approach3: L(N, D) = E + A/N^alpha + B/D^beta  ({r.n_points} runs, {how}, "
             f"{r.reduction}-reduced Huber delta={r.delta:g}, objective {r.objective:.6g})",
             *param_lines(r, ("E", "A", "B", "alpha", "beta", "a", "b", "G"))]
    ar = r.profile.a_range if r.profile is not None else None
    if ar is not None and ar.low is not None:
        lines.append(f"  profile: a in [{ar.low:.4g}, {ar.high:.4g}] within the {ar.level:.0%} "
                     "profile-likelihood threshold (objective over (alpha, beta) and over E in fit.json 'profile')")
    return lines


def law(rec: Approach3Result) -> Law:
    return Law("chinchilla", rec, "Approach 3 fit")


METHOD = register(Method("approach3", "Chinchilla Approach 3 (parametric L(N, D))", fit, annotate=annotate,
                         describe=describe, allocation=True, law=law, min_train=MIN_POINTS_A3,
                         figures=("approach3_contours", "residuals")))
