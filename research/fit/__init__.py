"""Scaling-law fits: Chinchilla Approaches 1-3, Kaplan forms, bootstrap, compute-optimal estimates.

Entry points:
  fit_sweep_dir(path) -> dict    fit every approach the data supports, write DIR/fit.json
  laws.load_law(name_or_path)    published laws ("chinchilla", "epoch-2024", "kaplan-2020") or a fit
  laws.optimum(law, flops)       compute-optimal N, D, tokens/param, loss (6n convention)
"""

from research.fit.core import fit_sweep_dir, run_fits, write_fit  # noqa: F401
from research.fit.laws import load_law, optimum, published  # noqa: F401
