"""Training faults of issue 10: a failed restore never wipes a run's history (incompatible
checkpoints here; corrupt ones in tests/test_train.py), every stopping signal checkpoints
first, and logged rates and bits/byte measure what they say."""

import hashlib
import json
import math
import signal
import subprocess
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from research.fsutil import read_jsonl
from research.train import train
from tests.conftest import SCALING
from tests.test_train import TINY, losses, tiny, write_toml


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file under run_dir (but the lock, which holds the last taker's pid) and its hash."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


# ---------------------------------------------------------------- fault 1: restore

def test_incompatible_checkpoint_stops_with_one_line_and_touches_nothing(tmp_path):
    """A newest checkpoint with another parameter tree (what a code edit leaves behind)."""
    from research.train.checkpoint import Checkpoints

    run_dir = tmp_path / "run"
    cfg = write_toml(tmp_path / "run.toml", dict(TINY, train=dict(TINY["train"], steps=20)))
    cmd = SCALING + ["train", str(cfg), "--no-progress", "--out", str(run_dir)]
    train(tiny(train={"steps": 20}), run_dir, progress=False)
    (run_dir / "summary.json").unlink()  # as if killed after its last checkpoint
    other = Checkpoints(run_dir / "checkpoints", keep=10)
    other.save(30, {"params": {"w": jnp.ones((3, 5))}, "opt_state": {"mu": jnp.zeros((3, 5))}}, {"step": 30})
    other.close()
    before = snapshot(run_dir)
    assert "metrics.jsonl" in before and any(k.startswith("checkpoints/30/") for k in before)

    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [l for l in out.stderr.strip().splitlines() if l.startswith("scaling train:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "checkpoint at step 30" in lines[0] and "does not fit this run" in lines[0], lines[0]
    assert "Nothing was moved" in lines[0]
    assert snapshot(run_dir) == before, "a failed restore changed the run directory"
    assert not (run_dir / "checkpoints.corrupt").exists()


def test_restore_failures_that_prove_nothing_about_the_files_move_nothing(tmp_path):
    """Out of memory, or an error the restore cannot attribute to the files, is not corruption."""
    from research.train.checkpoint import CheckpointCorrupt, CheckpointIncompatible, _classify

    where = tmp_path / "checkpoints" / "7"
    oom = _classify(MemoryError(), 7, where, "restoring it")
    assert isinstance(oom, CheckpointIncompatible) and "out of memory" in str(oom)
    xla_oom = _classify(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB"),
                        7, where, "restoring it")
    assert isinstance(xla_oom, CheckpointIncompatible) and "out of memory" in str(xla_oom)
    unknown = _classify(ValueError("sharding mismatch: 8 devices vs 4"), 7, where, "restoring it")
    assert isinstance(unknown, CheckpointIncompatible) and "nothing was moved" in str(unknown)
    assert isinstance(_classify(FileNotFoundError(where / "state"), 7, where, "reading"), CheckpointCorrupt)


# ---------------------------------------------------------------- fault 3: signals

SIGNAL_RUN = dict(TINY, train=dict(TINY["train"], steps=200, eval_every=100, checkpoint_every=1000))


@pytest.fixture(scope="module")
def straight_losses(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(tiny(train=SIGNAL_RUN["train"]), run_dir, progress=False)
    return losses(run_dir)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_then_resume_loses_nothing(tmp_path, straight_losses, sig, code):
    cfg = write_toml(tmp_path / "run.toml", SIGNAL_RUN)
    run_dir = tmp_path / "run"
    cmd = SCALING + ["train", str(cfg), "--no-progress", "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not read_jsonl(run_dir / "metrics.jsonl"):
        time.sleep(0.02)
    seen = max(r["step"] for r in read_jsonl(run_dir / "metrics.jsonl"))
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stop_signal"] == sig.name
    stopped = summary["steps_done"]
    assert seen <= stopped < 200, (seen, stopped)
    assert (run_dir / "checkpoints" / str(stopped)).is_dir(), "no checkpoint at the step the signal stopped"
    assert max(losses(run_dir)) == stopped

    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming from the checkpoint at step {stopped}" in again.stderr
    assert not (run_dir / "metrics.removed.jsonl").exists(), "rows logged before the signal were dropped"
    got = losses(run_dir)
    assert sorted(got) == sorted(straight_losses) == list(range(1, 201))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [straight_losses[s] for s in sorted(got)], rtol=1e-6)


def _start_and_interrupt(cmd: list[str], run_dir: Path) -> subprocess.Popen:
    """Start a run, wait for its first logged step, send SIGINT; return once the run says it is
    checkpointing (the stderr lines read so far are in `proc.lines`)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not read_jsonl(run_dir / "metrics.jsonl"):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.lines = []
    for line in proc.stderr:
        proc.lines.append(line)
        if "received: checkpointing" in line:
            return proc
    raise AssertionError("the run never said it was checkpointing:\n" + "".join(proc.lines)[-2000:])


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_while_checkpointing_waits_for_the_save(tmp_path, straight_losses, second):
    """Issue 23: a second Ctrl-C (or a sweep runner's SIGTERM after the terminal's SIGINT) while the
    final checkpoint is saved printed tracebacks (a KeyboardInterrupt raised inside JAX's and orbax's
    code). It is acknowledged in one line, the save finishes, and the resume loses nothing."""
    cfg = write_toml(tmp_path / "run.toml", SIGNAL_RUN)
    run_dir = tmp_path / "run"
    cmd = SCALING + ["train", str(cfg), "--no-progress", "--out", str(run_dir)]
    proc = _start_and_interrupt(cmd, run_dir)
    proc.send_signal(second)  # the save of the step named in that line is starting or in flight
    stderr = "".join(proc.lines) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    stopped = summary["steps_done"]
    assert summary["status"] == "interrupted" and summary["stop_signal"] == "SIGINT"
    acknowledged = [l for l in stderr.splitlines() if "again: saving the checkpoint" in l]
    assert acknowledged == [f"scaling: {second.name} again: saving the checkpoint at step {stopped} and stopping, "
                            f"please wait ({'press Ctrl-C once more' if second == signal.SIGINT else 'one more signal'} "
                            "to quit without it; the run then resumes from its previous checkpoint)"], stderr[-2000:]
    assert (run_dir / "checkpoints" / str(stopped)).is_dir()

    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming from the checkpoint at step {stopped}" in again.stderr
    got = losses(run_dir)
    assert sorted(got) == list(range(1, 201))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [straight_losses[s] for s in sorted(got)], rtol=1e-6)


def test_a_third_signal_quits_at_once_and_the_resume_uses_a_finished_checkpoint(tmp_path, straight_losses):
    """The way out for a user who will not wait: quit now, exit 130, one line, no traceback; the
    checkpoint being written is never taken for a finished one, and the resume loses nothing."""
    cfg = write_toml(tmp_path / "run.toml", dict(SIGNAL_RUN, train=dict(SIGNAL_RUN["train"], checkpoint_every=10)))
    run_dir = tmp_path / "run"
    cmd = SCALING + ["train", str(cfg), "--no-progress", "--out", str(run_dir)]
    proc = _start_and_interrupt(cmd, run_dir)
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:
        proc.lines.append(line)
        if "again: saving the checkpoint" in line:
            break
    proc.send_signal(signal.SIGINT)
    stderr = "".join(proc.lines) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    quit_lines = [l for l in stderr.splitlines() if "the third signal" in l]
    assert len(quit_lines) == 1 and quit_lines[0].startswith("scaling: SIGINT, the third signal: quitting without the "
                                                              "checkpoint at step "), stderr[-2000:]
    assert not (run_dir / "summary.json").exists(), "a run that quit without its checkpoint says it stopped cleanly"

    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "Traceback" not in again.stderr, again.stderr[-3000:]
    got = losses(run_dir)
    assert sorted(got) == list(range(1, 201))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [straight_losses[s] for s in sorted(got)], rtol=1e-6)


# ---------------------------------------------------------------- fault 9: rates and bits/byte

def test_logged_rates_exclude_compilation_and_name_their_convention(tmp_path, no_compilation_cache):
    from research.model import count_model

    class Recorder:  # what an experiment tracker attaches
        def __init__(self):
            self.rows, self.config, self.summary = [], None, None

        def log_config(self, record):
            self.config = record

        def log_row(self, step, row):
            self.rows.append((step, row))

        def log_summary(self, summary):
            self.summary = summary

    run_dir, sink = tmp_path / "run", Recorder()
    train(tiny(train={"steps": 60, "log_every": 5, "eval_every": 30}), run_dir, progress=False, sinks=[sink])
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [step for step, _ in sink.rows] == [r["step"] for r in rows] == list(range(5, 61, 5))
    assert [row for _, row in sink.rows] == rows
    assert sink.config["identity_hash"] == json.loads((run_dir / "config.json").read_text())["identity_hash"]
    assert sink.summary == json.loads((run_dir / "summary.json").read_text())
    assert all(r["tokens_per_s"] > 0 for r in rows)
    # The first row's rate covers steps 2..5, after the step compiled (seconds, where a step
    # takes milliseconds); the time it implies must be a small part of the run's wall time
    # so far, which does include compiling.
    first = rows[0]
    implied_s = (first["step"] - 1) * 8 * 32 / first["tokens_per_s"]
    assert implied_s < 0.5 * first["wall_time_s"], (implied_s, first["wall_time_s"])
    counts = count_model(tiny().model.__class__(**json.loads((run_dir / "config.json").read_text())["config"]["model"]))
    for r in rows:
        assert r["flops_per_s_6n"] == pytest.approx(6 * counts.n_params * r["tokens_per_s"])
        assert r["flops_per_s_chinchilla"] == pytest.approx(counts.flops_per_token_chinchilla * r["tokens_per_s"])


def test_bits_per_byte_uses_the_bytes_of_the_evaluated_windows(tmp_path):
    from research.data import get_dataset

    corpus, tokenizer = "synthetic:states=8,branch=2,tokens=20000,doc=2000", "bpe:300"
    config = tiny(data={"corpus": corpus, "tokenizer": tokenizer},
                  train={"steps": 10, "eval_every": 10, "eval_tokens": 512})
    summary = train(config, tmp_path / "run", progress=False)
    ds = get_dataset(corpus, tokenizer)
    windows = ds.val_batches(config.train.batch_size, config.model.seq_len, config.train.eval_tokens)
    targets = [row[1:] for w in windows for row in w]
    n_bytes = sum(len(ds.tokenizer.decode(t).encode("utf-8")) for t in targets)  # ASCII source: exact
    evaluated = n_bytes / sum(len(t) for t in targets)
    whole = ds.bytes_per_token("val")
    assert abs(evaluated / whole - 1) > 0.01, "this corpus does not tell the two apart"
    assert summary["eval_bits_per_byte"] == pytest.approx(summary["final_eval_loss"] / math.log(2) / evaluated)
    assert summary["eval_bytes_per_token"] == pytest.approx(evaluated)
    last = read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]
    assert last["eval_bits_per_byte"] == pytest.approx(summary["eval_bits_per_byte"])


def test_token_byte_lengths_add_up_to_the_split_bytes():
    from research.data import get_dataset

    ds = get_dataset("synthetic:states=8,branch=2,tokens=20000,doc=2000", "bpe:300")
    lengths = ds.token_byte_lengths()
    for split in ("train", "val"):
        ids = np.asarray(ds.tokens(split), dtype=np.int64)
        assert int(lengths[ids].sum()) == ds.manifest["splits"][split]["bytes"]
