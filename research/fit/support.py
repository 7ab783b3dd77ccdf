"""Which fits a design can support, judged from its planned (N, D, budget) points alone, before
anything is trained (`scaling sweep plan` and `scaling sweep run` say it up front).

Only the structural needs are checked here, with the thresholds the fits themselves use: a fit
that passes may still be refused once the losses are in (an IsoFLOP minimum at the edge of its
slice, one size winning the whole envelope), one that fails here always is.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from research.fit.core import MIN_POINTS_A3
from research.fit.isoflop import MIN_SLICE_SIZES
from research.fit.noise import same_value_keys

MIN_PROFILE_SIZES = 3  # Approach 1 (end points): sizes with >= 2 token counts (research/fit/endpoint_envelope.py)
MIN_BUDGETS = 2  # Approach 2: IsoFLOP slices with a minimum (research/fit/isoflop.py)
MIN_HOLDOUT_BUDGETS = MIN_BUDGETS + 1  # the held-out check fits on all budgets but the largest


def design_support(n, d, budgets=None) -> dict[str, str | None]:
    """{method: None where the design can support it, else why not} for approach1..3 and the
    held-out check. `n`, `d`: the trials' N (embeddings included, as the fits count) and D, one per
    trial (seeds repeat a point); `budgets`: each trial's design budget, or None for a grid."""
    key_n, key_d = same_value_keys(n), same_value_keys(d)
    points = set(zip(key_n.tolist(), key_d.tolist()))
    sizes, tokens = len({k for k, _ in points}), len({k for _, k in points})
    profiles = sum(1 for c in Counter(k for k, _ in points).values() if c >= 2)
    out: dict[str, str | None] = {
        "approach1": None if profiles >= MIN_PROFILE_SIZES else
        f"needs >= {MIN_PROFILE_SIZES} model sizes with >= 2 token counts each; the design has {profiles}"}
    if budgets is None:
        slices = profiles  # interpolated slices run through sizes' overlapping end points
        out["approach2"] = out["approach1"]
    else:
        by_budget: dict[int, set] = {}
        for b, kn in zip(same_value_keys(budgets).tolist(), key_n.tolist()):
            by_budget.setdefault(b, set()).add(kn)
        slices = sum(1 for s in by_budget.values() if len(s) >= MIN_SLICE_SIZES)
        out["approach2"] = None if slices >= MIN_BUDGETS else (
            f"needs >= {MIN_BUDGETS} budgets with >= {MIN_SLICE_SIZES} sizes each; the design has {slices}")
    out["approach3"] = None if len(points) >= MIN_POINTS_A3 and sizes >= 3 and tokens >= 3 else (
        f"needs >= {MIN_POINTS_A3} (N, D) points over >= 3 sizes and >= 3 token counts; the design has "
        f"{len(points)} points, {sizes} sizes, {tokens} token counts")
    if budgets is not None:
        out["holdout"] = None if slices >= MIN_HOLDOUT_BUDGETS else (
            f"needs >= {MIN_HOLDOUT_BUDGETS} budgets (fit on all but the largest, predict it); the design has {slices}")
    return out


def plan_support(plan: dict) -> dict[str, str | None] | None:
    """design_support of a plan's dict (Plan.to_dict); None for an lr sweep (it fits an lr rule)."""
    trials = plan.get("trials") or []
    if plan.get("design_kind") == "lr" or not trials:
        return None
    budgets = [t.get("budget") for t in trials]
    return design_support(np.array([t["n_params"] for t in trials], float),
                          np.array([t["tokens"] for t in trials], float),
                          None if any(b is None for b in budgets) else np.array(budgets, float))


def support_lines(support: dict[str, str | None]) -> list[str]:
    """What `sweep plan` prints: the fits the design supports, and a warning when it supports none."""
    names = {"approach1": "Approach 1", "approach2": "Approach 2", "approach3": "Approach 3",
             "holdout": "held-out check"}
    ok = [names[m] for m, why in support.items() if why is None]
    lines = [f"fits this design supports: {', '.join(ok) if ok else 'none'}"]
    lines += [f"  {names[m]}: cannot fit: {why}" for m, why in support.items() if why is not None]
    if not any(support.get(m) is None for m in ("approach1", "approach2", "approach3")):
        lines.append("warning: this design supports no fit: the sweep would train and then fit nothing; "
                     "add budgets or sizes ([design] budgets, sizes) first")
    return lines
