"""Running the fits on a table and writing `fit.json`; `fit_sweep_dir` for the sweep runner."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from research.errors import UserError
from research.fsutil import loads_json, read_regular_text

METHODS = ("approach1", "approach2", "approach3", "kaplan")
MIN_POINTS_A3 = 8
APPROACH1_SOURCES = ("endpoints", "curves")


def default_budgets(df) -> list[float]:
    """Budgets for bootstrap N_opt/D_opt intervals, by default within and near the fitted range: the
    data's decades and one beyond (always under 100x the largest budget, so the extrapolation warning
    of diagnostics.EXTRAPOLATION_DECADES_C is raised only for budgets asked for with --budgets)."""
    lo, hi = math.floor(math.log10(df["C"].min())), math.ceil(math.log10(df["C"].max()))
    return [10.0 ** k for k in range(lo, hi + 2)]


def flops_per_token(table):
    """The table's FLOPs-per-token relation f(N) = k·N^p in its convention (see allocation.py)."""
    from research.fit.allocation import SIX_N, fit_flops_per_token

    if table.columns.get("flops") == "6*N*D":  # no real FLOPs column: the table only knows 6·N·D
        return SIX_N
    return fit_flops_per_token(table.df["N"], table.df["F"], table.df["D"], table.convention)


SOLVERS = ("varpro", "lbfgs")


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
    from research.fit import approach3 as a3
    from research.fit import varpro
    from research.fit.allocation import SIX_N, allocation_params, compute_optimal, optimal_row

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


def run_fits(table, methods=None, *, bootstrap=0, seed=0, grid="full", reduction="sum", backend="jax", tol="tight",
             level=0.95, budgets=None, strict=False, kaplan_n="nonembedding", kaplan_df=None, smooth=5,
             approach1_source="endpoints", log=None, solver=None, sensitivity=True) -> dict:
    """Run `methods` (default: all) on a loaded Table. With strict=False an approach the data cannot
    support is recorded as {"skipped": reason}; with strict=True it raises UserError.
    `approach1_source`: "endpoints" (finished runs' end points, research/fit/endpoint_envelope.py) or
    "curves" (training curves from metrics.jsonl, research/fit/envelope.py; refused for branch designs).
    `sensitivity`: add the sensitivity block (research/fit/sensitivity.py) after an Approach-3 fit."""
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
    for i, m in enumerate(methods):
        t0 = time.perf_counter()
        log(f"{m}: fitting ({i + 1}/{len(methods)}" + (f", {bootstrap} bootstrap resamples)" if bootstrap else ")"))
        try:
            if m == "approach3":
                out[m] = run_approach3(df, bootstrap=bootstrap, seed=seed, grid=grid, reduction=reduction,
                                       backend=backend, level=level, budgets=budgets, tol=tol,
                                       per_token=flops_per_token(table), solver=solver)
            elif m == "approach2":
                from research.fit.isoflop import fit_approach2

                out[m] = fit_approach2(df, bootstrap=bootstrap, seed=seed, level=level, budgets=budgets,
                                       convention=table.convention, per_token=flops_per_token(table),
                                       design_budgets=table.budget_source != table.columns.get("flops"))
            elif m == "approach1" and approach1_source == "endpoints":
                from research.fit.endpoint_envelope import fit_approach1_endpoints

                out[m] = fit_approach1_endpoints(df, flops_per_token(table), bootstrap=bootstrap, seed=seed,
                                                 level=level, budgets=budgets)
            elif m == "approach1":
                from research.fit.envelope import fit_approach1, load_curves

                if table.sweep_dir is None:
                    raise UserError("Approach 1 needs per-trial training curves: pass a sweep directory "
                                    "(DIR with results.csv and trials/<trial>/metrics.jsonl)")
                curves = load_curves(table.sweep_dir, df, table.convention, smooth=smooth)
                out[m] = fit_approach1(curves, bootstrap=bootstrap, seed=seed, level=level, budgets=budgets,
                                       convention=table.convention)
            elif m == "kaplan":
                from research.fit.kaplan import fit_kaplan

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
    if sensitivity and "approach3" in out and "skipped" not in out["approach3"]:
        from research.fit.sensitivity import sensitivity_report

        out["sensitivity"] = sensitivity_report(df, out["approach3"], out.get("approach2"), flops_per_token(table),
                                                convention=table.convention,
                                                design_budgets=table.budget_source != table.columns.get("flops"),
                                                backend=backend, reduction=reduction, tol=tol)
        log(f"sensitivity: done in {out['sensitivity']['seconds']:.1f}s")
    from research.fit.diagnostics import annotate  # noise for intervals, reviewer warnings
    from research.fit.noise import seed_noise

    out["noise"] = seed_noise(df)
    annotate(out, df, None if kaplan_df is None else kaplan_df.df)
    out["warnings"] += (out.get("sensitivity") or {}).get("warnings", [])
    for w in out["warnings"]:
        log(f"warning: {w}")
    return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(o):
    """NaN/inf -> None so the file is strict JSON."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)) and not math.isfinite(float(o)):
        return None
    return o


def dumps(obj, **kw) -> str:
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_json_default))), **kw)


def write_fit(path, result: dict, merge=True) -> Path:
    """Write (merging into an existing file: methods not re-run are kept) atomically."""
    path = Path(path)
    data = {}
    if merge and path.exists():
        try:  # a device or directory at the path is refused, never read (/dev/zero never ends)
            data = loads_json(read_regular_text(path, "fit file"), f"fit file {path}")
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):  # not a fit record: replaced, as an unreadable one is
            data = {}
    data.update(result)
    if merge and "agreement" in result:  # compare every approach the merged file holds, not only this run's
        from research.fit.diagnostics import agreement

        data["agreement"] = agreement(data)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(dumps(data, indent=1))
    os.replace(tmp, path)
    return path


def fit_sweep_dir(path, *, bootstrap: int = 0, seed: int = 0, grid="full", quiet: bool = True,
                  holdout: str | None = None, holdout_bootstrap: int = 200, write: bool = True, **kw) -> dict:
    """Fit every approach the sweep directory's data supports and write DIR/fit.json (`write=False`:
    only return it, as the notebooks do: they never write into a sweep directory).

    Approaches without enough points are recorded as {"skipped": reason} instead of failing.
    `holdout` (e.g. "largest-budget"): also refit on the other runs (bootstrap: the larger of
    `bootstrap` and `holdout_bootstrap`, for prediction intervals) and check the held-out ones, under
    "extrapolation" (`research.fit.holdout`; {"skipped": reason} when it cannot).
    Returns the dict written."""
    from research.fit.data import load_table

    path = Path(path)
    table = load_table(path, quiet=quiet)
    kaplan_table = None
    if "n_params_nonembedding" in _columns(table):
        kaplan_table = load_table(path, n_kind="nonembedding", quiet=True)
    log = None if quiet else (lambda m: print(m, file=sys.stderr))
    result = run_fits(table, bootstrap=bootstrap, seed=seed, grid=grid, kaplan_df=kaplan_table,
                      kaplan_n="nonembedding" if kaplan_table is not None else "total", log=log, **kw)
    if holdout:
        from research.fit.holdout import holdout_or_skip

        kw = {k: v for k, v in kw.items() if k in ("reduction", "backend", "tol", "level", "solver")}
        result["extrapolation"] = holdout_or_skip(table, holdout, bootstrap=max(bootstrap, holdout_bootstrap),
                                                  seed=seed, grid=grid, log=log, allocation=True, **kw)
    if write:
        sweep_dir = table.sweep_dir or (path if path.is_dir() else path.parent)
        write_fit(sweep_dir / "fit.json", result, merge=False)
    return json.loads(dumps(result))


def _columns(table) -> list[str]:
    from research.fit.data import read_frame

    return list(read_frame(table.source).columns)
