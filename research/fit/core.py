"""Running the fits on a table (`run_fits`); fit.json is written by `research.fit.record`,
a sweep directory is fitted by `research.fit.sweep_fit.fit_sweep_dir`."""

from __future__ import annotations

import math
import time

from research.errors import UserError
from research.fit import approach3 as a3
from research.fit.allocation import SIX_N, allocation_params, compute_optimal, fit_flops_per_token, optimal_row
from research.fit.diagnostics import annotate
from research.fit.endpoint_envelope import fit_approach1_endpoints
from research.fit.envelope import fit_approach1, load_curves
from research.fit.isoflop import fit_approach2
from research.fit.kaplan import fit_kaplan
from research.fit.noise import seed_noise

METHODS = ("approach1", "approach2", "approach3", "kaplan")
MIN_POINTS_A3 = 8
APPROACH1_SOURCES = ("endpoints", "curves")


def default_budgets(df) -> list[float]:
    """Budgets for bootstrap N_opt/D_opt intervals: the data's decades, 100x beyond, and 5.76e23."""
    lo, hi = math.floor(math.log10(df["C"].min())), math.ceil(math.log10(df["C"].max()))
    return [10.0 ** k for k in range(lo, hi + 3)] + [5.76e23]


def flops_per_token(table):
    """The table's FLOPs-per-token relation f(N) = k·N^p in its convention (see allocation.py)."""
    if table.columns.get("flops") == "6*N*D":  # no real FLOPs column: the table only knows 6·N·D
        return SIX_N
    return fit_flops_per_token(table.df["N"], table.df["F"], table.df["D"], table.convention)


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


def run_fits(table, methods=None, *, bootstrap=0, seed=0, grid="full", reduction="sum", backend="jax", tol="tight",
             level=0.95, budgets=None, strict=False, kaplan_n="nonembedding", kaplan_df=None, smooth=5,
             approach1_source="endpoints", log=None) -> dict:
    """Run `methods` (default: all) on a loaded Table. With strict=False an approach the data cannot
    support is recorded as {"skipped": reason}; with strict=True it raises UserError.
    `approach1_source`: "endpoints" (finished runs' end points, research/fit/endpoint_envelope.py) or
    "curves" (training curves from metrics.jsonl, research/fit/envelope.py; refused for branch designs)."""
    df = table.df
    if len(df) == 0:
        raise UserError(f"{table.source}: no usable rows to fit ({table.drop_message()}); every row needs positive, "
                        "finite N, D, loss and FLOPs (and status 'completed' when there is a status column)")
    methods = list(methods or METHODS)
    if approach1_source not in APPROACH1_SOURCES:
        raise UserError(f"approach1 source {approach1_source!r} is not one of {', '.join(APPROACH1_SOURCES)}")
    if approach1_source == "curves" and "approach1" in methods and "kind" in df.columns \
            and (df["kind"] == "branch").any():
        raise UserError("--approach1-source curves: this is a branch design (cooldown branches start mid-way "
                        "from a trunk, so their training curves are not runs from scratch); use "
                        "--approach1-source endpoints")
    budgets = list(budgets) if budgets else default_budgets(df)
    out = {"version": 1, "data": table.meta(), "budgets_for_intervals": budgets}
    log = log or (lambda msg: None)
    for m in methods:
        t0 = time.perf_counter()
        try:
            if m == "approach3":
                out[m] = run_approach3(df, bootstrap=bootstrap, seed=seed, grid=grid, reduction=reduction,
                                       backend=backend, level=level, budgets=budgets, tol=tol,
                                       per_token=flops_per_token(table))
            elif m == "approach2":
                out[m] = fit_approach2(df, bootstrap=bootstrap, seed=seed, level=level, budgets=budgets,
                                       convention=table.convention, per_token=flops_per_token(table),
                                       design_budgets=table.budget_source != table.columns.get("flops"))
            elif m == "approach1" and approach1_source == "endpoints":
                out[m] = fit_approach1_endpoints(df, flops_per_token(table), bootstrap=bootstrap, seed=seed,
                                                 level=level, budgets=budgets)
            elif m == "approach1":
                if table.sweep_dir is None:
                    raise UserError("Approach 1 needs per-trial training curves: pass a sweep directory "
                                    "(DIR with results.csv and trials/<trial>/metrics.jsonl)")
                curves = load_curves(table.sweep_dir, df, table.convention, smooth=smooth)
                out[m] = fit_approach1(curves, bootstrap=bootstrap, seed=seed, level=level, budgets=budgets,
                                       convention=table.convention)
            elif m == "kaplan":
                kdf = df if kaplan_df is None else kaplan_df.df
                out[m] = fit_kaplan(kdf["N"], kdf["D"], kdf["L"], n_kind=kaplan_n)
            else:
                raise UserError(f"unknown method {m!r}")
            out[m]["seconds"] = time.perf_counter() - t0
            log(f"{m}: done in {out[m]['seconds']:.1f}s")
            for w in out[m].get("warnings", []):
                log(f"{m}: warning: {w}")
        except UserError as err:
            if strict:
                raise
            out[m] = {"skipped": str(err)}
            log(f"{m}: skipped: {err}")
    out["noise"] = seed_noise(df)
    annotate(out, df, None if kaplan_df is None else kaplan_df.df)
    for w in out["warnings"]:
        log(f"warning: {w}")
    return out
