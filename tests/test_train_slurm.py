"""Slurm's pre-timeout / preemption signal (USR2) reaching a real training trial on a real
one-node Slurm cluster: the trial checkpoints at the step it is on, submitit requeues the
job, and the requeued job resumes from that step, losing nothing (issue 10, fault 3)."""

import json
import subprocess
from pathlib import Path

import pytest

from research.fsutil import read_jsonl
from research.sweep.slurm import SlurmOptions, run_on_slurm
from research.sweep.trial import run_trial
from tests.test_train import TINY, tiny

STEPS = 3000


@pytest.mark.slurm
def test_usr2_checkpoints_the_trial_then_requeue_resumes_it(slurm_cluster, tmp_path):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    config = tiny(train=dict(TINY["train"], steps=STEPS, log_every=10, eval_every=STEPS, checkpoint_every=10 * STEPS))
    (trial_dir / "trial.json").write_text(json.dumps({"trial": "usr2", "config": config.to_dict()}))
    options = SlurmOptions(folder=slurm_cluster.new_submitit_folder("train-usr2"),
                           partition=slurm_cluster.partition, time_min=10, poll_s=0.5,
                           job_name="train-usr2")
    signalled = []

    def on_update(states):
        rows = read_jsonl(trial_dir / "metrics.jsonl")
        if signalled or not rows or rows[-1]["step"] < 20:
            return
        jobs = slurm_cluster.run(["squeue", "-h", "-o", "%i", "-t", "RUNNING", "-n", "train-usr2"]).stdout.split()
        if jobs:
            # what Slurm's --signal=USR2@delay does before the time limit, and preemption
            subprocess.run(["scancel", "--signal=USR2", jobs[0]], check=True, capture_output=True)
            signalled.append(rows[-1]["step"])

    results = run_on_slurm(run_trial, [str(trial_dir)], options, on_update=on_update)

    summary = results[str(trial_dir)]
    assert not isinstance(summary, BaseException), summary
    assert signalled, "never saw the trial train"
    assert summary["status"] == "completed" and summary["steps_done"] == STEPS
    logs = "".join(p.read_text(errors="replace") for p in sorted(Path(options.folder).glob("*_log.*")))
    assert "SIGUSR2 received: checkpointing at step" in logs, logs[-3000:]
    assert "Caught signal SIGUSR2" in logs, "submitit's requeue handler did not run after the checkpoint"
    resumed = [int(line.rsplit(" ", 1)[1]) for line in logs.splitlines()
               if line.startswith("resuming from the checkpoint at step ")]
    assert len(resumed) == 1 and signalled[0] <= resumed[0] < STEPS, (signalled, resumed, logs[-3000:])
    steps = [r["step"] for r in read_jsonl(trial_dir / "metrics.jsonl")]
    assert steps == list(range(10, STEPS + 1, 10)), "a logged row was lost or repeated"
    assert not (trial_dir / "metrics.removed.jsonl").exists(), "rows logged before the signal were dropped"
