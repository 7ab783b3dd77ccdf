"""The comparison figure: both sweeps' loss frontiers with bootstrap bands, and the multiplier against compute."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from research.fit.compare import multiplier
from research.plots.figures import _figure

COLORS = {"A": "#1b9e77", "B": "#7570b3"}
MAX_SHOWN = 100.0  # the multiplier axis spans at most 1/100 to 100 (an unreached loss is infinite)


@np.errstate(over="ignore", invalid="ignore", divide="ignore")  # unidentified resamples: inf/nan, dropped
def compare_figure(fa, fb, result: dict, opts) -> Figure:
    """Left: each sweep's runs and its loss frontier L*(C) with its bootstrap band; right: the multiplier
    against compute with its band, 1 marked, each sweep's budget range shaded."""
    lo = min(fa.budget_range()[0], fb.budget_range()[0], *opts.at) / 2
    hi = max(fa.budget_range()[1], fb.budget_range()[1], *opts.at) * 2
    grid = np.geomspace(lo, hi, 60)
    fig, (ax_l, ax_m) = _figure(10, 4.2, ncols=2)
    q = [(1 - opts.level) / 2, (1 + opts.level) / 2]
    boot = result["bootstrap"]["n_resamples"] > 0
    for f in (fa, fb):
        color = COLORS[f.label]
        name = result["sweeps"][f.label]["name"]
        df = f.table.df
        ax_l.scatter(df["C"], df["L"], s=8, color=color, alpha=0.35, lw=0)
        ax_l.plot(grid, f.law().loss_opt(grid)[0], color=color, label=f"{f.label}: {name}")
        if boot:
            with np.errstate(invalid="ignore"):
                band = np.nanquantile(f.law("samples").loss_opt(grid[None, :]), q, axis=0)
            ax_l.fill_between(grid, band[0], band[1], color=color, alpha=0.2, lw=0)
        ax_m.axvspan(*f.budget_range(), color=color, alpha=0.08, lw=0)
    m = multiplier(fa.law(), fb.law(), grid[None, :])[0]
    ax_m.plot(grid, m, color="k", label="multiplier (B over A)")
    if boot:
        ms = multiplier(fa.law("samples"), fb.law("samples"), grid[None, :])
        with np.errstate(invalid="ignore"):  # a loss A never reaches (inf) stays in, clipped to the axis
            band = np.nanquantile(np.minimum(ms, MAX_SHOWN), q, axis=0)
        ax_m.fill_between(grid, band[0], band[1], color="k", alpha=0.15, lw=0, label=f"{opts.level:.0%} interval")
    ax_m.axhline(1.0, color="#999999", ls="--", lw=1)
    units = result["loss_units"]
    for ax in (ax_l, ax_m):
        ax.set_xscale("log")
        ax.set_xlabel(f"training compute C [FLOPs, {result['flops_convention']}]")
    ax_m.set_yscale("log")
    ax_m.set_ylim(max(1 / MAX_SHOWN, np.nanmin(m) / 4), min(MAX_SHOWN, np.nanmax(np.minimum(m, MAX_SHOWN)) * 4))
    ax_m.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_m.yaxis.set_major_formatter(ScalarFormatter())
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    ax_l.set_ylabel(f"loss [{units}]; line: compute-optimal L*(C)")
    ax_m.set_ylabel("compute multiplier C_A / C at equal loss")
    ax_l.set_title("loss frontiers")
    ax_m.set_title("compute A needs to match B (shaded: the sweeps' budgets)")
    ax_l.legend(loc="upper right")
    ax_m.legend(loc="best")
    return fig
