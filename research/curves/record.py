"""LAW.json: a fitted loss-curve law, what it was fitted to, and its bootstrap draws."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.curves.fitting import HUBER_DELTA, SHAPE_PRIOR, Curve, bootstrap, fit_law, peak_step, summarise
from research.curves.laws import LAWS, PARAMS, CurveSums, law_loss
from research.errors import UserError
from research.fsutil import atomic_write_json

FORMULAS = {
    "multipower": "L(t) = L0 + A*(S1(t)+S_W)^(-alpha) - B*sum_{k<=t} (eta_{k-1}-eta_k)*(1-(C*eta_k^(-gamma)*S_k(t)+1)^(-beta))"
                  "  [Luo et al. 2025, arXiv 2503.12811]",
    "annealing": "L(t) = L0 + A*S1(t)^(-alpha) - C*S2(t), S2 = sum m_i, m_i = lam*m_{i-1} + (eta_{i-1}-eta_i)"
                 "  [Tissue et al. 2024, arXiv 2408.11029]",
}


@dataclass
class CurveLaw:
    law: str
    params: dict
    loss_cap: float  # predictions are capped here: the largest (binned) loss the fit saw
    peak_lr: float  # the fitting runs' peak LR (the default of a described schedule)
    warmup_steps: int  # their warmup (steps to the peak; median over runs)
    draws: list = field(default_factory=list)  # bootstrap parameter draws
    meta: dict = field(default_factory=dict)
    warmup_curve: list = field(default_factory=list)  # [[S1, loss], ...] measured before the fitted steps

    def loss(self, sums: CurveSums, step_Q, params: dict | None = None) -> np.ndarray:
        """The law's loss at 1-based steps, capped at `loss_cap`; where the area S1(t) is below the
        fitted range (the warmup), the fitting runs' measured loss at the same area instead (the law
        does not describe the fall from the initial loss; the warmup's losses depend on the area alone)."""
        step_Q = np.asarray(step_Q, np.int64)
        pred = np.minimum(law_loss(self.law, sums, step_Q, params or self.params), self.loss_cap)
        if len(self.warmup_curve) >= 2:
            area_W, loss_W = np.array(self.warmup_curve, float).T
            area = sums.area(step_Q)
            early = (area < area_W[-1]) & (step_Q <= int(np.argmax(sums.lr_T)) + 1)
            if early.any():
                pred[early] = np.interp(np.log(area[early]), np.log(area_W), loss_W)
        return pred

    def interval(self, sums: CurveSums, step_Q, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Percentile interval of the predicted loss over the bootstrap draws (None without draws)."""
        if len(self.draws) < 2:
            return None
        preds = np.stack([self.loss(sums, step_Q, d) for d in self.draws])
        tail = 50.0 * (1.0 - level)
        return np.percentile(preds, tail, axis=0), np.percentile(preds, 100.0 - tail, axis=0)

    def to_dict(self) -> dict:
        return {"law": self.law, "formula": FORMULAS[self.law], "params": self.params, "loss_cap": self.loss_cap,
                "peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps, "warmup_curve": self.warmup_curve,
                **self.meta,
                "bootstrap": {"n": len(self.draws), "draws": self.draws}}


def write_law(path: str | Path, law: CurveLaw) -> None:
    atomic_write_json(path, json.loads(json.dumps(law.to_dict(), default=float)))


def read_law(path: str | Path) -> CurveLaw:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--law {p}: no such file; write one with `scaling curves fit TABLE --out LAW.json`")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"--law {p} is not JSON; pass a file written by `scaling curves fit`") from None
    law = raw.get("law") if isinstance(raw, dict) else None
    if law not in LAWS:
        raise UserError(f"--law {p}: no \"law\" of {' or '.join(LAWS)}; pass a file written by `scaling curves fit`")
    params = raw.get("params")
    if not isinstance(params, dict) or any(not _finite(params.get(k)) for k in PARAMS[law]):
        raise UserError(f"--law {p}: \"params\" needs finite {', '.join(PARAMS[law])}")
    draws = (raw.get("bootstrap") or {}).get("draws") or []
    draws = [d for d in draws if isinstance(d, dict) and all(_finite(d.get(k)) for k in PARAMS[law])]
    meta = {k: v for k, v in raw.items() if k not in ("law", "formula", "params", "loss_cap", "peak_lr",
                                                      "warmup_steps", "bootstrap", "warmup_curve")}
    cap = raw.get("loss_cap")
    warm = raw.get("warmup_curve") or []
    warm = [p for p in warm if isinstance(p, list) and len(p) == 2 and all(_finite(v) and v > 0 for v in p)]
    return CurveLaw(law, {k: float(params[k]) for k in PARAMS[law]}, float(cap) if _finite(cap) else math.inf,
                    float(raw.get("peak_lr") or 0.0), int(raw.get("warmup_steps") or 0), draws, meta,
                    sorted(warm))


def warmup_curve(curves, from_step: int | None, max_points: int = 200) -> list:
    """[[S1, loss], ...] sorted by area: the fitting runs' binned losses before their fitted steps."""
    pairs = []
    for c in curves:
        last = (peak_step(c.lr_T) if from_step is None else from_step - 1)
        keep = c.step_M <= last
        if keep.sum() < 1:
            continue
        early = Curve(c.run, c.lr_T, c.step_M[keep], c.loss_M[keep])
        step, log_loss, _ = summarise(early, max_points)
        pairs += [[float(c.sums.area(np.array([s]))[0]), float(np.exp(y))] for s, y in zip(step, log_loss)]
    pairs = [p for p in pairs if p[0] > 0 and np.isfinite(p[1])]
    pairs.sort()
    return pairs


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fit_curve_law(law: str, curves, *, max_points: int = 400, lam: float | None = 0.999,
                  from_step: int | None = None, n_bootstrap: int = 0, seed: int = 0,
                  shape_prior: bool = True) -> CurveLaw:
    """Fit `law` to `curves` (one size) and package it as a CurveLaw: parameters, bootstrap draws,
    the loss cap, the warmup's measured curve and each fitting run's in-sample error."""
    fit = fit_law(law, curves, max_points=max_points, lam=lam, from_step=from_step, shape_prior=shape_prior)
    cap = float(max(np.exp(summarise(c, max_points)[1]).max() for c in curves if c.step_M.size))
    draws = bootstrap(fit, curves, n_bootstrap, seed, max_points=max_points) if n_bootstrap else []
    warmups = sorted(peak_step(c.lr_T) for c in curves)
    out = CurveLaw(law, fit.params, cap, float(max(c.lr_T.max() for c in curves)), warmups[len(warmups) // 2],
                   draws, warmup_curve=warmup_curve(curves, from_step))
    in_sample = {}
    for c in curves:
        err = np.abs(out.loss(c.sums, c.step_M) - c.loss_M) / c.loss_M
        in_sample[c.run] = {"mean_rel_err": float(err.mean()), "max_rel_err": float(err.max()),
                            "n_measured": int(c.step_M.size), "steps": int(c.lr_T.size)}
    out.meta = {"runs": [c.run for c in curves], "fixed": list(fit.fixed),
                "fit": {"objective": "huber on log loss", "huber_delta": HUBER_DELTA, "cost": fit.cost,
                        "from_step": from_step or "end of each run's warmup", "n_points": fit.n_points,
                        "n_logged_steps": fit.n_steps, "max_points": max_points,
                        "shape_prior": None if fit.prior_sigma is None else {
                            "on": "ln beta, gamma, ln(C * peak_lr^(1 - gamma))",
                            "centre_width": {k: list(v) for k, v in SHAPE_PRIOR.items()},
                            "noise_scale": fit.prior_sigma}},
                "in_sample": in_sample}
    return out
