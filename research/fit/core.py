"""Running the fits on a table (`run_fits`); fit.json is written by `research.fit.record`,
a sweep directory is fitted by `research.fit.sweep_fit.fit_sweep_dir`."""

from __future__ import annotations

import dataclasses
import math
import time
import typing

from research.errors import UserError
from research.fit.agreement import annotate
from research.fit.method import Approach1Source, FitInput, FitOptions, flops_per_token  # noqa: F401 (re-exported)
from research.fit.method_approach3 import MIN_POINTS_A3, SOLVERS, resolve_solver, run_approach3  # noqa: F401 (re-exported)
from research.fit.methods import METHODS, method
from research.fit.noise import seed_noise
from research.fit.sensitivity import sensitivity_report
from research.records import FitResult, SeedNoise, Skipped

APPROACH1_SOURCES = typing.get_args(Approach1Source)


def default_budgets(df) -> list[float]:
    """Budgets for bootstrap N_opt/D_opt intervals, by default within and near the fitted range: the
    data's decades and one beyond (always under 100x the largest budget, so the extrapolation warning
    of diagnostics.EXTRAPOLATION_DECADES_C is raised only for budgets asked for with --budgets)."""
    lo, hi = math.floor(math.log10(df["C"].min())), math.ceil(math.log10(df["C"].max()))
    return [10.0 ** k for k in range(lo, hi + 2)]


def predicted_rows_warnings(df) -> list[str]:
    """A table whose losses are partly a curve law's predictions (`scaling curves trunks-only`): the
    bootstrap resamples those rows as if each were measured, so every interval is too narrow."""
    if "predicted" not in df.columns or not df["predicted"].any():
        return []
    k = int(df["predicted"].sum())
    return [f"{k} of {len(df)} rows are a curve law's predictions (column source = predicted), not measurements: "
            "the bootstrap resamples them as if each were measured, so the intervals here are too narrow; compare "
            "this table's point estimates with the measured design's intervals"]


def run_fits(table, methods=None, options: FitOptions | None = None, *, kaplan_df=None, log=None, **settings) -> dict:
    """`fit_records`, as the JSON object fit.json holds (what the notebooks and tests read)."""
    return fit_records(table, methods, options, kaplan_df=kaplan_df, log=log, **settings).to_json()


def fit_records(table, methods=None, options: FitOptions | None = None, *, kaplan_df=None, log=None,
                **settings) -> FitResult:
    """Run `methods` (default: all, research.fit.methods.METHODS) on a loaded Table with `options`
    (or the FitOptions fields given as keywords), into a FitResult (research.records). With
    options.strict False an approach the data cannot support is recorded as Skipped(reason); with
    strict it raises UserError. `kaplan_df`: the table with N = non-embedding parameters, for the
    Kaplan fits. `options.solver` picks the Approach-3 solver
    (research.fit.method_approach3.resolve_solver); `options.sensitivity` adds the sensitivity block
    (research/fit/sensitivity.py) after an Approach-3 fit."""
    options = options or FitOptions()
    if settings:
        options = dataclasses.replace(options, **settings)  # a misspelt setting is a TypeError, not ignored
    df = table.df
    if len(df) == 0:
        raise UserError(f"{table.source}: no usable rows to fit ({table.drop_message()}); every row needs positive, "
                        "finite N, D, loss and FLOPs (and status 'completed' when there is a status column)")
    names = list(methods or METHODS)
    if options.approach1_source not in APPROACH1_SOURCES:
        raise UserError(f"approach1 source {options.approach1_source!r} is not one of {', '.join(APPROACH1_SOURCES)}")
    if options.approach1_source == "curves" and "approach1" in names and "kind" in df.columns \
            and (df["kind"] == "branch").any():
        raise UserError("--approach1-source curves: this is a branch design (cooldown branches start mid-way "
                        "from a trunk, so their training curves are not runs from scratch); use "
                        "--approach1-source endpoints")
    budgets = list(options.budgets) if options.budgets else default_budgets(df)
    out = FitResult(version=1, data=table.meta(), budgets_for_intervals=budgets)
    log = log or (lambda msg: None)
    inp = FitInput(table, options, budgets, kaplan_df)
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        log(f"{name}: fitting ({i + 1}/{len(names)}"
            + (f", {options.bootstrap} bootstrap resamples)" if options.bootstrap else ")"))
        try:
            rec = method(name).fit(inp)
            rec.seconds = time.perf_counter() - t0
            log(f"{name}: done in {rec.seconds:.1f}s")
            for w in rec.warnings:
                log(f"{name}: warning: {w}")
        except UserError as err:
            if options.strict:
                raise
            rec = Skipped(reason=str(err))
            log(f"{name}: skipped: {err}")
        out.set_method(name, rec)
    if options.sensitivity and out.fitted("approach3"):
        out.sensitivity = sensitivity_report(df, out.approach3, out.fitted("approach2"), inp.per_token,
                                             convention=table.convention,
                                             design_budgets=table.budget_source != table.columns.get("flops"),
                                             backend=options.backend, reduction=options.reduction, tol=options.tol)
        log(f"sensitivity: done in {out.sensitivity.seconds:.1f}s")
    out.noise = SeedNoise.from_json(seed_noise(df), "the seed noise")
    annotate(out, df, None if kaplan_df is None else kaplan_df.df)
    if out.sensitivity is not None:
        out.warnings += out.sensitivity.warnings
    out.warnings += predicted_rows_warnings(df)
    for w in out.warnings:
        log(f"warning: {w}")
    return out
