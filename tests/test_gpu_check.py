"""The one GPU command (`python -m research.bench.gpu`) end to end at CPU sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research.bench.gpu", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def test_gpu_command_runs_every_stage_at_cpu_scale_and_keeps_json(tmp_path):
    out = tmp_path / "gpu"
    proc = _run("--out", str(out), "--scale", "cpu", "--json",
                "--tests", "tests/test_accelerator.py::test_auto_policy_picks_bf16_and_cudnn_only_on_gpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary == json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] and set(summary["stages"]) == {"tests", "bench", "sweep"}
    env = summary["environment"]
    assert env["backend"] == "cpu" and env["versions"]["jax"] and env["peak_bf16_flops"] is None
    assert summary["stages"]["tests"]["counts"] == {"passed": 1}
    assert (out / "tests.xml").read_text().count("<testcase") == 1
    for shape in ("gpt2-small", "6L-d384"):
        row = summary["stages"]["bench"][shape]
        bench = json.loads((out / row["file"]).read_text())
        assert row["tokens_per_s"] == bench["tokens_per_s"] > 0
        assert bench["config"]["model"]["d_model"] == 64  # shrunk for the CPU
        assert row["mfu_palm"] is None  # no known peak on a CPU: unknown, never guessed
    sweep = summary["stages"]["sweep"]
    assert sweep["runs"] >= 3 and "approach3" in sweep["fitted"]
    assert (out / "sweep" / "fit.json").is_file()
    assert "$ " in (out / "log.txt").read_text()  # every stage's command and output are logged


def test_a_failing_stage_is_recorded_and_the_exit_status_says_so(tmp_path):
    out = tmp_path / "gpu"
    proc = _run("--out", str(out), "--scale", "cpu", "--stages", "tests", "--tests", "tests/no_such_test_file.py")
    assert proc.returncode == 1
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["ok"] is False
    assert summary["stages"]["tests"]["ok"] is False and summary["stages"]["tests"]["error"]
    assert "FAILED" in proc.stdout


def test_unknown_stage_is_one_clear_line(tmp_path):
    proc = _run("--out", str(tmp_path / "x"), "--stages", "tests,warp")
    assert proc.returncode == 2 and "unknown stage" in proc.stderr and "Traceback" not in proc.stderr
