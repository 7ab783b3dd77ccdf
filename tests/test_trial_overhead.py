"""Per-trial overhead: the train step takes the schedule as an argument (so trials of one shape
share one compiled program), and a sweep's trials share JAX's persistent compilation cache."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest

from research.fsutil import read_jsonl
from research.train.optim import learning_rate_schedule
from research.train.step import Stepper, make_mesh
from tests.conftest import REPO, SCALING
from tests.test_train import tiny

SMOKE = REPO / "sweeps" / "smoke.toml"


def _lowered(config):
    stepper = Stepper(config, make_mesh(config))
    params, opt_state = stepper.init()
    batch = stepper.put_batch(np.zeros((config.train.batch_size, config.model.seq_len + 1), np.int32))
    return stepper.train_step.lower(params, opt_state, batch).as_text()


def test_runs_differing_only_in_horizon_compile_to_one_program():
    base = {"vocab_size": 256}
    a = _lowered(tiny(model=base, train={"steps": 100}))
    b = _lowered(tiny(model=base, train={"steps": 3000, "lr": 3e-3, "schedule": "wsd"}))
    c = _lowered(tiny(model=base, train={"steps": 3000, "lr": 3e-3, "schedule": "cosine"}))
    assert a == c  # horizon, warmup and peak lr are arguments, not constants
    assert a != b  # the schedule's kind is part of the program
    assert _lowered(tiny(model={**base, "d_model": 64}, train={"steps": 100})) != a


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_the_step_applies_the_runs_schedule(schedule):
    """AdamW's first update is -lr * (sign(g) + wd * p) where |g| >> eps: read lr back from it."""
    config = tiny(model={"vocab_size": 256}, train={"steps": 50, "warmup_steps": 4, "lr": 2e-3,
                                                    "schedule": schedule})
    stepper = Stepper(config, make_mesh(config))
    params, opt_state = stepper.init()
    before = jax.tree.map(np.asarray, params)
    tokens = np.random.default_rng(0).integers(0, 256, (config.train.batch_size, config.model.seq_len + 1))
    batch = stepper.put_batch(tokens)
    grads = jax.grad(stepper._loss)(params, batch)
    after, _, _ = stepper.train_step(params, opt_state, batch)
    lr0 = float(learning_rate_schedule(config)(0))
    assert lr0 == pytest.approx(2e-3 / 4)
    wd = config.train.weight_decay
    for p0, p1, g in zip(jax.tree.leaves(before), jax.tree.leaves(after), jax.tree.leaves(grads)):
        if p0.ndim < 2:
            continue
        g = np.asarray(g)
        big = np.abs(g) > 1e-3
        step = (p0 - np.asarray(p1))[big]
        np.testing.assert_allclose(step, lr0 * (np.sign(g[big]) + wd * p0[big]), rtol=2e-3)


def test_sweep_trials_share_the_compilation_cache_and_results_do_not_change(tmp_path):
    """Two budgets x two shapes: the later trial of each shape runs against the cache its first
    trial filled, and logs the same losses as the same trial run alone with the cache off."""
    sets = ["--set", "design.budgets=[1e9, 2e9]", "--set", "design.sizes=2"]
    out = tmp_path / "sweep"
    subprocess.run(SCALING + ["sweep", "run", str(SMOKE), "--out", str(out), "--no-fit", "--quiet", *sets],
                   check=True, capture_output=True, text=True)
    by_shape: dict = {}
    for t in (out / "trials").iterdir():
        record = json.loads((t / "trial.json").read_text())
        by_shape.setdefault(record["config"]["model"]["d_model"], []).append((record["coords"]["budget"], t))
    assert sorted(len(v) for v in by_shape.values()) == [2, 2]
    assert any((out / "jax_cache").iterdir())
    later = max(by_shape[min(by_shape)])[1]  # the larger budget of the smaller shape: ran second
    again = tmp_path / "again"
    again.mkdir()
    (again / "trial.json").write_text((later / "trial.json").read_text())
    env = dict(os.environ, SCALING_COMPILATION_CACHE="off")
    subprocess.run(SCALING + ["sweep", "trial", str(again)], check=True, capture_output=True, text=True, env=env)
    assert not (tmp_path / "jax_cache").exists()
    cached = [(r["step"], r["loss"]) for r in read_jsonl(later / "metrics.jsonl")]
    fresh = [(r["step"], r["loss"]) for r in read_jsonl(again / "metrics.jsonl")]
    assert cached == fresh and len(cached) > 2
