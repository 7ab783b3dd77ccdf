"""A curve law anchored to measured constant-LR runs: the level from the run, the drop from the law.

Both laws split a run's loss into a constant-LR curve read at the area under the schedule and the
drop that lowering the LR buys:

    L(t) = Lc(S1(t)) - drop(t)    Multi-Power: drop = B * LD(t; C, beta, gamma);  annealing: C * S2(t; lam)

Their Lc = L0 + A * S1^-alpha cannot follow a small model's early plateau (its loss stalls near the
unigram entropy, then falls again): a cooldown that ends in or just past it was mispredicted by
about 0.1 nats. A branch design measures Lc itself: each trunk runs at constant LR through every
branch point of its lineage. So here Lc is the trunk's own logged loss at the same area, smoothed:
its residuals from the size's fitted L0 + A * S1^-alpha, by a local-linear kernel in ln S1 of
bandwidth `bandwidth`, added back to the formula (past either end of the trunk, the formula moved by
the smoothed residual at that end). What is fitted is only the drop's parameters and `gap`, one
shift from the anchor's loss (the training loss of single batches, or the eval set's prefix that
dense evaluation logs) to the target loss (the full eval set), to every other logged loss of the
lineages: each branch's anchor-loss steps after its branch point, and the target loss wherever it
was measured, each point weighted by its tokens. The Multi-Power Law keeps its shape prior
(`research.curves.fitting.SHAPE_PRIOR`), weighed in these residuals' own noise.

Measured (benchmarks/curves_own_runs.py, variants anchored/*; sweeps/study-dense.toml): each of the
study's 108 branches left out in turn and predicted from its trunk and the other branches, the RMS
error of the final eval loss is 0.88x the seed noise anchored to the dense eval prefix (1.31x to the
training loss), where the formula gave 2.9x (7.6x at the shortest horizons). On curves the formula
does describe (Luo et al.'s 400M law) anchoring costs a little: worst error 0.19% against 0.17%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from research.curves.fitting import (HUBER_DELTA, SHAPE_PRIOR, Curve, _huber_then_square, _prior_rows,
                                     peak_step, summarise)
from research.curves.laws import ANNEALING, MULTIPOWER, CurveSums, constant_lr_part
from research.curves.record import fit_curve_law
from research.errors import UserError

BANDWIDTH = 0.2  # in ln S1: the trunk's losses within about 20% of the area count most
ANCHOR_LOSSES = ("loss", "dense_eval_loss")  # what a sweep's trunk logs often: single training batches, the eval prefix
DROP_PARAMS = {MULTIPOWER: ("B", "C", "beta", "gamma"), ANNEALING: ("C", "lam")}


def constant_lr_curve(params: dict, s1_Q: np.ndarray) -> np.ndarray:
    """`constant_lr_part` of the laws, from a parameter dict."""
    return constant_lr_part(np.asarray(s1_Q, float), params["L0"], params["A"], params["alpha"])


@dataclass
class Anchor:
    """One trunk's smoothed constant-LR curve: residuals from the size's formula, in ln S1, each point
    weighted (a bin of logged steps where the trunk logged more than `max_points`)."""

    log_s1_M: np.ndarray
    resid_M: np.ndarray
    bandwidth: float = BANDWIDTH
    weight_M: np.ndarray | None = None  # None: every point 1

    @classmethod
    def of(cls, trunk: Curve, base: dict, bandwidth: float = BANDWIDTH, max_points: int = 400) -> "Anchor":
        part = trunk.after(peak_step(trunk.lr_T))
        if part.step_M.size < 3:
            raise UserError(f"run {trunk.run}: {part.step_M.size} logged losses after its warmup; an anchor "
                            "needs at least 3 (log the loss more often)")
        step, loss, weight = part.step_M, part.loss_M, None
        if step.size > max_points:  # binned as the fit bins long curves: the kernel's cost and LAW.json stay small
            step, log_loss, weight = summarise(part, max_points)
            loss = np.exp(log_loss)
        s1 = trunk.sums.area(step)
        return cls(np.log(s1), loss - constant_lr_curve(base, s1), bandwidth, weight)

    def residual(self, s1_Q) -> np.ndarray:
        """The local-linear kernel estimate of the residual at areas s1_Q (clipped to the trunk's range)."""
        x_Q = np.clip(np.log(np.asarray(s1_Q, float)), self.log_s1_M.min(), self.log_s1_M.max())
        out = np.empty(x_Q.size)
        for lo in range(0, x_Q.size, 1024):
            d = self.log_s1_M[None, :] - x_Q[lo:lo + 1024, None]
            w = np.exp(-0.5 * (d / self.bandwidth) ** 2)
            if self.weight_M is not None:
                w = w * self.weight_M[None, :]
            s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
            t0, t1 = w @ self.resid_M, (w * d) @ self.resid_M
            det = s0 * s2 - s1 * s1
            ok = det > 1e-12 * np.maximum(s0 * s2, 1e-300)
            out[lo:lo + 1024] = np.where(ok, (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0), t0 / np.maximum(s0, 1e-300))
        return out

    def to_dict(self) -> dict:
        out = {"bandwidth": self.bandwidth, "log_s1": self.log_s1_M.tolist(), "residual": self.resid_M.tolist()}
        return out if self.weight_M is None else {**out, "weight": self.weight_M.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Anchor":
        x, r = np.array(d["log_s1"], float), np.array(d["residual"], float)
        w = np.array(d["weight"], float) if d.get("weight") is not None else None
        bad_w = w is not None and (w.shape != x.shape or not np.all(w > 0))
        if x.ndim != 1 or x.size == 0 or r.shape != x.shape or bad_w:
            raise ValueError("log_s1, residual (and weight) must be lists of the same length")
        return cls(x, r, float(d["bandwidth"]), w)


@dataclass
class AnchoredLaw:
    law: str
    base: dict  # L0, A, alpha: the formula the anchors' residuals are taken from
    drop: dict  # DROP_PARAMS[law]
    gap: float  # target loss - anchor loss (nats), at the same model
    anchors: dict  # lineage -> Anchor
    meta: dict = field(default_factory=dict)

    def level(self, lineage: str, s1_Q) -> np.ndarray:
        if lineage not in self.anchors:
            raise UserError(f"no anchor run {lineage!r}; the law is anchored to {', '.join(sorted(self.anchors))}")
        return constant_lr_curve(self.base, s1_Q) + self.anchors[lineage].residual(s1_Q)

    def drop_terms(self, sums: CurveSums, step_Q, derivatives: bool = True) -> np.ndarray:
        """The drop at each step, and (`derivatives`) its derivatives in the fitted coordinates (rows)."""
        step_Q = np.asarray(step_Q, np.int64)
        if self.law == MULTIPOWER:
            B, C, beta, gamma = (self.drop[k] for k in DROP_PARAMS[MULTIPOWER])
            terms = sums.loss_drop_terms(step_Q, C, beta, gamma, derivatives=derivatives)
            return B * terms if not derivatives else np.vstack([B * terms[0], B * terms])
        s2 = sums.annealing_area(self.drop["lam"])[step_Q - 1]
        return np.vstack([self.drop["C"] * s2, self.drop["C"] * s2])

    def loss(self, lineage: str, sums: CurveSums, step_Q, target: bool = True) -> np.ndarray:
        """The loss of a run of `lineage` (its trunk's data order and model) with these LRs, at 1-based
        steps: on the target set (`target`), else on the anchor's own loss."""
        step_Q = np.asarray(step_Q, np.int64)
        return self.level(lineage, sums.area(step_Q)) + (self.gap if target else 0.0) \
            - self.drop_terms(sums, step_Q, derivatives=False)[0]

    def to_dict(self) -> dict:
        return {"law": self.law, "base": self.base, "drop": self.drop, "gap": self.gap, **self.meta,
                "anchors": {k: a.to_dict() for k, a in self.anchors.items()}}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "AnchoredLaw":
        """Read back `to_dict`; UserError naming `where` if a part is missing or not finite."""
        try:
            law = d["law"]
            base = {k: float(d["base"][k]) for k in ("L0", "A", "alpha")}
            drop = {k: float(d["drop"][k]) for k in DROP_PARAMS[law]}
            anchors = {str(k): Anchor.from_dict(a) for k, a in d["anchors"].items()}
            gap = float(d["gap"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{where}: its \"anchor\" record is incomplete; fit it again with --anchor") from None
        values = [*base.values(), *drop.values(), gap] + [v for a in anchors.values()
                                                         for v in (*a.log_s1_M, *a.resid_M, a.bandwidth)]
        if not anchors or not all(math.isfinite(v) for v in values):
            raise UserError(f"{where}: its \"anchor\" record has no anchor or a value that is not finite; fit it again")
        return cls(law, base, drop, gap, anchors, {k: v for k, v in d.items()
                                                   if k not in ("law", "base", "drop", "gap", "anchors")})


@dataclass
class AnchoredPoints:
    """One fitting run's points: its lineage, schedule sums, steps, log losses, weights, target flag."""

    lineage: str
    sums: CurveSums
    step_Q: np.ndarray
    y_Q: np.ndarray
    w_Q: np.ndarray
    target: bool


def _points(lineage: str, curve: Curve, target: bool, weight: float, max_points: int) -> AnchoredPoints | None:
    part = curve.after(peak_step(curve.lr_T))
    if not part.step_M.size:
        return None
    step, y, w = summarise(part, max_points)
    return AnchoredPoints(lineage, part.sums, step, y, w * weight, target)


def fit_anchored(law: str, base: dict, anchors: dict[str, Curve], runs: list[tuple[str, Curve, bool, float]],
                 start: dict, *, bandwidth: float = BANDWIDTH, shape_prior: bool = True,
                 max_points: int = 400, fit_gap: bool = True) -> AnchoredLaw:
    """Fit the drop and the gap of `law` to `runs` (lineage, curve, is the target loss, weight per point).
    `base`: L0, A, alpha of the size's ordinary fit (the residuals' reference; they are absorbed by the
    anchors, so only where no anchor point lies does the formula itself matter). `anchors`: lineage ->
    its trunk's curve in the anchor loss. `start`: the drop's parameters to start from (the ordinary fit's).
    `fit_gap=False`: the anchor and the runs are in the same loss (a table's one column): the gap stays 0."""
    from scipy.optimize import least_squares

    model = AnchoredLaw(law, {k: float(base[k]) for k in ("L0", "A", "alpha")}, dict(start), 0.0,
                        {k: Anchor.of(c, base, bandwidth, max_points) for k, c in anchors.items()})
    pts = [p for lineage, c, target, w in runs if (p := _points(lineage, c, target, w, max_points)) is not None]
    if not pts:
        raise UserError("no run besides the anchor has a measured loss after its warmup; nothing to fit the drop to")
    if fit_gap and not any(p.target for p in pts):
        raise UserError("no target loss was measured after warmup in the fitting runs; the gap to it is unknown")
    levels = [model.level(p.lineage, p.sums.area(p.step_Q)) for p in pts]
    sqrt_w = np.sqrt(np.concatenate([p.w_Q for p in pts]))
    y = np.concatenate([p.y_Q for p in pts])
    is_target = np.concatenate([np.full(p.step_Q.size, float(p.target)) for p in pts])
    peak_lr = max(float(c.lr_T.max()) for _, c, _, _ in runs)
    multipower = law == MULTIPOWER

    def unpack(z):
        if multipower:
            model.drop = dict(B=math.exp(z[0]), C=math.exp(z[1]), beta=float(z[2]), gamma=float(z[3]))
        else:
            model.drop = dict(C=math.exp(z[0]), lam=float(start["lam"]))
        model.gap = float(z[-1]) if fit_gap else 0.0

    def data(z):
        unpack(z)
        terms = np.hstack([model.drop_terms(p.sums, p.step_Q) for p in pts])
        pred = np.maximum(np.concatenate(levels) + model.gap * is_target - terms[0], 1e-12)
        r = sqrt_w * (np.log(pred) - y)
        jac = np.column_stack([-terms[1:].T] + ([is_target] if fit_gap else [])) * (sqrt_w / pred)[:, None]
        return r, jac

    if multipower:
        z0 = [math.log(max(start["B"], 1e-12)), math.log(max(start["C"], 1e-12)), start["beta"], start["gamma"], 0.0]
        lo, hi = [-30, -30, 1e-3, 0.0, -5.0], [30, 30, 10.0, 3.0, 5.0]
    else:
        z0, lo, hi = [math.log(max(start["C"], 1e-12)), 0.0], [-30, -5.0], [30, 5.0]
    if not fit_gap:
        z0, lo, hi = z0[:-1], lo[:-1], hi[:-1]
    z0 = np.clip(z0, np.array(lo) + 1e-9, np.array(hi) - 1e-9)
    kw = dict(bounds=(lo, hi), f_scale=HUBER_DELTA, x_scale="jac", max_nfev=300, xtol=1e-10, ftol=1e-12, gtol=1e-10)
    sol = least_squares(lambda z: data(z)[0], z0, jac=lambda z: data(z)[1], loss="huber", **kw)
    sigma = None
    if multipower and shape_prior:
        r = data(sol.x)[0]
        sigma = float(1.4826 * np.median(np.abs(r))) or float(np.sqrt(np.mean(r * r)))

        def full(z):  # the prior's coordinates: (L0, ln A, alpha, ln B, ln C, beta, gamma)
            return np.array([0.0, 0.0, 0.0, z[0], z[1], z[2], z[3]])

        def fun(z):
            return np.concatenate([data(z)[0], _prior_rows(full(z), sigma, peak_lr)[0]])

        def jac(z):
            rows = _prior_rows(full(z), sigma, peak_lr)[1][:, 3:]
            return np.vstack([data(z)[1], np.column_stack([rows] + [np.zeros(len(SHAPE_PRIOR))] * fit_gap)])

        g = SHAPE_PRIOR["gamma"][0]
        rate = SHAPE_PRIOR["C"][0] - (1.0 - g) * math.log(peak_lr)
        centred = np.array([sol.x[0], rate, math.exp(SHAPE_PRIOR["beta"][0]), g] + [sol.x[-1]] * fit_gap)
        sol = min((least_squares(fun, np.clip(s, np.array(lo) + 1e-9, np.array(hi) - 1e-9), jac=jac,
                                 loss=_huber_then_square(y.size), **kw) for s in (sol.x, centred)),
                  key=lambda s: s.cost)
    unpack(sol.x)
    model.meta = {"fit": {"objective": "huber on log loss", "huber_delta": HUBER_DELTA, "cost": float(sol.cost),
                          "n_points": int(y.size), "bandwidth": bandwidth,
                          "shape_prior": None if sigma is None else {"noise_scale": sigma}}}
    return model


def target_weight(config: dict, anchor: str) -> float:
    """A sweep's eval loss point against one of its anchor-loss points, by tokens (the inverse ratio of
    their noise variances): eval_tokens over batch_size x seq_len (training loss) or over dense_eval_tokens."""
    train, model = config.get("train") or {}, config.get("model") or {}
    dense = anchor == "dense_eval_loss"
    try:
        per_point = train["dense_eval_tokens"] if dense else train["batch_size"] * model["seq_len"]
        return float(train["eval_tokens"]) / float(per_point)
    except (KeyError, TypeError, ZeroDivisionError):
        needs = "dense_eval_tokens" if dense else "batch_size x seq_len"
        raise UserError(f"the sweep's config gives no eval_tokens and {needs}"
                        f"; anchoring to {anchor} weighs eval points by them") from None


def anchored_for_size(law: str, anchor: dict[str, Curve], target: dict[str, Curve], lineage: dict[str, str],
                      runs: list[str], target_weight: float, *, bandwidth: float = BANDWIDTH,
                      shape_prior: bool = True) -> AnchoredLaw:
    """The anchored law of one size from its fitting `runs` (trunks and branches; a run whose lineage is
    itself is a trunk, and anchors its lineage): the ordinary law fitted to the anchor loss of them all
    gives the formula and the starting drop; then `fit_anchored` on the branches' anchor losses (weight 1
    per point) and every run's target losses (`target_weight` per point: the ratio of their tokens)."""
    usable = [anchor[r] for r in runs if r in anchor and anchor[r].step_M.size]
    if not any(c.decays for c in usable):
        raise UserError("the fitting runs have no decaying LR; a curve law needs one")
    full = fit_curve_law(law, usable, shape_prior=shape_prior)
    trunks = {lineage.get(r, r): anchor[r] for r in runs if lineage.get(r, r) == r and r in anchor}
    if not trunks:
        raise UserError("no trunk (constant-LR run of its own lineage) among the fitting runs; nothing to anchor to")
    spec = [(lineage[r], anchor[r], False, 1.0) for r in runs if lineage.get(r, r) != r and r in anchor
            and lineage[r] in trunks]
    spec += [(lineage.get(r, r), target[r], True, target_weight) for r in runs if r in target
             and lineage.get(r, r) in trunks]
    return fit_anchored(law, full.params, trunks, spec, full.params, bandwidth=bandwidth, shape_prior=shape_prior)


__all__ = ["Anchor", "AnchoredLaw", "fit_anchored", "anchored_for_size", "target_weight", "ANCHOR_LOSSES",
           "constant_lr_curve", "BANDWIDTH"]
