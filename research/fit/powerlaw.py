"""Power laws y = k·x^p fitted by least squares in log-log space."""

from __future__ import annotations

import numpy as np


def fit_powerlaw(x, y) -> tuple[float, float]:
    """(k, p) minimising Σ (log y − log k − p·log x)²."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    p, logk = np.polyfit(lx, ly, 1)
    return float(np.exp(logk)), float(p)


def percentile_interval(v, level=0.95):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return [None, None]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return [float(x) for x in np.percentile(v, q)]


def summarize_allocation_bootstrap(samples: dict, level=0.95, budgets=(), convention="6n") -> dict:
    """Intervals for k_N, a, k_D, b and N_opt/D_opt at `budgets` (FLOPs in `convention`, that of the
    runs the power laws were fitted on) from bootstrap samples."""
    from research.fit.allocation import optimal_row

    arr = {k: np.asarray(v, float) for k, v in samples.items()}
    out = {"level": level, "n_resamples": int(len(arr["a"])),
           "intervals": {k: percentile_interval(v, level) for k, v in arr.items()},
           "se": {k: float(np.nanstd(v, ddof=1)) if len(v) > 1 else None for k, v in arr.items()},
           "optimal": [], "samples": {k: [float(x) for x in v] for k, v in arr.items()}}
    for c in budgets:
        out["optimal"].append(optimal_row(c, percentile_interval(arr["k_N"] * c ** arr["a"], level),
                                          percentile_interval(arr["k_D"] * c ** arr["b"], level), convention))
    return out
