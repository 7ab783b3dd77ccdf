"""`[train] loss_chunk`: the chunked loss as a config key (N tokens, 0 = off, "auto"), with
SCALING_LOSS_CHUNK as an override; the chunked and plain losses agree through the key."""

import jax
import numpy as np
import pytest

from research.config import load_run_config, run_config_from_dict
from research.errors import UserError
from research.train.step import CPU_LOSS_CHUNK, Stepper, make_mesh

RAW = {"model": {"layers": 1, "d_model": 32, "heads": 2, "seq_len": 32, "vocab_size": 300},
       "train": {"batch_size": 8, "steps": 1}}


def config(chunk):
    return run_config_from_dict({"model": RAW["model"], "train": dict(RAW["train"], loss_chunk=chunk)})


def test_key_sets_the_chunk_and_the_environment_overrides_it(monkeypatch):
    monkeypatch.delenv("SCALING_LOSS_CHUNK", raising=False)
    auto = CPU_LOSS_CHUNK if jax.default_backend() == "cpu" else 0
    assert run_config_from_dict(RAW).train.loss_chunk == "auto"
    for chunk, expected in (("auto", auto), (0, 0), (37, 37)):
        cfg = config(chunk)
        assert Stepper(cfg, make_mesh(cfg)).loss_chunk == expected
    monkeypatch.setenv("SCALING_LOSS_CHUNK", "0")
    cfg = config(37)
    assert Stepper(cfg, make_mesh(cfg)).loss_chunk == 0
    monkeypatch.setenv("SCALING_LOSS_CHUNK", "auto")
    assert Stepper(cfg, make_mesh(cfg)).loss_chunk == auto


def test_chunked_loss_through_the_key_matches_the_plain_loss(monkeypatch):
    monkeypatch.delenv("SCALING_LOSS_CHUNK", raising=False)
    tokens = np.random.default_rng(0).integers(0, 300, (8, 33), dtype=np.int32)
    losses = {}
    for chunk in (0, 37):
        cfg = config(chunk)
        stepper = Stepper(cfg, make_mesh(cfg))
        params, _ = stepper.init()
        losses[chunk] = float(stepper.eval_step(params, stepper.put_batch(tokens)))
    assert losses[37] == pytest.approx(losses[0], rel=1e-6)


@pytest.mark.parametrize("bad", ['"big"', "-1", "true", '"AUTO "'])
def test_bad_values_are_one_line_errors(tmp_path, bad):
    path = tmp_path / "run.toml"
    path.write_text(f"[train]\nsteps = 1\nloss_chunk = {bad}\n")
    with pytest.raises(UserError, match=r"\[train\] loss_chunk"):
        load_run_config(path)
