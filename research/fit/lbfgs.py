"""Batched L-BFGS on device: thousands of small independent minimisations in one `lax.while_loop`.

Built for the Approach-3 multi-start fit (4,500 starts; 1,000 bootstrap resamples x 8 starts) where
every problem has 5 parameters and the objective is a few hundred terms: per problem there is too
little arithmetic to keep a core busy, so the problems are solved side by side as rows of
(lanes x P) arrays, and the whole job is ONE compiled program with no host round trip:

* a fixed pool of `lanes` rows steps in lockstep; each pass of the loop evaluates the objective and
  its gradient once, at one trial point per lane (a batched (lanes x n) computation);
* each lane is a small state machine: a fresh start is evaluated, then every pass tests one trial
  step of a weak-Wolfe line search (sufficient decrease c1 = 1e-4 and curvature c2 = 0.9, scipy's
  dcsrch uses the strong form): accept it (new L-BFGS direction, unit step), extend it (x4 until a
  bracket exists, then bisect) or shrink it (safeguarded quadratic interpolation, or bisection
  inside a bracket), at most `maxls` trials per search; the curvature condition keeps y.s > 0,
  so the memory stays positive definite and flat valleys are crossed in a few long steps;
* a lane that has converged writes its result into the output row of its problem and takes the
  next pending problem in the same pass, so no lane idles while others run long;
* the loop ends when no lane holds a pending problem.

Stopping rules are scipy L-BFGS-B's (an unconstrained problem, so the projected gradient is the
gradient): stop when max_i |g_i| <= gtol (also at the start), when
(f_k - f_k+1) / max(|f_k|, |f_k+1|, 1) <= ftol after an accepted step, after `maxiter` iterations
or `maxfun` evaluations. A line search that finds no decrease first discards the L-BFGS memory and
retries along the scaled steepest-descent direction; if that fails too the lane stops at its best
point (scipy's "ABNORMAL_TERMINATION_IN_LNSRCH").

The objective is passed as `value_and_grad(x_BP, aux_B, data) -> (f_B, g_BP)`: `aux_B` is a
per-problem integer (the approach-3 fit uses it to pick a bootstrap resample's weights) and
`data` any pytree of arrays shared by all problems. Everything here is shape-static: one compiled
program serves every call with the same (padded) shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

C1 = 1e-4  # sufficient decrease (scipy's dcsrch: 1e-3)
C2 = 0.9  # curvature (scipy's dcsrch: 0.9, strong form)
EXTEND = 4.0  # step growth while no bracket (scipy's dcsrch: up to 4)
EPS = 2.220446049250313e-16


class Config(NamedTuple):
    lanes: int
    memory: int
    maxiter: int
    maxfun: int
    maxls: int
    gtol: float
    ftol: float


class PoolState(NamedTuple):
    job_B: jax.Array      # problem each lane is solving; >= n_jobs: idle
    fresh_B: jax.Array    # x_BP is a new start, not yet evaluated
    x_BP: jax.Array       # current (accepted) point
    f_B: jax.Array
    g_BP: jax.Array
    p_BP: jax.Array       # search direction
    t_B: jax.Array        # trial step along p
    slope_B: jax.Array    # g . p at x
    lo_B: jax.Array       # largest step known to satisfy sufficient decrease (0: none yet)
    hi_B: jax.Array       # smallest step known to fail it (inf: none yet)
    f_lo_B: jax.Array     # objective and gradient at x + lo p
    g_lo_BP: jax.Array
    s_BMP: jax.Array      # L-BFGS memory, oldest first, newest in slot M-1
    y_BMP: jax.Array
    rho_BM: jax.Array     # 1 / (y . s); 0 marks an empty slot
    n_mem_B: jax.Array    # filled slots
    it_B: jax.Array       # accepted iterations
    nfev_B: jax.Array     # objective evaluations
    nls_B: jax.Array      # failed trials in the current line search
    next_job: jax.Array   # next pending problem
    out_x_JP: jax.Array
    out_f_J: jax.Array
    out_it_J: jax.Array
    out_nfev_J: jax.Array


def two_loop(g_BP, s_BMP, y_BMP, rho_BM):
    """L-BFGS direction -H g by the two-loop recursion; empty slots (rho 0) do nothing.
    Rolled loops (lax.fori_loop) keep the compiled program small."""
    M = s_BMP.shape[1]

    def newest_first(j, c):
        q, a_BM = c
        i = M - 1 - j
        a = rho_BM[:, i] * jnp.sum(s_BMP[:, i] * q, axis=-1)
        return q - a[:, None] * y_BMP[:, i], a_BM.at[:, i].set(a)

    q, a_BM = jax.lax.fori_loop(0, M, newest_first, (g_BP, jnp.zeros_like(rho_BM)))
    s_new, y_new = s_BMP[:, M - 1], y_BMP[:, M - 1]
    yy = jnp.sum(y_new * y_new, axis=-1)
    # initial Hessian scale s.y / y.y of the newest pair (1 with an empty memory)
    sy = jnp.sum(s_new * y_new, axis=-1)
    gamma = jnp.where((rho_BM[:, M - 1] > 0) & (yy > 0), sy / jnp.where(yy > 0, yy, 1.0), 1.0)

    def oldest_first(i, r):
        b = rho_BM[:, i] * jnp.sum(y_BMP[:, i] * r, axis=-1)
        return r + (a_BM[:, i] - b)[:, None] * s_BMP[:, i]

    return -jax.lax.fori_loop(0, M, oldest_first, gamma[:, None] * q)


def _where(c_B, a, b):
    return jnp.where(c_B.reshape(c_B.shape + (1,) * (a.ndim - 1)), a, b)


def _initial_state(x0_JP, n_jobs, cfg: Config) -> PoolState:
    J, P = x0_JP.shape
    B, M = cfg.lanes, cfg.memory
    job = jnp.arange(B, dtype=jnp.int32)
    job = jnp.where(job < n_jobs, job, J)
    x = x0_JP[jnp.minimum(job, J - 1)]
    zB, zBP, iB = jnp.zeros(B, x0_JP.dtype), jnp.zeros((B, P), x0_JP.dtype), jnp.zeros(B, jnp.int32)
    return PoolState(job, jnp.ones(B, bool), x, zB, zBP, zBP, jnp.ones(B, x0_JP.dtype), zB,
                     zB, jnp.full(B, jnp.inf, x0_JP.dtype), zB, zBP,
                     jnp.zeros((B, M, P), x0_JP.dtype), jnp.zeros((B, M, P), x0_JP.dtype),
                     jnp.zeros((B, M), x0_JP.dtype), iB, iB, iB, iB, jnp.asarray(B, jnp.int32),
                     jnp.full((J, P), jnp.nan, x0_JP.dtype), jnp.full(J, jnp.nan, x0_JP.dtype),
                     jnp.zeros(J, jnp.int32), jnp.zeros(J, jnp.int32))


def _backtrack_step(t, f0, slope, ft):
    """Next trial step after t failed: minimiser of the quadratic through f(0), f'(0), f(t),
    kept within [t/10, t/2]; t/10 when f(t) is not finite."""
    denom = 2.0 * (ft - f0 - slope * t)
    tq = -slope * t * t / jnp.where(denom > 0, denom, 1.0)
    tq = jnp.where((denom > 0) & jnp.isfinite(tq), tq, 0.5 * t)
    return jnp.where(jnp.isfinite(ft), jnp.clip(tq, 0.1 * t, 0.5 * t), 0.1 * t)


def _step(value_and_grad, data, x0_JP, aux_J, n_jobs, cfg: Config, st: PoolState) -> PoolState:
    """One pass: one objective evaluation per lane, then each lane's state machine and refill."""
    J = x0_JP.shape[0]
    active = st.job_B < n_jobs
    jobc = jnp.minimum(st.job_B, J - 1)
    fresh = st.fresh_B
    xe = jnp.where(fresh[:, None], st.x_BP, st.x_BP + st.t_B[:, None] * st.p_BP)
    fe, ge = value_and_grad(xe, aux_J[jobc], data)
    nfev = st.nfev_B + 1
    finite = jnp.isfinite(fe) & jnp.all(jnp.isfinite(ge), axis=-1)

    # the line search: sufficient decrease, then curvature (weak Wolfe)
    searching = ~fresh
    decrease = searching & finite & (fe <= st.f_B + C1 * st.t_B * st.slope_B)
    curvature = jnp.sum(ge * st.p_BP, axis=-1) >= C2 * st.slope_B
    ok = decrease & curvature
    extend = decrease & ~curvature
    shrink = searching & ~decrease
    lo = jnp.where(extend, st.t_B, st.lo_B)
    f_lo = jnp.where(extend, fe, st.f_lo_B)
    g_lo = _where(extend, ge, st.g_lo_BP)
    hi = jnp.where(shrink, st.t_B, st.hi_B)
    nls = jnp.where(extend | shrink, st.nls_B + 1, 0)
    out_of_trials = (extend | shrink) & (nls >= cfg.maxls)
    settle = out_of_trials & (lo > 0)  # take the best sufficient-decrease step found
    failed = out_of_trials & (lo <= 0)  # no decrease found along p

    take = ok | settle
    x_new = jnp.where(fresh[:, None], xe, st.x_BP + jnp.where(ok, st.t_B, lo)[:, None] * st.p_BP)
    f_new = jnp.where(ok | fresh, fe, f_lo)
    g_new = _where(ok | fresh, ge, g_lo)
    s_BP, y_BP = x_new - st.x_BP, g_new - st.g_BP
    ys, yy = jnp.sum(s_BP * y_BP, axis=-1), jnp.sum(y_BP * y_BP, axis=-1)
    remember = take & (ys > EPS * yy)
    s_hist = _where(remember, jnp.concatenate([st.s_BMP[:, 1:], s_BP[:, None]], axis=1), st.s_BMP)
    y_hist = _where(remember, jnp.concatenate([st.y_BMP[:, 1:], y_BP[:, None]], axis=1), st.y_BMP)
    rho = _where(remember, jnp.concatenate([st.rho_BM[:, 1:], (1.0 / jnp.where(remember, ys, 1.0))[:, None]],
                                           axis=1), st.rho_BM)
    n_mem = jnp.where(remember, jnp.minimum(st.n_mem_B + 1, cfg.memory), st.n_mem_B)
    it = st.it_B + take.astype(jnp.int32)
    gmax = jnp.max(jnp.abs(g_new), axis=-1)
    rel = (st.f_B - f_new) / jnp.maximum(jnp.maximum(jnp.abs(st.f_B), jnp.abs(f_new)), 1.0)
    converged = (take & ((rel <= cfg.ftol) | (gmax <= cfg.gtol) | (it >= cfg.maxiter))
                 | (fresh & (~finite | (gmax <= cfg.gtol))))

    # a search that found no decrease: with memory, forget it and retry along -g; else stop
    give_up = failed & (n_mem == 0)
    forget = failed & (n_mem > 0)
    rho = _where(forget, jnp.zeros_like(rho), rho)
    n_mem = jnp.where(forget, 0, n_mem)

    accepted = take | fresh
    x = _where(accepted, x_new, st.x_BP)
    f = jnp.where(accepted, f_new, st.f_B)
    g = _where(accepted, g_new, st.g_BP)

    # new direction where a point was accepted or the memory was just dropped
    new_dir = accepted | forget
    p = two_loop(g, s_hist, y_hist, rho)
    slope = jnp.sum(g * p, axis=-1)
    uphill = ~(slope < 0) | (n_mem == 0)
    gnorm = jnp.sqrt(jnp.sum(g * g, axis=-1))
    p = _where(uphill, -g, p)
    slope = jnp.where(uphill, -gnorm * gnorm, slope)
    drop = new_dir & uphill & (n_mem > 0)  # not a descent direction: forget the memory
    rho = _where(drop, jnp.zeros_like(rho), rho)
    n_mem = jnp.where(drop, 0, n_mem)
    t_first = jnp.where(n_mem == 0, jnp.minimum(1.0, 1.0 / jnp.where(gnorm > 0, gnorm, 1.0)), 1.0)
    bracketed = jnp.isfinite(hi)
    t_next = jnp.where(extend, jnp.where(bracketed, 0.5 * (lo + hi), EXTEND * st.t_B),
                       jnp.where(lo > 0, 0.5 * (lo + hi), _backtrack_step(st.t_B, st.f_B, st.slope_B, fe)))
    t = jnp.where(new_dir, t_first, t_next)
    p = _where(new_dir, p, st.p_BP)
    slope = jnp.where(new_dir, slope, st.slope_B)
    lo = jnp.where(new_dir, 0.0, lo)
    hi = jnp.where(new_dir, jnp.inf, hi)
    nls = jnp.where(new_dir, 0, nls)

    done = active & (converged | give_up | (nfev >= cfg.maxfun))
    slot = jnp.where(done, st.job_B, J)  # J: out of range, dropped
    out_x = st.out_x_JP.at[slot].set(x, mode="drop")
    out_f = st.out_f_J.at[slot].set(f, mode="drop")
    out_it = st.out_it_J.at[slot].set(it, mode="drop")
    out_nfev = st.out_nfev_J.at[slot].set(nfev, mode="drop")

    # finished lanes take the next pending problems
    new_job = st.next_job + jnp.cumsum(done, dtype=jnp.int32) - 1
    refill = done & (new_job < n_jobs)
    job = jnp.where(done, jnp.where(refill, new_job, J), st.job_B)
    next_job = st.next_job + jnp.sum(done, dtype=jnp.int32)
    x = _where(refill, x0_JP[jnp.minimum(new_job, J - 1)], x)
    zero = jnp.zeros_like(it)
    return PoolState(job, refill, x, f, g, p, t, slope, lo, hi, f_lo, g_lo, s_hist, y_hist,
                     _where(refill, jnp.zeros_like(rho), rho), jnp.where(refill, 0, n_mem),
                     jnp.where(refill, zero, it), jnp.where(refill, zero, nfev), jnp.where(refill, zero, nls),
                     next_job, out_x, out_f, out_it, out_nfev)


def solve_pool(value_and_grad, cfg: Config, x0_JP, aux_J, n_jobs, data):
    """Minimise problems 0..n_jobs-1 (rows of x0_JP; rows beyond n_jobs are padding) in one
    device-side loop. Returns (x_JP, f_J, it_J, nfev_J, passes): solutions, objectives, iterations,
    evaluations and loop passes (each pass evaluates every lane once); padding rows are NaN / 0."""
    n_jobs = jnp.asarray(n_jobs, jnp.int32)

    def cond(c):
        st, _ = c
        return jnp.any(st.job_B < n_jobs)

    def body(c):
        st, k = c
        return _step(value_and_grad, data, x0_JP, aux_J, n_jobs, cfg, st), k + 1

    st, passes = jax.lax.while_loop(cond, body, (_initial_state(x0_JP, n_jobs, cfg), jnp.asarray(0, jnp.int32)))
    return st.out_x_JP, st.out_f_J, st.out_it_J, st.out_nfev_J, passes
