"""Publication-quality figures of scaling-law fits (matplotlib, no pyplot: backend-agnostic).

Every function takes the clean table (`research.fit.data.Table.df`: N, D, L, F, C),
the fit dict (`fit.json`) and returns a `matplotlib.figure.Figure`.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import cm, colors, ticker
from matplotlib.figure import Figure

from research.fit.allocation import SIX_N, FlopsPerToken, compute_optimal, fit_flops_per_token
from research.fit.kaplan import kaplan_joint
from research.fit.laws import ChinchillaLaw, published
from research.fit.noise import point_groups
from research.fit.profiles import mean_points, size_profiles
from research.records import Skipped, as_fit_result

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5}
APPROACH_COLORS = {"approach1": "#1b9e77", "approach2": "#d95f02", "approach3": "#7570b3"}
PUBLISHED_STYLE = {"chinchilla": ("#444444", "--"), "epoch-2024": ("#e7298a", "-."),
                   "kaplan-2020": ("#66a61e", ":")}


def _figure(w=6.4, h=4.2, ncols=1):
    import matplotlib as mpl

    mpl.rcParams.update(STYLE)
    fig = Figure(figsize=(w, h), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


LAW_KEYS = {"approach1": ("k_N", "a", "k_D", "b"), "approach2": ("k_N", "a", "k_D", "b"),
            "approach3": ("E", "A", "B", "alpha", "beta")}  # what a method's curve is drawn from


def _ok(fit, key):
    """Whether block `key` was fitted and holds its law as finite numbers (a NaN written as null, or an
    inf, is no curve to draw)."""
    rec = as_fit_result(fit).fitted(key)
    return rec is not None and all(isinstance(getattr(rec, k), (int, float)) and math.isfinite(getattr(rec, k))
                                   for k in LAW_KEYS.get(key, ()))


def _per_token(df, fit) -> FlopsPerToken:
    """The FLOP convention of the fit's budgets: Approach 3's recorded k·N^p, else the table's own."""
    a3 = fit.get("approach3")
    if isinstance(a3, dict) and "flops_per_token" in a3:
        return FlopsPerToken.from_dict(a3["flops_per_token"])
    convention = (fit.get("data") or {}).get("flops_convention", "6n")
    return fit_flops_per_token(df["N"], df["F"], df["D"], convention) if len(df) else SIX_N


def _law(r, per_token) -> ChinchillaLaw:
    return ChinchillaLaw(r["E"], r["A"], r["B"], r["alpha"], r["beta"], per_token=per_token)


def plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers ("3.1", "2e+11") at 1, 2 and 5 of each decade, and no minor
    labels: matplotlib's defaults write "3.1×10⁰" on a narrow range and let minor labels collide."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _note(ax, text: str) -> None:
    """A grey note in the lower left of a panel: what the figure leaves out, and why."""
    ax.text(0.01, 0.01, text, transform=ax.transAxes, fontsize=7, color="0.35", va="bottom", ha="left", wrap=True)


def _budget_norm(c):
    return colors.LogNorm(vmin=float(np.min(c)), vmax=float(np.max(c)) * 1.0001)


def approach1_source(fit) -> str:
    """"endpoints" or "curves": what the fit's Approach 1 used (a fit.json from before the choice: curves)."""
    a1 = as_fit_result(fit).fitted("approach1")
    if a1 is not None:
        return a1.source or "curves"
    return "endpoints"


FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def families(df) -> list[str]:
    """The table's model families (several: the figures mark each with its own marker)."""
    return sorted(set(df["family"])) if "family" in df.columns else []


def _points_with_seeds(ax, df, x_col, c_col, cmap, norm, label):
    """One marker per run; where an (N, D) point has several seeds, each seed faintly and the mean with
    an error bar of their standard deviation (ddof=1). Several model families: one marker shape each."""
    names = families(df)
    if len(names) > 1:
        for i, name in enumerate(names):
            sub = df[df["family"] == name].reset_index(drop=True)
            marker = FAMILY_MARKERS[i % len(FAMILY_MARKERS)]
            _family_points(ax, sub, x_col, c_col, cmap, norm, f"{label}: {name}", marker)
        return
    _family_points(ax, df, x_col, c_col, cmap, norm, label, "o")


def _family_points(ax, df, x_col, c_col, cmap, norm, label, marker):
    groups = point_groups(df)
    x, y, c = (df[k].to_numpy(float) for k in (x_col, "L", c_col))
    single = np.array([g[0] for g in groups if len(g) == 1], dtype=int)
    if len(single):
        ax.scatter(x[single], y[single], c=c[single], cmap=cmap, norm=norm, s=16, zorder=3, edgecolor="black",
                   linewidth=0.3, label=label, marker=marker)
        label = None
    for g in (g for g in groups if len(g) >= 2):
        col = cmap(norm(np.mean(c[g])))
        ax.scatter(x[g], y[g], color=col, s=9, alpha=0.35, zorder=2, lw=0, marker=marker)
        ax.errorbar(np.exp(np.mean(np.log(x[g]))), np.mean(y[g]), yerr=np.std(y[g], ddof=1), fmt=marker, ms=4.5,
                    color=col, mec="black", mew=0.3, ecolor=col, elinewidth=1.0, capsize=2, zorder=3,
                    label=label)
        label = None


def isoflop(df, fit) -> Figure:
    """Loss against N per budget, with each budget's parabola and its minimum. Interpolated slices
    (a design without shared budgets) are drawn as hollow markers through the sizes' profiles."""
    fig, (ax,) = _figure()
    a2 = fit.get("approach2", {})
    interpolated = a2.get("slices") == "interpolated"
    cmap = cm.viridis
    if interpolated:
        c_all = [b["flops"] for b in a2.get("budgets", [])] + [r["flops"] for r in a2.get("rejected_budgets", [])]
        norm = _budget_norm(c_all)
        for i, b in enumerate(a2.get("budgets", [])):
            ax.scatter(b["slice"]["n_params"], b["slice"]["loss"], s=20, facecolor="none",
                       edgecolor=cmap(norm(b["flops"])), linewidth=1.0, zorder=3,
                       label="interpolated along each size's end points" if i == 0 else None)
    else:
        norm = _budget_norm(df["C"])
        _points_with_seeds(ax, df, "N", "C", cmap, norm, "runs (seed means with std where replicated)")
    for b in a2.get("budgets", []):
        c0, c1, c2 = b["parabola_lnN"]
        if interpolated:
            n_lo, n_hi = min(b["slice"]["n_params"]), max(b["slice"]["n_params"])
        else:
            sub = df[np.abs(np.log(df["C"] / b["flops"])) < np.log(1.1)]
            n_lo, n_hi = sub["N"].min(), sub["N"].max()
        x = np.linspace(np.log(n_lo) - 0.2, np.log(n_hi) + 0.2, 100)
        col = cmap(norm(b["flops"]))
        ax.plot(np.exp(x), c0 + c1 * x + c2 * x * x, color=col, lw=1.2)
        ax.plot(b["n_opt"], b["loss_opt"], marker="*", ms=11, color=col, markeredgecolor="black", mew=0.6, zorder=4)
    for r in ([] if interpolated else a2.get("rejected_budgets", [])):
        ax.annotate("refused", (df["N"][np.abs(np.log(df["C"] / r["flops"])) < 0.1].median(),
                                df["L"][np.abs(np.log(df["C"] / r["flops"])) < 0.1].min()),
                    fontsize=7, color="gray")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("final loss (nats/token)")
    title = "IsoFLOP profiles (Approach 2" + (", interpolated slices)" if interpolated else ")")
    if _ok(fit, "approach2"):
        title += f": N_opt ∝ C^{a2['a']:.3f}, D_opt ∝ C^{a2['b']:.3f}"
    elif isinstance(as_fit_result(fit).approach2, Skipped) and as_fit_result(fit).approach2.reason:
        _note(ax, f"Approach 2 skipped (no parabolas drawn): {as_fit_result(fit).approach2.reason}"[:160])
    ax.set_title(title)
    if interpolated or len(families(df)) > 1:
        ax.legend(loc="upper right")
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="FLOP budget C (FLOPs)")
    ax.grid(True, which="both", alpha=0.25)
    return fig


def loss_vs_compute(df, fit, curves=None) -> Figure:
    """Final losses against the runs' FLOPs coloured by N (each size's end points joined: the profile
    Approach 1 interpolates) and the Approach-1 envelope. Training curves are drawn only when the fit's
    Approach 1 used them (`--approach1-source curves`)."""
    fig, (ax,) = _figure()
    norm = colors.LogNorm(vmin=float(df["N"].min()), vmax=float(df["N"].max()) * 1.0001)
    cmap = cm.plasma
    source = approach1_source(fit)
    if source == "curves":
        for c in curves or []:
            ax.plot(c["flops"], c["loss"], color=cmap(norm(c["N"])), lw=0.8, alpha=0.75)
    else:
        for p in size_profiles(mean_points(df)[1]):
            ax.plot(np.exp(p["lnF"]), np.exp(p["lnL"]), color=cmap(norm(p["N"])), lw=0.8, alpha=0.75)
    _points_with_seeds(ax, df, "F", "N", cmap, norm, "final loss of each run")
    if _ok(fit, "approach1") and fit["approach1"].get("envelope"):
        env = fit["approach1"]["envelope"]
        order = np.argsort(env["flops"])
        what = "training curves" if source == "curves" else "end points"
        ax.plot(np.array(env["flops"])[order], np.array(env["loss"])[order], color="black", lw=2.0,
                label=f"envelope of {what} (Approach 1): N_opt ∝ C^{fit['approach1']['a']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Loss vs compute" + (": training curves" if source == "curves"
                                      else ": final losses, each size's runs joined by a line"))
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="parameters N")
    ax.legend(loc="upper right")
    ax.grid(True, which="both", alpha=0.25)
    return fig


def _band(samples, grid, which, per_token=SIX_N):
    s = {k: np.asarray(v, float) for k, v in samples.items()}
    if "alpha" in s:
        n, d = compute_optimal(s["A"][:, None], s["B"][:, None], s["alpha"][:, None], s["beta"][:, None],
                               grid[None], per_token)
        vals = n if which == "n" else d
    else:
        vals = (s["k_N"][:, None] * grid[None] ** s["a"][:, None] if which == "n"
                else s["k_D"][:, None] * grid[None] ** s["b"][:, None])
    with np.errstate(invalid="ignore"):
        return np.nanpercentile(vals, 2.5, axis=0), np.nanpercentile(vals, 97.5, axis=0)


def optimal_allocation(df, fit, c_max=1e26) -> Figure:
    """N_opt(C) and D_opt(C) from every approach with bootstrap bands, beside the published laws."""
    fig, (axn, axd) = _figure(w=10, h=4.2, ncols=2)
    per_token = _per_token(df, fit)
    cmin, cmax_data = float(df["C"].min()), float(df["C"].max())
    grid = np.geomspace(cmin / 10, max(c_max, cmax_data * 100), 200)
    for ax, which in ((axn, "n"), (axd, "d")):
        central = []  # the lines drawn; the y range is theirs, so a wide bootstrap band cannot swamp the panel
        ax.axvspan(cmin, cmax_data, color="0.9", zorder=0, label="range of the data")
        for name in PUBLISHED_STYLE:
            law = published(name)
            col, ls = PUBLISHED_STYLE[name]
            label = f"{name} (published)"
            if per_token.convention != "6n":
                if isinstance(law, ChinchillaLaw):  # the loss law holds in any convention: re-optimise under ours
                    law = ChinchillaLaw(law.E, law.A, law.B, law.alpha, law.beta, name=name, per_token=per_token)
                    label = f"{name} (published L(N, D), optimum in {per_token.convention} FLOPs)"
                else:
                    label = f"{name} (published, C in 6n FLOPs)"
            y = law.n_opt(grid) if which == "n" else law.d_opt(grid)
            ax.plot(grid, y, color=col, ls=ls, lw=1.2, label=label)
            central.append(y)
        for key, col in APPROACH_COLORS.items():
            if not _ok(fit, key):
                continue
            r = fit[key]
            if key == "approach3":
                law = _law(r, per_token)
                y = law.n_opt(grid) if which == "n" else law.d_opt(grid)
                a_, b_ = law.a, law.b  # from alpha and beta (the file's a and b may be absent)
            else:
                y = r["k_N"] * grid ** r["a"] if which == "n" else r["k_D"] * grid ** r["b"]
                a_, b_ = r["a"], r["b"]
            ax.plot(grid, y, color=col, lw=2, label=f"{key} fit: a={a_:.3f}, b={b_:.3f}")
            central.append(y)
            bs = r.get("bootstrap", {})
            if bs.get("samples"):
                lo, hi = _band(bs["samples"], grid, which, per_token)
                ax.fill_between(grid, lo, hi, color=col, alpha=0.18, lw=0)
            if key == "approach2":
                ax.scatter([b["flops"] for b in r["budgets"]],
                           [b["n_opt" if which == "n" else "d_opt"] for b in r["budgets"]],
                           color=col, s=22, zorder=4, edgecolor="black", linewidth=0.4)
            if key == "approach1" and r.get("crossings"):  # the ties the exponent was fitted to
                c_x = np.array([x["flops"] for x in r["crossings"]])
                n_x = np.array([x["n_opt"] for x in r["crossings"]])
                ax.scatter(c_x, n_x if which == "n" else c_x / per_token(n_x), color=col, s=26, marker="D",
                           zorder=4, edgecolor="black", linewidth=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ys = np.concatenate([np.asarray(y, float) for y in central])
        ys = ys[np.isfinite(ys) & (ys > 0)]
        if ys.size:
            ax.set_ylim(ys.min() / 3, ys.max() * 3)
        ax.set_xlabel(f"training compute C (FLOPs, {per_token.convention} convention)")
        ax.set_ylabel("compute-optimal parameters N_opt" if which == "n" else "compute-optimal tokens D_opt")
        ax.grid(True, which="major", alpha=0.25)
    axn.set_title("N_opt(C): fits (bands: 95% bootstrap) vs published laws")
    axd.set_title(f"D_opt(C), {per_token.describe().split(': ', 1)[1].split(' (')[0]}  (N_opt ∝ C^a, D_opt ∝ C^b)")
    axd.legend(loc="upper left", ncols=1)
    return fig


def approach3_contours(df, fit) -> Figure:
    """Contours of the fitted L(N, D) with the efficient frontier and IsoFLOP lines."""
    per_token = _per_token(df, fit)
    law = _law(fit["approach3"], per_token)
    fig, (ax,) = _figure(w=6.4, h=5)
    n = np.geomspace(df["N"].min() / 10, df["N"].max() * 10, 200)
    d = np.geomspace(df["D"].min() / 10, df["D"].max() * 10, 200)
    NN, DD = np.meshgrid(n, d)
    Lg = law.loss(NN, DD)
    levels = np.quantile(Lg, np.linspace(0.02, 0.98, 14))
    cs = ax.contourf(NN, DD, Lg, levels=levels, cmap="viridis_r")
    ax.contour(NN, DD, Lg, levels=levels, colors="white", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="predicted loss (nats/token)", format="%.2f")
    cgrid = np.geomspace(per_token(n.min()) * d.min(), per_token(n.max()) * d.max(), 200)
    nf, df_ = law.n_opt(cgrid), law.d_opt(cgrid)
    m = (nf >= n.min()) & (nf <= n.max()) & (df_ >= d.min()) & (df_ <= d.max())
    if m.sum() >= 2:
        ax.plot(nf[m], df_[m], color="red", lw=2, label=f"efficient frontier: N_opt ∝ C^{law.a:.3f}")
    else:
        _note(ax, f"efficient frontier (N_opt ∝ C^{law.a:.3f}) lies outside the plotted N and D range")
    budgets = np.unique(df["C"].round(-int(np.floor(np.log10(df["C"].min()))) + 3))[:12]
    for i, c in enumerate(budgets):  # IsoFLOP line D = C / f(N), labelled with its budget
        ax.plot(n, c / per_token(n), color="white", lw=0.6, ls="--", alpha=0.7,
                label=f"IsoFLOP lines D = C/f(N), C {budgets[0]:.2g} to {budgets[-1]:.2g}" if i == 0 else None)
        d_line = c / per_token(n)
        inside = np.flatnonzero((d_line >= d.min()) & (d_line <= d.max()))
        if inside.size:
            j = inside[len(inside) // 2]
            ax.text(n[j], d_line[j], f"{c:.2g}", color="white", fontsize=6, ha="center", va="bottom")
    ax.scatter(df["N"], df["D"], s=10, color="black", label="runs", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n.min(), n.max())
    ax.set_ylim(d.min(), d.max())
    ax.set_xlabel("parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title(f"Approach 3: L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}")
    ax.legend(loc="upper right")
    return fig


def residuals(df, fit) -> Figure:
    """Approach-3 (and Kaplan L(N, D)) relative errors of the loss against N and D, predicted/measured − 1
    (positive: the law predicts too high a loss), the sign the held-out check and its figure use."""
    fig, (axn, axd) = _figure(w=10, h=3.8, ncols=2)
    norm = _budget_norm(df["C"])
    law = _law(fit["approach3"], SIX_N)  # residuals need only L(N, D), no convention
    res = 100 * (law.loss(df["N"], df["D"]) / df["L"] - 1)  # the sign of held-out errors (fit/holdout.py)
    for ax, x, lab in ((axn, df["N"], "parameters N"), (axd, df["D"], "training tokens D")):
        sc = ax.scatter(x, res, c=df["C"], cmap="viridis", norm=norm, s=16, label="Approach 3")
        if _ok(fit, "kaplan") and as_fit_result(fit).kaplan.joint() is not None:
            if fit["kaplan"].get("n_kind") == "total":
                kr = 100 * (kaplan_joint(fit["kaplan"]["L_ND"], df["N"], df["D"]) / df["L"] - 1)
                ax.scatter(x, kr, marker="x", color="0.5", s=12, label="Kaplan L(N, D)")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(lab)
        ax.set_ylabel("predicted/measured − 1 (%)")
        ax.grid(True, alpha=0.25)
    rms = float(np.sqrt(np.mean(res**2)))
    axn.set_title(f"Approach-3 residuals (rms {rms:.2f}%)")
    axn.legend(loc="best")
    fig.colorbar(sc, ax=[axn, axd], label="FLOP budget C (FLOPs)")
    return fig


# A fitting method's own figures (research.fit.method.Method.figures names them): name -> figure(df, fit).
FIGURES = {"approach3_contours": approach3_contours, "residuals": residuals}
