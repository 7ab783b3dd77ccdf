"""The sensitivity figure: the E-alpha ridge (Approach 3's objective and a with E held fixed) and
the exponent a across the analyst's choices, beside Approach 3's bootstrap interval
(fit.json's `sensitivity` block, research/fit/sensitivity.py)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from research.plots.figures import APPROACH_COLORS, _figure
from research.records import FitResult, as_fit_result


def sensitivity_figure(fit: FitResult | dict) -> Figure:
    fit = as_fit_result(fit)
    block = fit.sensitivity
    fig, (ridge, choices) = _figure(w=11, h=5.2, ncols=2)
    p = block.E_profile
    E, rel, a = (np.array(p[k], float) for k in ("E", "objective_rel", "a"))
    ridge.plot(E, 100 * rel, color="black", marker="o", ms=3, lw=1.2, label="objective above the best (%)")
    ridge.axhline(100 * p["threshold"], color="gray", ls=":", lw=1, label=f"threshold {p['threshold']:.0%}")
    ridge.axvline(p["E_fitted"], color=APPROACH_COLORS["approach3"], ls="--", lw=1,
                  label=f"fitted E = {p['E_fitted']:.3g}")
    ridge.set_xlabel("E held fixed (nats/token)")
    ridge.set_ylabel("Approach 3 objective, % above the best")
    twin = ridge.twinx()
    twin.plot(E, a, color=APPROACH_COLORS["approach3"], marker="s", ms=3, lw=1.2, label="a at that E")
    twin.plot(E, np.array(p["alpha"], float), color="#999999", lw=1, ls="-.", label="alpha at that E")
    twin.set_ylabel("a (and alpha) with E fixed")
    lines = ridge.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ridge.legend(lines[0] + more[0], lines[1] + more[1], loc="center left", fontsize=7)
    ridge.set_title("The E-alpha ridge: E profiled, the other parameters refitted")
    ridge.grid(True, alpha=0.25)

    rows = [c for c in block.choices if not c.skipped]
    y = np.arange(len(rows))[::-1]
    choices.scatter([c.approach3 for c in rows], y, color=APPROACH_COLORS["approach3"], s=18, zorder=3,
                    label="Approach 3")
    a2 = [(c.approach2, yy) for c, yy in zip(rows, y) if c.approach2 is not None]
    if a2:
        choices.scatter([v for v, _ in a2], [yy for _, yy in a2], color=APPROACH_COLORS["approach2"], marker="^",
                        s=16, zorder=3, label="Approach 2")
    if "a_within_threshold" in p:
        lo, hi = p["a_within_threshold"]
        choices.axvspan(lo, hi, color="gray", alpha=0.15, label=f"E profiled (objective within {p['threshold']:.0%})")
    a3 = fit.fitted("approach3")
    iv = a3.intervals().get("a") if a3 is not None else None
    if iv and None not in iv:
        for x in iv:
            choices.axvline(x, color=APPROACH_COLORS["approach3"], ls="--", lw=1)
        choices.plot([], [], color=APPROACH_COLORS["approach3"], ls="--", lw=1, label="Approach 3 bootstrap interval")
    choices.set_yticks(y, [f"{c.choice}" for c in rows], fontsize=6.5)
    choices.set_xlabel("a (N_opt ∝ C^a)")
    choices.set_title("a across the analyst's choices")
    choices.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7)
    choices.grid(True, axis="x", alpha=0.25)
    return fig
