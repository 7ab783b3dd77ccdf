"""Kaplan et al. 2020's forms L(N), L(D) and the joint L(N, D) (research/fit/kaplan.py), with N
counted as Kaplan did (non-embedding parameters) when the table has them."""

from __future__ import annotations

from research.errors import UserError
from research.fit.diagnostics import lack_of_fit_warnings, noise_and_range
from research.fit.kaplan import fit_kaplan
from research.fit.method import FitInput, Law, Method, register
from research.records import KaplanResult

MIN_POINTS_KAPLAN = 5  # as fit_kaplan requires


def fit(inp: FitInput) -> KaplanResult:
    kdf = inp.table.df if inp.kaplan_table is None else inp.kaplan_table.df
    return KaplanResult.from_json(fit_kaplan(kdf["N"], kdf["D"], kdf["L"], n_kind=inp.options.kaplan_n),
                                  "the Kaplan fit")


def annotate(rec: KaplanResult, df, kaplan_df) -> list[str]:
    joint = rec.joint()
    if joint is None:
        return []
    kdf = df if kaplan_df is None else kaplan_df
    return noise_and_range(joint, "kaplan", kdf, 4) + lack_of_fit_warnings(joint.noise)


def describe(r: KaplanResult) -> list[str]:
    lines = [f"kaplan (N = {r.n_kind}):"]
    for key, form, block in r.forms():
        if block.skipped:
            lines.append(f"  {key}: skipped: {block.reason}")
        else:
            lines.append(f"  {key} = {form}: " + ", ".join(f"{k}={v:.4g}" for k, v in block.to_json().items()
                                                           if isinstance(v, float)))
    return lines


def law(rec: KaplanResult) -> Law:
    if rec.joint() is None:
        raise UserError("kaplan result has no joint L(N, D) fit; re-run `scaling fit DIR --method kaplan`")
    return Law("kaplan", rec.joint(), "Kaplan joint L(N, D) fit", n_kind=rec.n_kind,
               notes=(f"N is {rec.n_kind} parameters, as the Kaplan fit counted them",))


METHOD = register(Method("kaplan", "Kaplan et al. 2020 (L(N), L(D), joint L(N, D))", fit, annotate=annotate,
                         describe=describe, law=law, min_train=MIN_POINTS_KAPLAN))
