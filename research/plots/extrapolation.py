"""The held-out check as a figure, and reviewer warnings written onto any figure."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from research.fit.agreement import all_warnings
from research.plots.figures import STYLE
from research.records import Extrapolation, FitResult

LAW_STYLE = {"approach3": ("#7570b3", "o"), "kaplan": ("#66a61e", "s")}
X_NUDGE = {"approach3": 1.0, "kaplan": 1.04}  # side by side at the same FLOPs in the error panel
MAX_WARNING_LINES = 6


def _flops(point) -> float:
    """A held-out point's FLOPs (NaN, not drawn, where fit.json holds none)."""
    return np.nan if point.flops is None else point.flops


def extrapolation_figure(result: Extrapolation | dict) -> Figure:
    """Left: predicted against measured loss (fitted runs grey, held-out runs coloured with their
    prediction intervals). Right: signed relative error against FLOP budget. `result`: fit.json's
    "extrapolation" (a record, or its JSON object)."""
    import matplotlib as mpl

    if not isinstance(result, Extrapolation):
        result = Extrapolation.from_json(result, "the held-out check")

    mpl.rcParams.update(STYLE)
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax, axe = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo_all, hi_all = [], []
    for m, (col, mk) in LAW_STYLE.items():
        b = getattr(result, m)
        if not b:
            continue
        tr = b.train_points
        if tr:
            ax.scatter([p.measured for p in tr], [p.predicted for p in tr], s=10, color="0.65",
                       marker=mk, label=f"{m}: fitted runs ({len(tr)})", zorder=2)
            axe.scatter([_flops(p) * X_NUDGE[m] for p in tr], [100 * (p.predicted / p.measured - 1) for p in tr],
                        s=10, color="0.65", marker=mk, zorder=2)
        pts = b.points
        meas = np.array([p.measured for p in pts])
        pred = np.array([p.predicted for p in pts])
        s = b.summary
        cov = "" if s.coverage is None else f", coverage {s.coverage:.0%}"
        err = "n/a" if s.mean_abs_rel_error is None else f"{s.mean_abs_rel_error:.2%}"
        label = f"{m}: held out ({len(pts)}), mean |err| {err}{cov}"
        if pts and pts[0].loss_low is not None:
            lo = np.array([np.nan if p.loss_low is None else p.loss_low for p in pts], float)
            hi = np.array([np.nan if p.loss_high is None else p.loss_high for p in pts], float)
            # a bootstrap interval need not hold the point fit (a skewed resample): no bar below zero length
            down, up = np.maximum(pred - lo, 0.0), np.maximum(hi - pred, 0.0)
            ax.errorbar(meas, pred, yerr=[down, up], fmt=mk, color=col, ms=5, capsize=2,
                        mec="black", mew=0.5, label=label, zorder=4)
            axe.errorbar([_flops(p) * X_NUDGE[m] for p in pts], 100 * (pred / meas - 1),
                         yerr=[100 * down / meas, 100 * up / meas], fmt=mk, color=col, ms=5,
                         capsize=2, mec="black", mew=0.5, zorder=4)
            lo_all += list(lo)
            hi_all += list(hi)
        else:
            ax.scatter(meas, pred, marker=mk, color=col, s=30, edgecolor="black", label=label, zorder=4)
            axe.scatter([_flops(p) * X_NUDGE[m] for p in pts], 100 * (pred / meas - 1), marker=mk, color=col, s=30,
                        edgecolor="black", zorder=4)
        lo_all += list(meas) + list(pred) + [p.measured for p in tr]
        hi_all += list(meas) + list(pred) + [p.measured for p in tr]
    if lo_all:
        lim = [min(lo_all) * 0.98, max(hi_all) * 1.02]
        ax.plot(lim, lim, color="black", lw=0.8, ls="--", label="predicted = measured")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
    ax.set_xlabel("measured loss (nats/token)")
    ax.set_ylabel("predicted loss (nats/token)")
    level = result.level if result.level is not None else 0.95
    ax.set_title(f"Held out: {result.holdout} (bars: {level:.0%} prediction intervals)")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.25)
    axe.axhline(0, color="black", lw=0.8)
    axe.set_xscale("log")
    axe.set_xlabel("run's FLOPs C")
    axe.set_ylabel("predicted/measured − 1 (%)")
    axe.set_title(f"fitted on {result.n_train} runs, {result.n_heldout} held out")
    axe.grid(True, alpha=0.25)
    add_warnings(fig, result.warnings)
    return fig


def add_warnings(fig: Figure, lines) -> Figure:
    """Write reviewer warnings under the axes (space reserved in the constrained layout)."""
    lines = [str(x) for x in lines]
    if not lines:
        return fig
    shown = lines[:MAX_WARNING_LINES]
    if len(lines) > len(shown):
        shown.append(f"... and {len(lines) - len(shown)} more warnings in fit.json")
    width = int(fig.get_figwidth() * 16)
    wrapped = []
    for w in shown:
        wrapped += textwrap.wrap("⚠ " + w, width=width, subsequent_indent="   ")
    band = len(wrapped) * 0.125 + 0.12  # inches: 7-point lines plus a margin
    w_in, h_in = fig.get_size_inches()
    fig.set_size_inches(w_in, h_in + band)
    frac = band / (h_in + band)
    engine = fig.get_layout_engine()
    if engine is not None and hasattr(engine, "set"):
        engine.set(rect=(0, frac, 1, 1 - frac))
    fig.text(0.01, frac - 0.01, "\n".join(wrapped), ha="left", va="top", fontsize=7, color="#a50f15")
    return fig


# which approaches' warnings belong on which figure of `research.plots.plot_sweep_dir`
FIGURE_APPROACHES = {"isoflop": ("approach2",), "loss_vs_compute": ("approach1",),
                     "optimal_allocation": ("approach1", "approach2", "approach3"),
                     "approach3_contours": ("approach3",), "residuals": ("approach3", "kaplan"),
                     "approach3_profile": ("approach3",)}


def figure_warnings(name: str, fit: FitResult | dict) -> list[str]:
    """The overall warnings and those of the approaches figure `name` shows."""
    return all_warnings(fit, FIGURE_APPROACHES.get(name, ()))
