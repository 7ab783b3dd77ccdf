"""The Approach-3 objective's profile (research/fit/varpro.py, fit.json approach3.profile) as a figure:
left, min over (E, A, B) of the objective at each (α, β) relative to the best, with the
profile-likelihood threshold's contour and lines of constant a = β/(α+β); right, the profile over E
(min over A, B, α, β at each fixed E) with the a of each E's optimum."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from research.records import FitResult, as_fit_result


def has_profile(fit: FitResult | dict) -> bool:
    a3 = as_fit_result(fit).fitted("approach3")
    return (a3 is not None and a3.profile is not None and a3.profile.alpha_beta is not None
            and isinstance(a3.objective, float) and math.isfinite(a3.objective) and a3.objective > 0)


def approach3_profile(fit: dict) -> Figure:
    record = as_fit_result(fit).fitted("approach3")  # the profile's shapes checked (research.records.ProfileGrid)
    a3 = fit["approach3"]
    prof = a3["profile"]
    ab = prof["alpha_beta"]
    f_min = float(a3["objective"])
    al, be = np.asarray(ab["alpha"], float), np.asarray(ab["beta"], float)
    obj = np.array([[np.nan if v is None else v for v in row] for row in ab["objective"]], float)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.log10(obj / f_min)
    im = ax1.pcolormesh(be, al, rel, shading="nearest", cmap="viridis", vmin=0, vmax=np.nanpercentile(rel, 90))
    fig.colorbar(im, ax=ax1, label="log10(objective / best)")
    thr = record.profile.a_range.factor() if record.profile.a_range is not None else None
    if thr:
        ax1.contour(be, al, obj / f_min, levels=[thr], colors="w", linewidths=1.2)
    BB, AA = np.meshgrid(be, al)
    cs = ax1.contour(BB, AA, BB / (AA + BB), levels=[0.3, 0.4, 0.5, 0.6, 0.7], colors="0.8", linewidths=0.6,
                     linestyles=":")
    ax1.clabel(cs, fmt="a=%.1f", fontsize=6)
    ax1.plot(a3["beta"], a3["alpha"], "r*", ms=10, label="fit")
    ar = prof.get("a_range") or {}
    title = "profile over (alpha, beta)"
    if ar.get("low") is not None:
        title += f": a in [{ar['low']:.3g}, {ar['high']:.3g}] (white: threshold)"
    ax1.set(xlabel="beta", ylabel="alpha", title=title)
    ax1.legend(loc="upper right", fontsize=7)
    pe = prof.get("E")
    if pe:
        E = np.asarray(pe["E"], float)
        o = np.array([np.nan if v is None else v for v in pe["objective"]], float)
        ax2.plot(E, o / f_min, "o-", ms=3, color="#7570b3", label="objective / best")
        if thr:
            ax2.axhline(thr, color="0.5", ls="--", lw=0.8, label="profile-likelihood threshold")
        ax2.axvline(a3["E"], color="r", lw=0.8, label=f"fit E = {a3['E']:.3g}")
        ax2.set(xlabel="E (fixed)", ylabel="min objective / best", yscale="log", title="profile over E")
        tw = ax2.twinx()
        tw.plot(E, [np.nan if v is None else v for v in pe["a"]], "s:", ms=2, color="#d95f02", label="a at that E")
        tw.set_ylabel("a = beta/(alpha+beta)", color="#d95f02")
        ax2.legend(loc="upper left", fontsize=7)
    else:
        ax2.set_axis_off()
    return fig
