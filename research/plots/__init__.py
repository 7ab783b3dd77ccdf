"""Figures for scaling-law fits. `plot_sweep_dir(path)` writes every figure the data supports.

The figures themselves are in `figures`, `extrapolation` and `lr_rule`; a sweep directory's set
in `sweep_plots`. This package file imports none of them until asked, so `scaling --help`
(which imports `research.plots.cli`) does not import matplotlib.
"""

from research.errors import UserError
from research.fsutil import loads_json, read_regular_text

FORMATS = ("png", "svg")


def __getattr__(name):
    if name in ("plot_sweep_dir", "plot_lr_sweep_dir"):
        from research.plots import sweep_plots  # lazy: matplotlib (1-3 s); --help imports this package

        return getattr(sweep_plots, name)
    raise AttributeError(name)


__all__ = ["FORMATS", "plot_sweep_dir", "plot_lr_sweep_dir"]
