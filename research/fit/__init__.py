"""Scaling-law fits: Chinchilla Approaches 1-3, Kaplan forms, bootstrap, compute-optimal estimates.

Entry points:
  fit_sweep_dir(path) -> dict    fit every approach the data supports, write DIR/fit.json
  core.fit_records(table) -> FitResult   the fits as typed records (research/records.py); run_fits: as JSON
  laws.load_law(name_or_path)    published laws ("chinchilla", "epoch-2024", "kaplan-2020") or a fit
  laws.optimum(law, flops)       compute-optimal N, D, tokens/param, loss (6n convention)

The names are imported on first use: `scaling --help` and every trial process import this
package (through `research.fit.cli`) without the fitting modules (~0.15 s).
"""

_EXPORTS = {"run_fits": "research.fit.core", "fit_records": "research.fit.core", "write_fit": "research.fit.record",
            "fit_sweep_dir": "research.fit.sweep_fit", "load_law": "research.fit.laws",
            "optimum": "research.fit.laws", "published": "research.fit.laws"}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib  # lazy: the fitting modules, ~0.15 s, off `--help`

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)


__all__ = list(_EXPORTS)
