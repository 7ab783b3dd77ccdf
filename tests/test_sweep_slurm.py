"""The smoke sweep through a real one-node Slurm cluster, via submitit (no mocks)."""

import subprocess

import pandas as pd
import pytest

from research.fsutil import read_json
from tests.conftest import REPO, SCALING


@pytest.mark.slurm
def test_smoke_sweep_runs_through_real_slurm(slurm_cluster, tmp_path):
    out = tmp_path / "sweep"
    res = subprocess.run(SCALING + ["sweep", "run", str(REPO / "sweeps" / "smoke.toml"), "--out", str(out),
                                    "--executor", "slurm", "--partition", slurm_cluster.partition,
                                    "--time-min", "10", "--no-fit",
                                    "--set", "design.budgets=[1e9]", "--set", "design.sizes=2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 2 and (frame["status"] == "completed").all(), frame
    for trial in frame["trial"]:
        summary = read_json(out / "trials" / trial / "summary.json")
        assert summary["status"] == "completed" and summary["final_eval_loss"] > 0
    # the jobs really went through Slurm: submitit wrote its job logs, and sacct knows them
    assert list((out / "slurm").rglob("*_log.out")), "no submitit job logs"
    jobs = slurm_cluster.run(["sacct", "-n", "-X", "-o", "JobID,State"]).stdout
    assert "COMPLETED" in jobs

    # a second run finds everything done and submits nothing
    again = subprocess.run(SCALING + ["sweep", "run", str(REPO / "sweeps" / "smoke.toml"), "--out", str(out),
                                      "--executor", "slurm", "--partition", slurm_cluster.partition, "--no-fit",
                                      "--set", "design.budgets=[1e9]", "--set", "design.sizes=2"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "submitting" not in again.stderr
