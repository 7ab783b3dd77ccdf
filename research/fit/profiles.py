"""Per-size loss profiles along compute, from finished runs' end points (Approaches 1 and 2).

A size's profile is its (N, D) points (loss averaged over seeds, `research.fit.noise.point_means`)
ordered by their real training FLOPs F (the table's convention). Between two of its points,
ln L is interpolated linearly in ln F. A monotone cubic (PCHIP) was tried: on noise-free data from a
law over the study's ladder with only 10 D per size it moved Approach 1's crossings less (a = 0.556
against linear's 0.551 for a true 0.557; with 20 D per size both are exact), but with seed noise it
did no better on the study's design (rms error of a 0.131 against 0.133 with trunk noise, 0.052
against 0.049 without) and made Approach 2's interpolated slices noisier on a 16 x 8 grid (sd of a
over 20 tables 0.0040 against 0.0028), so the straight line stays. Outside its first and last point
the size says nothing (no extrapolation). `interpolate` is the one place this is done: Approach 1
takes the lowest interpolated loss over sizes at each compute value (the end-point envelope),
Approach 2 takes IsoFLOP slices through the profiles at fixed budgets when the design has no shared
budgets.

Resampling for the bootstrap (`resample_points`): with replicates (some (N, D) point run with
>= 2 seeds) the replicates are drawn with replacement, one draw of a size's seeds used at all of its
points (`research.fit.noise.seed_draw`: a seed's runs of one size share their noise), and re-averaged
(a cluster bootstrap: the seed noise is inside the intervals, the design stays fixed;
`replicate_spread_factor` corrects the draw's spread for small K); without replicates
the end points themselves are drawn with replacement.
"""

from __future__ import annotations

import numpy as np

from research.fit.noise import point_groups, point_means, same_value_keys, seed_draw

CLUSTER = ("cluster: the seed replicates drawn with replacement, one draw per size used at all of its (N, D) "
           "points, and averaged per point, the draw's deviation from the point's mean scaled by sqrt(K/(K-1))")
ENDPOINTS = "end points ((N, D) points) with replacement"


def size_profiles(points, min_points: int = 2) -> list[dict]:
    """One dict per model size (N within SAME_POINT_REL_TOL) with >= min_points (N, D) points: N, and its
    points' lnF, lnL, D sorted by F (a size with one point has no profile to interpolate along)."""
    N, F, L, D = (points[c].to_numpy(float) for c in ("N", "F", "L", "D"))
    key = same_value_keys(N)
    out = []
    for k in np.unique(key):
        m = key == k
        if m.sum() < min_points:
            continue
        order = np.argsort(F[m])
        out.append({"N": float(np.exp(np.mean(np.log(N[m])))), "lnF": np.log(F[m][order]),
                    "lnL": np.log(L[m][order]), "D": D[m][order]})
    out.sort(key=lambda p: p["N"])
    return out


def interpolate(profiles, C_G) -> np.ndarray:
    """Loss of every size at every compute value C_G: L_SG, +inf where the size does not cover C."""
    lnC = np.log(np.asarray(C_G, float))
    L_SG = np.full((len(profiles), len(lnC)), np.inf)
    for s, p in enumerate(profiles):
        inside = (lnC >= p["lnF"][0]) & (lnC <= p["lnF"][-1])
        if inside.any():
            L_SG[s, inside] = np.exp(np.interp(lnC[inside], p["lnF"], p["lnL"]))
    return L_SG


def coverage_range(profiles, min_sizes: int):
    """(lo, hi) compute range where >= min_sizes sizes have points on both sides, or None."""
    lo_S = np.array([p["lnF"][0] for p in profiles])
    hi_S = np.array([p["lnF"][-1] for p in profiles])
    edges = np.unique(np.concatenate([lo_S, hi_S]))
    count = np.array([np.sum((lo_S <= e) & (hi_S >= e)) for e in edges])
    ok = edges[count >= min_sizes]
    return (float(np.exp(ok.min())), float(np.exp(ok.max()))) if len(ok) else None


def replicate_spread_factor(K):
    """sqrt(K / (K - 1)) (1 where K = 1): the mean of K values drawn with replacement from K varies
    (K - 1)/K as much as the mean of K new runs, so a draw's deviation from the point's mean is scaled
    up by this factor (the adjusted bootstrap of a mean, Davison & Hinkley 1997 §2.3); without it,
    three seeds per point give intervals ~18% too narrow."""
    K = np.asarray(K, float)
    return np.sqrt(np.where(K > 1, K / np.maximum(K - 1, 1), 1.0))


def has_replicates(groups) -> bool:
    return any(len(g) >= 2 for g in groups)


def resampling_scheme(groups) -> str:
    return CLUSTER if has_replicates(groups) else ENDPOINTS


def resample_points(df, groups, rng, means=None):
    """One bootstrap draw of the per-point means (see the module docstring for the scheme). `means`:
    point_means(df, groups), passed in to save recomputing it per draw."""
    if has_replicates(groups):
        means = point_means(df, groups) if means is None else means
        draw = point_means(df, seed_draw(df, groups, rng))
        draw["L"] = means["L"] + replicate_spread_factor(means["n_seeds"]) * (draw["L"] - means["L"])
        return draw
    pick = rng.integers(0, len(groups), len(groups))
    return point_means(df, [groups[i] for i in np.unique(pick)])


def mean_points(df):
    """(groups, per-point means) of a clean table."""
    groups = point_groups(df)
    return groups, point_means(df, groups)
