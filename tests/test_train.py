"""Training: schedules, learning to a known floor, kill-and-resume equality, checkpoint
fallback, refusal of mixed runs, divergence, and one-line errors for bad configs."""

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from research.config import RunConfig, load_run_config, run_config_from_dict
from research.errors import UserError
from research.fsutil import read_jsonl
from research.train import train
from tests.conftest import REPO, SCALING

SYNTH = "synthetic:states=16,branch=3,tokens=300000"
TINY = {
    "data": {"corpus": SYNTH, "tokenizer": "bytes"},
    "model": {"layers": 1, "d_model": 32, "heads": 2, "seq_len": 32},
    "train": {"batch_size": 8, "steps": 40, "lr": 1e-2, "eval_every": 20, "eval_tokens": 2048,
              "log_every": 1, "checkpoint_every": 10},
}


def tiny(**sections) -> RunConfig:
    raw = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        raw[section].update(values)
    return run_config_from_dict(raw)


def write_toml(path: Path, raw: dict) -> Path:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def losses(run_dir: Path) -> dict[int, float]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    return {r["step"]: r["loss"] for r in rows}


# ---------------------------------------------------------------- schedules

def _lr(config, step):
    from research.train.optim import learning_rate_schedule

    return float(learning_rate_schedule(config)(step))


def test_cosine_schedule_warms_up_then_decays_to_ten_percent():
    c = tiny(train={"steps": 100, "warmup_steps": 10, "lr": 1e-3})
    assert _lr(c, 0) == pytest.approx(1e-4)  # first update: 1/10 of the peak
    assert _lr(c, 9) == pytest.approx(1e-3)
    mid = 10 + 45  # halfway through the decay
    assert _lr(c, mid - 1) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)
    assert _lr(c, 99) == pytest.approx(1e-4, rel=1e-5)


def test_wsd_schedule_is_flat_then_cools_down_as_one_minus_sqrt():
    c = tiny(train={"steps": 100, "warmup_steps": 5, "lr": 1e-3, "schedule": "wsd", "decay_fraction": 0.2})
    assert _lr(c, 50) == pytest.approx(1e-3)
    assert _lr(c, 79) == pytest.approx(1e-3)
    # cooldown covers steps 81..100; at step 85, 5/20 of the way: 1 - sqrt(0.25) = 0.5
    assert _lr(c, 84) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)
    assert _lr(c, 99) == pytest.approx(1e-4, rel=1e-5)
    const = tiny(train={"steps": 100, "warmup_steps": 5, "schedule": "constant", "lr": 2e-3})
    assert _lr(const, 99) == pytest.approx(2e-3)


# ---------------------------------------------------------------- learning

def test_synthetic_source_loss_approaches_known_entropy_rate(tmp_path):
    config = tiny(model={"seq_len": 64}, train={"steps": 150, "batch_size": 16, "eval_every": 50,
                                                "eval_tokens": 8192, "log_every": 10, "checkpoint_every": 1000})
    summary = train(config, tmp_path / "run", progress=False)
    floor = summary["entropy_floor_nats_per_token"]
    from research.data import get_dataset

    ds = get_dataset(SYNTH, "bytes")
    counts = np.bincount(ds.train_batch(0, 64, 64, 0).ravel(), minlength=256).astype(float)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    assert summary["status"] == "completed"
    assert floor - 0.02 < summary["final_eval_loss"] < floor + 0.06, (summary["final_eval_loss"], floor)
    assert summary["final_eval_loss"] < unigram - 1.0
    assert summary["eval_bits_per_byte"] == pytest.approx(summary["final_eval_loss"] / math.log(2))


def test_outputs_name_their_flop_conventions_and_counts(tmp_path):
    summary = train(tiny(train={"steps": 10}), tmp_path / "run", progress=False)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    from research.model import count_model

    counts = count_model(load_config_record(tmp_path / "run"))
    last = rows[-1]
    assert last["tokens"] == 10 * 8 * 32 == summary["tokens"]
    assert last["flops_6n"] == pytest.approx(6 * counts.n_params * last["tokens"])
    assert last["flops_chinchilla"] == pytest.approx(counts.flops_per_token_chinchilla * last["tokens"])
    assert summary["n_params"] == counts.n_params
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "eval_loss"):
        assert key in last
    for key in ("final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s", "versions", "device"):
        assert summary[key] is not None


def load_config_record(run_dir):
    from research.config import ModelConfig

    return ModelConfig(**json.loads((run_dir / "config.json").read_text())["config"]["model"])


# ---------------------------------------------------------------- resume

def test_killed_run_resumes_to_the_same_losses(tmp_path):
    cfg = write_toml(tmp_path / "run.toml", TINY)
    cmd = SCALING + ["train", str(cfg), "--no-progress"]
    straight = tmp_path / "straight"  # the reference, trained in this process (the CLI is what gets killed)
    train(load_run_config(cfg), straight, progress=False)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl")]
        if steps and max(steps) >= 25:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    out = subprocess.run(cmd + ["--out", str(killed)], capture_output=True, text=True, check=True)
    assert "resuming from the checkpoint at step" in out.stderr

    a, b = losses(straight), losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, 41))
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-6)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (straight, killed))
    assert sb["final_eval_loss"] == pytest.approx(sa["final_eval_loss"], rel=1e-6)

    again = subprocess.run(cmd + ["--out", str(killed)], capture_output=True, text=True, check=True)
    assert "already finished" in again.stderr


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    run_dir = tmp_path / "run"
    config = tiny(train={"steps": 30})
    first = train(config, run_dir, progress=False)
    reference = losses(run_dir)
    ckpts = run_dir / "checkpoints"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [10, 20, 30]
    original = (run_dir / "metrics.jsonl").read_text().splitlines()
    for f in (ckpts / "30").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "meta" not in f.parts:
            f.write_bytes(b"\0garbage" * 8)
    (run_dir / "summary.json").unlink()  # as if killed right after writing step 30
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "lo')  # a torn line from the killed writer

    second = train(config, run_dir, progress=False)
    assert (run_dir / "checkpoints.corrupt" / "30").is_dir(), "the corrupt checkpoint was not set aside"
    # rows past the restored step 20 were moved, byte for byte, to the side file (issue 10, fault 1)
    removed = read_jsonl(run_dir / "metrics.removed.jsonl")
    assert [r["line"] for r in removed] == original[20:30] + ['{"step": 31, "lo']
    assert {r["resumed_from_step"] for r in removed} == {20}
    assert second["final_eval_loss"] == pytest.approx(first["final_eval_loss"], rel=1e-6)
    again = losses(run_dir)
    assert sorted(again) == sorted(reference)
    np.testing.assert_allclose([again[s] for s in sorted(again)], [reference[s] for s in sorted(reference)], rtol=1e-6)


def test_out_dir_of_a_different_config_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny(train={"steps": 5}), run_dir, progress=False)
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"different config \(train.lr: 0.01 -> 0.005"):
        train(tiny(train={"steps": 5, "lr": 5e-3}), run_dir, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == before
    # operational keys may change between attempts
    assert train(tiny(train={"steps": 5, "log_every": 2}), run_dir, progress=False)["status"] == "completed"


def test_divergence_stops_with_status_and_keeps_log(tmp_path):
    cfg = write_toml(tmp_path / "run.toml", dict(TINY, model=dict(TINY["model"], init_std=1e25)))
    out = subprocess.run(SCALING + ["train", str(cfg), "--no-progress", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows and not math.isfinite(rows[-1]["loss"])
    assert summary["steps_done"] < 40


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("override,message", [
    ("train.stpes=10", r"unknown key \[train\] stpes \(did you mean 'steps'\?\)"),
    ("model.heads=3", r"heads = 3 does not divide d_model = 32"),
    ("model.layers=\"two\"", r"\[model\] layers = 'two' has the wrong type: expected int"),
    ("model.seq_len=10000000", r"seq_len = 10000000 is longer than the train split"),
    ("data.corpus=\"shakespere\"", r"shakespere.*did you mean 'shakespeare'"),
    ("train.tokens=1000", r"exactly one horizon"),
    ("trian.lr=1", r"unknown section \[trian\] \(did you mean 'train'\?\)"),
])
def test_bad_config_gives_one_clear_line(tmp_path, override, message):
    import re

    cfg = write_toml(tmp_path / "run.toml", TINY)
    out = subprocess.run(SCALING + ["train", str(cfg), "--out", str(tmp_path / "run"), "--set", override],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = [l for l in out.stderr.strip().splitlines() if not l.startswith(("WARNING", "W0", "I0"))]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(message, lines[0]), lines[0]


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_run_config(tmp_path / "nope.toml")


def test_tiny_train_file_is_valid():
    config = load_run_config(REPO / "sweeps" / "tiny-train.toml")
    assert config.data.corpus == "shakespeare" and config.train.steps
