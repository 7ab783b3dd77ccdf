"""LAW.json: a fitted loss-curve law, what it was fitted to, and its bootstrap draws."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.curves.laws import LAWS, PARAMS, CurveSums, law_loss
from research.errors import UserError

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

    def loss(self, sums: CurveSums, step_Q, params: dict | None = None) -> np.ndarray:
        return np.minimum(law_loss(self.law, sums, step_Q, params or self.params), self.loss_cap)

    def interval(self, sums: CurveSums, step_Q, level: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Percentile interval of the predicted loss over the bootstrap draws (None without draws)."""
        if len(self.draws) < 2:
            return None
        preds = np.stack([self.loss(sums, step_Q, d) for d in self.draws])
        tail = 50.0 * (1.0 - level)
        return np.percentile(preds, tail, axis=0), np.percentile(preds, 100.0 - tail, axis=0)

    def to_dict(self) -> dict:
        return {"law": self.law, "formula": FORMULAS[self.law], "params": self.params, "loss_cap": self.loss_cap,
                "peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps, **self.meta,
                "bootstrap": {"n": len(self.draws), "draws": self.draws}}


def write_law(path: str | Path, law: CurveLaw) -> None:
    from research.fsutil import atomic_write_json

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
                                                      "warmup_steps", "bootstrap")}
    cap = raw.get("loss_cap")
    return CurveLaw(law, {k: float(params[k]) for k in PARAMS[law]}, float(cap) if _finite(cap) else math.inf,
                    float(raw.get("peak_lr") or 0.0), int(raw.get("warmup_steps") or 0), draws, meta)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
