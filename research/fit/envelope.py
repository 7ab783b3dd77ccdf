"""Chinchilla Approach 1 (Hoffmann et al. 2022 §3.1): the training-curve envelope
(`--approach1-source curves`; the default is end points, research/fit/endpoint_envelope.py).

From every trial's `metrics.jsonl`: smooth the training loss, interpolate it (in
log FLOPs) at many log-spaced FLOP values (1,500, as in the paper), take at each
FLOP value the trial with the lowest loss, and record its N and the tokens it had
seen there: the envelope, reported and drawn (points whose winner is the smallest or
largest model trained left out: there the true optimum may lie beyond the sizes tried).
N_opt = k_N·C^a and D_opt = k_D·C^b come from the envelope's crossings, where the
winner passes from one size to another (`research.fit.crossings`); the line through
the winners themselves (`staircase`) is kept for comparison. FLOPs are the sweep's
convention (`flops_6n` or `flops_chinchilla`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from research.errors import UserError
from research.fit.allocation import SIX_N
from research.fit.crossings import crossing_rows, crossings, fit_crossings, refusal
from research.fit.powerlaw import bootstrap_allocation, fit_allocation
from research.train.sweep_dir import SweepDir

N_GRID = 1500


def _smooth(y, window):
    if window <= 1 or len(y) < window:
        return y
    k = np.ones(window) / window
    pad = window // 2
    yp = np.concatenate([np.repeat(y[:1], pad), y, np.repeat(y[-1:], window - 1 - pad)])
    return np.convolve(yp, k, mode="valid")


def load_curves(sweep_dir, table_df, convention="6n", smooth=5) -> list[dict]:
    """One dict per trial with a metrics.jsonl: N, flops, tokens, loss (smoothed, nats/token)."""
    sweep_dir = Path(sweep_dir)
    curves = []
    if "trial" not in table_df.columns:
        return curves
    for trial, n in zip(table_df["trial"], table_df["N"]):
        f = SweepDir(sweep_dir).trial_dir(trial) / "metrics.jsonl"
        if not f.exists():
            continue
        recs = []
        for line in f.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a truncated last line of a run still being written
        key = f"flops_{convention}"
        rows = []
        for r in recs:
            loss, tok = r.get("loss"), r.get("tokens")
            fl = r.get(key, r.get("flops_6n"))
            if fl is None and tok is not None:
                fl = 6.0 * n * tok
            if None in (loss, tok, fl):
                continue
            if np.isfinite(loss) and loss > 0 and tok > 0 and fl > 0:
                rows.append((fl, tok, loss))
        if len(rows) < 2:
            continue
        fl, tok, loss = (np.array(v, float) for v in zip(*sorted(rows)))
        loss = np.exp(_smooth(np.log(loss), smooth))
        curves.append({"trial": str(trial), "N": float(n), "flops": fl, "tokens": tok, "loss": loss})
    return curves


def _interp_matrix(curves, grid):
    lg = np.log(grid)
    Lm = np.full((len(curves), len(grid)), np.inf)
    Tm = np.full((len(curves), len(grid)), np.nan)
    for i, c in enumerate(curves):
        lf = np.log(c["flops"])
        inside = (lg >= lf[0]) & (lg <= lf[-1])
        Lm[i, inside] = np.interp(lg[inside], lf, c["loss"])
        Tm[i, inside] = np.exp(np.interp(lg[inside], lf, np.log(c["tokens"])))
    return Lm, Tm


def envelope(curves, n_grid=N_GRID, drop_edges=True, subset=None, grid=None, mats=None):
    """Envelope points (C, N, D, loss), the count of edge points left out, the grid, the interpolated
    matrices and the envelope's crossings."""
    Ns = np.array([c["N"] for c in curves])
    if grid is None:
        lo = min(c["flops"][0] for c in curves)
        hi = max(c["flops"][-1] for c in curves)
        grid = np.geomspace(lo, hi, n_grid)
    Lm, Tm = mats if mats is not None else _interp_matrix(curves, grid)
    rows = np.arange(len(curves)) if subset is None else np.unique(subset)
    L, T, Nsub = Lm[rows], Tm[rows], Ns[rows]
    win, keep, n_edge = pick_winners(Nsub, L, drop_edges)
    cols = np.arange(L.shape[1])
    pts = {"flops": grid[keep], "n": Nsub[win][keep], "d": T[win, cols][keep], "loss": L[win, cols][keep]}
    return pts, n_edge, grid, (Lm, Tm), crossings(Nsub, L, grid)


def pick_winners(N_S, L_SG, drop_edges=True):
    """For every compute value (column of L_SG, +inf where a row does not cover it): the row with the
    lowest loss, whether the column is kept (>= 2 distinct sizes cover it; with drop_edges, its winner
    is neither the smallest nor the largest size) and how many covered columns edge winners cost."""
    covered = np.isfinite(L_SG)
    sizes, row_size = np.unique(N_S, return_inverse=True)
    n_sizes = sum(covered[row_size == k].any(axis=0).astype(int) for k in range(len(sizes)))
    win = np.argmin(L_SG, axis=0)
    keep = n_sizes >= 2
    edge = np.zeros_like(keep)
    if drop_edges:
        edge = (N_S[win] <= N_S.min()) | (N_S[win] >= N_S.max())
        keep &= ~edge
    return win, keep, int((edge & (n_sizes >= 2)).sum())


def winner_ranges(pts) -> list[dict]:
    """Per size that wins somewhere on the envelope: the FLOP range over which it is compute-optimal."""
    out = []
    for n in sorted(set(float(x) for x in pts["n"])):
        m = pts["n"] == n
        out.append({"n_params": n, "flops_from": float(pts["flops"][m].min()),
                    "flops_to": float(pts["flops"][m].max()), "n_grid_points": int(m.sum())})
    return out


def staircase(pts) -> dict | None:
    """The least-squares line through the envelope's interior winners (the estimate before crossings; biased,
    see research/fit/crossings.py), kept for comparison: {"a", "b"}, or None with < 2 winning sizes."""
    if len(np.unique(pts["n"])) < 2:
        return None
    f = fit_allocation(pts["flops"], pts["n"], pts["d"])
    return {"a": f["a"], "b": f["b"]}


def fit_approach1(curves, n_grid=N_GRID, bootstrap=0, seed=0, level=0.95, budgets=(), convention="6n",
                  per_token=SIX_N) -> dict:
    """Approach 1 on curves whose FLOPs are in `convention` (load_curves' convention; labelled so);
    `per_token`: that convention's FLOPs per token, for D_opt."""
    sizes = np.unique([c["N"] for c in curves])
    if len(curves) < 3 or len(sizes) < 3:
        raise UserError(f"Approach 1 needs training curves (trials/<trial>/metrics.jsonl) for >= 3 model sizes, "
                        f"found {len(sizes)} sizes in {len(curves)} curves; run a sweep that logs metrics")
    pts, n_edge, grid, mats, x = envelope(curves, n_grid)
    fitted_x = fit_crossings(x, per_token)
    if fitted_x is None:
        raise UserError(refusal(x, "training-curve envelope"))
    thin = np.unique(np.linspace(0, len(pts["flops"]) - 1, min(60, len(pts["flops"]))).astype(int))
    res = {"method": "approach1", "source": "curves", **fitted_x, "estimator": "crossings",
           "form": "N_opt = k_N*C^a, D_opt = k_D*C^b", "n_curves": len(curves), "n_sizes": int(len(sizes)),
           "n_grid": int(n_grid), "n_crossings": int(len(x["flops"])), "crossings": crossing_rows(x),
           "staircase": staircase(pts), "n_envelope_points": int(len(pts["flops"])),
           "n_edge_points_dropped": n_edge, "optima": winner_ranges(pts), "flops_convention": convention,
           "flops_per_token": per_token.to_dict(),
           "envelope": {k: [float(v_) for v_ in v[thin]] for k, v in pts.items()},
           "warnings": []}
    if bootstrap:
        rng = np.random.default_rng(seed)

        def fitted():
            sub = rng.integers(0, len(curves), len(curves))
            *_, xb = envelope(curves, n_grid, subset=sub, grid=grid, mats=mats)
            return fit_crossings(xb, per_token)

        bs, failed = bootstrap_allocation(fitted, bootstrap, level, budgets, convention)
        if bs is not None:
            bs.update(n_failed=failed, seed=seed, resampling="trials with replacement")
            res["bootstrap"] = bs
    return res
