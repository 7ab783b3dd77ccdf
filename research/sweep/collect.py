"""The sweep's status counts and durations as `scaling sweep` prints them.

results.csv itself is rebuilt by `SweepDir.collect` (research/train/sweep_dir.py), so every
stage that reads a sweep can rebuild it without importing the sweep stage.
"""

from __future__ import annotations

import math

from research.train.sweep_dir import TRIAL_STATUSES


def status_counts(frame) -> dict:
    counts = frame["status"].value_counts().to_dict()
    return {s: int(counts.get(s, 0)) for s in TRIAL_STATUSES}


def fmt_seconds(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
