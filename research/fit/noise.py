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
    repeat rows, as a bootstrap draw does), with N, D, F, C of the point and `n_seeds`."""
    import pandas as pd

    groups = point_groups(df) if groups is None else groups
    cols = {c: df[c].to_numpy(float) for c in ("N", "D", "L", "F", "C") if c in df.columns}
    rows = {c: [float(np.mean(v[g])) for g in groups] for c, v in cols.items()}
    rows["n_seeds"] = [int(len(np.unique(g))) for g in groups]
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
    else:
        why = ("no replicate runs (same N and D, different seed)" if rep is None
               else f"only {rep['dof']} replicate dof (need >= {MIN_REPLICATE_DOF})")
        out.update(kind="residuals", sigma_log=res["sigma_log"],
                   description=f"residual scatter of the fit stands in for run-to-run noise ({why}; "
                               f"sigma of ln L {res['sigma_log']:.3g}, {res['dof']} dof)")
    return out
