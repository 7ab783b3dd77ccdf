"""Per-trial overhead: the train step takes the schedule as an argument (so trials of one shape
share one compiled program), and a sweep's trials share JAX's persistent compilation cache."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from research.fsutil import read_jsonl
from research.train.optim import learning_rate_schedule
from research.train.step import Stepper, make_mesh
from tests.conftest import REPO, SCALING, SWEEP_CACHE_ENV
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
    grads = jax.jit(jax.grad(stepper._loss))(params, batch)  # compiled: op by op costs seconds more
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


def _losses(trial_dir: Path) -> list:
    return [(r["step"], r["loss"], r.get("eval_loss")) for r in read_jsonl(trial_dir / "metrics.jsonl")]


# `scaling sweep trial DIR` for each DIR in turn, in one Python process
TRIALS_IN_ONE_PROCESS = ("import sys; from research.cli import main; "
                         "sys.exit(max(main(['sweep', 'trial', d]) for d in sys.argv[1:]))")


def _fresh_copies(trial_dirs: list[Path], where: Path) -> list[Path]:
    """The same trials run again, one after another in one fresh process with no compilation cache:
    every program they use is compiled there (none is read from a cache)."""
    copies = []
    for trial_dir in trial_dirs:
        copy = where / f"fresh-{trial_dir.name}"
        copy.mkdir()
        (copy / "trial.json").write_text((trial_dir / "trial.json").read_text())
        copies.append(copy)
    env = dict(os.environ, SCALING_COMPILATION_CACHE="off")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # nor the test run's (tests/conftest.py)
    subprocess.run([sys.executable, "-c", TRIALS_IN_ONE_PROCESS, *map(str, copies)], check=True,
                   capture_output=True, text=True, env=env)
    return copies


def test_warm_worker_and_shared_cache_give_each_trial_the_result_of_a_fresh_process(tmp_path):
    """Two budgets x two shapes run by the default executor (trials forked one after another from
    one warm worker, sharing the sweep's compilation cache): the first trial of a shape (cache
    empty) and the later one (cache filled by the first) each log the same losses, to the bit, as
    the same trial run by `scaling sweep trial` in a fresh process with the cache off (both in one:
    there every program is compiled, none read from a cache)."""
    # checkpoints only at the end (smoke's every 20 steps costs seconds of orbax saves, here and in
    # each fresh copy, and plays no part in the losses compared)
    sets = ["--set", "design.budgets=[1e9, 2e9]", "--set", "design.sizes=2", "--set", "train.checkpoint_every=1000"]
    out = tmp_path / "sweep"
    env = dict(os.environ)
    env.pop(SWEEP_CACHE_ENV, None)  # the sweep's own cache, not the test run's (tests/conftest.py)
    subprocess.run(SCALING + ["sweep", "run", str(SMOKE), "--out", str(out), "--no-fit", "--quiet", *sets],
                   check=True, capture_output=True, text=True, env=env)
    by_shape: dict = {}
    for t in (out / "trials").iterdir():
        record = json.loads((t / "trial.json").read_text())
        by_shape.setdefault(record["config"]["model"]["d_model"], []).append((record["coords"]["budget"], t))
    assert sorted(len(v) for v in by_shape.values()) == [2, 2]
    assert any((out / "jax_cache").iterdir())
    starts = [e for e in read_jsonl(out / "events.jsonl") if e["event"] == "start"]
    assert len(starts) == 4 and len({e["pid"] for e in starts}) == 4  # one process per trial
    first, later = sorted(by_shape[min(by_shape)])  # the smaller budget ran first and filled the cache
    trials = [first[1], later[1]]
    for trial, fresh in zip(trials, _fresh_copies(trials, tmp_path)):
        assert _losses(trial) == _losses(fresh) and len(_losses(trial)) > 2
        assert json.loads((trial / "summary.json").read_text())["final_eval_loss"] == \
            json.loads((fresh / "summary.json").read_text())["final_eval_loss"]
    assert not (tmp_path / "jax_cache").exists()


def _trial_dirs(tmp_path: Path, overrides: list[str]) -> list[Path]:
    from research.sweep.plan import load_sweep, plan
    from research.sweep.runner import prepare_sweep_dir

    return prepare_sweep_dir(plan(load_sweep(SMOKE, overrides)), tmp_path / "sweep")


def _wait_until_training(trial_dir: Path, handle, timeout: float = 600) -> None:
    from research.fsutil import ProcessLock

    deadline = time.time() + timeout
    while not ProcessLock(trial_dir / ".lock").is_held():
        assert handle.poll() is None, f"trial ended early ({handle.returncode})"
        assert time.time() < deadline
        time.sleep(0.05)


def test_sigkill_of_a_trial_or_of_the_worker_loses_no_other_trial(tmp_path):
    from research.train.sweep_dir import trial_status
    from research.sweep.warm import WORKER_DIED, WarmWorker

    a, b = _trial_dirs(tmp_path, ["design.budgets=[1e9]", "design.sizes=2"])
    worker = WarmWorker()
    try:
        ha = worker.launch(a, a / "train.log", {})
        hb = worker.launch(b, b / "train.log", {})
        _wait_until_training(a, ha)
        os.kill(ha.pid, signal.SIGKILL)
        assert ha.wait() == -signal.SIGKILL
        assert hb.wait() == 0 and trial_status(b) == "completed"  # the other trial never noticed
        assert trial_status(a) == "pending"  # killed mid-run: its lock went with it
        # the worker lives on and runs the killed trial again; it resumes as a fresh process would
        assert worker.launch(a, a / "train.log", {}).wait() == 0 and trial_status(a) == "completed"
        assert worker.replaced == 0
        # a killed worker: its trial is stopped (SIGTERM, checkpointed) and reported; a new worker follows
        (a / "summary.json").unlink()
        for p in (a / "metrics.jsonl", a / "checkpoints"):
            subprocess.run(["rm", "-rf", str(p)], check=True)
        hc = worker.launch(a, a / "train.log", {})
        _wait_until_training(a, hc)
        os.kill(worker.proc.pid, signal.SIGKILL)
        assert hc.wait() == WORKER_DIED
        hd = worker.launch(a, a / "train.log", {})
        assert worker.replaced == 1 and hd.wait() == 0 and trial_status(a) == "completed"
    finally:
        worker.close()
    planned = json.loads((b / "trial.json").read_text())["planned"]["steps"]
    assert _losses(b)[-1][0] == planned and "Traceback" not in (b / "train.log").read_text()


def test_the_cache_variable_turns_the_sweeps_cache_off_or_moves_it(tmp_path, monkeypatch, jax_compilation_cache):
    """SCALING_COMPILATION_CACHE: unset, the sweep's own <sweep>/jax_cache; "off", none; an absolute
    path, that directory (how the test suite shares one cache across its sweeps)."""
    from research.sweep.trial import CACHE_ENV, use_compilation_cache
    from tests.conftest import _use_cache

    own = tmp_path / "sweep" / "jax_cache"
    try:
        monkeypatch.delenv(CACHE_ENV, raising=False)
        assert use_compilation_cache(own) and jax.config.jax_compilation_cache_dir == str(own)
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
        assert use_compilation_cache(own) and jax.config.jax_compilation_cache_dir == str(tmp_path / "shared")
        monkeypatch.setenv(CACHE_ENV, "off")
        _use_cache(None)
        assert not use_compilation_cache(own) and jax.config.jax_compilation_cache_dir is None
    finally:
        _use_cache(jax_compilation_cache)
