"""How much the fitted exponent a (N_opt ∝ C^a) moves with the analyst's choices: fit.json's
`sensitivity` block, written beside every Approach-3 fit.

A bootstrap interval says how far a moves when the *data* are redrawn under one set of choices.
A reviewer also asks how far it moves when the *choices* change, the data fixed:

* **E profiled.** The irreducible loss E trades against A/N^alpha (a large E with a steep alpha
  fits as well as a small E with a shallow one). Fixing E on a grid and refitting the other four
  parameters gives the ridge: the objective and a as functions of E. Reported: the range of a
  (and of E) whose objective is within PROFILE_THRESHOLD (relative) of the best.
* **Rows:** every run (as fitted) against the seed means of each (N, D) point (the Huber loss
  with delta 1e-3 acts like least absolute deviations, which is flat between two seeds).
* **N:** total parameters against non-embedding parameters (embeddings are a large share of N at
  small sizes; the budgets' FLOPs are then taken as 6·N·D in that N).
* **Leave one size out / leave one budget out:** every size, every budget, dropped in turn.
* **Each model family alone** (when the table holds several).

Approach 3 is refitted for every choice from the full fit's best distinct local optima (and, where
the data themselves change, a small start grid), no bootstrap; the subset choices are weight rows
of one batched solve. Approach 2 (IsoFLOP parabolas, cheap) is refitted beside it where it can be.
A warning is raised when the range of a across the choices is wider than Approach 3's bootstrap
interval: then the interval understates what the exponent depends on.

`fit_at_fixed_E` is the one place E is held fixed (scipy L-BFGS-B with e's bounds pinned); a
variable-projection solver can replace it without changing its callers.
"""

from __future__ import annotations

import math
import time

import numpy as np

from research.errors import UserError
from research.fit.allocation import SIX_N
from research.fit.approach3 import DELTA, MAXITER, TOLERANCES, grid_starts, objective_np, solve, theta_to_params
from research.fit.data import group_budgets
from research.fit.isoflop import fit_approach2
from research.fit.noise import point_means, same_value_keys
from research.records import Approach2Result, Approach3Result, Sensitivity, SensitivityChoice, SensitivityRange

PROFILE_THRESHOLD = 0.02  # E's profile: the choices of E whose objective is within 2% of the best
PROFILE_POINTS = 17  # E grid: this many values from 2% to 98% of the smallest measured loss (and the best E)
PROFILE_NEAR = np.array([0.95, 0.98, 0.99, 1.0, 1.01, 1.02, 1.05])  # and these multiples of the fitted E
MIN_POINTS = 8  # an Approach-3 refit needs >= 8 runs over >= 3 sizes and >= 3 token counts


def fit_at_fixed_E(lnN, lnD, lnL, E: float, starts, *, w=None, reduction="sum", tol="tight"):
    """Approach 3's objective minimised over (a, b, alpha, beta) with E held at `E` (BFGS on the
    four free parameters, the objective's analytic gradient). Returns (theta (a, b, e, alpha, beta),
    objective) of the best start."""
    from scipy.optimize import minimize

    gtol = TOLERANCES[tol][1]
    w = np.ones_like(lnN) if w is None else w
    e = math.log(E)

    def fun(x4):
        f, g = objective_np(np.insert(x4, 2, e), lnN, lnD, lnL, w, DELTA, reduction)
        return (f, np.delete(g, 2)) if np.isfinite(f) else (np.inf, np.zeros(4))

    best = (None, math.inf)
    for x0 in np.atleast_2d(starts):
        r = minimize(fun, np.delete(np.asarray(x0, dtype=np.float64), 2), jac=True, method="BFGS",
                     options={"maxiter": MAXITER, "gtol": gtol})
        if np.isfinite(r.fun) and r.fun < best[1]:
            best = (np.insert(r.x, 2, e), float(r.fun))
    return best


def profile_E(df, theta_best, objective_best: float, per_token, *, reduction="sum", tol="tight") -> dict:
    """a and the objective as functions of a fixed E (a grid below the smallest measured loss, and
    the fitted E), each refitted from the fitted law and from its neighbour on the grid, walking
    outward from the fitted E (the ridge is smooth)."""

    lnN, lnD, lnL = (np.log(df[c].to_numpy(float)) for c in ("N", "D", "L"))
    E_best = math.exp(theta_best[2])
    grid = np.append(np.linspace(0.02, 0.98, PROFILE_POINTS) * float(np.min(df["L"])), E_best * PROFILE_NEAR)
    grid = np.unique(grid[(grid > 0) & (grid < 0.999 * float(np.min(df["L"])))])
    rows = {}
    start = int(np.searchsorted(grid, E_best))
    for direction in (range(start, len(grid)), range(start - 1, -1, -1)):
        previous = np.asarray(theta_best, float)
        for i in direction:
            theta, f = fit_at_fixed_E(lnN, lnD, lnL, float(grid[i]), [previous, theta_best], reduction=reduction,
                                      tol=tol)
            if theta is None:
                continue
            previous = theta
            p = theta_to_params(theta, per_token)
            rows[i] = {"E": float(grid[i]), "objective": f, "alpha": p["alpha"], "beta": p["beta"], "a": p["a"]}
    ordered = [rows[i] for i in sorted(rows)]
    best = min(min(r["objective"] for r in ordered), objective_best)
    for r in ordered:
        r["objective_rel"] = r["objective"] / best - 1.0
    near = [r for r in ordered if r["objective_rel"] <= PROFILE_THRESHOLD and np.isfinite(r["a"])]
    out = {key: [r[key] for r in ordered] for key in ("E", "objective", "objective_rel", "alpha", "beta", "a")}
    out.update(threshold=PROFILE_THRESHOLD, E_fitted=E_best,
               description=f"E fixed on a grid up to the smallest measured loss; the other four parameters refitted. "
                           f"Within threshold: objective at most {PROFILE_THRESHOLD:.0%} above the best")
    if near:
        out["a_within_threshold"] = [min(r["a"] for r in near), max(r["a"] for r in near)]
        out["E_within_threshold"] = [min(r["E"] for r in near), max(r["E"] for r in near)]
    return out


def _enough(sub) -> bool:
    return len(sub) >= MIN_POINTS and sub["N"].nunique() >= 3 and sub["D"].nunique() >= 3


def _subsets(df) -> list[tuple[str, str, np.ndarray]]:
    """(group, choice, row mask) for every leave-one-out and family choice."""

    out = []
    size = same_value_keys(df["N"])
    for k in sorted(set(size)):
        n = float(df["N"][size == k].iloc[0])
        out.append(("leave one size out", f"without N = {n:,.0f}", size != k))
    budget = group_budgets(df["C"].to_numpy(float))
    if len(set(budget)) > 1:
        for k in sorted(set(budget)):
            c = float(np.exp(np.mean(np.log(df["C"][budget == k]))))
            out.append(("leave one budget out", f"without C = {c:.3g}", budget != k))
    if "family" in df.columns and df["family"].nunique() > 1:
        for name in sorted(set(df["family"])):
            out.append(("model family", f"{name} alone", (df["family"] == name).to_numpy()))
    return out


def _approach2_a(sub, convention, per_token, design_budgets) -> float | None:

    try:
        return float(fit_approach2(sub, convention=convention, per_token=per_token,
                                   design_budgets=design_budgets)["a"])
    except UserError:
        return None


def _refit(lnN, lnD, lnL, starts, W, per_token, *, backend, reduction, tol, n_rows, n_starts) -> list[dict]:
    """Approach 3 refitted under each weight row of W (K x n) from every start; best per row. The jax
    solver gets the full fit's shapes (`n_rows` runs, padded with weight 0; `n_starts` starts) so it
    reuses that fit's compiled program instead of compiling another."""

    S, pad = len(starts), n_rows - len(lnN)
    if pad > 0:
        lnN, lnD, lnL = (np.concatenate([v, np.full(pad, v[0])]) for v in (lnN, lnD, lnL))
        W = np.hstack([W, np.zeros((len(W), pad))])
    extra = {"min_starts": n_starts} if backend == "jax" else {}
    xs, fs, _ = solve(np.tile(starts, (len(W), 1)), lnN, lnD, lnL, W, backend=backend, reduction=reduction,
                      tol=tol, weight_rows=np.repeat(np.arange(len(W), dtype=np.int32), S), **extra)
    out = []
    for k in range(len(W)):
        f = np.where(np.isfinite(fs[k * S:(k + 1) * S]), fs[k * S:(k + 1) * S], np.inf)
        j = int(np.argmin(f))
        out.append({"objective": float(f[j]), **theta_to_params(xs[k * S + j], per_token)})
    return out


def sensitivity_report(df, a3: Approach3Result, a2: Approach2Result | None, per_token, *, convention="6n",
                       design_budgets=True, backend="jax", reduction="sum", tol="tight") -> Sensitivity:
    """fit.json's `sensitivity` block: a (Approach 3, and Approach 2 where it fits; `a2` None when it was not
    fitted) as the choices vary."""

    t0 = time.perf_counter()
    theta = np.array([math.log(a3.A), math.log(a3.B), math.log(a3.E), a3.alpha, a3.beta])
    optima = np.array(a3.local_optima or [theta], dtype=np.float64).reshape(-1, 5)
    wide = np.vstack([optima, grid_starts("small")])
    lnN, lnD, lnL = (np.log(df[c].to_numpy(float)) for c in ("N", "D", "L"))
    shapes = {"n_rows": len(df), "n_starts": int(a3.n_starts or 0)}
    choices = [SensitivityChoice.of(group="rows", choice="every row (as fitted)", n_points=int(len(df)),
                                 approach3=a3.a, alpha=a3.alpha, beta=a3.beta, E=a3.E, objective=a3.objective,
                                 approach2=None if a2 is None else a2.a)]

    subsets = _subsets(df)
    usable = [(g, c, m) for g, c, m in subsets if _enough(df[m])]
    if usable:
        W = np.array([m for _, _, m in usable], dtype=np.float64)
        fits = _refit(lnN, lnD, lnL, optima, W, per_token, backend=backend, reduction=reduction, tol=tol, **shapes)
        for (group, choice, mask), fit in zip(usable, fits):
            sub = df[mask].reset_index(drop=True)
            choices.append(_choice(group, choice, int(mask.sum()), fit,
                                   _approach2_a(sub, convention, per_token, design_budgets)))
    for group, choice, mask in subsets:
        if not _enough(df[mask]):
            choices.append(SensitivityChoice(
                group=group, choice=choice, n_points=int(mask.sum()),
                reason=f"too few runs, sizes or token counts for Approach 3 (need >= {MIN_POINTS} "
                       "runs over >= 3 sizes and >= 3 token counts)"))

    variants = []
    means = point_means(df)
    if len(means) < len(df) and _enough(means):
        variants.append(("rows", "seed means (one row per (N, D) point)", means, per_token))
    if "N_nonemb" in df.columns and np.all(df["N_nonemb"] > 0):
        nonemb = df.assign(N=df["N_nonemb"], F=6.0 * df["N_nonemb"] * df["D"])
        variants.append(("N", "non-embedding N (C = 6·N·D in that N)", nonemb, SIX_N))
    for group, choice, data, pt in variants:
        ln = [np.log(data[c].to_numpy(float)) for c in ("N", "D", "L")]
        (fit,) = _refit(*ln, wide, np.ones((1, len(data))), pt, backend=backend, reduction=reduction, tol=tol,
                        **shapes)
        a2_a = _approach2_a(data, convention if pt is per_token else "6n", pt, design_budgets)
        choices.append(_choice(group, choice, int(len(data)), fit, a2_a))

    profile = profile_E(df, theta, a3.objective, per_token, reduction=reduction, tol=tol)
    out = Sensitivity(quantity="a, the exponent of N_opt ∝ C^a (Approach 3 refitted without bootstrap from the "
                               "full fit's local optima; Approach 2's parabolas refitted beside it)",
                      choices=choices, E_profile=profile)
    a_vals = [c.approach3 for c in choices if not c.skipped and np.isfinite(c.approach3)]
    out.range = SensitivityRange(approach3=[min(a_vals), max(a_vals)], width=max(a_vals) - min(a_vals))
    a2_vals = [c.approach2 for c in choices if c.approach2 is not None]
    if a2_vals:
        out.range.approach2 = [min(a2_vals), max(a2_vals)]
    if "a_within_threshold" in profile:
        lo, hi = profile["a_within_threshold"]
        out.range.with_E_profile = [min(lo, min(a_vals)), max(hi, max(a_vals))]
    out.warnings = _warnings(out, a3) + _family_warnings(df, choices)
    out.seconds = time.perf_counter() - t0
    return out


def _choice(group: str, choice: str, n_points: int, fit: dict, approach2) -> SensitivityChoice:
    return SensitivityChoice.of(group=group, choice=choice, n_points=n_points, approach3=fit["a"], alpha=fit["alpha"],
                             beta=fit["beta"], E=fit["E"], objective=fit["objective"], approach2=approach2)


def _warnings(block: Sensitivity, a3: Approach3Result) -> list[str]:
    interval = (a3.intervals()).get("a")
    lo, hi = block.range.widest()
    if not interval or interval[0] is None:
        return [f"a ranges over [{lo:.3f}, {hi:.3f}] across the analyst's choices (no bootstrap interval to "
                "compare; run with --bootstrap)"] if hi - lo > 0.05 else []
    width = interval[1] - interval[0]
    if hi - lo > width:
        worst = max((c for c in block.choices if not c.skipped), key=lambda c: abs(c.approach3 - a3.a))
        return [f"a ranges over [{lo:.3f}, {hi:.3f}] across the analyst's choices (E profiled, rows, N, leave one "
                f"out, family), wider than Approach 3's bootstrap interval [{interval[0]:.3f}, {interval[1]:.3f}]: "
                f"the interval understates what the exponent depends on (largest single move: "
                f"{worst.choice}, a = {worst.approach3:.3f})"]
    return []


def _family_warnings(df, choices: list[SensitivityChoice]) -> list[str]:
    """A table of several model families: the law across them confounds the change of shape with N."""
    if "family" not in df.columns or df["family"].nunique() < 2:
        return []
    alone = [f"{c.choice}: a = {c.approach3:.3f}" if not c.skipped else f"{c.choice}: too few sizes"
             for c in choices if c.group == "model family"]
    return [f"the table holds {df['family'].nunique()} model families ({', '.join(sorted(set(df['family'])))}): a law "
            f"fitted across them confounds the change of shape with N ({'; '.join(alone)})"]


def sensitivity_lines(block: Sensitivity | None) -> list[str]:
    """The printed summary of a sensitivity block."""
    if not isinstance(block, Sensitivity):
        return []
    lines = ["sensitivity of a (Approach 3; Approach 2 in brackets) to the analyst's choices:"]
    for c in block.choices:
        if c.skipped:
            lines.append(f"  {c.group:>20}: {c.choice}: skipped ({c.reason})")
            continue
        a2 = f" [{c.approach2:.3f}]" if c.approach2 is not None else ""
        lines.append(f"  {c.group:>20}: {c.choice}: a = {c.approach3:.3f}{a2} (alpha {c.alpha:.3g}, "
                     f"E {c.E:.3g}; {c.n_points} rows)")
    p = block.E_profile or {}
    if "a_within_threshold" in p:
        lines.append(f"  {'E profiled':>20}: objective within {p['threshold']:.0%} of the best for E in "
                     f"[{p['E_within_threshold'][0]:.3g}, {p['E_within_threshold'][1]:.3g}], a in "
                     f"[{p['a_within_threshold'][0]:.3f}, {p['a_within_threshold'][1]:.3f}]")
    r = block.range
    lines.append(f"  range of a across the choices: [{r.approach3[0]:.3f}, {r.approach3[1]:.3f}]"
                 + (f"; with E profiled [{r.with_E_profile[0]:.3f}, {r.with_E_profile[1]:.3f}]"
                    if r.with_E_profile is not None else ""))
    lines += [f"  warning: {w}" for w in block.warnings]
    return lines
