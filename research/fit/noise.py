"""Run-to-run noise of measured losses, for prediction intervals.

A prediction interval for a *new run's measured loss* must include the run's own
noise, not only the uncertainty of the law's parameters. Two estimates, both of
the standard deviation σ of ln L (noise is multiplicative: L_measured =
L_true · exp(ε), the same log scale on which Approach 3 fits):

* ``replicates``: runs at the same (N, D) that differ only in their seed (rows
  with equal N and D; where the table has a ``seed`` column, only rows with
  distinct seeds count). The pooled within-group variance
  σ² = Σ_g Σ_i (ln L_gi − mean_g)² / Σ_g (n_g − 1) is pure run-to-run spread.
* ``residuals``: without replicates, the residual scatter of the fit stands in:
  σ² = Σ_i (ln L_i − ln L̂_i)² / (n − k), k = the law's fitted parameters. It
  includes any lack of fit, so it is an upper bound on the noise when the law is
  misspecified.

Replicates are used when they give at least MIN_REPLICATE_DOF degrees of freedom.

`point_groups` is the one grouping of rows into (N, D) points (used by the fits' per-point means,
`point_means`, and their cluster bootstraps); `seed_noise` is fit.json's top-level "noise" block
(the loss's spread between seeds in nats/token, per point and pooled).
"""

from __future__ import annotations

import math

import numpy as np

MIN_REPLICATE_DOF = 3
SAME_POINT_REL_TOL = 1e-3  # N and D within 0.1% count as the same (N, D)


def same_value_keys(x) -> np.ndarray:
    """Integer keys equal for values within SAME_POINT_REL_TOL of each other (rounded log scale): the one
    definition of "the same N" (or D) for points, sizes and their profiles."""
    return np.round(np.log(np.asarray(x, float)) / np.log1p(SAME_POINT_REL_TOL)).astype(np.int64)


def point_groups(df) -> list[np.ndarray]:
    """Row indices of every (N, D) point (N and D within SAME_POINT_REL_TOL), one row per seed where the
    table has a ``seed`` column (a re-run with the same seed is not a replicate), in first-seen order."""
    if len(df) == 0:
        return []
    key_n, key_d = same_value_keys(df["N"]), same_value_keys(df["D"])
    seeds = df["seed"].astype(str).to_numpy() if "seed" in df.columns else None
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(key_n, key_d)):
        groups.setdefault(key, []).append(i)
    out = []
    for idx in groups.values():
        if seeds is not None:
            first = {}
            for i in idx:
                first.setdefault(seeds[i], i)
            idx = list(first.values())
        out.append(np.array(idx))
    return out


def seed_draw(df, groups, rng, shared: bool = True) -> list[np.ndarray]:
    """One bootstrap draw of every point's seed replicates (row indices, one array per group, each as long
    as its group). `shared`: each size's seeds (N within SAME_POINT_REL_TOL) are drawn once with
    replacement and the same draw is used at all of that size's points. A seed's runs of one size share
    their initialisation and data order (in a branch design their trunk too), so their noise is
    correlated: a seed that lags lags at every D. Drawing seeds per point instead treats that noise as
    independent and gives intervals that are too narrow (benchmarks/design_power.py measures how much).
    A point that lacks one of its size's drawn seeds, and every point when not `shared`, draws its own."""
    if not shared or "seed" not in df.columns:
        return [rng.choice(g, size=len(g), replace=True) for g in groups]
    seeds = df["seed"].astype(str).to_numpy()
    size = same_value_keys(df["N"])
    of_size: dict[int, set] = {}
    for g in groups:
        of_size.setdefault(int(size[g[0]]), set()).update(seeds[g])
    drawn = {k: rng.choice(sorted(v), size=len(v), replace=True) for k, v in of_size.items()}
    out = []
    for g in groups:
        row = dict(zip(seeds[g], g))
        pick = [row[s] for s in drawn[int(size[g[0]])] if s in row]
        out.append(np.array(pick) if len(pick) == len(g) else rng.choice(g, size=len(g), replace=True))
    return out


def replicate_groups(df) -> list[np.ndarray]:
    """Row indices of each (N, D) point measured by >= 2 runs (distinct seeds where known)."""
    return [g for g in point_groups(df) if len(g) >= 2]


def point_means(df, groups=None):
    """One row per (N, D) point: the loss averaged over its replicates (rows `groups[i]`, which may
    repeat rows, as a bootstrap draw does), with N, D, F, C of the point, `n_seeds` and `ss_within`
    (the sum of squared deviations of its distinct runs' losses from their mean, nats^2)."""
    import pandas as pd

    groups = point_groups(df) if groups is None else groups
    cols = {c: df[c].to_numpy(float) for c in ("N", "D", "L", "F", "C") if c in df.columns}
    rows = {c: [float(np.mean(v[g])) for g in groups] for c, v in cols.items()}
    rows["n_seeds"] = [int(len(np.unique(g))) for g in groups]
    if "L" in cols:  # the point's own replicate scatter (pure error), for the slices' lack-of-fit test
        rows["ss_within"] = [float(np.sum((cols["L"][u] - np.mean(cols["L"][u])) ** 2))
                             for u in (np.unique(g) for g in groups)]
    return pd.DataFrame(rows)


def seed_noise(df) -> dict:
    """fit.json's top-level "noise": the loss's spread between seeds per replicated (N, D) point and
    pooled (nats/token and relative to the point's mean loss; standard deviations with ddof=1)."""
    groups = replicate_groups(df)
    if not groups:
        return {"replicates": 0, "note": "no (N, D) point was run with more than one seed, so the run-to-run "
                                         "noise is unmeasured; a design with seeds = K >= 2 measures it"}
    L, N, D = (df[c].to_numpy(float) for c in ("L", "N", "D"))
    points, ss, ss_rel = [], 0.0, 0.0
    for g in groups:
        mean = float(np.mean(L[g]))
        std = float(np.std(L[g], ddof=1))
        ss += float(np.sum((L[g] - mean) ** 2))
        ss_rel += float(np.sum(((L[g] - mean) / mean) ** 2))
        points.append({"N": float(np.mean(N[g])), "D": float(np.mean(D[g])), "n_seeds": int(len(g)),
                       "mean_loss": mean, "std": std, "rel_std": std / mean})
    dof = int(sum(len(g) - 1 for g in groups))
    return {"replicates": int(sum(len(g) for g in groups)), "n_points": len(groups), "points": points,
            "model": noise_model(df),
            "pooled": {"std": float(np.sqrt(ss / dof)), "rel_std": float(np.sqrt(ss_rel / dof)), "dof": dof},
            "units": "std in nats/token, rel_std = std / mean loss of the point; pooled: sqrt(sum of squared "
                     "deviations from each point's mean / sum of (n_seeds - 1))"}


def replicate_sigma(df) -> dict | None:
    """Pooled run-to-run σ of ln L from replicate groups, or None without any."""
    groups = replicate_groups(df)
    if not groups:
        return None
    lnL = np.log(df["L"].to_numpy(float))
    ss = sum(float(np.sum((lnL[g] - lnL[g].mean()) ** 2)) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return {"sigma_log": float(np.sqrt(ss / dof)), "dof": int(dof), "n_groups": len(groups),
            "n_runs": int(sum(len(g) for g in groups)),
            "seed_column": "seed" in df.columns}


def residual_sigma(L, L_pred, n_fitted: int) -> dict:
    """Residual σ of ln L about a fit with `n_fitted` free parameters."""
    r = np.log(np.asarray(L, float)) - np.log(np.asarray(L_pred, float))
    dof = max(1, len(r) - n_fitted)
    return {"sigma_log": float(np.sqrt(np.sum(r * r) / dof)), "dof": int(dof), "n_runs": int(len(r)),
            "n_fitted_params": int(n_fitted)}


def estimate_noise(df, L_pred, n_fitted: int) -> dict:
    """The σ of ln L to add to prediction intervals, saying which estimate it is."""
    res = residual_sigma(df["L"], L_pred, n_fitted)
    rep = replicate_sigma(df)
    out = {"residuals": res, "replicates": rep}
    if rep is not None and rep["dof"] >= MIN_REPLICATE_DOF:
        out.update(kind="replicates", sigma_log=rep["sigma_log"],
                   description=f"run-to-run spread of {rep['n_runs']} replicate runs at {rep['n_groups']} "
                               f"(N, D) points (sigma of ln L {rep['sigma_log']:.3g}, {rep['dof']} dof)")
        trend = noise_trend(df)
        if trend is not None:  # prediction intervals take the noise at each point's own D/N
            out["by_tokens_per_param"] = trend
            out["description"] += (f", as a function of D/N: sigma ∝ (D/N)^{trend['exponent']:.2f} over D/N "
                                   f"{trend['range'][0]:.3g}-{trend['range'][1]:.3g}")
    else:
        why = ("no replicate runs (same N and D, different seed)" if rep is None
               else f"only {rep['dof']} replicate dof (need >= {MIN_REPLICATE_DOF})")
        out.update(kind="residuals", sigma_log=res["sigma_log"],
                   description=f"residual scatter of the fit stands in for run-to-run noise ({why}; "
                               f"sigma of ln L {res['sigma_log']:.3g}, {res['dof']} dof)")
    return out


# ----------------------------------------------------------------------------- the noise model

DN_BIN_DECADES = 0.5  # D/N bins of half a decade for the binned seed noise
MIN_TREND_GROUPS = 4  # replicated points needed to fit the noise's trend in D/N


def _log_var_bias(k: int) -> float:
    """E[ln(s^2 / sigma^2)] for a sample variance with k degrees of freedom (normal noise)."""
    from scipy.special import digamma

    return float(digamma(k / 2) + math.log(2 / k))


def noise_trend(df) -> dict | None:
    """The seed noise of ln L as a smooth function of D/N: ln sigma^2 = c0 + c1 ln(D/N), least squares
    on each replicated point's ln s^2 (unbiased for its dof). None with too few replicated points or
    no spread in D/N. `noise_sigma` evaluates it (clamped to the measured D/N range)."""
    groups = replicate_groups(df)
    if len(groups) < MIN_TREND_GROUPS:
        return None
    lnL = np.log(df["L"].to_numpy(float))
    x = np.log(df["D"].to_numpy(float) / df["N"].to_numpy(float))
    xs, ys = [], []
    for g in groups:
        s2 = float(np.var(lnL[g], ddof=1))
        if s2 > 0:
            xs.append(float(np.mean(x[g])))
            ys.append(math.log(s2) - _log_var_bias(len(g) - 1))
    if len(xs) < MIN_TREND_GROUPS or np.ptp(xs) < 0.1:
        return None
    c1, c0 = np.polyfit(xs, ys, 1)
    return {"form": "sigma_log(D/N) = exp((c0 + c1 ln(D/N)) / 2), D/N clamped to range", "c0": float(c0),
            "c1": float(c1), "exponent": float(c1 / 2), "range": [float(math.exp(min(xs))), float(math.exp(max(xs)))],
            "n_points": len(xs)}


def noise_sigma(noise: dict | None, N, D):
    """sigma of ln L at each (N, D): the D/N trend where the noise estimate has one (clamped to the D/N
    it was measured over), else its single sigma_log; None without a noise estimate."""
    if not noise or noise.get("sigma_log") is None:
        return None
    trend = noise.get("by_tokens_per_param")
    N, D = np.asarray(N, float), np.asarray(D, float)
    if not trend:
        return np.full(N.shape, float(noise["sigma_log"]))
    lo, hi = trend["range"]
    x = np.log(np.clip(D / N, lo, hi))
    return np.exp((trend["c0"] + trend["c1"] * x) / 2)


def noise_model(df) -> dict | None:
    """The seed noise taken apart: per trunk and per run, binned by D/N, with its trend and the degrees
    of freedom that are really independent. A seed's runs of one size share initialisation, data order
    and (in a branch design) the trunk, so each (size, seed) carries an offset common to all its points:
    r = ln L - the point's seed mean splits into the (size, seed) offset (the mean of r over the size's
    points) and the per-run rest. Offsets give one independent contrast per size and extra seed
    (sizes x (seeds - 1)), not one per point."""
    groups = replicate_groups(df)
    if not groups:
        return None
    lnL = np.log(df["L"].to_numpy(float))
    size = same_value_keys(df["N"])
    seeds = df["seed"].astype(str).to_numpy() if "seed" in df.columns else np.array([str(i) for i in range(len(df))])
    resid = np.full(len(df), np.nan)
    for g in groups:
        resid[g] = lnL[g] - lnL[g].mean()
    ss_offset = ss_run = 0.0
    dof_offset = dof_run = 0
    for k in sorted(set(size[np.isfinite(resid)])):
        rows = np.flatnonzero((size == k) & np.isfinite(resid))
        by_seed = {}
        for i in rows:
            by_seed.setdefault(seeds[i], []).append(i)
        for idx in by_seed.values():
            offset = float(np.mean(resid[idx]))
            ss_offset += len(idx) * offset ** 2
            ss_run += float(np.sum((resid[idx] - offset) ** 2))
        dof_size = sum(len(g) - 1 for g in groups if size[g[0]] == k)  # each point's seeds less its mean
        dof_offset += len(by_seed) - 1
        dof_run += dof_size - (len(by_seed) - 1)
    total = ss_offset + ss_run
    x = df["D"].to_numpy(float) / df["N"].to_numpy(float)
    bins: dict[int, list] = {}
    for g in groups:
        bins.setdefault(int(math.floor(math.log10(float(np.mean(x[g]))) / DN_BIN_DECADES)), []).append(g)
    binned = []
    for b in sorted(bins):
        gs = bins[b]
        ss = sum(float(np.sum((lnL[g] - lnL[g].mean()) ** 2)) for g in gs)
        dof = sum(len(g) - 1 for g in gs)
        binned.append({"tokens_per_param": [10 ** (b * DN_BIN_DECADES), 10 ** ((b + 1) * DN_BIN_DECADES)],
                       "n_points": len(gs), "dof": dof, "sigma_log": math.sqrt(ss / dof)})
    naive = int(sum(len(g) - 1 for g in groups))
    return {"offset_share": ss_offset / total if total > 0 else None,
            "sigma_log_offset": math.sqrt(ss_offset / dof_offset) if dof_offset else None,
            "sigma_log_run": math.sqrt(ss_run / dof_run) if dof_run else None,
            "dof_offset": dof_offset, "dof_run": dof_run, "dof_naive": naive, "dof_independent": dof_offset,
            "binned": binned, "trend": noise_trend(df),
            "description": "sigma of ln L between seeds. offset: each (size, seed)'s mean deviation over the size's "
                           "points (one per trunk), sigma_log_offset its rms per row on dof_offset = "
                           "sizes x (seeds - 1) "
                           "independent contrasts; run: the rest; offset_share: the offsets' share of the squared "
                           "deviations; binned: pooled by half a decade of D/N; trend: ln sigma^2 linear in ln(D/N)"}
