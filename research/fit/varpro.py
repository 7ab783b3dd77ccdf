"""Approach 3 by variable projection: profile the Huber-on-log objective over (α, β), and over E.

The objective is Approach 3's (`research.fit.approach3.objective_terms`, Hoffmann et al. 2022 App. D.2):

    f(θ) = Σ_i w_i · Huber_δ( log(E + A·N_i^-α + B·D_i^-β) − log L_i ),   θ = (a, b, e, α, β),
    A = e^a, B = e^b, E = e^e  (so E, A, B > 0, as in the multi-start fit), δ = 1e-3.

For fixed (α, β) the model is linear in (E, A, B): the profile f*(α, β) = min over (e, a, b) is a small
problem per (α, β) cell, solved for every cell of a grid at once. The method is one vectorised
solver, `lm_irls`: Levenberg–Marquardt on the log-parameters with iteratively reweighted least
squares for the Huber loss (IRLS weights ψ(r)/r = min(1, δ/|r|), so JᵀΩr is the exact gradient),
a step accepted only where it lowers the true objective (else the damping grows), batched over
cells in numpy (3×3 or 5×5 normal equations per cell, `np.linalg.solve`). The same solver, with
(α, β) free, polishes the best cells in all five parameters; `fit_varpro` then finishes the best
one with Newton steps on the exact objective (analytic gradient, Hessian by central differences of
it), so its optimum is a stationary point of the same objective the multi-start fit minimises.

Reusable pieces (for the fit, the bootstrap and any sensitivity report):

* `profile_alpha_beta(lnN, lnD, lnL, w, alphas, betas)` → f*(α, β) on a grid, and the (e, a, b)
  attaining it in each cell;
* `profile_E(lnN, lnD, lnL, w, E_values, ...)` → for each fixed E, min over (a, b, α, β): the
  profile over E a reviewer reads to see whether E is identified (flat: it is not);
* `a_range(...)` → the profile-likelihood range of the allocation exponent a = β/(α + β).

Everything is numpy (no JAX, no scipy): the first fit in a process pays no compile and no heavy import.
"""

from __future__ import annotations

import math
import time

import numpy as np

from research.fit.approach3 import DELTA, THETA, distinct_optima, huber, log_residuals, objective_np, theta_to_params
# Coarse (α, β) grid: 0.1 steps on [0.1, 2.5] (25 × 25 cells); the best cell's neighbourhood is then
# refined on a 0.01 grid (±0.05, 11 × 11 cells). Both are recorded in the result. The grid only picks
# the basins: the answer is the polished optimum (tests/test_varpro.py checks a 4x finer grid gives
# the same numbers).
COARSE_STEP, COARSE_MAX = 0.1, 2.5
FINE_STEP, FINE_HALF = 0.01, 0.05
INNER_ITERS = 100  # LM-IRLS iterations per grid cell near the best (most stop earlier, at INNER_FTOL) ...
INNER_ITERS_ALL = 30  # ... and for every cell: far cells (above NEAR_FACTOR x the best) stop here, within
NEAR_FACTOR = 2.0  # ~1% of their minimum (reported as such), far outside any profile-likelihood threshold
INNER_FTOL = 1e-12  # relative decrease below which a cell is converged (cells then agree with an
# independent solve to 1e-6, tests/test_varpro.py)
POLISH_ITERS = 200  # LM-IRLS iterations for the polished cells (all five parameters)
N_POLISH = 8  # best distinct cells polished in all five parameters
E_PROFILE_POINTS = 16  # E = 0 and 15 values up to 0.98 of the lowest loss
E_GRID_STEP = 0.2  # (α, β) grid of the E profile's seeds (each E's best cell is then polished)
NEWTON_ITERS = 12  # Newton steps finishing the best polished cell (finite-difference Hessian of the gradient)
BFGS_ITERS = 200  # then dense BFGS steps (at most) on the exact objective
LOG_BOUNDS = (-300.0, 700.0)  # e, a, b kept within: E = e^-300 is zero for any loss; a step taking a - e
# past 709 overflows exp and is rejected like any step that does not lower the objective
# Profile-likelihood threshold for a's range: the Huber objective with δ = 1e-3 is, at the residuals
# of real fits (≥ 0.005 in log L), essentially Σ|r|: a Laplace likelihood whose scale profiled out
# gives 2·ΔNLL = 2·n·log(f/f_min). The range is where that is ≤ χ²₁(0.95) = 3.841.
CHI2_1_95 = 3.841458820694124


def _grid(lo: float, hi: float, step: float) -> np.ndarray:
    return np.round(np.arange(lo, hi + step / 2, step), 10)


def coarse_grid() -> np.ndarray:
    return _grid(COARSE_STEP, COARSE_MAX, COARSE_STEP)


# ----------------------------------------------------------------------------- the batched solver

def _normal_equations(J, omega, v):
    """H = Jᵀ·diag(ω)·J (G, k, k) and g = Jᵀ·v (G, k) for J (G, n, k), by explicit per-entry sums
    (numpy's batched matmul is slow for k ≤ 5)."""
    k = J.shape[-1]
    Jw = J * omega[..., None]
    H = np.empty(J.shape[:1] + (k, k))
    for i in range(k):
        for j in range(i, k):
            H[:, i, j] = H[:, j, i] = (Jw[..., i] * J[..., j]).sum(axis=-1)
    g = (J * v[..., None]).sum(axis=1)
    return H, g


def _eval(P_G5, lnN, lnD, lnL, W_Gn, delta):
    """Objective (G,), residuals (G, n), and the fractions of the prediction from E, A/N^α, B/D^β
    (G, n, 3): the d r / d(e, a, b) of the log-parameters."""
    r, u1, u2, s = log_residuals(np, P_G5, lnN, lnD, lnL)
    h, _ = huber(np, r, delta)
    return (W_Gn * h).sum(axis=-1), r, np.stack([1.0 / s, u1 / s, u2 / s], axis=-1)


def objective(P_G5, lnN, lnD, lnL, W_Gn, delta=DELTA):
    """Approach-3 objective of every row of P_G5 (THETA order a, b, e, α, β); W_Gn broadcasts."""
    W = np.broadcast_to(np.asarray(W_Gn, float), (len(P_G5), len(lnN)))
    with np.errstate(over="ignore", invalid="ignore"):
        return _eval(np.asarray(P_G5, float), lnN, lnD, lnL, W, delta)[0]


def lm_irls(P_G5, lnN, lnD, lnL, W_Gn, free, iters, delta=DELTA, ftol=1e-13, return_active=False):
    """Minimise the objective over the parameters `free` (indices into a, b, e, α, β) of every row of
    P_G5 at once, the others held fixed: Levenberg–Marquardt with IRLS Huber weights; a step is kept
    only where it lowers the objective. Returns (P_G5, f_G), and with `return_active` the mask of
    rows not yet converged after `iters` iterations."""
    P = np.array(P_G5, dtype=float)
    G, n = len(P), len(lnN)
    W = np.broadcast_to(np.asarray(W_Gn, float), (G, n))
    free = list(free)
    k = len(free)
    lam = np.full(G, 1e-3)
    active = np.ones(G, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f, r, u = _eval(P, lnN, lnD, lnL, W, delta)
        for _ in range(iters):
            idx = np.flatnonzero(active)
            if len(idx) == 0:
                break
            Pa, ra, ua, Wa = P[idx], r[idx], u[idx], W[idx]
            cols = {0: ua[..., 1], 1: ua[..., 2], 2: ua[..., 0],  # d r / d(a, b, e, α, β)
                    3: -ua[..., 1] * lnN, 4: -ua[..., 2] * lnD}
            J = np.stack([cols[j] for j in free], axis=-1)  # (g, n, k)
            psi = huber(np, ra, delta)[1]
            omega = Wa * np.where(np.abs(ra) > delta, delta / np.maximum(np.abs(ra), 1e-300), 1.0)
            H, g = _normal_equations(J, omega, Wa * psi)
            diag = np.diagonal(H, axis1=1, axis2=2)
            Hd = H + (lam[idx, None] * np.maximum(diag, 1e-12))[..., None] * np.eye(k)
            try:
                step = np.linalg.solve(Hd, -g[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = -g / np.maximum(np.diagonal(Hd, axis1=1, axis2=2), 1e-12)
            cand = Pa.copy()
            cand[:, free] += np.where(np.isfinite(step), step, 0.0)
            cand[:, :3] = np.clip(cand[:, :3], *LOG_BOUNDS)
            cand[:, 3:] = np.maximum(cand[:, 3:], 0.0)
            fc, rc, uc = _eval(cand, lnN, lnD, lnL, Wa, delta)
            better = np.isfinite(fc) & (fc < f[idx])
            gain = np.where(better, (f[idx] - fc) / np.maximum(np.abs(f[idx]), 1e-300), 0.0)
            bi = idx[better]
            P[bi], f[bi], r[bi], u[bi] = cand[better], fc[better], rc[better], uc[better]
            lam[idx] = np.where(better, np.maximum(lam[idx] / 3.0, 1e-12), np.minimum(lam[idx] * 4.0, 1e12))
            done = (better & (gain < ftol)) | (~better & (lam[idx] >= 1e12))
            active[idx[done]] = False
    return (P, f, active) if return_active else (P, f)


def inner_lm(XN_Gn, XD_Gn, lnL, W, logc_G3, iters=INNER_ITERS, delta=DELTA, ftol=1e-13, free=(0, 1, 2)):
    """The inner problem at fixed exponents: min over log(E, A, B) (columns of logc_G3, `free` of
    them varied) of Σ w·Huber(log(E + A·XN + B·XD) − log L), XN = N^-α and XD = D^-β precomputed per
    cell, so an iteration costs one log per point and no exp. The same LM-IRLS as `lm_irls`.
    Returns (logc_G3, f_G)."""
    c = np.array(logc_G3, dtype=float)
    G = len(c)
    free = list(free)
    k = len(free)
    lam = np.full(G, 1e-3)
    active = np.ones(G, dtype=bool)

    def evaluate(cl, XN, XD, Wg):
        E, A, B = (np.exp(cl[:, j:j + 1]) for j in range(3))
        t, s_ = A * XN, B * XD
        p = E + t + s_
        r = np.log(p) - lnL
        h, _ = huber(np, r, delta)
        return (Wg * h).sum(axis=-1), r, np.stack([E / p, t / p, s_ / p], axis=-1)

    Wf = np.broadcast_to(W, XN_Gn.shape)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f, r, J3 = evaluate(c, XN_Gn, XD_Gn, Wf)
        for _ in range(iters):
            idx = np.flatnonzero(active)
            if len(idx) == 0:
                break
            ra, Wa = r[idx], Wf[idx]
            J = J3[idx][..., free]
            psi = huber(np, ra, delta)[1]
            omega = Wa * np.where(np.abs(ra) > delta, delta / np.maximum(np.abs(ra), 1e-300), 1.0)
            H, g = _normal_equations(J, omega, Wa * psi)
            diag = np.diagonal(H, axis1=1, axis2=2)
            Hd = H + (lam[idx, None] * np.maximum(diag, 1e-12))[..., None] * np.eye(k)
            step = np.linalg.solve(Hd, -g[..., None])[..., 0]
            cand = c[idx].copy()
            cand[:, free] = np.clip(cand[:, free] + np.where(np.isfinite(step), step, 0.0), *LOG_BOUNDS)
            fc, rc, Jc = evaluate(cand, XN_Gn[idx], XD_Gn[idx], Wa)
            better = np.isfinite(fc) & (fc < f[idx])
            gain = np.where(better, (f[idx] - fc) / np.maximum(np.abs(f[idx]), 1e-300), 0.0)
            bi = idx[better]
            c[bi], f[bi], r[bi], J3[bi] = cand[better], fc[better], rc[better], Jc[better]
            lam[idx] = np.where(better, np.maximum(lam[idx] / 3.0, 1e-12), np.minimum(lam[idx] * 4.0, 1e12))
            done = (better & (gain < ftol)) | (~better & (lam[idx] >= 1e12))
            active[idx[done]] = False
    return c, f


def _initial_linear(alphas, betas, lnN, lnD, lnL, W):
    """(e, a, b) per (α, β) cell from a weighted linear least-squares fit of L ≈ E + A·N^-α + B·D^-β
    in relative error, each coefficient floored at a percent of the loss scale (log-parameters must
    be finite)."""
    L = np.exp(lnL)
    X = np.stack([np.ones((len(alphas), len(lnN))), np.exp(-alphas[:, None] * lnN),
                  np.exp(-betas[:, None] * lnD)], axis=-1) / L[:, None]  # (G, n, 3)
    Wv = np.broadcast_to(W, X.shape[:2])
    H = np.matmul((X * Wv[..., None]).transpose(0, 2, 1), X) + 1e-12 * np.eye(3)
    rhs = np.matmul(Wv[:, None, :], X)[:, 0, :]
    with np.errstate(invalid="ignore", over="ignore"):
        c = np.linalg.solve(H, rhs[..., None])[..., 0]
    x = X * L[:, None]  # the raw features 1, N^-α, D^-β
    floor = 0.01 * np.median(L[:, None] / np.where(x > 0, x, np.inf), axis=1)  # (G, 3)
    floor = np.where(np.isfinite(floor) & (floor > 0), floor, 1e-6)
    c = np.where(np.isfinite(c) & (c > floor), c, floor)
    return np.log(c)


def solve_cells(alphas, betas, lnN, lnD, lnL, W, iters=INNER_ITERS, delta=DELTA, chunk=1024):
    """Inner problem for each (α_g, β_g): min over (e, a, b). Returns (P_G5, f_G)."""
    alphas, betas = np.asarray(alphas, float), np.asarray(betas, float)
    P_all, f_all = [], []
    for s in range(0, len(alphas), chunk):
        al, be = alphas[s:s + chunk], betas[s:s + chunk]
        e_a_b = _initial_linear(al, be, lnN, lnD, lnL, W)
        XN, XD = np.exp(-al[:, None] * lnN), np.exp(-be[:, None] * lnD)
        e_a_b, f = inner_lm(XN, XD, lnL, W, e_a_b, iters=min(iters, INNER_ITERS_ALL), delta=delta, ftol=INNER_FTOL)
        # cells that matter (within NEAR_FACTOR of the chunk's best) run on to full convergence
        near = np.flatnonzero(np.isfinite(f) & (f <= NEAR_FACTOR * np.nanmin(np.where(np.isfinite(f), f, np.nan))))
        if iters > INNER_ITERS_ALL and len(near):
            e_a_b[near], f[near] = inner_lm(XN[near], XD[near], lnL, W, e_a_b[near], iters=iters - INNER_ITERS_ALL,
                                            delta=delta, ftol=INNER_FTOL)
        P = np.column_stack([e_a_b[:, 1], e_a_b[:, 2], e_a_b[:, 0], al, be])
        P_all.append(P)
        f_all.append(f)
    return np.concatenate(P_all), np.concatenate(f_all)


def profile_alpha_beta(lnN, lnD, lnL, w=None, alphas=None, betas=None, iters=INNER_ITERS, delta=DELTA):
    """f*(α, β) = min over (E, A, B) > 0 of the objective, on the grid alphas × betas.
    Returns {"alpha": (nα,), "beta": (nβ,), "objective": (nα, nβ), "params": (nα, nβ, 5)}."""
    alphas = coarse_grid() if alphas is None else np.asarray(alphas, float)
    betas = coarse_grid() if betas is None else np.asarray(betas, float)
    W = np.ones_like(lnN) if w is None else np.asarray(w, float)
    AL, BE = np.meshgrid(alphas, betas, indexing="ij")
    P, f = solve_cells(AL.ravel(), BE.ravel(), lnN, lnD, lnL, W, iters, delta)
    return {"alpha": alphas, "beta": betas, "objective": f.reshape(AL.shape), "params": P.reshape(AL.shape + (5,))}


def best_cells(P, f, k=N_POLISH, sep=0.1):
    """Up to k best finite cells whose (α, β) lie at least `sep` apart (so distinct basins get polished)."""
    order = np.argsort(np.where(np.isfinite(f), f, np.inf))
    picked = []
    for i in order:
        if not np.isfinite(f[i]):
            break
        if all(np.max(np.abs(P[i, 3:] - P[j, 3:])) >= sep for j in picked):
            picked.append(i)
        if len(picked) >= k:
            break
    return P[picked]


# ----------------------------------------------------------------------------- the fit

def newton_finish(theta, lnN, lnD, lnL, w, delta=DELTA, iters=NEWTON_ITERS, free=range(5)):
    """A few Newton steps on the exact objective over the parameters `free` (Hessian by central
    differences of the analytic gradient, approach3.objective_np), each kept only if it lowers the
    objective, halving otherwise: takes the LM-IRLS polish (linear convergence on the near-L1 Huber)
    to the last digits. Returns (theta, f)."""
    free = np.asarray(list(free))
    theta = np.asarray(theta, float)
    f, g = objective_np(theta, lnN, lnD, lnL, w, delta)
    for _ in range(iters):
        h = 1e-6 * np.maximum(1.0, np.abs(theta))
        H = np.empty((len(free), len(free)))
        for col, j in enumerate(free):
            e = np.zeros(5)
            e[j] = h[j]
            H[:, col] = (objective_np(theta + e, lnN, lnD, lnL, w, delta)[1][free]
                         - objective_np(theta - e, lnN, lnD, lnL, w, delta)[1][free]) / (2 * h[j])
        H = 0.5 * (H + H.T)
        try:
            step = np.linalg.solve(H + 1e-12 * np.abs(np.diag(H)).max() * np.eye(len(free)), -g[free])
        except np.linalg.LinAlgError:
            break
        t = 1.0
        while t > 1e-4:
            cand = theta.copy()
            cand[free] += t * step
            fc, gc = objective_np(cand, lnN, lnD, lnL, w, delta)
            if fc < f:
                break
            t *= 0.5
        else:
            break
        theta, f, g = cand, fc, gc
    return theta, float(f)


def objective_at_zero_E(theta, lnN, lnD, lnL, w, delta=DELTA):
    """The Approach-3 objective in the limit E = 0 and its gradient (the e component 0): the log-sum-
    exp of the two remaining terms taken relative to their maximum. `objective_np` takes it relative to
    e, which at e → −∞ loses |e|·eps in every residual, a rounding noise of ~1e-12 of the objective at
    e = −300 that a finish at the boundary would otherwise chase."""
    a, b, _, al, be = (float(v) for v in theta)
    t1, t2 = a - al * lnN, b - be * lnD
    pred = np.logaddexp(t1, t2)
    r = pred - lnL
    h, psi = huber(np, r, delta)
    q1, q2 = np.exp(t1 - pred), np.exp(t2 - pred)
    c = w * psi
    g = np.array([(c * q1).sum(), (c * q2).sum(), 0.0, -(c * q1 * lnN).sum(), -(c * q2 * lnD).sum()])
    return float((w * h).sum()), g


def bfgs_finish(theta, lnN, lnD, lnL, w, delta=DELTA, iters=BFGS_ITERS, free=range(5), objective_fn=None):
    """Dense BFGS (5 × 5 inverse Hessian, Armijo backtracking) on the exact objective over `free`,
    after `newton_finish`: where the Huber's kinks at |r| = δ stall Newton's finite-difference Hessian,
    BFGS's curvature pairs still make progress. Stops after 3 steps in a row gain less than 1e-16
    relative. Returns (theta, f)."""
    objective_fn = objective_fn or objective_np
    free = np.asarray(list(free))
    x = np.asarray(theta, float).copy()
    f, g_all = objective_fn(x, lnN, lnD, lnL, w, delta)
    g = g_all[free]
    Hinv = np.eye(len(free)) / max(np.abs(g).max(), 1e-12)
    stall = 0
    for _ in range(iters):
        p = -Hinv @ g
        if not g @ p < 0:
            Hinv = np.eye(len(free)) / max(np.abs(g).max(), 1e-12)
            p = -Hinv @ g
        t, accepted = 1.0, False
        while t > 1e-20:
            cand = x.copy()
            cand[free] += t * p
            fc, gc_all = objective_fn(cand, lnN, lnD, lnL, w, delta)
            if fc <= f + 1e-4 * t * (g @ p) and fc < f:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            break
        gc = gc_all[free]
        sv, yv = cand[free] - x[free], gc - g
        gain = (f - fc) / max(abs(f), 1e-300)
        x, f, g = cand, fc, gc
        sy = sv @ yv
        if sy > 1e-300:
            rho = 1.0 / sy
            V = np.eye(len(free)) - rho * np.outer(sv, yv)
            Hinv = V @ Hinv @ V.T + rho * np.outer(sv, sv)
        stall = stall + 1 if gain < 1e-16 else 0
        if stall >= 3:
            break
    return x, float(f)


def fit_varpro(lnN, lnD, lnL, w=None, delta=DELTA, reduction="sum", profile=True):
    """The whole fit: coarse (α, β) profile, refined around its best cell, LM-IRLS polish of the best
    distinct cells in all five parameters, Newton finish of the best. Returns a dict with the
    best theta (a, b, e, α, β), its objective, the polished optima (bootstrap starts), the
    profile grids and the grid description."""
    W = np.ones_like(lnN) if w is None else np.asarray(w, float)
    if reduction == "mean":
        W = W / W.sum()
    coarse = profile_alpha_beta(lnN, lnD, lnL, W, delta=delta)
    Pc, fc = coarse["params"].reshape(-1, 5), coarse["objective"].ravel()
    if not np.isfinite(fc).any():
        raise RuntimeError("Approach 3: no grid cell converged to a finite objective")
    i0 = int(np.nanargmin(np.where(np.isfinite(fc), fc, np.nan)))
    al0, be0 = Pc[i0, 3], Pc[i0, 4]
    fa = _grid(max(FINE_STEP, al0 - FINE_HALF), al0 + FINE_HALF, FINE_STEP)
    fb = _grid(max(FINE_STEP, be0 - FINE_HALF), be0 + FINE_HALF, FINE_STEP)
    fine = profile_alpha_beta(lnN, lnD, lnL, W, fa, fb, delta=delta)
    P_all = np.concatenate([Pc, fine["params"].reshape(-1, 5)])
    f_all = np.concatenate([fc, fine["objective"].ravel()])
    starts = best_cells(P_all, f_all)
    Pp, fp = lm_irls(starts, lnN, lnD, lnL, W, free=range(5), iters=POLISH_ITERS, delta=delta)
    # the boundary E = 0 (E >= 0 is a constraint; in log-parameters it lies at e -> -inf, which LM
    # approaches only slowly): each polished start also refitted with E at zero (e = LOG_BOUNDS[0])
    P0 = Pp.copy()
    P0[:, 2] = LOG_BOUNDS[0]
    Pz, fz = lm_irls(P0, lnN, lnD, lnL, W, free=(0, 1, 3, 4), iters=POLISH_ITERS, delta=delta)
    Pp, fp = np.concatenate([Pp, Pz]), np.concatenate([fp, fz])
    order = np.argsort(np.where(np.isfinite(fp), fp, np.inf))
    Pp, fp = Pp[order], fp[order]
    at_zero = Pp[0, 2] <= LOG_BOUNDS[0]
    # Newton finish on the exact objective (W already carries the mean's 1/Σw)
    free = (0, 1, 3, 4) if at_zero else range(5)
    theta, f = newton_finish(Pp[0], lnN, lnD, lnL, W, delta, free=free)
    theta, f = bfgs_finish(theta, lnN, lnD, lnL, W, delta, free=free,
                           objective_fn=objective_at_zero_E if at_zero else objective_np)
    edge = [name for name, v, hi in (("alpha", al0, coarse["alpha"][-1]), ("beta", be0, coarse["beta"][-1]))
            if v >= hi - 1e-9 or v <= coarse["alpha"][0] + 1e-9]
    optima, f_opt = np.vstack([theta[None], Pp]), np.concatenate([[f], fp])
    keep = np.isfinite(f_opt) & (f_opt <= BOOTSTRAP_BASIN_FACTOR * f)
    return {"theta": theta, "objective": float(f), "optima": optima[keep], "coarse": coarse,
            "fine": fine, "edge": edge, "E_at_zero": bool(at_zero)}


# ----------------------------------------------------------------------------- profiles for reports

def a_range(profile: dict, f_min: float, n_eff: float, threshold=None) -> dict:
    """Range of a = β/(α+β) over the grid cells whose profile objective f*(α, β) is within the
    profile-likelihood threshold f ≤ f_min·exp(χ²₁(0.95)/(2·n_eff)) (Laplace likelihood, scale
    profiled out; `threshold` overrides the factor)."""
    factor = math.exp(CHI2_1_95 / (2.0 * n_eff)) if threshold is None else threshold
    AL, BE = np.meshgrid(profile["alpha"], profile["beta"], indexing="ij")
    ok = np.isfinite(profile["objective"]) & (profile["objective"] <= f_min * factor)
    if not ok.any():
        return {"low": None, "high": None, "factor": factor, "cells": 0}
    a = (BE / (AL + BE))[ok]
    return {"low": float(a.min()), "high": float(a.max()), "factor": factor, "cells": int(ok.sum())}


def profile_E(lnN, lnD, lnL, w=None, E_values=None, delta=DELTA, grid_step=E_GRID_STEP):
    """For each fixed E: min over (A, B, α, β) of the objective (E = 0 allowed: its log is LOG_BOUNDS[0]).
    A coarse (α, β) grid (step `grid_step` on [grid_step, COARSE_MAX]) is solved for (a, b) in every
    cell for every E at once; each E's best cell is then polished in (a, b, α, β) with LM-IRLS.
    Default E_values: 0 and E_PROFILE_POINTS − 1 values up to 0.98 of the lowest loss. Returns
    {"E", "objective", "alpha", "beta", "a"} arrays (a: the compute-optimal exponent β/(α+β) at
    each E's optimum)."""
    W = np.ones_like(lnN) if w is None else np.asarray(w, float)
    L_min = float(np.exp(lnL.min()))
    E_values = (np.concatenate([[0.0], np.linspace(0.05, 0.98, E_PROFILE_POINTS - 1) * L_min]) if E_values is None
                else np.asarray(E_values, float))
    grid = _grid(grid_step, COARSE_MAX, grid_step)
    AL, BE = (x.ravel() for x in np.meshgrid(grid, grid, indexing="ij"))
    cells = len(AL)
    init = _initial_linear(AL, BE, lnN, lnD, lnL, W)  # (e, a, b) per cell; e is then fixed per E
    logc = np.tile(init, (len(E_values), 1))
    logc[:, 0] = np.repeat([math.log(E) if E > 0 else LOG_BOUNDS[0] for E in E_values], cells)
    XN, XD = np.exp(-AL[:, None] * lnN), np.exp(-BE[:, None] * lnD)
    logc, f = inner_lm(np.tile(XN, (len(E_values), 1)), np.tile(XD, (len(E_values), 1)), lnL, W, logc,
                       iters=INNER_ITERS_ALL, delta=delta, ftol=1e-9, free=(1, 2))  # seeds only: polished below
    f = np.where(np.isfinite(f), f, np.inf).reshape(len(E_values), cells)
    j = np.argmin(f, axis=1)
    best = logc.reshape(len(E_values), cells, 3)[np.arange(len(E_values)), j]
    P0 = np.column_stack([best[:, 1], best[:, 2], best[:, 0], AL[j], BE[j]])
    P, f = lm_irls(P0, lnN, lnD, lnL, W, free=(0, 1, 3, 4), iters=POLISH_ITERS, delta=delta)
    return {"E": E_values, "objective": f, "alpha": P[:, 3], "beta": P[:, 4],
            "a": P[:, 4] / (P[:, 3] + P[:, 4])}


# ----------------------------------------------------------------------------- results for fit.json

PROFILE_DIGITS = 6  # significant digits of the stored profile objectives
BOOTSTRAP_STARTS = 4  # at most this many distinct optima of the full-data fit start each resample ...
BOOTSTRAP_BASIN_FACTOR = 1.1  # ... those whose objective is within this factor of the best
BOOTSTRAP_MORE_ITERS = 3000  # further LM-IRLS iterations for the resamples not converged after POLISH_ITERS


def _sig(x, digits=PROFILE_DIGITS):
    x = np.asarray(x, float)
    return [None if not np.isfinite(v) else float(f"{v:.{digits}g}") for v in x.ravel()]


def profile_block(fit: dict, lnN, lnD, lnL, w=None, with_E=True) -> dict:
    """The compact profile record for fit.json: f*(α, β) on the coarse grid (rows α, columns β), the
    profile-likelihood range of a (coarse and refined grids), and the profile over E."""
    coarse, fine = fit["coarse"], fit["fine"]
    n_eff = float(np.sum(np.ones_like(lnN) if w is None else w))
    f_min = fit["objective"]
    ranges = [a_range(g, f_min, n_eff) for g in (coarse, fine)]
    lows = [r["low"] for r in ranges if r["low"] is not None]
    highs = [r["high"] for r in ranges if r["high"] is not None]
    out = {
        "alpha_beta": {"alpha": _sig(coarse["alpha"]), "beta": _sig(coarse["beta"]),
                       "objective": [_sig(row) for row in coarse["objective"]],
                       "fine": {"alpha": _sig(fine["alpha"]), "beta": _sig(fine["beta"]),
                                "objective": [_sig(row) for row in fine["objective"]]},
                       "description": "min over E, A, B > 0 of the objective at each (alpha, beta); rows alpha, "
                                      "columns beta"},
        "a_range": {"low": min(lows) if lows else None, "high": max(highs) if highs else None,
                    "threshold": f"objective <= f_min * exp(chi2_1(0.95) / (2 n)) = f_min * {ranges[0]['factor']:.6g} "
                                 "(Laplace likelihood of the log residuals, scale profiled out; Huber with "
                                 "delta 1e-3 is ~|r| at these residuals)",
                    "level": 0.95, "grid_resolution": {"coarse": COARSE_STEP, "fine": FINE_STEP},
                    "cells": ranges[0]["cells"] + ranges[1]["cells"]},
    }
    if with_E:
        pe = profile_E(lnN, lnD, lnL, w)
        out["E"] = {"E": _sig(pe["E"]), "objective": _sig(pe["objective"]), "alpha": _sig(pe["alpha"]),
                    "beta": _sig(pe["beta"]), "a": _sig(pe["a"]),
                    "description": "min over A, B, alpha, beta of the objective at each fixed E (E = 0 included); "
                                   "a flat profile means the data do not identify E"}
    return out


def fit_result(N, D, L, *, reduction="sum", delta=DELTA, profile=True) -> dict:
    """Approach 3 by variable projection, as a result dict shaped like approach3.fit_approach3's
    (the same keys where they mean the same), plus "profile"; "_optima" holds the polished optima
    (bootstrap starts)."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    t0 = time.perf_counter()
    fit = fit_varpro(lnN, lnD, lnL, delta=delta, reduction=reduction)
    elapsed = time.perf_counter() - t0
    theta = fit["theta"]
    objective_value = fit["objective"]  # fit_varpro normalised the weights for "mean": already mean-reduced
    res = theta_to_params(theta)
    n_cells = fit["coarse"]["objective"].size + fit["fine"]["objective"].size
    res.update({
        "method": "approach3",
        "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "objective": float(objective_value),
        "reduction": reduction,
        "delta": delta,
        "n_points": int(len(N)),
        "solver": "varpro",
        "solver_description": (f"variable projection: (E, A, B) solved by Levenberg-Marquardt IRLS in every cell of an "
                               f"(alpha, beta) grid ({COARSE_STEP} steps on [{COARSE_STEP}, {COARSE_MAX}], then "
                               f"{FINE_STEP} steps within +-{FINE_HALF} of the best cell; {n_cells} cells), the "
                               f"{N_POLISH} best distinct cells polished in all five parameters, the best finished "
                               "by Newton steps on the exact objective"),
        "grid_cells": int(n_cells),
        "fit_seconds": elapsed,
        "log_params": dict(zip(THETA, map(float, theta))),
        "optimal_convention": "C = 6*N*D: N_opt = G*(C/6)^a, D_opt = (C/6)^b / G (core.run_approach3 restates "
                              "a, b, G and the optima in the convention of the table's budgets)",
        "warnings": [],
    })
    if fit["E_at_zero"]:
        res["warnings"].append("the best fit has E at zero (the boundary E >= 0: a fit with E free does no better); "
                               "A/N^alpha stands in for the irreducible loss")
    if fit["edge"]:
        res["warnings"].append(f"the best (alpha, beta) grid cell lies on the grid's edge ({', '.join(fit['edge'])}); "
                               "the polish left the grid, but a better basin may lie beyond it")
    if profile:
        t1 = time.perf_counter()
        res["profile"] = profile_block(fit, lnN, lnD, lnL, None)
        res["profile"]["seconds"] = time.perf_counter() - t1
    res["_optima"] = fit["optima"]
    return res


def bootstrap(N, D, L, starts, weights, *, reduction="sum", delta=DELTA, k=BOOTSTRAP_STARTS):
    """Refit every bootstrap resample (rows of `weights`, multiplicities of the runs) with the same
    LM-IRLS solver in all five parameters, from each of the first `k` distinct `starts` (the
    full-data fit's polished optima within BOOTSTRAP_BASIN_FACTOR of its best), keeping each
    resample's best. Returns (thetas R×5, objs R)."""
    lnN, lnD, lnL = (np.log(np.asarray(v, dtype=np.float64)) for v in (N, D, L))
    W = np.asarray(weights, float)
    if reduction == "mean":
        W = W / W.sum(axis=1, keepdims=True)
    S = distinct_optima(np.asarray(starts, float), np.arange(len(starts), dtype=float), k=k)  # keep their order
    R, K = len(W), len(S)
    P0 = np.tile(S, (R, 1))
    Wr = np.repeat(W, K, axis=0)
    P, f, active = lm_irls(P0, lnN, lnD, lnL, Wr, free=range(5), iters=POLISH_ITERS, delta=delta, return_active=True)
    slow = np.flatnonzero(active)  # ill-conditioned valleys (LM-IRLS converges linearly): run on
    if len(slow):
        P[slow], f[slow] = lm_irls(P[slow], lnN, lnD, lnL, Wr[slow], free=range(5), iters=BOOTSTRAP_MORE_ITERS,
                                   delta=delta)
    f = np.where(np.isfinite(f), f, np.inf).reshape(R, K)
    best = np.argmin(f, axis=1)
    return P.reshape(R, K, 5)[np.arange(R), best], f[np.arange(R), best]
