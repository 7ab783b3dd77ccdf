"""Power laws y = k·x^p fitted by least squares in log-log space."""

from __future__ import annotations

import numpy as np
from research.fit.allocation import optimal_row


def fit_powerlaw(x, y) -> tuple[float, float]:
    """(k, p) minimising Σ (log y − log k − p·log x)²."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    p, logk = np.polyfit(lx, ly, 1)
    return float(np.exp(logk)), float(p)


def fit_allocation(C, N, D) -> dict:
    """N_opt = k_N·C^a and D_opt = k_D·C^b through compute-optimal points: {"k_N", "a", "k_D", "b"}."""
    k_n, a = fit_powerlaw(C, N)
    k_d, b = fit_powerlaw(C, D)
    return {"k_N": k_n, "a": a, "k_D": k_d, "b": b}


def bootstrap_allocation(draw, n_resamples: int, level=0.95, budgets=(), convention="6n") -> tuple[dict | None, int]:
    """(summary, n_failed) of `n_resamples` calls of `draw()`, each a refitted `fit_allocation` dict or
    None for a resample that cannot be fitted; the summary is None when every resample failed."""
    samples = {"k_N": [], "a": [], "k_D": [], "b": []}
    failed = 0
    for _ in range(n_resamples):
        fitted = draw()
        if fitted is None:
            failed += 1
            continue
        for k, v in fitted.items():
            samples[k].append(v)
    if not samples["a"]:
        return None, failed
    return summarize_allocation_bootstrap(samples, level, budgets, convention), failed


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
    arr = {k: np.asarray(v, float) for k, v in samples.items()}
    out = {"level": level, "n_resamples": int(len(arr["a"])),
           "intervals": {k: percentile_interval(v, level) for k, v in arr.items()},
           "se": {k: float(np.nanstd(v, ddof=1)) if len(v) > 1 else None for k, v in arr.items()},
           "optimal": [], "samples": {k: [float(x) for x in v] for k, v in arr.items()}}
    for c in budgets:
        out["optimal"].append(optimal_row(c, percentile_interval(_power(arr["k_N"], arr["a"], c), level),
                                          percentile_interval(_power(arr["k_D"], arr["b"], c), level), convention))
    return out


def _power(k, p, c):
    """k·c^p per sample, in log space: a steep resample's line (p ~ 50, k ~ 1e-300) is moderate at the data's
    compute, where c^p alone overflows."""
    with np.errstate(over="ignore", divide="ignore"):
        return np.exp(np.log(k) + p * np.log(c))
