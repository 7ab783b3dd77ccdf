"""A fit of too few, badly spread points must report a law with warnings, never crash.

tests/data/degenerate_tiny_sweep.csv is the 8-run CPU-scale sweep of the GPU command
(sizes 4.9k-41k, D/N 0.7-70): so little data that some Approach-3 resamples put log A past
709, where exp overflows a float. That crashed the sweep's fit stage (OverflowError).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data" / "degenerate_tiny_sweep.csv"


def test_bootstrap_with_overflowing_resamples_still_reports_intervals(tmp_path, default_compile_env):
    # `scaling fit` in a process compiling as users' runs do: which resamples overflow depends on the
    # L-BFGS path, which the suite's faster XLA compilation (tests/conftest.py) moves
    out = subprocess.run([sys.executable, "-m", "research", "fit", str(DATA), "--method", "approach3", "--solver",
                          "lbfgs", "--bootstrap", "200", "--seed", "0", "--loss-col", "final_eval_loss", "--json",
                          "--out", str(tmp_path / "fit.json")], capture_output=True, text=True, env=default_compile_env)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-1500:]
    a3 = json.loads(out.stdout)  # one method: its result alone
    lo, hi = a3["bootstrap"]["intervals"]["a"]
    assert lo <= hi and math.isfinite(lo) and math.isfinite(hi)
    samples_A = a3["bootstrap"]["samples"]["A"]
    assert len(samples_A) == 200  # every resample is kept and counted, overflowing ones as A = inf
    assert any(x is None or not math.isfinite(x) for x in samples_A)  # inf is written as null
