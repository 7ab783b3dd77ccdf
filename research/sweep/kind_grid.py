"""kind "grid": model sizes (d_model or n_params) x horizons (tokens or tokens_per_param)."""

from __future__ import annotations

from dataclasses import dataclass

from research.errors import UserError
from research.sweep.kind import Design, register


def sizes_x_horizons(design, planner):
    """(model, counts, coords, tokens wanted) for every size x horizon of a grid-shaped design."""
    tokens, ratios = design.tokens, design.tokens_per_param
    for (model, counts), requested in planner.pick_sizes(design):
        for value in tokens or ratios:
            wanted = value if tokens else value * counts.n_params
            coords = {"budget": None, "requested_n": requested, "requested_tokens_per_param": wanted / counts.n_params}
            yield model, counts, coords, wanted


@register
@dataclass(frozen=True, kw_only=True)
class GridDesign(Design):
    """kind "grid": model sizes x horizons, every point trained from scratch."""

    kind = "grid"
    huge_keys = ("n_params", "tokens")

    d_model: list[int] | None = None  # widths of the recipe's shapes ...
    n_params: list[float] | None = None  # ... or target parameter counts (the nearest shape's)
    tokens: list[float] | None = None  # the horizons in tokens ...
    tokens_per_param: list[float] | None = None  # ... or as D/N

    def check(self) -> int:
        if (self.d_model is None) == (self.n_params is None):
            raise UserError("[design] grid needs exactly one of d_model = [...] or n_params = [...]")
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise UserError("[design] grid needs exactly one of tokens = [...] or tokens_per_param = [...]")
        return len(self.d_model or self.n_params) * len(self.tokens or self.tokens_per_param)

    def candidates(self, planner):
        return sizes_x_horizons(self, planner)
