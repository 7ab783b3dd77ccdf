"""kind "grid": model sizes (d_model or n_params) x horizons (tokens or tokens_per_param)."""

from __future__ import annotations

from research.errors import UserError
from research.sweep.kind import DesignKind, register


def sizes_x_horizons(design, planner):
    """(model, counts, coords, tokens wanted) for every size x horizon of a grid-shaped design."""
    tokens, ratios = design.tokens, design.tokens_per_param
    for (model, counts), requested in planner.pick_sizes(design):
        for value in tokens or ratios:
            wanted = value if tokens else value * counts.n_params
            coords = {"budget": None, "requested_n": requested, "requested_tokens_per_param": wanted / counts.n_params}
            yield model, counts, coords, wanted


class GridKind(DesignKind):
    name = "grid"
    keys = frozenset({"d_model", "n_params", "tokens", "tokens_per_param"})

    def check(self, design) -> int:
        if (design.d_model is None) == (design.n_params is None):
            raise UserError("[design] grid needs exactly one of d_model = [...] or n_params = [...]")
        if (design.tokens is None) == (design.tokens_per_param is None):
            raise UserError("[design] grid needs exactly one of tokens = [...] or tokens_per_param = [...]")
        return len(design.d_model or design.n_params) * len(design.tokens or design.tokens_per_param)

    def candidates(self, sweep, planner):
        return sizes_x_horizons(sweep.design, planner)


KIND = register(GridKind())
