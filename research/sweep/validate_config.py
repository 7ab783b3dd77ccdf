"""[validate]: the typed section a sweep file adds for a validation rung (research/sweep/validate.py).

Parsed by `research.sweep.plan.load_sweep` through the same typed path as every section
(`research.config.section_from_dict`: unknown keys get a did-you-mean line, wrong types one line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from research.config import section_from_dict
from research.errors import UserError

MAX_TARGETS = 8
MAX_NEIGHBOURS = 4


@dataclass(frozen=True)
class ValidateConfig:
    """[validate]: target budgets beyond the fitted ones (exactly one of budgets or factors)."""

    budgets: list[float] | None = None  # FLOPs under the design's flops_convention
    factors: list[float] | None = None  # multiples (> 1) of the largest fitted budget
    neighbours: int = 1  # ladder steps either side of the snapped N_opt
    seeds: int | None = None  # replicates per run (default: the design's seeds)
    level: float = 0.95  # prediction interval level

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def parse_validate(raw, design) -> ValidateConfig | None:
    """[validate] through the typed config path (unknown keys get a did-you-mean line); None without it."""
    if raw is None:
        return None
    cfg = section_from_dict("validate", ValidateConfig, raw)
    if not design.fits_a_law:
        raise UserError(f"[validate]: this sweep's design (kind {design.kind!r}) fits no scaling law (an lr sweep "
                        "fits a learning-rate rule); remove [validate]")
    if (cfg.budgets is None) == (cfg.factors is None):
        raise UserError("[validate] needs exactly one of budgets = [...] (FLOPs) or factors = [...] (multiples of the "
                        "largest fitted budget, e.g. factors = [2.0])")
    values = cfg.budgets if cfg.budgets is not None else cfg.factors
    if not values or len(values) > MAX_TARGETS:
        raise UserError(f"[validate] {'budgets' if cfg.budgets is not None else 'factors'} must hold 1 to "
                        f"{MAX_TARGETS} values")
    if cfg.factors is not None and any(f <= 1 for f in cfg.factors):
        raise UserError("[validate] factors: every factor must be above 1 (a rung lies beyond the fitted budgets; "
                        "2 to 4 is usual)")
    if cfg.budgets is not None and any(not 0 < b <= 1e30 for b in cfg.budgets):
        raise UserError("[validate] budgets: every budget must be positive and at most 1e30 FLOPs")
    if not 0 <= cfg.neighbours <= MAX_NEIGHBOURS:
        raise UserError(f"[validate] neighbours = {cfg.neighbours} must be from 0 to {MAX_NEIGHBOURS} (ladder steps "
                        "either side of N_opt; 1 trains three sizes)")
    if cfg.seeds is not None and not 1 <= cfg.seeds <= 64:
        raise UserError(f"[validate] seeds = {cfg.seeds} must be from 1 to 64")
    if not 0 < cfg.level < 1:
        raise UserError(f"[validate] level = {cfg.level} must lie between 0 and 1")
    return cfg
