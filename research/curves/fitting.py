"""Fitting a loss-curve law to the logged steps of a few runs of one model size.

As the Multi-Power Law paper does: a Huber loss (delta 1e-3) on log L over every logged step
of the fitting runs, minimised from several starts. Here:

1. Long curves are summarised first: the logged steps of a run are cut into at most
   `max_points` consecutive bins, narrow where the loss or the LR moves fast (the start, a
   step drop) and wide on the plateau; each bin gives its median step and the median of its
   log losses, weighted by its number of steps, so every logged step counts about equally
   and a spike counts little. Runs with fewer logged steps are used step by step.
2. Starts: the laws are linear in (L0, A, B) (multipower) or (L0, A, C) (annealing) once the
   exponents are fixed, so a grid over the exponents solves those by non-negative least squares
   and keeps the best few cells.
3. Each start is polished with scipy's trust-region least squares (Huber, bounded, in log
   scale for the amplitudes); the lowest objective wins.
4. Multi-Power Law only: the shape of its loss drop (beta, gamma, C) gets a weak prior centred on
   Luo et al.'s fitted values, and the fit is polished again with it (a MAP fit, `SHAPE_PRIOR`).
   Runs whose LR only falls smoothly (constant, cosine) hardly constrain the shape: their best
   fit runs to beta's bound at an objective within 0.3% of the published shape's, and then
   mispredicts a sudden drop (a step schedule): worst errors of 0.9-1.2% on average over noise
   draws, up to 1.8%, where the fit with the prior errs by 0.13-0.25% (curves drawn from Luo et
   al.'s 400M fit; benchmarks/curves_holdout.py). The prior is weighed in the data's own noise
   (each row sigma * (value - centre) / width, sigma the residuals' robust scale), so a shape
   the runs do determine moves it aside.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from research.curves.laws import (ANNEALING, ANNEALING_LAMBDA, MULTIPOWER, PARAMS, CurveSums, law_loss,
                                  peak_step)

HUBER_DELTA = 1e-3  # on log L, as Luo et al.
# name -> (centre, width) of a Gaussian prior on: ln beta, gamma, and ln(C * peak_lr^(1 - gamma)) (the rate
# per step at the peak LR at which a drop's effect saturates: C alone depends on the LR's scale). Centres:
# Luo et al.'s fits at 25M, 100M and 400M parameters (beta 0.583-0.598, gamma 0.635-0.655, C 2.03-2.13,
# their repository's table, at their peak LR 3e-4). Widths: a factor 3 in beta and in the rate, 0.3 in
# gamma, for one unit of chi-square.
SHAPE_PRIOR = {"beta": (math.log(0.59), math.log(3.0)), "gamma": (0.64, 0.3),
               "C": (math.log(2.05) + 0.36 * math.log(3e-4), math.log(3.0))}
MAX_POINTS = 400  # bins per fitting run
POLISH_STARTS = 4


@dataclass
class Curve:
    """One run: its learning rate at every step 1..T and its loss where it was measured."""

    run: str
    lr_T: np.ndarray
    step_M: np.ndarray  # 1-based steps with a measured loss
    loss_M: np.ndarray
    _sums: CurveSums | None = field(default=None, repr=False)
    weight: float = 1.0  # of each of its points in a fit (relative to other curves': 1 / noise variance)

    @property
    def sums(self) -> CurveSums:
        if self._sums is None:
            self._sums = CurveSums.of(self.lr_T)
        return self._sums

    def after(self, step: int) -> "Curve":
        """The same run with only the losses measured after `step`."""
        keep = self.step_M > step
        return Curve(self.run, self.lr_T, self.step_M[keep], self.loss_M[keep], self._sums, self.weight)

    def fitted_part(self, from_step: int | None) -> "Curve":
        """What a fit uses: the losses after `from_step`, by default after the warmup (the law
        describes training at the schedule's LRs, not the first steps' fall from the initial loss)."""
        return self.after(peak_step(self.lr_T) if from_step is None else from_step - 1)

    @property
    def decays(self) -> bool:
        return bool(np.any(self.sums.delta_T > 0))


def plateau_exit_step(curve: Curve, fraction: float = 0.2) -> int:
    """The first logged step at which the run has left its early plateau: where its loss (a running
    median over 11 logged points, in log scale) has covered all but `fraction` of its fall from the
    first logged loss to its lowest. Small runs stall near the unigram entropy after warmup, then
    fall again; neither law describes that, so a fit is better started past it."""
    log_loss = np.log(curve.loss_M)
    smooth = np.array([np.median(log_loss[max(0, i - 5):i + 6]) for i in range(log_loss.size)])
    threshold = smooth.min() + fraction * (log_loss[0] - smooth.min())
    return int(curve.step_M[int(np.argmax(smooth <= threshold))])


def plateau_start(curves: list[Curve], fraction: float = 0.2) -> int | None:
    """Where a fit of these runs may start past the early plateau: the median (the later of the two
    middle ones for an even count) `plateau_exit_step` of the runs logged from before their LR's
    peak (trunks and runs trained from scratch; a branch is logged from its branch point only)
    with at least 11 logged losses. None when no run is."""
    exits = sorted(plateau_exit_step(c, fraction) for c in curves
                   if c.step_M.size >= 11 and c.step_M[0] <= peak_step(c.lr_T))
    return exits[len(exits) // 2] if exits else None


@dataclass
class Points:
    """What the objective sees: per fitting run, query steps, target log losses, weights."""

    sums: list[CurveSums]
    step_Q: list[np.ndarray]
    log_loss_Q: list[np.ndarray]
    weight_Q: list[np.ndarray]

    @property
    def y(self) -> np.ndarray:
        return np.concatenate(self.log_loss_Q)

    @property
    def w(self) -> np.ndarray:
        return np.concatenate(self.weight_Q)


def summarise(curve: Curve, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, median log loss, weight) of at most `max_points` bins of the run's logged steps."""
    step, log_loss = curve.step_M.astype(np.int64), np.log(curve.loss_M)
    n = step.size
    if n <= max_points:
        return step, log_loss, np.ones(n)
    # A coordinate that advances with the point count, the smoothed loss's movement and the LR's:
    # equal bins in it are narrow where the curve bends.
    window = max(1, n // max_points)
    smooth = np.convolve(log_loss, np.ones(window) / window, mode="same")
    move = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(smooth)))])
    lr_at = curve.lr_T[step - 1]
    lr_move = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(lr_at)))])
    u = np.arange(n) / n
    for extra in (move, lr_move):
        if extra[-1] > 0:
            u = u + extra / extra[-1]
    edges = np.searchsorted(u, np.linspace(u[0], u[-1], max_points + 1)[1:-1])
    out_s, out_l, out_w = [], [], []
    for chunk in np.split(np.arange(n), np.unique(edges)):
        if chunk.size == 0:
            continue
        out_s.append(int(np.median(step[chunk])))
        out_l.append(float(np.median(log_loss[chunk])))
        out_w.append(chunk.size)
    weight = np.array(out_w, float)
    return np.array(out_s, np.int64), np.array(out_l), weight / weight.mean()


def points_of(curves: list[Curve], max_points: int = MAX_POINTS, from_step: int | None = None) -> Points:
    curves = [c.fitted_part(from_step) for c in curves]
    curves = [c for c in curves if c.step_M.size]
    parts = [summarise(c, max_points) for c in curves]
    return Points([c.sums for c in curves], [p[0] for p in parts], [p[1] for p in parts],
                  [p[2] * c.weight for p, c in zip(parts, curves)])


# ---------------------------------------------------------------- parameterisation

def _bounds(law: str, max_loss: float):
    """(lower, upper) of the vector the optimiser moves: amplitudes as natural logs. L0 is not bounded
    by the smallest loss: the decay terms take the loss below L0 + A*S1^-alpha, and below L0 itself."""
    if law == MULTIPOWER:  # L0, ln A, alpha, ln B, ln C, beta, gamma
        return (np.array([0.0, -30, 1e-3, -30, -30, 1e-3, 0.0]),
                np.array([max_loss, 30, 3.0, 30, 30, 10.0, 3.0]))
    return (np.array([0.0, -30, 1e-3, -30, 0.9]),  # L0, ln A, alpha, ln C, lam
            np.array([max_loss, 30, 3.0, 30, 0.99999]))


LOG_AMPLITUDES = {MULTIPOWER: (1, 3, 4), ANNEALING: (1, 3)}


def to_params(law: str, x) -> dict:
    x = np.array(x, float)
    for i in LOG_AMPLITUDES[law]:
        x[i] = math.exp(x[i])
    return dict(zip(PARAMS[law], map(float, x)))


def from_params(law: str, params: dict) -> np.ndarray:
    x = np.array([float(params[k]) for k in PARAMS[law]])
    for i in LOG_AMPLITUDES[law]:
        x[i] = math.log(max(x[i], 1e-13))
    return x


def predict_points(law: str, points: Points, params: dict) -> np.ndarray:
    return np.concatenate([law_loss(law, s, t, params) for s, t in zip(points.sums, points.step_Q)])


def residuals(law: str, points: Points, x) -> np.ndarray:
    pred = predict_points(law, points, to_params(law, x))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.log(np.maximum(pred, 1e-12)) - points.y
    return np.sqrt(points.w) * np.where(np.isfinite(r), r, 10.0)


# ---------------------------------------------------------------- starts

def _nnls_cells(points: Points, columns, cells):
    """[(score, coefficients, cell)] of min || (X c - L) / L || over c >= 0 for each cell's X."""
    from scipy.optimize import nnls

    L = np.exp(points.y)
    sw = np.sqrt(points.w) / L
    out = []
    for cell in cells:
        X = columns(cell)
        if not np.all(np.isfinite(X)):
            continue
        try:
            coef, _ = nnls(X * sw[:, None], L * sw)
        except RuntimeError:  # nnls gave up (its iteration limit)
            continue
        r = (X @ coef - L) * sw
        out.append((float(r @ r), coef, cell))
    return sorted(out, key=lambda item: item[0])


def _multipower_starts(points: Points, peak_lr: float):
    ones = np.ones(points.y.size)
    area = np.concatenate([s.area(t) for s, t in zip(points.sums, points.step_Q)])
    drop_cache: dict = {}

    def drop(beta, gamma, C):
        key = (beta, gamma, C)
        if key not in drop_cache:
            drop_cache[key] = np.concatenate([s.loss_drop(t, C, beta, gamma)
                                              for s, t in zip(points.sums, points.step_Q)])
        return drop_cache[key]

    def columns(cell):
        alpha, beta, gamma, C = cell
        return np.column_stack([ones, area ** -alpha, -drop(beta, gamma, C)])

    cells = []
    for alpha, beta, gamma, steps in itertools.product((0.2, 0.4, 0.6, 0.9), (0.3, 0.6, 1.2), (0.3, 0.6, 0.9),
                                                       (3.0, 30.0, 300.0, 3000.0)):
        # C x = 1 after `steps` steps at the peak LR: x = eta^-gamma * eta * steps.
        cells.append((alpha, beta, gamma, 1.0 / (peak_lr ** (1.0 - gamma) * steps)))
    starts = []
    for _, (L0, A, B), (alpha, beta, gamma, C) in _nnls_cells(points, columns, cells)[:POLISH_STARTS]:
        starts.append(dict(L0=L0, A=max(A, 1e-8), alpha=alpha, B=max(B, 1e-8), C=C, beta=beta, gamma=gamma))
    return starts


def _annealing_starts(points: Points, lam: float):
    ones = np.ones(points.y.size)
    area = np.concatenate([s.area(t) for s, t in zip(points.sums, points.step_Q)])
    s2 = np.concatenate([s.annealing_area(lam)[t - 1] for s, t in zip(points.sums, points.step_Q)])

    def columns(cell):
        return np.column_stack([ones, area ** -cell[0], -s2])

    cells = [(a,) for a in np.linspace(0.05, 1.5, 30)]
    return [dict(L0=L0, A=max(A, 1e-8), alpha=alpha, C=max(C, 1e-8), lam=lam)
            for _, (L0, A, C), (alpha,) in _nnls_cells(points, columns, cells)[:POLISH_STARTS]]


# ---------------------------------------------------------------- the fit

@dataclass
class LawFit:
    law: str
    params: dict
    cost: float  # the Huber objective at the optimum
    n_points: int  # bins (or steps) the objective saw
    n_steps: int  # logged steps they summarise
    fixed: tuple = ()
    from_step: int | None = None
    prior_sigma: float | None = None  # the noise scale SHAPE_PRIOR was weighed at (None: no prior)
    peak_lr: float | None = None  # the fitting runs' peak LR (the prior's rate is per step at it)


class MultipowerObjective:
    """Residuals sqrt(w) * (ln L_pred - ln L) of the Multi-Power Law and their analytic Jacobian
    in the optimiser's coordinates (L0, ln A, alpha, ln B, ln C, beta, gamma); one pass over the
    decay events gives both (least squares asks for them at the same point in turn)."""

    def __init__(self, points: Points):
        self.points = points
        self.sqrt_w = np.sqrt(points.w)
        self._key, self._value = None, None

    def _compute(self, x):
        key = np.asarray(x, float).tobytes()
        if key != self._key:
            L0, A, alpha, B, C, beta, gamma = to_params(MULTIPOWER, x).values()
            preds, jacs = [], []
            for sums, t in zip(self.points.sums, self.points.step_Q):
                area = sums.area(t)
                pa = area ** -alpha
                terms = sums.loss_drop_terms(t, C, beta, gamma)
                preds.append(L0 + A * pa - B * terms[0])
                jacs.append(np.column_stack([np.ones(t.size), A * pa, -A * pa * np.log(area), -B * terms[0],
                                             -B * terms[1], -B * terms[2], -B * terms[3]]))
            pred = np.maximum(np.concatenate(preds), 1e-12)
            r = self.sqrt_w * (np.log(pred) - self.points.y)
            jac = np.concatenate(jacs) * (self.sqrt_w / pred)[:, None]
            self._key, self._value = key, (r, jac)
        return self._value

    def residuals(self, x):
        return self._compute(x)[0]

    def jacobian(self, x):
        return self._compute(x)[1]


def _prior_rows(x, sigma: float, peak_lr: float) -> tuple[np.ndarray, np.ndarray]:
    """The Multi-Power Law's shape prior as residual rows sigma * (value - centre) / width, and their
    Jacobian in the optimiser's coordinates (L0, ln A, alpha, ln B, ln C, beta, gamma)."""
    ln_c, beta, gamma = float(x[4]), max(float(x[5]), 1e-12), float(x[6])
    ln_peak = math.log(peak_lr)
    values = {"beta": math.log(beta), "gamma": gamma, "C": ln_c + (1.0 - gamma) * ln_peak}
    grads = {"beta": {5: 1.0 / beta}, "gamma": {6: 1.0}, "C": {4: 1.0, 6: -ln_peak}}
    rows, jac = np.zeros(len(SHAPE_PRIOR)), np.zeros((len(SHAPE_PRIOR), len(PARAMS[MULTIPOWER])))
    for i, (name, (centre, width)) in enumerate(SHAPE_PRIOR.items()):
        rows[i] = sigma * (values[name] - centre) / width
        for j, g in grads[name].items():
            jac[i, j] = sigma * g / width
    return rows, jac


def _huber_then_square(n_data: int):
    """least_squares' loss: Huber (in units of its f_scale) on the first n_data rows, plain squares
    on the prior's rows after them (a Gaussian prior)."""
    def rho(z):
        out = np.empty((3, z.size))
        zd = z[:n_data]
        big = zd > 1.0
        root = np.sqrt(np.where(big, zd, 1.0))
        out[0, :n_data] = np.where(big, 2.0 * root - 1.0, zd)
        out[1, :n_data] = np.where(big, 1.0 / root, 1.0)
        out[2, :n_data] = np.where(big, -0.5 / root**3, 0.0)
        out[0, n_data:], out[1, n_data:], out[2, n_data:] = z[n_data:], 1.0, 0.0
        return out
    return rho


def polish(law: str, points: Points, start: dict, fixed: tuple = (), max_nfev: int = 300,
           prior_sigma: float | None = None, peak_lr: float | None = None) -> tuple[dict, float]:
    """Bounded Huber least squares from `start`; parameters named in `fixed` stay as they are.
    `prior_sigma` (Multi-Power Law): add `SHAPE_PRIOR` weighed at that noise scale (the cost then
    includes it), for runs whose peak LR is `peak_lr`."""
    from scipy.optimize import least_squares

    lo, hi = _bounds(law, float(np.exp(points.y.max())))
    x0 = from_params(law, start)
    free = np.array([name not in fixed for name in PARAMS[law]])
    x0 = np.clip(x0, lo, hi)
    x0[free] = np.clip(x0[free], lo[free] + 1e-9 * (hi[free] - lo[free]), hi[free] - 1e-9 * (hi[free] - lo[free]))

    def full(z):
        x = x0.copy()
        x[free] = z
        return x

    loss = "huber"
    if law == MULTIPOWER:
        objective = MultipowerObjective(points)
        fun, jac = (lambda z: objective.residuals(full(z))), (lambda z: objective.jacobian(full(z))[:, free])
        if prior_sigma:
            data_fun, data_jac = fun, jac
            fun = lambda z: np.concatenate([data_fun(z), _prior_rows(full(z), prior_sigma, peak_lr)[0]])  # noqa: E731
            jac = lambda z: np.vstack([data_jac(z), _prior_rows(full(z), prior_sigma, peak_lr)[1][:, free]])  # noqa: E731
            loss = _huber_then_square(points.y.size)
    else:
        fun, jac = (lambda z: residuals(law, points, full(z))), "2-point"
    sol = least_squares(fun, x0[free], jac=jac, bounds=(lo[free], hi[free]), loss=loss, f_scale=HUBER_DELTA,
                        x_scale="jac", max_nfev=max_nfev, xtol=1e-10, ftol=1e-12, gtol=1e-10)
    return to_params(law, full(sol.x)), float(sol.cost)


def noise_scale(law: str, points: Points, params: dict) -> float:
    """A robust scale (1.4826 x the median absolute value) of the weighted log-loss residuals."""
    r = residuals(law, points, from_params(law, params))
    return float(1.4826 * np.median(np.abs(r))) or float(np.sqrt(np.mean(r * r)))


def fit_law(law: str, curves: list[Curve], *, max_points: int = MAX_POINTS,
            lam: float | None = ANNEALING_LAMBDA, from_step: int | None = None, shape_prior: bool = True) -> LawFit:
    """Fit `law` to the measured losses of `curves` (one model size). `lam` is the annealing
    law's momentum decay: fixed at that value (Tissue et al. use 0.999), or fitted when None.
    `from_step`: fit the losses from this step on (default: each run's first step after warmup).
    `shape_prior`: the Multi-Power Law's weak prior on beta and gamma (`SHAPE_PRIOR`); off, the
    plain Huber fit."""
    points = points_of(curves, max_points, from_step)
    peak_lr = max(float(c.lr_T.max()) for c in curves)
    fixed: tuple = ()
    if law == MULTIPOWER:
        starts = _multipower_starts(points, peak_lr)
    else:
        fixed = ("lam",) if lam is not None else ()
        starts = _annealing_starts(points, ANNEALING_LAMBDA if lam is None else lam)
    best = None
    for start in starts:
        params, cost = polish(law, points, start, fixed)
        if best is None or cost < best[1]:
            best = (params, cost)
    sigma = None
    if law == MULTIPOWER and shape_prior:
        sigma = noise_scale(law, points, best[0])
        gamma = SHAPE_PRIOR["gamma"][0]
        centred = dict(best[0], beta=math.exp(SHAPE_PRIOR["beta"][0]), gamma=gamma,
                       C=math.exp(SHAPE_PRIOR["C"][0] - (1.0 - gamma) * math.log(peak_lr)))
        best = min((polish(law, points, start, fixed, prior_sigma=sigma, peak_lr=peak_lr)
                    for start in (best[0], centred)), key=lambda pc: pc[1])
    n_steps = int(sum(c.fitted_part(from_step).step_M.size for c in curves))
    return LawFit(law, best[0], best[1], int(points.y.size), n_steps, fixed, from_step, sigma, peak_lr)


def bootstrap(fit: LawFit, curves: list[Curve], n: int, seed: int = 0, *, max_points: int = MAX_POINTS,
              block: int = 10) -> list[dict]:
    """`n` parameter draws: refits (polished from the fit, with its prior if it had one) to the fitted
    curves plus residuals resampled in blocks of `block` consecutive points within each run (the
    noise of a loss curve is correlated from step to step, so single points would understate it).
    A run of fewer than 4 * `block` points is resampled in blocks of a quarter of its length, and one
    of fewer than 8 points point by point: with one block as long as the run, every draw would copy
    the data and the interval would have no width."""
    points = points_of(curves, max_points, fit.from_step)
    rng = np.random.default_rng(seed)
    fitted = [np.log(law_loss(fit.law, s, t, fit.params)) for s, t in zip(points.sums, points.step_Q)]
    resid = [y - f for y, f in zip(points.log_loss_Q, fitted)]
    draws = []
    for _ in range(n):
        new_y = []
        for f, r in zip(fitted, resid):
            m = r.size
            b = max(1, min(block, m // 4))  # at least 4 blocks: a sparsely evaluated run (m <= 10) is not copied whole
            starts = rng.integers(0, m - b + 1, size=-(-m // b))
            new_y.append(f + np.concatenate([r[s:s + b] for s in starts])[:m])
        resampled = Points(points.sums, points.step_Q, new_y, points.weight_Q)
        params, _ = polish(fit.law, resampled, fit.params, fit.fixed, prior_sigma=fit.prior_sigma,
                           peak_lr=fit.peak_lr)
        draws.append(params)
    return draws


def relative_errors(law: str, params: dict, curve: Curve, cap: float | None = None) -> tuple[float, float]:
    """(mean, max) over the run's logged steps of |predicted - measured| / measured."""
    pred = law_loss(law, curve.sums, curve.step_M, params)
    if cap is not None:
        pred = np.minimum(pred, cap)
    err = np.abs(pred - curve.loss_M) / curve.loss_M
    return float(err.mean()), float(err.max())


__all__ = ["Curve", "LawFit", "fit_law", "bootstrap", "relative_errors", "peak_step"]
