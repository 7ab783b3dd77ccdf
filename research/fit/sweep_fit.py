"""`fit_sweep_dir`: every fit a sweep directory's data supports, and its held-out check, into DIR/fit.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from research.fit.core import fit_records
from research.fit.data import load_table, read_frame
from research.fit.holdout import holdout_or_skip
from research.fit.method import FitOptions
from research.fit.record import dumps, write_fit
from research.records import Extrapolation
from research.train.sweep_dir import SweepDir


def fit_sweep_dir(path, *, bootstrap: int = 0, seed: int = 0, grid="full", quiet: bool = True,
                  holdout: str | None = None, holdout_bootstrap: int = 200, write: bool = True, **kw) -> dict:
    """Fit every approach the sweep directory's data supports and write DIR/fit.json (`write=False`:
    only return it, as the notebooks do: they never write into a sweep directory).

    Approaches without enough points are recorded as Skipped(reason) (research.records) instead of failing.
    `holdout` (e.g. "largest-budget"): also refit on the other runs (bootstrap: the larger of
    `bootstrap` and `holdout_bootstrap`, for prediction intervals) and check the held-out ones, under
    "extrapolation" (`research.fit.holdout`; Skipped(reason) when it cannot).
    Returns the dict written."""
    path = Path(path)
    table = load_table(path, quiet=quiet)
    kaplan_table = None
    if "n_params_nonembedding" in _columns(table):
        kaplan_table = load_table(path, n_kind="nonembedding", quiet=True)
    log = None if quiet else (lambda m: print(m, file=sys.stderr))
    options = FitOptions(bootstrap=bootstrap, seed=seed, grid=grid,
                         kaplan_n="nonembedding" if kaplan_table is not None else "total", **kw)
    result = fit_records(table, options=options, kaplan_df=kaplan_table, log=log)
    if holdout:
        result.extrapolation = Extrapolation.read(holdout_or_skip(table, holdout, options=options.for_refit(
            max(bootstrap, holdout_bootstrap)), log=log, allocation=True), "the held-out check")
    if write:
        sweep_dir = table.sweep_dir or (path if path.is_dir() else path.parent)
        write_fit(SweepDir(sweep_dir).fit_path, result, merge=False)
    return json.loads(dumps(result.to_json()))


def _columns(table) -> list[str]:
    return list(read_frame(table.source).columns)
