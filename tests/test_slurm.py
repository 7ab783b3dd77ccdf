"""research.sweep.slurm against a real one-node Slurm cluster (no mocks).

The cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) is started once per
session by the `slurm_cluster` fixture; see tests/slurm_cluster.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from research.errors import UserError
from research.sweep.slurm import SlurmOptions, run_on_slurm, slurm_available

# The session fixture `slurm_cluster` is registered as a plugin in tests/conftest.py,
# so every module asking for it shares one cluster.

# The trial functions below run inside Slurm jobs, whose Python may not be able to
# import this test module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ----------------------------------------------------------- trial functions

def square_trial(trial_dir: str) -> dict:
    """Writes a file in the trial dir and returns a summary; idempotent."""
    path = Path(trial_dir)
    done = path / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    n = int(path.name.split("_")[-1])
    summary = {"n": n, "square": n * n, "job": os.environ.get("SLURM_ARRAY_JOB_ID", ""),
               "task": os.environ.get("SLURM_ARRAY_TASK_ID", "")}
    done.write_text(json.dumps(summary))
    return summary


def failing_trial(trial_dir: str) -> dict:
    if Path(trial_dir).name.startswith("bad"):
        raise ValueError(f"diverged in {Path(trial_dir).name}")
    return square_trial(trial_dir)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def counting_trial(trial_dir: str) -> dict:
    """Counts to `target` in `step_s` sleeps, keeping its progress in state.json.

    Resumes from state.json when called again (after a requeue), then sleeping
    `resume_step_s` per step if given; records, for every start, the job id, the
    step it resumed from and when it started.
    """
    path = Path(trial_dir)
    config = json.loads((path / "config.json").read_text())
    state_path = path / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"step": 0, "starts": []}
    if state["step"] < config["target"]:
        job = os.environ["SLURM_JOB_ID"]  # a single trial is submitted as a plain job
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        state["starts"].append({"job": job, "from_step": state["step"], "t": time.time()})
        _save(state_path, state)
        resumed = len(state["starts"]) > 1
        step_s = config.get("resume_step_s", config["step_s"]) if resumed else config["step_s"]
        while state["step"] < config["target"]:
            time.sleep(step_s)
            state["step"] += 1
            _save(state_path, state)
    return {"steps": state["step"], "starts": state["starts"]}


# --------------------------------------------------------------------- tests

def _trial_dirs(root: Path, names: list[str]) -> list[str]:
    dirs = []
    for name in names:
        (root / name).mkdir(parents=True)
        dirs.append(str(root / name))
    return dirs


@pytest.mark.slurm
def test_batch_of_jobs_completes(slurm_cluster, tmp_path):
    trial_dirs = _trial_dirs(tmp_path, [f"trial_{i}" for i in range(4)])
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("batch"),
                           partition=slurm_cluster.partition, time_min=5, poll_s=1)
    updates = []
    results = run_on_slurm(square_trial, trial_dirs, options, on_update=updates.append)

    assert list(results) == trial_dirs
    assert [results[d]["square"] for d in trial_dirs] == [0, 1, 4, 9]
    assert len({results[d]["job"] for d in trial_dirs}) == 1, "one job array for the whole batch"
    assert sorted(results[d]["task"] for d in trial_dirs) == ["0", "1", "2", "3"]
    for d in trial_dirs:
        assert json.loads((Path(d) / "summary.json").read_text()) == results[d]
    assert updates and set(updates[-1]) == set(trial_dirs)
    assert set(updates[-1].values()) == {"COMPLETED"}, updates[-1]


@pytest.mark.slurm
def test_failing_job_is_returned_as_exception(slurm_cluster, tmp_path):
    trial_dirs = _trial_dirs(tmp_path, ["good_1", "bad_2", "good_3"])
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("fail"),
                           partition=slurm_cluster.partition, time_min=5, poll_s=1)
    updates = []
    results = run_on_slurm(failing_trial, trial_dirs, options, on_update=updates.append)

    good_1, bad_2, good_3 = trial_dirs
    assert results[good_1]["square"] == 1 and results[good_3]["square"] == 9
    err = results[bad_2]
    assert isinstance(err, ValueError), repr(err)
    assert "diverged in bad_2" in str(err)
    assert updates[-1][bad_2] == "FAILED" and updates[-1][good_1] == "COMPLETED"


@pytest.mark.slurm
def test_cancelled_job_is_returned_as_exception(slurm_cluster, tmp_path):
    """A job killed from outside (scancel) ends the wait for it without a result."""
    stuck, quick = _trial_dirs(tmp_path, ["count_9", "trial_5"])
    (Path(stuck) / "config.json").write_text(json.dumps({"target": 10_000, "step_s": 0.5}))
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("cancel"),
                           partition=slurm_cluster.partition, time_min=10, poll_s=1)
    cancelled = []

    def trial(trial_dir: str) -> dict:
        return counting_trial(trial_dir) if "count" in trial_dir else square_trial(trial_dir)

    def on_update(states):
        state_path = Path(stuck) / "state.json"
        if not cancelled and state_path.exists() and json.loads(state_path.read_text())["step"] >= 2:
            job = json.loads(state_path.read_text())["starts"][-1]["job"]
            subprocess.run(["scancel", job], check=True, capture_output=True)
            cancelled.append(job)

    updates = []
    results = run_on_slurm(trial, [stuck, quick], options,
                           on_update=lambda states: (updates.append(states), on_update(states)))

    assert cancelled
    assert results[quick]["square"] == 25
    assert isinstance(results[stuck], BaseException), results[stuck]
    assert updates[-1][stuck].startswith("CANCELLED"), updates[-1]


@pytest.mark.slurm
def test_usr2_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path):
    """The pre-timeout/preemption signal, sent by hand as Slurm would send it."""
    (trial_dir,) = _trial_dirs(tmp_path, ["count_0"])
    target = 16
    (Path(trial_dir) / "config.json").write_text(json.dumps({"target": target, "step_s": 0.5}))
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("usr2"),
                           partition=slurm_cluster.partition, time_min=10, poll_s=0.5)
    signalled = []

    def on_update(states):
        state_path = Path(trial_dir) / "state.json"
        if signalled or not state_path.exists():
            return
        state = json.loads(state_path.read_text())
        if state["step"] >= 4:
            job = state["starts"][-1]["job"]
            # What Slurm's --signal=USR2@delay does: signal the job's steps.
            subprocess.run(["scancel", "--signal=USR2", job], check=True, capture_output=True)
            signalled.append(state["step"])

    results = run_on_slurm(counting_trial, [trial_dir], options, on_update=on_update)

    result = results[trial_dir]
    assert not isinstance(result, BaseException), result
    assert signalled, "never saw the job make progress"
    assert result["steps"] == target
    starts = result["starts"]
    assert len(starts) == 2, starts
    assert starts[0]["job"] == starts[1]["job"], "requeued as the same job"
    assert starts[1]["from_step"] >= signalled[0], "second run resumed instead of starting over"


@pytest.mark.slurm
def test_time_limit_requeues_and_resumes(slurm_cluster, tmp_path):
    """A 1-minute job with 50 s of work: Slurm's own USR2 before the limit requeues it.

    With signal_delay_s=20 Slurm sends USR2 10-40 s after the start (it checks
    time limits every 30 s), so the first run cannot finish; the resumed run
    counts the rest at 0.1 s a step, so it finishes before any second signal.
    Takes 30-60 s (the signal's arrival varies with Slurm's timer phase).
    """
    (trial_dir,) = _trial_dirs(tmp_path, ["count_1"])
    target = 50
    (Path(trial_dir) / "config.json").write_text(
        json.dumps({"target": target, "step_s": 1.0, "resume_step_s": 0.1}))
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("timeout"),
                           partition=slurm_cluster.partition, time_min=1, signal_delay_s=20, poll_s=1)
    t0 = time.time()
    results = run_on_slurm(counting_trial, [trial_dir], options)

    result = results[trial_dir]
    assert not isinstance(result, BaseException), result
    assert result["steps"] == target
    starts = result["starts"]
    assert len(starts) == 2, starts
    assert starts[0]["from_step"] == 0 and 0 < starts[1]["from_step"] < target, starts
    assert starts[0]["job"] == starts[1]["job"], "requeued as the same job"
    logs = "".join(p.read_text(errors="replace") for p in Path(options.folder).glob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "this job is timed-out" in logs, logs[-2000:]
    print(f"time-limit requeue test: {time.time() - t0:.0f}s, first run stopped at step "
          f"{starts[1]['from_step']}")


def test_unreachable_slurm_is_a_user_error(tmp_path, monkeypatch):
    """No cluster needed: a real environment without Slurm on PATH / with a bad config."""
    options = SlurmOptions(folder=str(tmp_path / "slurm"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not slurm_available()
    with pytest.raises(UserError, match="sbatch is not on PATH"):
        run_on_slurm(square_trial, [str(tmp_path / "t")], options)


def test_bad_signal_delay_is_a_user_error(tmp_path):
    options = SlurmOptions(folder=str(tmp_path / "slurm"), time_min=1, signal_delay_s=60)
    with pytest.raises(UserError, match="signal_delay_s"):
        run_on_slurm(square_trial, [str(tmp_path / "t")], options)
