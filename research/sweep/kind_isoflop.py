"""kind "isoflop": FLOP budgets x model sizes, each size's D = C / FLOPs-per-token (Chinchilla Approach 2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from research.errors import UserError
from research.sweep.kind import Design, register

MAX_SIZES = 64  # model sizes per budget; an IsoFLOP parabola needs 5-10


@register
@dataclass(frozen=True, kw_only=True)
class IsoflopDesign(Design):
    """kind "isoflop": FLOP budgets x model sizes, each size's D = C / FLOPs-per-token."""

    kind = "isoflop"
    huge_keys = ("budgets",)

    budgets: list[float] | None = None  # training FLOPs under flops_convention (required)
    tokens_per_param: list[float] | None = None  # [low, high]: the range of D/N each budget spans (default [4, 150])
    sizes: int = 5  # model sizes per budget, log-spaced in D/N over tokens_per_param

    def check(self) -> int:
        if not self.budgets:
            raise UserError("[design] isoflop needs budgets = [...] (training FLOPs)")
        if self.tokens_per_param is not None and (len(self.tokens_per_param) != 2
                                                  or self.tokens_per_param[0] >= self.tokens_per_param[1]):
            raise UserError("[design] tokens_per_param must be [low, high] with low < high")
        if not 1 <= self.sizes <= MAX_SIZES:
            raise UserError(f"[design] sizes must be an integer from 1 to {MAX_SIZES}, got {self.sizes!r}")
        return len(self.budgets) * self.sizes

    def candidates(self, planner):
        """(model, counts, coords, tokens) per design point; points that cannot get a shape of their own go
        to `dropped` with their reason.

        Each budget's ratios (tokens per parameter) first snap to the shape whose C = FLOPs/token·m·N
        is closest to the budget. Where several ratios snap to the same shape, the one closest to it
        keeps it and each other takes the nearest shape not used at this budget, provided that shape's
        own tokens per parameter stays within the design's range (widened by half a step of the
        ratios' grid); otherwise the point is dropped and recorded."""
        design, ladder, convention = self, planner.ladder, planner.convention
        tokens_per_step, dropped = planner.tokens_per_step, planner.dropped
        budgets = design.budgets
        lo_hi = design.tokens_per_param or [4.0, 150.0]
        sizes = design.sizes
        ratios = np.geomspace(lo_hi[0], lo_hi[1], sizes) if sizes > 1 else [math.sqrt(lo_hi[0] * lo_hi[1])]
        half_step = math.sqrt(lo_hi[1] / lo_hi[0]) ** (1 / (sizes - 1)) if sizes > 1 else 1.0
        allowed = (lo_hi[0] / half_step, lo_hi[1] * half_step)
        smallest = ladder[0][1]
        for budget in budgets:
            one_step = smallest.flops_per_token(convention) * tokens_per_step  # the cheapest possible trial
            if budget < one_step:
                raise UserError(f"[design] budget {budget:.3g} FLOPs is too small for the smallest model "
                                f"(N = {smallest.n_params:,}): one step of {tokens_per_step:,} tokens costs "
                                f"{one_step:.3g} FLOPs [{convention}]; raise the budget or shrink batch_size/seq_len")

            def own_ratio(i):  # tokens per parameter that shape i trains at under this budget
                counts = ladder[i][1]
                return budget / counts.flops_per_token(convention) / counts.n_params

            distance = lambda i, m: abs(math.log(own_ratio(i) / m))  # noqa: E731
            best = {float(m): min(range(len(ladder)), key=lambda i: distance(i, m)) for m in ratios}
            keeper = {}  # shape index -> the ratio closest to it among those that snapped to it
            for m, i in best.items():
                if i not in keeper or distance(i, m) < distance(i, keeper[i]):
                    keeper[i] = m
            used = set(keeper)
            assigned = {m: i for i, m in keeper.items()}
            for m in sorted(best, reverse=True):  # large ratio = small model first
                if m in assigned:
                    continue
                taken = best[m]
                free = [i for i in range(len(ladder)) if i not in used]
                nearest = min(free, key=lambda i: distance(i, m)) if free else None
                if nearest is not None and allowed[0] <= own_ratio(nearest) <= allowed[1]:
                    assigned[m] = nearest
                    used.add(nearest)
                    continue
                model, counts = ladder[taken]
                why = (f"tokens_per_param {m:.3g} snaps to the shape (layers {model.layers}, d_model {model.d_model}) "
                       f"already planned for {keeper[taken]:.3g} at this budget; ")
                if nearest is None:
                    why += "the recipe has no other shape"
                else:
                    other = ladder[nearest][0]
                    why += (f"the nearest unused shape (layers {other.layers}, d_model {other.d_model}) would train at "
                            f"{own_ratio(nearest):.3g} tokens/param, outside the design's range "
                            f"[{lo_hi[0]:g}, {lo_hi[1]:g}] (widened by half a step)")
                dropped.append({"budget": budget, "requested_tokens_per_param": m, "layers": model.layers, "d_model": model.d_model,
                                "n_params": counts.n_params, "reason": why})
            for m in sorted(assigned, reverse=True):
                model, counts = ladder[assigned[m]]
                ratio = counts.flops_per_token(convention) / counts.n_params
                requested = math.sqrt(budget / (ratio * m))
                tokens = budget / counts.flops_per_token(convention)
                yield model, counts, {"budget": budget, "requested_n": requested, "requested_tokens_per_param": m}, tokens
