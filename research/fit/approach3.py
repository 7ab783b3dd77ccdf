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

Two interchangeable solvers minimise the same objective (`objective_terms`, one function with
an analytic gradient for numpy and jax):
* ``backend="jax"``: batched L-BFGS (`research.fit.lbfgs`, memory 10, weak-Wolfe line search) in
  float64 inside ``jax.enable_x64(True)``: every start (and every bootstrap resample's starts) in
  ONE compiled device-side loop, convergence tested on device, scipy's stopping rules
  (ftol/gtol/maxiter/maxfun) re-implemented so both backends stop at the same criteria.
* ``backend="scipy"``: a plain loop of ``scipy.optimize.minimize(L-BFGS-B)`` with the numpy
  gradient (the reference and the benchmark baseline).

Bootstrap resamples are expressed as integer weights (multiplicities) on the
runs, so every resample has the same array shape and vectorises.
"""

from __future__ import annotations

import functools
import itertools
import math
import time

import numpy as np

from research.fit.allocation import SIX_N, allocation_params, compute_optimal, optimal_row
from research.fit.noise import point_groups, seed_draw

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
THETA = ("a", "b", "e", "alpha", "beta")  # fit.json's keys: a, b, e are log A, log B, log E (not the exponent a)
THETA_LABELS = ("log A", "log B", "log E", "alpha", "beta")  # how messages name them
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

def log_residuals(xp, theta_B5, lnN_n, lnD_n, lnL_n):
    """r = log(E + A/N^α + B/D^β) − log L per batch row and run, with u1 = A·N^-α/E, u2 = B·D^-β/E and
    s = 1 + u1 + u2 (the log-sum-exp taken relative to e). Returns (r, u1, u2, s)."""
    a, b, e, al, be = (theta_B5[:, j:j + 1] for j in range(5))
    u1 = xp.exp(a - e - al * lnN_n)
    u2 = xp.exp(b - e - be * lnD_n)
    s = 1.0 + u1 + u2
    return e + xp.log(s) - lnL_n, u1, u2, s


def huber(xp, r, delta=DELTA):
    """(Huber_δ(r), its derivative ψ(r) = clip(r, −δ, δ)): r²/2 inside [−δ, δ], δ(|r| − δ/2) outside."""
    dh = xp.minimum(xp.maximum(r, -delta), delta)
    return dh * (r - 0.5 * dh), dh


def objective_terms(xp, theta_B5, lnN_n, lnD_n, lnL_n, w_Bn, delta=DELTA, reduction="sum"):
    """The Approach-3 objective and its analytic gradient for a batch of parameter vectors, written
    once for numpy (`xp=np`) and jax.numpy (`xp=jnp`). theta_B5 rows are (a, b, e, alpha, beta);
    w_Bn is one weight row per batch row (or one row broadcast to all). Returns (f_B, g_B5).

    The log-sum-exp is taken relative to e: LSE(t1, t2, e) = e + log(1 + u1 + u2) with
    u = exp(t - e), two exponentials per run instead of three and no running maximum. It can only
    overflow (to +inf, which every solver treats as a failed trial) where A/N^alpha or B/D^beta
    exceeds E by a factor e^709, far outside any fit."""
    r, u1, u2, s = log_residuals(xp, theta_B5, lnN_n, lnD_n, lnL_n)
    h, dh = huber(xp, r, delta)
    wh, c = w_Bn * h, w_Bn * dh / s  # c: d(w h)/d(LSE) * d(LSE)/de
    if reduction == "mean":
        scale = 1.0 / w_Bn.sum(axis=-1, keepdims=True)
        wh, c = wh * scale, c * scale
    c1, c2 = c * u1, c * u2
    g = xp.stack([c1.sum(axis=-1), c2.sum(axis=-1), c.sum(axis=-1),
                  -(c1 * lnN_n).sum(axis=-1), -(c2 * lnD_n).sum(axis=-1)], axis=-1)
    return wh.sum(axis=-1), g


def objective_np(theta, lnN, lnD, lnL, w, delta=DELTA, reduction="sum"):
    """Objective and analytic gradient at one parameter vector (numpy float64)."""
    lnN, lnD, lnL, w = (np.asarray(v, dtype=np.float64) for v in (lnN, lnD, lnL, w))
    with np.errstate(over="ignore", invalid="ignore"):
        f, g = objective_terms(np, np.asarray(theta, dtype=np.float64)[None], lnN, lnD, lnL, w[None],
                               delta, reduction)
    return float(f[0]), g[0]


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

LANES = 512  # rows of the on-device L-BFGS pool (research.fit.lbfgs); a finished row takes the next start
MEMORY = 10  # L-BFGS memory, scipy's default maxcor
MAXLS = 20  # trials per line search, scipy's default
MAXFUN = 15000  # objective evaluations per start, scipy's default


def _bucket(k: int, lo: int = 8) -> int:
    """Padded size for an array dimension: the next power of two (at least `lo`), so tables and
    job counts of similar size share one compiled program."""
    return max(lo, 1 << (max(int(k), 1) - 1).bit_length())


@functools.lru_cache(maxsize=None)
def _jax_solver(reduction: str, delta: float, maxiter: int, gtol: float, ftol: float, lanes: int):
    """The jitted pool solver for one objective variant; compiled once per padded shape."""
    import jax
    import jax.numpy as jnp

    from research.fit import lbfgs  # lazy: jax (seconds to import); the scipy backend never needs it

    cfg = lbfgs.Config(lanes=lanes, memory=MEMORY, maxiter=maxiter, maxfun=MAXFUN, maxls=MAXLS,
                       gtol=gtol, ftol=ftol)

    def value_and_grad(theta_B5, wrow_B, data):
        lnN, lnD, lnL, W_Rn = data
        return objective_terms(jnp, theta_B5, lnN, lnD, lnL, W_Rn[wrow_B], delta, reduction)

    return jax.jit(functools.partial(lbfgs.solve_pool, value_and_grad, cfg))


def solve_jax(starts, lnN, lnD, lnL, w=None, delta=DELTA, reduction="sum", maxiter=MAXITER,
              tol="tight", lanes=LANES, weight_rows=None, return_stats=False, min_starts=0):
    """L-BFGS from every start in one compiled device-side loop (research.fit.lbfgs), with scipy
    L-BFGS-B's stopping rules (ftol relative to max(|f|, 1), gtol on the largest gradient component,
    maxiter, maxfun). `w` is None (all ones), shape (n,) shared by all starts, or (R, n): weight
    rows (bootstrap multiplicities); start i uses row `weight_rows[i]` (default: row i, so R must
    then equal the number of starts). Returns (x S×5, f S, iterations S), plus a dict of solver
    statistics (evaluations, loop passes, lane utilisation) with `return_stats=True`.

    Starts, weight rows and runs are padded to powers of two (padded runs carry weight 0, padded
    starts are never run), so calls of similar size reuse one compiled program; `min_starts` pads a small
    call to the shape of a larger one already compiled (a refit after the full-grid fit)."""
    import jax

    starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
    lnN, lnD, lnL = (np.asarray(v, dtype=np.float64) for v in (lnN, lnD, lnL))
    S, n = len(starts), len(lnN)
    W = np.ones((1, n)) if w is None else np.atleast_2d(np.asarray(w, dtype=np.float64))
    if weight_rows is None:
        weight_rows = np.zeros(S, dtype=np.int32) if len(W) == 1 else np.arange(S, dtype=np.int32)
    weight_rows = np.asarray(weight_rows, dtype=np.int32)
    if W.shape[1] != n or len(weight_rows) != S or (S and not 0 <= weight_rows.min() <= weight_rows.max() < len(W)):
        raise ValueError(f"weights of shape {W.shape} and rows {weight_rows.shape} do not match {S} starts x {n} runs")
    if S == 0:
        return np.zeros((0, 5)), np.zeros(0), np.zeros(0, dtype=int)
    # weight rows padded to at least min(Sp, 1024): the full-grid fit (one row) and a bootstrap of up
    # to 1,024 resamples x 8 starts then run the very same compiled program
    Sp, n_p = _bucket(max(S, min_starts)), _bucket(n, 64)
    Rp = max(_bucket(len(W), 1), min(Sp, 1024))
    x0 = np.zeros((Sp, 5))
    x0[:S] = starts
    rows = np.zeros(Sp, dtype=np.int32)
    rows[:S] = weight_rows
    Wp = np.zeros((Rp, n_p))
    Wp[:len(W), :n] = W
    data = [np.zeros(n_p) for _ in range(3)]
    for d, v in zip(data, (lnN, lnD, lnL)):
        d[:n] = v
    ftol, gtol = TOLERANCES[tol]
    run = _jax_solver(reduction, float(delta), int(maxiter), float(gtol), float(ftol), int(min(lanes, Sp)))
    with jax.enable_x64(True):
        xs, fs, its, nfev, passes = (np.asarray(v) for v in run(x0, rows, np.int32(S), tuple(data) + (Wp,)))
    out = (xs[:S], fs[:S], its[:S].astype(int))
    if return_stats:
        lanes = int(min(lanes, Sp))
        return out + ({"evaluations": int(nfev[:S].sum()), "passes": int(passes), "lanes": lanes,
                       "lane_utilisation": float(nfev[:S].sum() / max(1, passes * lanes)),
                       "padded_runs": n_p},)
    return out


def solve(starts, lnN, lnD, lnL, w=None, backend="jax", **kw):
    if backend == "jax":
        return solve_jax(starts, lnN, lnD, lnL, w, **kw)
    if backend == "scipy":
        rows = kw.get("weight_rows")
        if rows is not None:
            w = np.atleast_2d(np.asarray(w, dtype=np.float64))[np.asarray(rows)]
        kw = {k: v for k, v in kw.items() if k in ("delta", "reduction", "maxiter", "tol")}
        return solve_scipy(starts, lnN, lnD, lnL, w, **kw)
    raise ValueError(f"unknown backend {backend!r}")


# ----------------------------------------------------------------------------- fit + bootstrap

def theta_to_params(theta, per_token=None) -> dict:
    """Law parameters and the compute-optimal a, b, G (research/fit/allocation.py; 6n unless per_token)."""
    a, b, e, al, be = (float(v) for v in theta)
    with np.errstate(over="ignore"):  # an unidentified resample can put log A past 709: A = inf, not a crash
        A, B, E = (float(np.exp(v)) for v in (a, b, e))
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
        names = [THETA_LABELS[j] for j in range(5) if starts[best, j] in (lo[j], hi[j])]
        warns.append(f"best fit reached only from starts on the grid's edge ({', '.join(names)} at a grid "
                     "bound); the optimum may lie outside the start grid - widen it")
    outside = [THETA_LABELS[j] for j in range(5) if not lo[j] <= xs[best, j] <= hi[j]]
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


TWO_STAGE = ("two-stage cluster: (N, D) points drawn with replacement, then the seed replicates drawn with "
             "replacement, one draw per size used at all of its points (seed noise, correlated within a size's "
             "seed, and the choice of points both inside the intervals)")
TWO_STAGE_PER_POINT = ("two-stage cluster: (N, D) points drawn with replacement, then each drawn point's seed "
                       "replicates drawn with replacement on their own")


def bootstrap_weights(df, n_resamples: int, seed: int, shared_seeds: bool = True):
    """(weights R×n, resampling description). Without replicates: runs with replacement
    (`resample_weights`). With replicates (research.fit.noise.point_groups: some (N, D) point run with
    >= 2 seeds): two stages, so a resample's seed noise is not frozen at the measured draws: points with
    replacement, then their seeds by research.fit.noise.seed_draw (with `shared_seeds`, one draw per
    size, so the correlated noise of a seed's runs stays inside the interval: TWO_STAGE; else
    TWO_STAGE_PER_POINT)."""
    groups = point_groups(df)
    if not any(len(g) >= 2 for g in groups):
        return resample_weights(len(df), n_resamples, seed), "runs with replacement"
    rng = np.random.default_rng(seed)
    W = np.zeros((n_resamples, len(df)))
    for r in range(n_resamples):
        picks = seed_draw(df, groups, rng, shared=shared_seeds)
        for p in rng.integers(0, len(groups), len(groups)):
            np.add.at(W[r], picks[p], 1.0)
    return W, TWO_STAGE if shared_seeds else TWO_STAGE_PER_POINT


def bootstrap_approach3(N, D, L, starts, *, n_resamples=1000, seed=0, reduction="sum", delta=DELTA,
                        backend="jax", maxiter=MAXITER, tol="tight", weights=None):
    """Refit every resample from each of `starts` (K×5; by default the best distinct local
    optima of the full-data fit) and keep each resample's best. Returns (thetas R×5, objs R)."""
    N, D, L = (np.asarray(v, dtype=np.float64) for v in (N, D, L))
    lnN, lnD, lnL = np.log(N), np.log(D), np.log(L)
    W = resample_weights(len(N), n_resamples, seed) if weights is None else np.asarray(weights, float)
    R, K = len(W), len(starts)
    x0 = np.tile(np.asarray(starts, dtype=np.float64), (R, 1))  # job r*K + k
    xs, fs, _ = solve(x0, lnN, lnD, lnL, W, backend=backend, delta=delta, reduction=reduction,
                      maxiter=maxiter, tol=tol, weight_rows=np.repeat(np.arange(R), K))
    fs = np.where(np.isfinite(fs), fs, np.inf).reshape(R, K)
    xs = xs.reshape(R, K, 5)
    best = np.argmin(fs, axis=1)
    return xs[np.arange(R), best], fs[np.arange(R), best]


def summarize_bootstrap(thetas, level=0.95, budgets=(), per_token=None) -> dict:
    """Percentile intervals for every parameter, a, b, G and N_opt/D_opt at `budgets` (in per_token's
    FLOP convention, 6n by default)."""
    per_token = per_token or SIX_N
    rows = [theta_to_params(t, per_token) for t in thetas]
    keys = ["E", "A", "B", "alpha", "beta", "a", "b", "G"]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    arr = {k: np.array([r[k] for r in rows]) for k in keys}
    intervals, se = {}, {}
    for k, v in arr.items():
        v = v[np.isfinite(v)]
        intervals[k] = [float(x) for x in np.percentile(v, q)] if len(v) else [None, None]
        with np.errstate(over="ignore"):  # A, B of an unidentified resample reach 1e300: their SE is inf (null in JSON)
            se[k] = float(np.std(v, ddof=1)) if len(v) > 1 else None
    opt = []
    for c in budgets:
        n, d = compute_optimal(arr["A"], arr["B"], arr["alpha"], arr["beta"], c, per_token)
        ok = np.isfinite(n) & np.isfinite(d)
        n_iv = [float(x) for x in np.percentile(n[ok], q)] if ok.any() else [None, None]
        d_iv = [float(x) for x in np.percentile(d[ok], q)] if ok.any() else [None, None]
        opt.append(optimal_row(c, n_iv, d_iv, per_token.convention))
    return {"level": level, "intervals": intervals, "se": se, "optimal": opt,
            "samples": {k: [float(x) for x in arr[k]] for k in ("E", "A", "B", "alpha", "beta")}}
