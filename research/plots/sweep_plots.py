"""Every figure of a sweep directory (`plot_sweep_dir`), from its fit.json or lr_rule.json."""

from __future__ import annotations

import json
from pathlib import Path

from research.errors import UserError
from research.fit import fit_sweep_dir
from research.fit.data import load_table
from research.fit.envelope import load_curves
from research.fit.lr_sweep import fit_lr_sweep_dir
from research.fit.methods import METHODS
from research.fsutil import loads_json, read_regular_text
from research.plots import FORMATS
from research.plots import figures as F
from research.plots import lr_rule as R
from research.plots.extrapolation import add_warnings, extrapolation_figure, figure_warnings
from research.plots.profile import approach3_profile, has_profile
from research.plots.sensitivity import sensitivity_figure
from research.records import as_fit_result
from research.train.sweep_dir import SweepDir


def plot_sweep_dir(path, fit: dict | None = None, out_dir=None, formats=FORMATS, quiet=True) -> list[Path]:
    """Write DIR/plots/<figure>.{png,svg} for every figure the data and fit support.

    Uses DIR/fit.json (running `fit_sweep_dir` first when it is missing); an lr sweep's figures
    come from DIR/lr_rule.json instead (`plot_lr_sweep_dir`)."""
    if SweepDir(path).is_lr_sweep():
        return plot_lr_sweep_dir(Path(path), out_dir=out_dir, formats=formats)

    table = load_table(path, quiet=quiet)
    sweep = table.sweep_dir or Path(path).parent
    if fit is None:
        fjson = SweepDir(sweep).fit_path
        if fjson.exists():
            fit = _json_object(fjson, "fit file", "re-run `scaling fit` on the sweep")
        else:
            fit = fit_sweep_dir(sweep)
    record = as_fit_result(fit, f"fit file {SweepDir(sweep).fit_path}")  # checked once, before any figure
    out = Path(out_dir) if out_dir else SweepDir(sweep).plots_dir  # (a refused fit.json leaves no empty folder)
    out.mkdir(parents=True, exist_ok=True)
    df = table.df
    curves = []  # training curves are drawn only where Approach 1 used them
    if table.sweep_dir and F.approach1_source(record) == "curves":
        curves = load_curves(sweep, df, table.convention)
    ok = lambda k: record.fitted(k) is not None  # noqa: E731
    makers = []
    if ok("approach2") or df["C"].nunique() > 1:
        makers.append(("isoflop", lambda: F.isoflop(df, fit)))
    makers.append(("loss_vs_compute", lambda: F.loss_vs_compute(df, fit, curves)))
    makers.append(("optimal_allocation", lambda: F.optimal_allocation(df, fit)))
    for method_name, method in METHODS.items():  # each fitted method's own figures
        if ok(method_name):
            makers += [(name, lambda draw=F.FIGURES[name]: draw(df, fit)) for name in method.figures]
    if has_profile(fit):
        makers.append(("approach3_profile", lambda: approach3_profile(fit)))
    if ok("sensitivity") and record.sensitivity.E_profile is not None:
        makers.append(("sensitivity", lambda: sensitivity_figure(fit)))
    if ok("extrapolation"):
        makers.append(("extrapolation", lambda: extrapolation_figure(record.extrapolation)))
    written = []
    for name, make in makers:
        fig = make()
        if name != "extrapolation":
            add_warnings(fig, figure_warnings(name, fit))
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            fig.savefig(p, dpi=150 if fmt == "png" else None)
            written.append(p)
    return written


def plot_lr_sweep_dir(sweep: Path, out_dir=None, formats=FORMATS) -> list[Path]:
    """loss_vs_lr and lr_opt_vs_n from DIR/results.csv and DIR/lr_rule.json (fitted first when missing)."""
    import pandas as pd  # lazy: pandas, only for an lr sweep's figures

    layout = SweepDir(sweep)
    rule_path = layout.lr_rule_path
    if rule_path.exists():
        rule = _json_object(rule_path, "lr rule", "re-run `scaling lr-rule` on the sweep")
    else:
        rule = fit_lr_sweep_dir(sweep)
    df = pd.read_csv(layout.results_path)
    out = Path(out_dir) if out_dir else layout.plots_dir
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in (("loss_vs_lr", lambda: R.loss_vs_lr(df, rule)), ("lr_opt_vs_n", lambda: R.lr_opt_vs_n(rule))):
        fig = make()
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            fig.savefig(p, dpi=150 if fmt == "png" else None)
            written.append(p)
    return written


def _json_object(path: Path, what: str, fix: str) -> dict:
    """A JSON object file written by an earlier stage; one line when it is anything else."""
    try:
        data = loads_json(read_regular_text(path, what), f"{what} {path}")
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} is corrupt (line {err.lineno}: {err.msg}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data
