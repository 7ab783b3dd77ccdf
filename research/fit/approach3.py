"""Chinchilla Approach 3: parametric fit of L(N, D) = E + A/N^α + B/D^β.

Follows Hoffmann et al. 2022, §3.3 and App. D.2 (constants copied here):

    minimise  Σ_i  Huber_δ( LSE(a − α·log N_i, b − β·log D_i, e) − log L_i )
    δ = 1e-3,  A = e^a, B = e^b, E = e^e,
    L-BFGS from every point of the grid α, β ∈ {0, .5, …, 2}, e ∈ {−1, −.5, …, 1},
    a, b ∈ {0, 5, …, 25}  (5·5·5·6·6 = 4,500 starts), keeping the best.

The reduction over runs is explicit (`reduction="sum"` or `"mean"`). Besiroglu
et al. 2024 (Epoch AI) showed the published Chinchilla parameters come from the
*mean*: with δ = 1e-3 the averaged objective and its gradient are tiny, so
L-BFGS (scipy's default tolerances: ftol 2.2e-9 relative to max(|f|, 1), gtol
1e-5) stops a few iterations from its start. `reduction="sum"` is the default.

Two interchangeable solvers minimise the same objective:
* ``backend="jax"``: L-BFGS directions from optax (memory 10) with a parallel Armijo line
  search (all step candidates evaluated at once; see `_jax_solver`), run in float64
  inside ``jax.enable_x64(True)``, jitted and ``vmap``-ed over starts and
  bootstrap resamples, with scipy's stopping rules re-implemented
  (ftol/gtol/maxiter) so both backends stop at the same criteria.
* ``backend="scipy"``: a plain loop of ``scipy.optimize.minimize(L-BFGS-B)``
  with an analytic numpy gradient (the reference and the benchmark baseline).

Bootstrap resamples are expressed as integer weights (multiplicities) on the
runs, so every resample has the same array shape and vectorises.
"""

from __future__ import annotations

import functools
import itertools
import math
import time

import numpy as np

DELTA = 1e-3
GRID_FULL = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}
# 3·3·3·3·3 = 243 starts: for tests and quick looks, not for published numbers.
GRID_SMALL = {
    "alpha": (0.0, 0.5, 1.0),
    "beta": (0.0, 0.5, 1.0),
    "e": (-1.0, 0.0, 1.0),
    "a": (0.0, 10.0, 20.0),
    "b": (0.0, 10.0, 20.0),
}
# Parameter vector order used everywhere: theta = (a, b, e, alpha, beta).
THETA = ("a", "b", "e", "alpha", "beta")
SCIPY_FTOL = 2.220446049250313e-09  # scipy L-BFGS-B default (factr 1e7 · eps)
SCIPY_GTOL = 1e-5
# Stopping rules, both in scipy's form: stop when (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol
# or max|grad| <= gtol. "scipy" are scipy's defaults (what the published fits ran with): they are
# absolute for objectives below 1, so a small objective (few points, or the mean) stops early.
# "tight" is the default here: the optimiser runs to numerical convergence whatever the scale.
TOLERANCES = {"tight": (1e-15, 1e-10), "scipy": (SCIPY_FTOL, SCIPY_GTOL)}
MAXITER = 1000


def grid_starts(grid="full") -> np.ndarray:
    """Start points, shape (S, 5) in THETA order."""
    if isinstance(grid, str):
        grid = {"full": GRID_FULL, "small": GRID_SMALL}[grid]
    if isinstance(grid, np.ndarray):
        return np.asarray(grid, dtype=np.float64).reshape(-1, 5)
    return np.array(list(itertools.product(*(grid[k] for k in THETA))), dtype=np.float64)


# ----------------------------------------------------------------------------- numpy / scipy

def objective_np(theta, lnN, lnD, lnL, w, delta=DELTA, reduction="sum"):
    """Objective and analytic gradient (numpy float64)."""
    a, b, e, al, be = theta
    t1 = a - al * lnN
    t2 = b - be * lnD
    t3 = np.full_like(lnN, e)
    m = np.maximum(np.maximum(t1, t2), t3)
    x1, x2, x3 = np.exp(t1 - m), np.exp(t2 - m), np.exp(t3 - m)
    s = x1 + x2 + x3
    r = m + np.log(s) - lnL
    ar = np.abs(r)
    quad = ar <= delta
    h = np.where(quad, 0.5 * r * r, delta * (ar - 0.5 * delta))
    dh = np.where(quad, r, delta * np.sign(r))
    norm = w.sum() if reduction == "mean" else 1.0
    f = float(np.dot(w, h) / norm)
    c = w * dh / norm / s
    g = np.array([np.dot(c, x1), np.dot(c, x2), np.dot(c, x3),
                  -np.dot(c * x1, lnN), -np.dot(c * x2, lnD)])
    return f, g


def solve_scipy(starts, lnN, lnD, lnL, w=None, delta=DELTA, reduction="sum", maxiter=MAXITER,
                tol="tight"):
    """Plain loop of scipy L-BFGS-B (analytic gradient); returns (x, f, nit) arrays."""
    ftol, gtol = TOLERANCES[tol]
    from scipy.optimize import minimize

    w = np.ones_like(lnN) if w is None else np.asarray(w, dtype=np.float64)
    w2 = w if w.ndim == 2 else None
    xs, fs, its = [], [], []
    for i, x0 in enumerate(np.atleast_2d(starts)):
        if w2 is not None:
            w = w2[i]
        res = minimize(objective_np, x0, args=(lnN, lnD, lnL, w, delta, reduction), jac=True,
                       method="L-BFGS-B", options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol})
        xs.append(res.x)
        fs.append(res.fun)
        its.append(res.nit)
    return np.array(xs), np.array(fs), np.array(its)


# ----------------------------------------------------------------------------- jax / optax

LS_STEPS = 0.25 ** np.arange(8)  # parallel Armijo candidates: 1, 1/4, ..., 6e-5
ROUND_ITERS = 16  # iterations per jitted call before finished lanes are refilled


@functools.lru_cache(maxsize=None)
def _jax_solver(reduction: str, delta: float, maxiter: int, gtol: float, ftol: float):
    """(init, run) jitted and vmapped over lanes; each lane has its own start and weights.

    Direction: optax.scale_by_lbfgs (two-loop recursion, memory 10). Step: the largest of
    LS_STEPS satisfying Armijo (c1 = 1e-4), all candidates evaluated at once. optax's own zoom
    line search iterates sequentially, and under vmap every lane waits for the slowest lane's
    line search: measured 33 ms per step for 256 lanes here versus a few ms with this one."""
    import jax
    import jax.numpy as jnp
    import optax

    steps = jnp.asarray(LS_STEPS)
    direction = optax.scale_by_lbfgs(memory_size=10)

    def objective(theta, w, lnN, lnD, lnL):
        a, b, e, al, be = theta[0], theta[1], theta[2], theta[3], theta[4]
        t1 = a - al * lnN
        t2 = b - be * lnD
        m = jnp.maximum(jnp.maximum(t1, t2), e)
        r = m + jnp.log(jnp.exp(t1 - m) + jnp.exp(t2 - m) + jnp.exp(e - m)) - lnL
        ar = jnp.abs(r)
        h = jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
        total = jnp.sum(w * h)
        return total / jnp.sum(w) if reduction == "mean" else total

    def init_one(x0, w, lnN, lnD, lnL):
        v, g = jax.value_and_grad(objective)(x0, w, lnN, lnD, lnL)
        done = (jnp.max(jnp.abs(g)) <= gtol) | ~jnp.isfinite(v)
        return (x0, v, g, direction.init(x0), jnp.asarray(0), done, jnp.asarray(0))

    def run_one(carry, w, lnN, lnD, lnL):
        f = lambda th: objective(th, w, lnN, lnD, lnL)  # noqa: E731
        vg = jax.value_and_grad(f)

        def body(c):
            (x, v, g, s, it, done, fails), k = c
            d, s2 = direction.update(g, s, x)
            p = -d
            slope = jnp.dot(g, p)
            gn = jnp.maximum(1.0, jnp.linalg.norm(g))
            # not a descent direction, or the last line search failed: scaled steepest descent
            bad = ~(slope < 0) | (fails > 0)
            p = jnp.where(bad, -g / gn, p)
            slope = jnp.where(bad, -jnp.dot(g, g) / gn, slope)
            cand = x[None, :] + steps[:, None] * p[None, :]
            fc = jax.vmap(f)(cand)
            armijo = (fc <= v + 1e-4 * steps * slope) & jnp.isfinite(fc)
            x2 = cand[jnp.argmax(armijo)]
            v2, g2 = vg(x2)
            ok = jnp.any(armijo) & jnp.isfinite(v2)
            rel = (v - v2) / jnp.maximum(jnp.maximum(jnp.abs(v), jnp.abs(v2)), 1.0)
            # a failed search first resets the L-BFGS memory and retries along -grad; a second
            # consecutive failure means no descent is possible at this resolution: stop.
            fails2 = jnp.where(ok, 0, fails + 1)
            s2 = jax.tree.map(lambda a, b: jnp.where(ok, a, b), s2, direction.init(x))
            stop = (fails2 >= 2) | (ok & ((rel <= ftol) | (jnp.max(jnp.abs(g2)) <= gtol))) | (it + 1 >= maxiter)
            new = (jnp.where(ok, x2, x), jnp.where(ok, v2, v), jnp.where(ok, g2, g), s2, it + 1, stop, fails2)
            return new, k + 1

        out, _ = jax.lax.while_loop(lambda c: ~c[0][5] & (c[1] < ROUND_ITERS), body, (carry, 0))
        return out

    data_axes = (0, None, None, None)
    return (jax.jit(jax.vmap(init_one, in_axes=(0,) + data_axes)),
            jax.jit(jax.vmap(run_one, in_axes=(0,) + data_axes)))


def solve_jax(starts, lnN, lnD, lnL, w=None, delta=DELTA, reduction="sum", maxiter=MAXITER,
              tol="tight", lanes=128):
    """Vectorised L-BFGS from every start, with scipy's stopping rules (ftol relative to
    max(|f|, 1), gtol on the largest gradient component, maxiter). `w` is None (all ones),
    shape (n,) shared by all starts, or (S, n): one weight vector (bootstrap multiplicities)
    per start. Runs a fixed-size pool of `lanes` problems: every ROUND_ITERS iterations the
    finished lanes are refilled with pending starts, so no lane idles waiting for the slowest
    start of its batch and a single compiled shape serves the whole job."""
    import jax

    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    S, n = len(starts), len(lnN)
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    wfull = w if w.ndim == 2 else None
    B = int(min(lanes, S))
    ftol, gtol = TOLERANCES[tol]
    init, run = _jax_solver(reduction, float(delta), int(maxiter), float(gtol), float(ftol))
    xs = np.full((S, 5), np.nan)
    fs = np.full(S, np.nan)
    its = np.zeros(S, dtype=int)
    with jax.enable_x64(True):
        data = tuple(jax.numpy.asarray(v, dtype="float64") for v in (lnN, lnD, lnL))
        lane_job = np.arange(B)  # which start each lane is solving (-1: idle)
        nxt = B
        lane_w = wfull[lane_job] if wfull is not None else np.broadcast_to(w, (B, n)).copy()
        carry = init(jax.numpy.asarray(starts[lane_job]), jax.numpy.asarray(lane_w), *data)
        while True:
            carry = run(carry, jax.numpy.asarray(lane_w), *data)
            x, v, it, done = (np.asarray(carry[i]) for i in (0, 1, 4, 5))
            fin = np.flatnonzero(done & (lane_job >= 0))
            jobs = lane_job[fin]
            xs[jobs], fs[jobs], its[jobs] = x[fin], v[fin], it[fin]
            lane_job[fin] = -1
            if nxt >= S and (lane_job < 0).all():
                break
            free = np.flatnonzero(lane_job < 0)
            take = free[: max(0, min(len(free), S - nxt))]
            if len(take):
                lane_job[take] = np.arange(nxt, nxt + len(take))
                nxt += len(take)
                if wfull is not None:
                    lane_w[take] = wfull[lane_job[take]]
                x0 = np.asarray(carry[0]).copy()
                x0[take] = starts[lane_job[take]]
                fresh = init(jax.numpy.asarray(x0), jax.numpy.asarray(lane_w), *data)
                mask = np.zeros(B, dtype=bool)
                mask[take] = True
                carry = jax.tree.map(
                    lambda new, old: jax.numpy.where(
                        jax.numpy.asarray(mask).reshape((B,) + (1,) * (new.ndim - 1)), new, old),
                    fresh, carry)
    return xs, fs, its


def solve(starts, lnN, lnD, lnL, w=None, backend="jax", **kw):
    if backend == "jax":
        return solve_jax(starts, lnN, lnD, lnL, w, **kw)
    if backend == "scipy":
        kw = {k: v for k, v in kw.items() if k in ("delta", "reduction", "maxiter", "tol")}
        return solve_scipy(starts, lnN, lnD, lnL, w, **kw)
    raise ValueError(f"unknown backend {backend!r}")


# ----------------------------------------------------------------------------- fit + bootstrap

def theta_to_params(theta, per_token=None) -> dict:
    """Law parameters and the compute-optimal a, b, G (research/fit/allocation.py; 6n unless per_token)."""
    from research.fit.allocation import SIX_N, allocation_params

    a, b, e, al, be = (float(v) for v in theta)
    A, B, E = math.exp(a), math.exp(b), math.exp(e)
    out = {"E": E, "A": A, "B": B, "alpha": al, "beta": be}
    frontier = allocation_params(A, B, al, be, per_token or SIX_N)
    out.update({k: float(v) if np.isfinite(v) and al + be > 0 else float("nan") for k, v in frontier.items()})
    return out


def distinct_optima(xs, fs, k=8, tol=1e-3):
    """Up to k best distinct finite local optima (rows of xs), best first."""
    order = np.argsort(np.where(np.isfinite(fs), fs, np.inf))
    picked = []
    for i in order:
        if not np.isfinite(fs[i]):
            break
        if all(np.max(np.abs(xs[i] - xs[j])) > tol for j in picked):
            picked.append(i)
        if len(picked) >= k:
            break
    return xs[picked]


def _edge_warnings(starts, xs, best, grid_box):
    near = np.max(np.abs(xs - xs[best]), axis=1) < 1e-3
    lo, hi = grid_box
    on_edge = np.any((starts == lo) | (starts == hi), axis=1)
    warns = []
    if near.any() and np.all(on_edge[near]):
        names = [THETA[j] for j in range(5) if starts[best, j] in (lo[j], hi[j])]
        warns.append(f"best fit reached only from starts on the grid's edge ({', '.join(names)} at a grid "
                     "bound); the optimum may lie outside the start grid - widen it")
    outside = [THETA[j] for j in range(5) if not lo[j] <= xs[best, j] <= hi[j]]
    if outside:
        warns.append(f"best fit has {', '.join(outside)} outside the start grid's range")
    return warns


def fit_approach3(N, D, L, *, grid="full", reduction="sum", delta=DELTA, backend="jax",
                  maxiter=MAXITER, tol="tight", n_optima=8) -> dict:
    """Multi-start Huber fit. Returns the Approach-3 result dict (JSON-ready) plus, under the
    private key "_optima", the best distinct local optima (used as bootstrap starts)."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    starts = grid_starts(grid)
    t0 = time.perf_counter()
    xs, fs, its = solve(starts, lnN, lnD, lnL, None, backend=backend, delta=delta,
                        reduction=reduction, maxiter=maxiter, tol=tol)
    elapsed = time.perf_counter() - t0
    if not np.isfinite(fs).any():
        raise RuntimeError("Approach 3: no start converged to a finite objective")
    best = int(np.nanargmin(np.where(np.isfinite(fs), fs, np.nan)))
    box = (starts.min(axis=0), starts.max(axis=0))
    res = theta_to_params(xs[best])
    res.update({
        "method": "approach3",
        "form": "L(N, D) = E + A/N^alpha + B/D^beta",
        "objective": float(fs[best]),
        "reduction": reduction,
        "delta": delta,
        "n_points": int(len(N)),
        "n_starts": int(len(starts)),
        "backend": backend,
        "tolerances": tol,
        "best_start": dict(zip(THETA, map(float, starts[best]))),
        "iterations_best": int(its[best]),
        "iterations_median": float(np.median(its)),
        "fit_seconds": elapsed,
        "log_params": dict(zip(THETA, map(float, xs[best]))),
        "optimal_convention": "C = 6*N*D: N_opt = G*(C/6)^a, D_opt = (C/6)^b / G (core.run_approach3 restates "
                              "a, b, G and the optima in the convention of the table's budgets)",
        "warnings": _edge_warnings(starts, xs, best, box),
    })
    res["_optima"] = distinct_optima(xs, fs, k=n_optima)
    return res


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicities of each run in each bootstrap resample (resampling runs with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def bootstrap_approach3(N, D, L, starts, *, n_resamples=1000, seed=0, reduction="sum", delta=DELTA,
                        backend="jax", maxiter=MAXITER, tol="tight", weights=None):
    """Refit every resample from each of `starts` (K×5; by default the best distinct local
    optima of the full-data fit) and keep each resample's best. Returns (thetas R×5, objs R)."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    W = resample_weights(len(N), n_resamples, seed) if weights is None else np.asarray(weights, float)
    R, K = len(W), len(starts)
    x0 = np.tile(np.asarray(starts, dtype=np.float64), (R, 1))  # lane r*K + k
    Wl = np.repeat(W, K, axis=0)
    xs, fs, _ = solve(x0, lnN, lnD, lnL, Wl, backend=backend, delta=delta, reduction=reduction,
                      maxiter=maxiter, tol=tol)
    fs = np.where(np.isfinite(fs), fs, np.inf).reshape(R, K)
    xs = xs.reshape(R, K, 5)
    best = np.argmin(fs, axis=1)
    return xs[np.arange(R), best], fs[np.arange(R), best]


def summarize_bootstrap(thetas, level=0.95, budgets=(), per_token=None) -> dict:
    """Percentile intervals for every parameter, a, b, G and N_opt/D_opt at `budgets` (in per_token's
    FLOP convention, 6n by default)."""
    from research.fit.allocation import SIX_N, compute_optimal, optimal_row

    per_token = per_token or SIX_N
    rows = [theta_to_params(t, per_token) for t in thetas]
    keys = ["E", "A", "B", "alpha", "beta", "a", "b", "G"]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    arr = {k: np.array([r[k] for r in rows]) for k in keys}
    intervals, se = {}, {}
    for k, v in arr.items():
        v = v[np.isfinite(v)]
        intervals[k] = [float(x) for x in np.percentile(v, q)] if len(v) else [None, None]
        se[k] = float(np.std(v, ddof=1)) if len(v) > 1 else None
    opt = []
    for c in budgets:
        n, d = compute_optimal(arr["A"], arr["B"], arr["alpha"], arr["beta"], c, per_token)
        ok = np.isfinite(n) & np.isfinite(d)
        opt.append(optimal_row(c, [float(x) for x in np.percentile(n[ok], q)],
                               [float(x) for x in np.percentile(d[ok], q)], per_token.convention))
    return {"level": level, "intervals": intervals, "se": se, "optimal": opt,
            "samples": {k: [float(x) for x in arr[k]] for k in ("E", "A", "B", "alpha", "beta")}}
