"""kind "lr": model sizes x peak-LR multipliers at one horizon, for the learning-rate rule
(research/fit/lr_rule.py). The multiplier scales the recipe's own peak lr for that N (applied in
research/sweep/plan.py, beside the recipe call)."""

from __future__ import annotations

from dataclasses import dataclass

from research.errors import UserError
from research.sweep.kind import Design, register
from research.sweep.kind_grid import sizes_x_horizons

MIN_LR_MULTIPLIERS = 3  # distinct learning rates per size: a parabola in ln LR needs three


@register
@dataclass(frozen=True, kw_only=True)
class LrDesign(Design):
    """kind "lr": model sizes x peak-LR multipliers at one horizon, for the learning-rate rule."""

    kind = "lr"
    fits_a_law = False  # it calibrates research/fit/lr_rule.py
    huge_keys = ("n_params", "tokens")

    d_model: list[int] | None = None  # widths of the recipe's shapes ...
    n_params: list[float] | None = None  # ... or target parameter counts (the nearest shape's)
    tokens: list[float] | None = None  # [T]: every size's one horizon in tokens ...
    tokens_per_param: list[float] | None = None  # ... or [R], as D/N
    lr_multipliers: list[float] | None = None  # factors on the recipe's own peak lr for each size (at least 3)

    def check(self) -> int:
        """Sizes as in grid, ONE horizon (every size's), >= 3 distinct multipliers. Returns the point count."""
        if (self.d_model is None) == (self.n_params is None):
            raise UserError("[design] lr needs exactly one of d_model = [...] or n_params = [...]")
        horizon = self.tokens if self.tokens is not None else self.tokens_per_param
        if horizon is None or self.tokens is not None and self.tokens_per_param is not None:
            raise UserError("[design] lr needs exactly one of tokens = [T] or tokens_per_param = [R] (every size's horizon)")
        if len(horizon) != 1:
            raise UserError(f"[design] lr calibrates at one horizon: {'tokens' if self.tokens else 'tokens_per_param'} "
                            f"must hold one value, got {len(horizon)} (run one lr sweep per horizon)")
        multipliers = self.lr_multipliers
        if multipliers is None or len(set(multipliers)) < MIN_LR_MULTIPLIERS:
            raise UserError(f"[design] lr needs lr_multipliers = [...] with at least {MIN_LR_MULTIPLIERS} distinct positive "
                            "values around 1 (a parabola in ln LR needs three), e.g. [0.25, 0.5, 1, 2, 4]")
        if any(m > 1e6 or m < 1e-6 for m in multipliers):
            raise UserError("[design] lr_multipliers: every value must lie in [1e-6, 1e6] (a factor on the recipe's lr)")
        return len(self.d_model or self.n_params) * len(set(multipliers))

    def candidates(self, planner):
        """kind "lr": each size x each distinct lr multiplier, all at the design's one horizon. The
        multiplier scales the recipe's own peak lr for that N (applied in plan(), beside the recipe call)."""
        for model, counts, coords, wanted in sizes_x_horizons(self, planner):
            for multiplier in sorted(set(self.lr_multipliers)):
                yield model, counts, {**coords, "lr_multiplier": float(multiplier)}, wanted
