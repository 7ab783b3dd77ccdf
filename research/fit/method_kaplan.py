"""Kaplan et al. 2020's forms L(N), L(D) and the joint L(N, D) (research/fit/kaplan.py), with N
counted as Kaplan did (non-embedding parameters) when the table has them."""

from __future__ import annotations

from research.errors import UserError
from research.fit.diagnostics import lack_of_fit_warnings, noise_and_range, usable
from research.fit.kaplan import fit_kaplan
from research.fit.method import FitInput, Law, Method, register

MIN_POINTS_KAPLAN = 5  # as fit_kaplan requires


def fit(inp: FitInput) -> dict:
    kdf = inp.table.df if inp.kaplan_table is None else inp.kaplan_table.df
    return fit_kaplan(kdf["N"], kdf["D"], kdf["L"], n_kind=inp.options.kaplan_n)


def annotate(block: dict, df, kaplan_df) -> list[str]:
    if not usable(block.get("L_ND")):
        return []
    kdf = df if kaplan_df is None else kaplan_df
    return noise_and_range(block["L_ND"], "kaplan", kdf, 4) + lack_of_fit_warnings(block["L_ND"]["noise"])


def describe(r: dict) -> list[str]:
    lines = [f"kaplan (N = {r['n_kind']}):"]
    for key, form in r["form"].items():
        block = r[key]
        if "skipped" in block:
            lines.append(f"  {key}: skipped: {block['skipped']}")
        else:
            lines.append(f"  {key} = {form}: " + ", ".join(f"{k}={v:.4g}" for k, v in block.items()
                                                           if isinstance(v, float)))
    return lines


def law(block: dict) -> Law:
    if not usable(block.get("L_ND")):
        raise UserError("kaplan result has no joint L(N, D) fit; re-run `scaling fit DIR --method kaplan`")
    n_kind = block.get("n_kind", "total")
    return Law("kaplan", block["L_ND"], "Kaplan joint L(N, D) fit", n_kind=n_kind,
               notes=(f"N is {n_kind} parameters, as the Kaplan fit counted them",))


METHOD = register(Method("kaplan", "Kaplan et al. 2020 (L(N), L(D), joint L(N, D))", fit, annotate=annotate,
                         describe=describe, law=law, min_train=MIN_POINTS_KAPLAN))
