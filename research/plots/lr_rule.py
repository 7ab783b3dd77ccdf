"""Figures of a learning-rate calibration (an lr sweep and its rule, research/fit/lr_rule.py).

    loss_vs_lr      final eval loss against peak LR per size, with each size's parabola in ln LR and its vertex
    lr_opt_vs_n     LR*(N) per size with its bootstrap interval, the fitted power law and its 95% band
"""

from __future__ import annotations

import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from research.fit.lr_rule import rule_lr, size_groups
from research.plots.figures import _figure


def _size_colors(per_size: list[dict]):
    n = [s["n_params"] for s in per_size]
    norm = colors.LogNorm(vmin=min(n), vmax=max(n) * 1.0001)
    return lambda value: cm.viridis(norm(value) * 0.85)


def loss_vs_lr(df, rule: dict) -> Figure:
    """df: results.csv rows (n_params, lr, final_eval_loss, status)."""
    fig, (ax,) = _figure()
    color = _size_colors(rule["per_size"])
    done = df[df["status"] == "completed"]
    labels = size_groups(done["n_params"].to_numpy(float))
    for label in np.unique(labels):
        rows = done[labels == label]
        n = float(np.exp(np.mean(np.log(rows["n_params"]))))
        size = min(rule["per_size"], key=lambda s: abs(np.log(s["n_params"] / n)))
        c = color(size["n_params"])
        refused = size.get("refused")
        ax.scatter(rows["lr"], rows["final_eval_loss"], s=18, color=c, zorder=3,
                   marker="x" if refused else "o",
                   label=f"N = {n:,.0f}" + (" (refused)" if refused else ""))
        if size.get("parabola_ln_lr"):
            x = np.linspace(np.log(rows["lr"].min()), np.log(rows["lr"].max()), 100)
            ax.plot(np.exp(x), np.polyval(size["parabola_ln_lr"], x), color=c, lw=1, ls=":" if refused else "-")
        if not refused:
            ax.scatter([size["lr_opt"]], [size["loss_opt"]], marker="*", s=90, color=c, edgecolor="k", lw=0.5, zorder=4)
            if size.get("interval"):
                ax.hlines(size["loss_opt"], *size["interval"], color=c, lw=2.5, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final eval loss (nats/token)")
    ax.set_title("Loss vs peak LR per size: parabola in ln LR, vertex = LR* (bar: 95% bootstrap)")
    ax.legend(loc="best")
    return fig


def lr_opt_vs_n(rule: dict) -> Figure:
    fig, (ax,) = _figure()
    color = _size_colors(rule["per_size"])
    for s in rule["per_size"]:
        if s.get("refused"):
            continue
        iv = s.get("interval") or [s["lr_opt"], s["lr_opt"]]
        ax.errorbar([s["n_params"]], [s["lr_opt"]], yerr=[[s["lr_opt"] - iv[0]], [iv[1] - s["lr_opt"]]], fmt="o",
                    color=color(s["n_params"]), capsize=3, zorder=3)
    band = rule.get("band")
    n = np.array(band["n"]) if band else np.geomspace(rule["n_range"][0] / 2, rule["n_range"][1] * 2, 25)
    e_iv = (rule.get("intervals") or {}).get("exponent")
    label = (f"lr = {rule['lr_ref']:.3g} (N/{rule['n_ref']:,.0f})^{rule['exponent']:.3f}"
             + (f", exponent 95% [{e_iv[0]:.3f}, {e_iv[1]:.3f}]" if e_iv else ""))
    ax.plot(n, [rule_lr(v, rule["lr_ref"], rule["n_ref"], rule["exponent"]) for v in n], color="k", lw=1.2, label=label)
    if band:
        ax.fill_between(n, band["lr_low"], band["lr_high"], color="k", alpha=0.12, lw=0, label="95% band (bootstrap)")
    ax.axvspan(*rule["n_range"], color="#1b9e77", alpha=0.08, lw=0, label="calibrated N range")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters, embeddings included)")
    ax.set_ylabel("best peak learning rate LR*")
    ax.set_title("Calibrated learning rate vs model size")
    ax.legend(loc="best")
    return fig
