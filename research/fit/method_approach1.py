"""Chinchilla Approach 1 (Hoffmann et al. 2022 §3.1): the envelope of the loss over compute.

From finished runs' end points (default, research/fit/endpoint_envelope.py) or from training
curves (research/fit/envelope.py; refused for branch designs)."""

from __future__ import annotations

from research.errors import UserError
from research.fit.diagnostics import approach1_warnings
from research.fit.endpoint_envelope import fit_approach1_endpoints
from research.fit.envelope import fit_approach1, load_curves
from research.fit.method import FitInput, Method, allocation_lines, register
from research.records import Approach1Result


def fit(inp: FitInput) -> Approach1Result:
    return Approach1Result.from_json(_fit(inp), "the Approach 1 fit")


def _fit(inp: FitInput) -> dict:
    o, df = inp.options, inp.table.df
    if o.approach1_source == "endpoints":
        return fit_approach1_endpoints(df, inp.per_token, bootstrap=o.bootstrap, seed=o.seed, level=o.level,
                                       budgets=inp.budgets)
    if inp.table.sweep_dir is None:
        raise UserError("Approach 1 needs per-trial training curves: pass a sweep directory "
                        "(DIR with results.csv and trials/<trial>/metrics.jsonl)")
    curves = load_curves(inp.table.sweep_dir, df, inp.table.convention, smooth=o.smooth)
    return fit_approach1(curves, bootstrap=o.bootstrap, seed=o.seed, level=o.level, budgets=inp.budgets,
                         convention=inp.table.convention, per_token=inp.per_token)


def describe(r: Approach1Result) -> list[str]:
    if r.source == "endpoints":
        lines = [f"  envelope of end points: {r.n_envelope_points} grid points from {r.n_points} (N, D) points "
                 f"of {r.n_sizes} sizes ({r.n_edge_points_dropped} edge points dropped)"]
    else:
        lines = [f"  envelope of training curves: {r.n_envelope_points} points from {r.n_curves} curves "
                 f"({r.n_edge_points_dropped} edge points dropped)"]
    if r.estimator == "crossings":
        stair = f"; a line through the winners would give a = {r.staircase['a']:.3f}" if r.staircase else ""
        lines.append(f"  a from {r.n_crossings} crossings of neighbouring sizes (N_opt between the two "
                     f"sizes that tie){stair}")
    return allocation_lines("approach1", r) + lines


METHOD = register(Method("approach1", "Chinchilla Approach 1 (envelope of loss over compute)", fit,
                         annotate=lambda block, df, kaplan_df: approach1_warnings(block), describe=describe, allocation=True))
