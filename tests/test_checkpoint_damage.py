"""Issue 23, cause 1: a damaged newest checkpoint (its data files truncated, zeroed,
randomised or emptied, or its step directory emptied) is set aside and the run resumes
from the previous intact one, finishing equal to the uninterrupted run; an error whose
storage cause is buried in the exception chain is still read as corruption."""

import os
import shutil

import numpy as np
import pytest

from research.train import train
from tests.test_train import losses, tiny

STEPS = 30  # checkpoints at 10, 20, 30 (TINY checkpoints every 10 steps)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    summary = train(tiny(train={"steps": STEPS}), run_dir, progress=False)
    return run_dir, summary, losses(run_dir)


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "zeroed": bytes(len(data)),
                      "randomised": os.urandom(len(data)), "emptied": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "zeroed", "randomised", "emptied", "step directory emptied"])
def test_damaged_latest_checkpoint_resumes_from_previous_and_finishes_equal(tmp_path, reference, how):
    ref_dir, ref_summary, ref_losses = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    (run_dir / "summary.json").unlink()  # as if killed right after its last checkpoint
    step_dir = run_dir / "checkpoints" / str(STEPS)
    if how == "step directory emptied":
        shutil.rmtree(step_dir)
        step_dir.mkdir()
    else:
        data = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
        _damage(max(data, key=lambda p: p.stat().st_size), how)  # the largest: array bytes

    summary = train(tiny(train={"steps": STEPS}), run_dir, progress=False)

    assert (run_dir / "checkpoints.corrupt" / str(STEPS)).is_dir(), "the damaged checkpoint was not set aside"
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20, 30]
    got = losses(run_dir)
    assert sorted(got) == sorted(ref_losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([got[s] for s in sorted(got)], [ref_losses[s] for s in sorted(got)], rtol=1e-6)
    assert summary["final_eval_loss"] == pytest.approx(ref_summary["final_eval_loss"], rel=1e-6)


def test_classifier_reads_the_whole_cause_chain(tmp_path):
    from research.train.checkpoint import CheckpointCorrupt, CheckpointIncompatible, _classify

    where = tmp_path / "checkpoints" / "7"
    for storage in ('OUT_OF_RANGE: Error reading "w/0.0": Requested byte range [0, 9) is not valid',
                    'FAILED_PRECONDITION: Error reading "w/0.0": ZSTD_decompressStream() failed'):
        try:
            try:
                raise ValueError(storage)
            except ValueError as inner:
                raise Exception("Encountered error while reading array index: <bound method ...>") from inner
        except Exception as outer:
            verdict = _classify(outer, 7, where, "restoring it")
        assert isinstance(verdict, CheckpointCorrupt), storage
        assert storage.split(":")[0] in str(verdict)
    # a precondition that says nothing about reading the files is not proof of damage
    other = _classify(ValueError("FAILED_PRECONDITION: mesh axis 'data' needs 8 devices"), 7, where, "restoring it")
    assert isinstance(other, CheckpointIncompatible) and "nothing was moved" in str(other)
    assert "move" not in str(other).split("nothing was moved")[1], "advises moving intact checkpoints away"
