"""Chinchilla Approach 2 (Hoffmann et al. 2022 §3.2): IsoFLOP profiles.

Per FLOP budget C: fit a parabola to loss against log N, take its minimum
N_opt(C), with D_opt = C / (FLOPs per token at N_opt). FLOPs per token come from
the runs themselves (their real FLOPs / tokens, interpolated in log N), which is
6·N under the 6n convention and the exact count under the chinchilla one. Then
fit N_opt = k_N·C^a and D_opt = k_D·C^b across budgets.

A budget is refused (left out of the power laws, with the reason recorded) when
it has fewer than 3 distinct sizes, its parabola opens downward, or its minimum
is not inside the range of sizes it sampled: extrapolating a parabola past its
data is how IsoFLOP fits go wrong.
"""

from __future__ import annotations

import numpy as np

from research.errors import UserError
from research.fit.data import group_budgets
from research.fit.powerlaw import fit_powerlaw, summarize_allocation_bootstrap


class BudgetRejected(Exception):
    pass


def parabola_min(N, L, F=None, D=None):
    """Vertex of L = c0 + c1·x + c2·x², x = ln N. Raises BudgetRejected."""
    x = np.log(np.asarray(N, float))
    L = np.asarray(L, float)
    if len(np.unique(np.round(x, 9))) < 3:
        raise BudgetRejected(f"only {len(np.unique(np.round(x, 9)))} distinct model sizes (need >= 3)")
    c2, c1, c0 = np.polyfit(x, L, 2)
    if not c2 > 0:
        raise BudgetRejected("loss is not convex in log N (parabola opens downward); add sizes around the optimum")
    xv = -c1 / (2 * c2)
    if not x.min() < xv < x.max():
        side = "smaller" if xv <= x.min() else "larger"
        raise BudgetRejected(
            f"parabola minimum at N={np.exp(xv):.3g} lies outside the sampled sizes "
            f"[{np.exp(x.min()):.3g}, {np.exp(x.max()):.3g}]; add {side} models to this budget")
    return float(np.exp(xv)), float(c0 + c1 * xv + c2 * xv * xv), [float(c0), float(c1), float(c2)]


def flops_per_token(n_opt, N, F, D):
    """Real FLOPs per token at n_opt: the runs' own k·N^p (research/fit/allocation.py) evaluated there."""
    from research.fit.allocation import fit_flops_per_token

    return float(fit_flops_per_token(N, F, D, convention="of the runs")(n_opt))


def isoflop_points(df, min_points=3):
    """Per-budget optima and rejections from a clean table (columns N, D, L, F, C)."""
    labels = group_budgets(df["C"].to_numpy())
    good, rejected = [], []
    for lab in np.unique(labels):
        g = df[labels == lab]
        c = float(np.exp(np.mean(np.log(g["C"].to_numpy()))))
        if len(g) < min_points:
            rejected.append({"flops": c, "n_points": int(len(g)),
                             "reason": f"{len(g)} runs (need >= {min_points})"})
            continue
        try:
            n_opt, l_opt, coef = parabola_min(g["N"], g["L"])
        except BudgetRejected as err:
            rejected.append({"flops": c, "n_points": int(len(g)), "reason": str(err)})
            continue
        fpt = flops_per_token(n_opt, g["N"], g["F"], g["D"])
        good.append({"flops": c, "n_opt": n_opt, "d_opt": c / fpt, "loss_opt": l_opt,
                     "flops_per_token": fpt, "n_points": int(len(g)), "parabola_lnN": coef})
    return good, rejected


def fit_approach2(df, bootstrap=0, seed=0, level=0.95, budgets=(), convention="6n") -> dict:
    """Approach 2 on a clean table whose budgets C and FLOPs F are in `convention` (labelled so)."""
    good, rejected = isoflop_points(df)
    if len(good) < 2:
        why = "; ".join(f"C={r['flops']:.3g}: {r['reason']}" for r in rejected) or "no budgets"
        raise UserError(f"Approach 2 needs >= 2 budgets with an interior IsoFLOP minimum, found {len(good)} "
                        f"({why}); add budgets or sizes around each optimum")
    C = np.array([g["flops"] for g in good])
    k_n, a = fit_powerlaw(C, [g["n_opt"] for g in good])
    k_d, b = fit_powerlaw(C, [g["d_opt"] for g in good])
    res = {"method": "approach2", "a": a, "b": b, "k_N": k_n, "k_D": k_d,
           "form": "N_opt = k_N*C^a, D_opt = k_D*C^b", "budgets": good, "rejected_budgets": rejected,
           "n_points": int(len(df)), "n_budgets": len(good), "flops_convention": convention,
           "warnings": [f"budget C={r['flops']:.3g} refused: {r['reason']}" for r in rejected]}
    if len(good) == 2:
        res["warnings"].append("only 2 budgets: the power laws pass exactly through them (no check of fit)")
    if bootstrap:
        res["bootstrap"] = bootstrap_approach2(df, bootstrap, seed, level, budgets, convention)
    return res


def bootstrap_approach2(df, n_resamples, seed=0, level=0.95, budgets=(), convention="6n"):
    """Resample runs with replacement within each budget (so every budget keeps its size), refit."""
    rng = np.random.default_rng(seed)
    labels = group_budgets(df["C"].to_numpy())
    groups = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]
    samples = {"k_N": [], "a": [], "k_D": [], "b": []}
    failed = 0
    for _ in range(n_resamples):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        good, _ = isoflop_points(df.iloc[idx])
        if len(good) < 2:
            failed += 1
            continue
        C = np.array([g["flops"] for g in good])
        k_n, a = fit_powerlaw(C, [g["n_opt"] for g in good])
        k_d, b = fit_powerlaw(C, [g["d_opt"] for g in good])
        for k, v in zip(("k_N", "a", "k_D", "b"), (k_n, a, k_d, b)):
            samples[k].append(v)
    if not samples["a"]:
        return {"n_resamples": 0, "n_failed": failed, "error": "every resample failed"}
    out = summarize_allocation_bootstrap(samples, level, budgets, convention)
    out.update(n_failed=failed, seed=seed, resampling="runs with replacement within each budget")
    return out
