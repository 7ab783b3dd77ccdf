"""Learning-rate schedules as arrays (eta_1..eta_T), from the training code's own schedule.

The formulas live in `research.train.optim.learning_rate_schedule`; this module only builds the
`RunConfig` that describes a schedule and evaluates that function at every step, so a curve law
sees exactly the learning rates a run of the harness trains with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.config import RunConfig, TrainConfig, run_config_from_dict, total_steps, validate
from research.errors import UserError

SCHEDULES = ("constant", "cosine", "wsd")


def lr_of_config(config: RunConfig, steps: int | None = None) -> np.ndarray:
    """The LR of every step 1..T (T = the run's horizon, or `steps` if given: a prefix) as float64."""
    from research.train.optim import learning_rate_schedule  # lazy: jax (2-5 s), imported when a schedule is built

    T = total_steps(config) if steps is None else steps
    schedule = learning_rate_schedule(config)
    # The schedule's argument counts updates already applied: step t uses schedule(t - 1).
    return np.asarray(schedule(np.arange(T, dtype=np.float32)), np.float64)


def schedule_config(kind: str, steps: int, peak_lr: float, *, warmup_steps: int | None = None,
                    min_lr_ratio: float = 0.1, cooldown_fraction: float = 0.2,
                    cooldown_shape: str = "1-sqrt") -> RunConfig:
    """A RunConfig whose [train] section describes this schedule (nothing else in it matters here)."""
    if kind not in SCHEDULES:
        raise UserError(f"--schedule {kind!r}: expected one of {', '.join(SCHEDULES)}")
    train = dataclasses.replace(TrainConfig(), steps=int(steps), lr=float(peak_lr), schedule=kind,
                                warmup_steps=warmup_steps, min_lr_ratio=float(min_lr_ratio),
                                decay_fraction=float(cooldown_fraction), decay_shape=cooldown_shape)
    config = RunConfig(train=train)
    validate(config)
    return config


def schedule_lr(kind: str, steps: int, peak_lr: float, **options) -> np.ndarray:
    """eta_1..eta_steps of a constant, cosine or WSD schedule as the trainer runs it."""
    return lr_of_config(schedule_config(kind, steps, peak_lr, **options))


def config_of_record(record: dict) -> RunConfig:
    """The RunConfig in a trial.json / config.json record (its "config" object)."""
    raw = record.get("config") if isinstance(record, dict) else None
    if not isinstance(raw, dict):
        raise UserError("the run's record has no config object")
    return run_config_from_dict(raw)
