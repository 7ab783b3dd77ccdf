"""Chinchilla Approach 1 from finished runs' end points (the default `--approach1-source endpoints`).

Hoffmann et al. take, at each compute value, the lowest loss any model size reaches. With a
cosine (or WSD) schedule that ends at each run's own horizon, the intermediate points of a
training curve are not what a run of that length reaches, so here only end points count: the
table's loss (normally `final_eval_loss`) of every finished run (or cooldown branch), averaged
over seeds per (N, D) point. Each size's end points form a profile along its real FLOPs F
(`research.fit.profiles.interpolate`: ln L linear in ln F, no extrapolation). On N_GRID
log-spaced compute values C over the union range, where >= 2 sizes cover C, the size with the
lowest interpolated loss wins; D at the winner is C / (FLOPs per token at N) in the table's
convention (`research.fit.allocation`). That envelope is reported (winners that are the smallest or
largest size left out: the optimum may lie beyond the sizes tried) and drawn; the exponent comes from
its crossings, where two neighbouring sizes' profiles tie (`research.fit.crossings`: N_opt between
them), not from a line through the staircase of winners, which is biased (kept as `staircase`).
"""

from __future__ import annotations

import numpy as np

from research.errors import UserError
from research.fit.crossings import crossing_rows, crossings, fit_crossings, refusal
from research.fit.envelope import N_GRID, pick_winners, staircase, winner_ranges
from research.fit.powerlaw import bootstrap_allocation
from research.fit.profiles import interpolate, mean_points, resample_points, resampling_scheme, size_profiles


def envelope_points(points, per_token, grid, drop_edges=True):
    """Envelope (flops, n, d, loss) on `grid` from per-point mean losses, the edge points dropped and the
    envelope's crossings."""
    profiles = size_profiles(points)
    N_S = np.array([p["N"] for p in profiles])
    L_SG = interpolate(profiles, grid)
    win, keep, n_edge = pick_winners(N_S, L_SG, drop_edges)
    n = N_S[win][keep]
    c = grid[keep]
    pts = {"flops": c, "n": n, "d": c / per_token(n), "loss": L_SG[win, np.arange(len(grid))][keep]}
    return pts, n_edge, crossings(N_S, L_SG, grid)


def fit_approach1_endpoints(df, per_token, n_grid=N_GRID, bootstrap=0, seed=0, level=0.95, budgets=()) -> dict:
    """Approach 1 on a clean table (N, D, L, F[, seed]); FLOPs in per_token's convention."""
    groups, points = mean_points(df)
    n_sizes = len(size_profiles(points))
    if n_sizes < 3:
        raise UserError(f"Approach 1 needs end points of >= 3 model sizes with >= 2 token counts each, found "
                        f"{n_sizes} such sizes in {len(points)} (N, D) points (an IsoFLOP design whose sizes differ "
                        "per budget gives a size one end point: use Approach 2, or --approach1-source curves on "
                        "a sweep directory with training curves)")
    grid = np.geomspace(points["F"].min(), points["F"].max(), n_grid)
    pts, n_edge, x = envelope_points(points, per_token, grid)
    fitted_x = fit_crossings(x, per_token)
    if fitted_x is None:
        raise UserError(refusal(x, "end-point envelope"))
    thin = np.unique(np.linspace(0, len(pts["flops"]) - 1, min(60, len(pts["flops"]))).astype(int))
    res = {"method": "approach1", "source": "endpoints", **fitted_x, "estimator": "crossings",
           "form": "N_opt = k_N*C^a, D_opt = k_D*C^b", "n_runs": int(len(df)), "n_points": int(len(points)),
           "n_sizes": n_sizes, "n_grid": int(n_grid), "n_crossings": int(len(x["flops"])),
           "crossings": crossing_rows(x), "staircase": staircase(pts),
           "n_envelope_points": int(len(pts["flops"])),
           "n_edge_points_dropped": n_edge, "optima": winner_ranges(pts), "flops_convention": per_token.convention,
           "flops_per_token": per_token.to_dict(),
           "envelope": {k: [float(v_) for v_ in v[thin]] for k, v in pts.items()}, "warnings": []}
    if bootstrap:
        rng = np.random.default_rng(seed)

        def fitted():
            _, _, xb = envelope_points(resample_points(df, groups, rng, points), per_token, grid)
            return fit_crossings(xb, per_token)

        bs, failed = bootstrap_allocation(fitted, bootstrap, level, budgets, per_token.convention)
        if bs is not None:
            bs.update(n_failed=failed, seed=seed, resampling=resampling_scheme(groups))
            res["bootstrap"] = bs
    return res
