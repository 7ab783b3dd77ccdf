"""Chinchilla Approach 2 (Hoffmann et al. 2022 §3.2): IsoFLOP profiles (research/fit/isoflop.py)."""

from __future__ import annotations

from research.fit.diagnostics import approach2_warnings
from research.fit.isoflop import fit_approach2
from research.fit.method import FitInput, Method, allocation_lines, register
from research.records import Approach2Result


def fit(inp: FitInput) -> Approach2Result:
    o, t = inp.options, inp.table
    return Approach2Result.from_json(
        fit_approach2(t.df, bootstrap=o.bootstrap, seed=o.seed, level=o.level, budgets=inp.budgets,
                      convention=t.convention, per_token=inp.per_token,
                      design_budgets=t.budget_source != t.columns.get("flops")), "the Approach 2 fit")


def describe(r: Approach2Result) -> list[str]:
    lines = allocation_lines("approach2", r) + [f"  slices: {r.slices or 'design budgets'}"]
    for g in r.budgets:
        lines.append(f"  C={g.flops:.3g}: N_opt={g.n_opt:.4g} D_opt={g.d_opt:.4g} "
                     f"loss={g.loss_opt:.4f} ({g.n_points} runs){_check_text(g.fit_check)}")
    for g in r.rejected_budgets:
        lines.append(f"  C={g.flops:.3g}: refused: {g.reason}")
    return lines


def _check_text(chk) -> str:
    if chk is None:
        return ""
    if not chk.tested:
        return "; 3 sizes: parabola untested"
    verdict = "fits its seed means within the noise" if chk.within_noise else "MISSES its seed means"
    return f"; {verdict} ({chk.test_text()})"


METHOD = register(Method("approach2", "Chinchilla Approach 2 (IsoFLOP profiles)", fit,
                         annotate=lambda block, df, kaplan_df: approach2_warnings(block, df),
                         describe=describe, allocation=True))
