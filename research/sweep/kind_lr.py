"""kind "lr": model sizes x peak-LR multipliers at one horizon, for the learning-rate rule
(research/fit/lr_rule.py). The multiplier scales the recipe's own peak lr for that N (applied in
research/sweep/plan.py, beside the recipe call)."""

from __future__ import annotations

from research.errors import UserError
from research.sweep.kind import DesignKind, register
from research.sweep.kind_grid import sizes_x_horizons

MIN_LR_MULTIPLIERS = 3  # distinct learning rates per size: a parabola in ln LR needs three


class LrKind(DesignKind):
    name = "lr"
    keys = frozenset({"d_model", "n_params", "tokens", "tokens_per_param", "lr_multipliers"})

    def check(self, design) -> int:
        """kind "lr": sizes as in grid, ONE horizon (every size's), >= 3 distinct multipliers. Returns the point count."""
        if (design.d_model is None) == (design.n_params is None):
            raise UserError("[design] lr needs exactly one of d_model = [...] or n_params = [...]")
        horizon = design.tokens if design.tokens is not None else design.tokens_per_param
        if horizon is None or design.tokens is not None and design.tokens_per_param is not None:
            raise UserError("[design] lr needs exactly one of tokens = [T] or tokens_per_param = [R] (every size's horizon)")
        if len(horizon) != 1:
            raise UserError(f"[design] lr calibrates at one horizon: {'tokens' if design.tokens else 'tokens_per_param'} "
                            f"must hold one value, got {len(horizon)} (run one lr sweep per horizon)")
        multipliers = design.lr_multipliers
        if multipliers is None or len(set(multipliers)) < MIN_LR_MULTIPLIERS:
            raise UserError(f"[design] lr needs lr_multipliers = [...] with at least {MIN_LR_MULTIPLIERS} distinct positive "
                            "values around 1 (a parabola in ln LR needs three), e.g. [0.25, 0.5, 1, 2, 4]")
        if any(m > 1e6 or m < 1e-6 for m in multipliers):
            raise UserError("[design] lr_multipliers: every value must lie in [1e-6, 1e6] (a factor on the recipe's lr)")
        return len(design.d_model or design.n_params) * len(set(multipliers))

    def candidates(self, sweep, planner):
        """kind "lr": each size x each distinct lr multiplier, all at the design's one horizon. The
        multiplier scales the recipe's own peak lr for that N (applied in plan(), beside the recipe call)."""
        for model, counts, coords, wanted in sizes_x_horizons(sweep.design, planner):
            for multiplier in sorted(set(sweep.design.lr_multipliers)):
                yield model, counts, {**coords, "lr_multiplier": float(multiplier)}, wanted


KIND = register(LrKind())
