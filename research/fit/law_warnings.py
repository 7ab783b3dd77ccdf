"""Warnings that travel with a law into `scaling optimal` and `scaling predict`.

A law read from a `fit.json` carries the warnings its fit recorded (the approach's own list and the
file's overall list, `fit_warnings`); every answer computed from it adds its own (`answer_warnings`):

* the budget C, or the N and D asked about (or chosen as optimal), outside the range of the runs the
  law was fitted on: any excursion, stated as a factor beyond the nearest edge (RANGE_SLACK absorbs
  rounding at the edges);
* an Approach-3 law whose E collapsed: E below diagnostics.E_FLOOR_FRACTION of the loss the law
  predicts at the largest fitted (N, D) (the fit put the irreducible loss at zero and A/N^α stands in);
* a bootstrap interval on the allocation exponent a wider than diagnostics.WIDTH_MAX.

Nothing here decides whether to answer: the answer is printed with its warnings, never without.
"""

from __future__ import annotations

import math

WIDTH_MAX = 0.1  # diagnostics.py explains these thresholds; here so that laws.py can use them without a cycle
E_FLOOR_FRACTION = 0.05

RANGE_SLACK = 1.01  # within 1% of the fitted range's edge counts as inside


# The fit's warning about how far its OWN table of N_opt/D_opt budgets reaches (diagnostics) is about
# fit.json's budget list, not about this answer: `range_warnings` checks the answer's budget instead.
OWN_BUDGETS_PREFIX = "N_opt/D_opt are reported up to"


def fit_warnings(fit: dict, block: dict | None) -> list[str]:
    """The warnings a fit.json recorded for `block` (one approach's result) and overall, deduplicated,
    each prefixed 'fit: ' so the reader knows they come from the fit, not from this answer."""
    out: list[str] = []
    for src in (block, fit):
        if isinstance(src, dict):
            for w in src.get("warnings") or []:
                if isinstance(w, str) and f"fit: {w}" not in out and not w.startswith(OWN_BUDGETS_PREFIX):
                    out.append(f"fit: {w}")
    return out


def outside(what: str, x: float, lo: float, hi: float) -> str | None:
    """One line when x lies outside [lo, hi] (by more than RANGE_SLACK), saying by what factor."""
    if not (math.isfinite(x) and lo > 0 and hi > 0):
        return None
    if x > hi * RANGE_SLACK:
        return (f"{what} = {x:.3g} is {x / hi:.3g}x the largest fitted ({hi:.3g}; "
                f"{math.log10(x / hi):.1f} decades beyond): the law is extrapolated there")
    if x < lo / RANGE_SLACK:
        return (f"{what} = {x:.3g} is {lo / x:.3g}x below the smallest fitted ({lo:.3g}; "
                f"{math.log10(lo / x):.1f} decades below): the law is extrapolated there")
    return None


def range_warnings(data_range: dict | None, *, flops=None, n=None, d=None, label="") -> list[str]:
    """Lines for a budget / N / D outside the law's fitted data range (None: the range is unknown)."""
    if not data_range:
        return ["the law's data range is unknown: cannot say how far this answer extrapolates"]
    out = []
    for what, x, key in (("budget C", flops, "flops"), ("N", n, "n_params"), ("D", d, "tokens")):
        rng = data_range.get(key)
        if x is None or not rng or None in rng:
            continue
        line = outside(what, float(x), float(rng[0]), float(rng[1]))
        if line:
            out.append(f"{label}{line}")
    return out


def e_collapsed(E: float | None, loss, data_range: dict | None) -> str | None:
    """A line when an E + A/N^α + B/D^β law's E is below E_FLOOR_FRACTION of the loss it predicts
    (`loss(N, D)`) at the largest fitted (N, D) (or at 1e9 parameters, 2e10 tokens when the range
    is unknown)."""
    if E is None:
        return None
    n_hi = (data_range or {}).get("n_params", [None, 1e9])[1] or 1e9
    d_hi = (data_range or {}).get("tokens", [None, 2e10])[1] or 2e10
    ref = float(loss(n_hi, d_hi))
    if E < E_FLOOR_FRACTION * ref:
        return (f"E = {E:.3g} is below {E_FLOOR_FRACTION:.0%} of the loss the law predicts at its largest "
                f"fitted point ({ref:.3g}): E collapsed to zero and A/N^alpha stands in for it, so the law's "
                "allocation and its extrapolation are not trustworthy")
    return None


def a_interval_too_wide(block: dict | None) -> str | None:
    """A line when the fit's bootstrap interval on a is wider than WIDTH_MAX."""
    bs = (block or {}).get("bootstrap") or {}
    lo, hi = ((bs.get("intervals") or {}).get("a") or [None, None])[:2]
    if lo is None or hi is None or not hi - lo > WIDTH_MAX:
        return None
    return (f"the fit's {bs.get('level', 0.95):.0%} interval on a is [{lo:.3g}, {hi:.3g}] (width {hi - lo:.2g} > "
            f"{WIDTH_MAX}): the allocation exponent is not determined by the data")


def law_own_warnings(E: float | None, loss, data_range: dict | None, block: dict | None,
                     carried: list[str] = ()) -> list[str]:
    """Warnings about a law itself (not about one answer): E collapsed, a's interval too wide; each
    left out when a warning `carried` from the fit already says it."""
    said_e = any(w.startswith("fit: E = ") and " below " in w for w in carried)
    said_a = any("interval on a is" in w for w in carried)
    out = []
    for line in (None if said_e else e_collapsed(E, loss, data_range), None if said_a else a_interval_too_wide(block)):
        if line and line not in out:
            out.append(line)
    return out
