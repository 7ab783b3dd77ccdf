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

Losses are averaged over seeds per (N, D) point first (`research.fit.noise.point_means`).

Slices ("slices" in fit.json):
* "design budgets": the table's `budget` column (or --flops-col) gives budgets that several
  sizes share (an IsoFLOP design); runs are grouped by budget as above.
* "interpolated": a design without shared budgets (sizes x token counts, or cooldown branches
  given that way). Each size's end points form a profile of ln L against ln C (its runs' real
  FLOPs), interpolated linearly between its points and never beyond them
  (`research.fit.profiles.interpolate`, the same function Approach 1's envelope uses). N_SLICES
  log-spaced budgets are placed inside the compute range where >= MIN_SLICE_SIZES sizes cover
  the budget; at each, the covering sizes' interpolated losses are the IsoFLOP slice, and the
  parabola in ln N gives N_opt as above, with D_opt = C / (FLOPs per token at N_opt). The slices
  share the runs they are interpolated from, so they are not independent: the bootstrap
  (resampling end points, or every point's seed replicates, and re-slicing) gives the intervals.
* "grouped run FLOPs": neither budgets nor profiles that overlap: runs whose FLOPs lie within
  10% of each other form a budget.
"""

from __future__ import annotations

import functools

import numpy as np

from research.errors import UserError
from research.fit.data import group_budgets
from research.fit.noise import MIN_REPLICATE_DOF, noise_sigma, noise_trend, point_means, replicate_sigma
from research.fit.powerlaw import bootstrap_allocation, fit_allocation
from research.fit.profiles import (coverage_range, has_replicates, interpolate, mean_points, resample_points,
                                   resampling_scheme, size_profiles)
from research.fit.allocation import fit_flops_per_token

SLICE_CHECK_LEVEL = 0.05  # a slice whose parabola misfits its seed means at this p-value is warned about
MIN_PURE_ERROR_DOF = 2  # replicate dof a slice needs for its own lack-of-fit test (else the noise model judges)
N_SLICES = 8  # interpolated IsoFLOP slices (log-spaced budgets) when the design has no shared budgets
MIN_SLICE_SIZES = 3  # sizes that must cover an interpolated budget (a parabola needs three)


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
        with np.errstate(over="ignore"):  # a nearly flat parabola puts its vertex at N = inf: said so
            n_vertex = np.exp(xv)
        raise BudgetRejected(
            f"parabola minimum at N={n_vertex:.3g} lies outside the sampled sizes "
            f"[{np.exp(x.min()):.3g}, {np.exp(x.max()):.3g}]; add {side} models to this budget")
    return float(np.exp(xv)), float(c0 + c1 * xv + c2 * xv * xv), [float(c0), float(c1), float(c2)]


def slice_noise(df) -> dict | None:
    """The seed noise of ln L that a slice's means are judged against (research.fit.noise: pooled over
    every replicated point, with its trend in D/N where measured); None without enough replicates."""
    rep = replicate_sigma(df)
    if rep is None or rep["dof"] < MIN_REPLICATE_DOF:
        return None
    return {"sigma_log": rep["sigma_log"], "by_tokens_per_param": noise_trend(df), "dof": rep["dof"]}


def parabola_check(N, D, L, n_seeds, coef, noise, ss_within=None) -> dict:
    """How well a slice's parabola fits its points' seed means, judged two ways:

    - against the sweep's noise model: chi2 = sum((mean - parabola) / sd)^2 with
      sd = L * sigma_ln L(D/N) / sqrt(seeds), on n - 3 dof;
    - against the slice's own replicates (`ss_within`, the lack-of-fit F test of a regression with
      replicated points): F = (sum seeds * resid^2 / (n - 3)) / (pure-error SS / sum (seeds - 1)).

    The F test decides `within_noise` where the slice has >= 2 pure-error dof: it measures the noise at
    these very points, which the noise model (a trend in D/N over the whole sweep) can miss, e.g. where
    the shortest runs are still leaving their early plateau. The sizes of one slice are separate trunks
    and initialisations, so their means' errors are independent. With 3 sizes the parabola passes
    through every mean: nothing is tested."""
    N, D, L, k = (np.asarray(v, float) for v in (N, D, L, n_seeds))
    x = np.log(N)
    resid = L - (coef[0] + coef[1] * x + coef[2] * x * x)
    sd = L * noise_sigma(noise, N, D) / np.sqrt(k)
    out = {"n_points": int(len(N)), "dof": int(len(N) - 3), "rms_residual": float(np.sqrt(np.mean(resid ** 2))),
           "noise_of_means": float(np.sqrt(np.mean(sd ** 2)))}
    pe_dof = int(np.sum(k - 1))
    if ss_within is not None and pe_dof > 0:
        pure = float(np.sum(np.asarray(ss_within, float))) / pe_dof  # variance of one run about its point's mean
        out["replicate_noise_of_means"] = float(np.sqrt(pure * np.mean(1.0 / k)))
    if len(N) <= 3:
        out["note"] = "3 sizes: the parabola passes through each mean, so its shape is untested"
        return out
    from scipy.stats import chi2, f  # lazy: importing scipy.stats takes 0.8 s (measured), paid only by fits with replicates

    stat = float(np.sum((resid / sd) ** 2))
    p_value = float(chi2.sf(stat, out["dof"]))
    out.update(chi2=stat, p_value=p_value, judged_by="noise model")
    if "replicate_noise_of_means" in out and pe_dof >= MIN_PURE_ERROR_DOF and pure > 0:
        F = float(np.sum(k * resid ** 2) / out["dof"] / pure)
        out["lack_of_fit"] = {"F": F, "dof": [out["dof"], pe_dof], "p_value": float(f.sf(F, out["dof"], pe_dof))}
        out["judged_by"] = "replicates"
    decisive = out["lack_of_fit"]["p_value"] if out["judged_by"] == "replicates" else p_value
    out["within_noise"] = bool(decisive >= SLICE_CHECK_LEVEL)
    return out


def flops_per_token(n_opt, N, F, D):
    """Real FLOPs per token at n_opt: the runs' own k·N^p (research/fit/allocation.py) evaluated there."""
    return float(fit_flops_per_token(N, F, D, convention="of the runs")(n_opt))


def isoflop_points(df, min_points=3, noise=None):
    """Per-budget optima and rejections from a clean table (columns N, D, L, F, C). With `noise`
    (slice_noise) and per-point means (an n_seeds column), each optimum gets its parabola's
    `fit_check` (parabola_check); the bootstrap's resamples pass none."""
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
        if noise is not None:
            good[-1]["fit_check"] = parabola_check(g["N"], g["D"], g["L"], g["n_seeds"], coef, noise,
                                                   g["ss_within"] if "ss_within" in g else None)
    return good, rejected


def interpolated_budgets(points, n_slices=N_SLICES) -> np.ndarray:
    """Log-spaced budgets inside the compute range where >= MIN_SLICE_SIZES sizes' profiles cover them
    (empty when no such range)."""
    rng = coverage_range(size_profiles(points), MIN_SLICE_SIZES)
    if rng is None or not rng[1] > rng[0]:
        return np.zeros(0)
    lo, hi = rng
    return np.geomspace(lo * (1 + 1e-9), hi * (1 - 1e-9), n_slices)


def interpolated_points(points, C_B, per_token):
    """Per-budget optima from IsoFLOP slices through the sizes' profiles (research/fit/profiles.py) at
    budgets C_B; D_opt = C / (FLOPs per token at N_opt)."""
    profiles = size_profiles(points)
    N_S = np.array([p["N"] for p in profiles])
    L_SB = interpolate(profiles, C_B)
    good, rejected = [], []
    for j, c in enumerate(C_B):
        m = np.isfinite(L_SB[:, j])
        try:
            n_opt, l_opt, coef = parabola_min(N_S[m], L_SB[m, j])
        except BudgetRejected as err:
            rejected.append({"flops": float(c), "n_points": int(m.sum()), "reason": str(err)})
            continue
        fpt = float(per_token(n_opt))
        good.append({"flops": float(c), "n_opt": n_opt, "d_opt": float(c) / fpt, "loss_opt": l_opt,
                     "flops_per_token": fpt, "n_points": int(m.sum()), "parabola_lnN": coef,
                     "slice": {"n_params": [float(x) for x in N_S[m]], "loss": [float(x) for x in L_SB[m, j]]}})
    return good, rejected


def slicing(df, design_budgets: bool, per_token, n_slices=N_SLICES):
    """(kind, budgets or None): "design budgets" where the table has them; else "interpolated" where
    >= MIN_SLICE_SIZES sizes have >= 2 token counts and overlap; else "grouped run FLOPs" (runs whose
    FLOPs lie within 10% form a budget)."""
    if design_budgets:
        return "design budgets", None
    _, points = mean_points(df)
    multi = len(size_profiles(points))
    C_B = interpolated_budgets(points, n_slices) if multi >= MIN_SLICE_SIZES else np.zeros(0)
    return ("interpolated", C_B) if len(C_B) else ("grouped run FLOPs", None)


def fit_approach2(df, bootstrap=0, seed=0, level=0.95, budgets=(), convention="6n", design_budgets=True,
                  per_token=None, n_slices=N_SLICES) -> dict:
    """Approach 2 on a clean table whose budgets C and FLOPs F are in `convention` (labelled so), on the
    per-point mean loss over seeds. `design_budgets=False`: the table's C are not shared budgets, so
    slices are interpolated through the sizes' profiles where the design allows (see `slicing`)."""
    per_token = per_token or fit_flops_per_token(df["N"], df["F"], df["D"], convention)
    kind, C_B = slicing(df, design_budgets, per_token, n_slices)
    slicer = isoflop_points if C_B is None else functools.partial(interpolated_points, C_B=C_B, per_token=per_token)
    groups, points = mean_points(df)
    # design budgets: each slice's own points, independent between sizes, so its parabola's fit is judged
    good, rejected = slicer(points) if C_B is not None else isoflop_points(points, noise=slice_noise(df))
    if len(good) < 2 and kind == "grouped run FLOPs" and not any(r["n_points"] >= 3 for r in rejected):
        raise UserError("Approach 2 needs IsoFLOP slices: the table has no shared FLOP budgets (no `budget` column; "
                        f"--flops-col names one) and nowhere do >= {MIN_SLICE_SIZES} sizes' end points overlap in FLOPs "
                        "to interpolate a slice through; give each size more token counts so neighbouring sizes overlap")
    if len(good) < 2:
        why = "; ".join(f"C={r['flops']:.3g}: {r['reason']}" for r in rejected[:4]) or "no budgets"
        more = f"; and {len(rejected) - 4} more" if len(rejected) > 4 else ""
        raise UserError(f"Approach 2 needs >= 2 budgets with an interior IsoFLOP minimum, found {len(good)} "
                        f"({kind} slices; {why}{more}); add budgets or sizes around each optimum")
    res = {"method": "approach2", **_allocation(good), "form": "N_opt = k_N*C^a, D_opt = k_D*C^b", "slices": kind, "budgets": good, "rejected_budgets": rejected,
           "n_points": int(len(df)), "n_mean_points": int(len(points)), "n_budgets": len(good),
           "flops_convention": convention,
           "warnings": [f"budget C={r['flops']:.3g} refused: {r['reason']}" for r in rejected]}
    if C_B is not None:
        res["interpolated_budgets"] = [float(c) for c in C_B]
    if len(good) == 2:
        res["warnings"].append("only 2 budgets: the power laws pass exactly through them (no check of fit)")
    if bootstrap and C_B is None and not has_replicates(groups):
        res["bootstrap"] = bootstrap_approach2(df, bootstrap, seed, level, budgets, convention)
    elif bootstrap:
        res["bootstrap"] = bootstrap_points(df, groups, slicer, bootstrap, seed, level, budgets, convention)
    return res


def _allocation(good):
    return fit_allocation([g["flops"] for g in good], [g["n_opt"] for g in good], [g["d_opt"] for g in good])


def _bootstrap(draw, n_resamples, level, budgets, convention, seed, resampling):
    """Refit the allocation power laws on `n_resamples` IsoFLOP optima sets from `draw()`, then summarise."""
    def fitted():
        good = draw()
        return _allocation(good) if len(good) >= 2 else None

    out, failed = bootstrap_allocation(fitted, n_resamples, level, budgets, convention)
    if out is None:
        return {"n_resamples": 0, "n_failed": failed, "error": "every resample failed"}
    out.update(n_failed=failed, seed=seed, resampling=resampling)
    return out


def bootstrap_points(df, groups, slicer, n_resamples, seed=0, level=0.95, budgets=(), convention="6n"):
    """Bootstrap over per-point means (research.fit.profiles.resample_points), re-slicing each draw."""
    rng = np.random.default_rng(seed)
    points = point_means(df, groups)
    return _bootstrap(lambda: slicer(resample_points(df, groups, rng, points))[0], n_resamples, level, budgets,
                      convention, seed, resampling_scheme(groups))


def bootstrap_approach2(df, n_resamples, seed=0, level=0.95, budgets=(), convention="6n"):
    """Resample runs with replacement within each budget (so every budget keeps its size), refit."""
    rng = np.random.default_rng(seed)
    labels = group_budgets(df["C"].to_numpy())
    groups = [np.flatnonzero(labels == lab) for lab in np.unique(labels)]

    def draw():
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        return isoflop_points(df.iloc[idx])[0]

    return _bootstrap(draw, n_resamples, level, budgets, convention, seed, "runs with replacement within each budget")
