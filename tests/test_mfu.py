"""The MFU count (PaLM App. B model FLOPs), the one device table and the one bytes-per-parameter
table, checked against independent formulas and the parameter tree the model really builds."""

import types

import jax
import numpy as np
import pytest
from flax import nnx

from research.train.devices import PEAKS, mfu_fields, peak_flops_of, peak_for_kind, peak_for_name
from research.config import ModelConfig
from research.fit.hardware import training_cost
from research.model.accounting import (MEMORY_BYTES_PER_PARAM, TRAINING_BYTES_PER_PARAM, bytes_per_param,
                                       count_model)
from research.model.transformer import Transformer


def palm_flops_per_token(L, d, V, T, ffw, mlp_matrices, tied):
    """Written out by hand from PaLM App. B: 6 x (matmul weights) + 12 L T d. Tied or not, the
    head's d x V matmul is computed once per token; the input lookup is never a matmul."""
    per_layer = 3 * d * d + d * d + mlp_matrices * d * ffw  # qkv, attention output, MLP
    head = d * V
    del tied  # the count does not depend on it: only the (excluded) input table is shared
    return 6 * (L * per_layer + head) + 12 * L * T * d


SHAPES = [  # layers, d_model, heads, vocab, seq_len, mlp, tied
    (1, 32, 2, 300, 32, "gelu", False),
    (2, 64, 4, 1000, 128, "gelu", True),
    (3, 48, 6, 257, 64, "swiglu", False),
    (2, 32, 4, 512, 16, "swiglu", True),
    (6, 384, 6, 50304, 1024, "gelu", False),
    (12, 768, 12, 50304, 1024, "gelu", True),
]


def _cfg(L, d, h, V, T, mlp, tied) -> ModelConfig:
    return ModelConfig(layers=L, d_model=d, heads=h, vocab_size=V, seq_len=T, mlp=mlp, tie_embeddings=tied)


@pytest.mark.parametrize("shape", SHAPES)
def test_model_flops_per_token_matches_the_palm_formula(shape):
    cfg = _cfg(*shape)
    L, d, _, V, T, mlp, tied = shape
    counts = count_model(cfg)
    want = palm_flops_per_token(L, d, V, T, cfg.d_ffw, 3 if mlp == "swiglu" else 2, tied)
    assert counts.flops_per_token_model == want
    # untied: the input table is excluded, so model FLOPs < 6N even with the attention term at these sizes
    if not tied and V * d > 2 * T * d * L:
        assert counts.flops_per_token_model < counts.flops_per_token_6n


@pytest.mark.parametrize("shape", [s for s in SHAPES if s[1] <= 64])
def test_matmul_params_match_the_built_parameter_tree(shape):
    """Count the built model's matrices: every >=2-D parameter except the input embedding table,
    plus that table once more when it is tied (it is the head's matmul then)."""
    cfg = _cfg(*shape)
    model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    matmul, embed = 0, 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        size = int(np.prod(leaf.shape))
        if "embed" in names:
            embed += size
        elif len(leaf.shape) >= 2:
            matmul += size
    if cfg.tie_embeddings:
        matmul += embed
    counts = count_model(cfg)
    assert counts.n_params_matmul == matmul
    assert counts.flops_per_token_model == 6 * matmul + 12 * cfg.layers * cfg.seq_len * cfg.d_model


def test_the_issue_shape_six_n_overstates_model_flops():
    """6 layers, d_model 384, vocab 50,304, seq 1,024, untied: 6N counts the input lookup (6 V d)."""
    counts = count_model(_cfg(6, 384, 6, 50304, 1024, "gelu", False))
    assert counts.n_params_matmul == 6 * 12 * 384**2 + 384 * 50304
    assert counts.flops_per_token_6n / counts.flops_per_token_model == pytest.approx(1.4214, rel=1e-4)


def test_mfu_fields_use_model_flops_and_the_summed_peak():
    counts = count_model(_cfg(2, 64, 4, 1000, 128, "gelu", False))
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")  # a device record as JAX reports it
    a100 = types.SimpleNamespace(device_kind="NVIDIA A100-SXM4-40GB")
    got = mfu_fields(counts, 1e6, [h100, h100])
    assert got == {"mfu": pytest.approx(counts.flops_per_token_model * 1e6 / (2 * 989e12))}
    assert peak_flops_of([h100, a100]) == 989e12 + 312e12
    assert mfu_fields(counts, 1e6, jax.devices()) == {}  # a CPU: peak unknown, no mfu logged
    assert mfu_fields(counts, 1e6, [h100, types.SimpleNamespace(device_kind="cpu")]) == {}


@pytest.mark.parametrize("name,key", [("h100", "h100"), ("H100-SXM", "h100"), ("a100", "a100"),
                                      ("A100 40GB", "a100-40gb"), ("tpu v5e", "tpu-v5e"), ("B200", "b200")])
def test_gpu_names_and_device_kinds_share_one_table(name, key):
    peak = peak_for_name(name)
    assert peak is PEAKS[key]
    assert any(peak_for_kind(kind) is peak for kind in (
        "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "TPU v5 lite", "NVIDIA B200"))


def test_training_cost_reads_the_one_tables():
    t = training_cost(1e21, 1e9, gpu="a100-40gb")
    assert t["peak_flops"] == peak_for_name("a100-40gb").bf16_flops == 312e12
    assert t["device_memory_bytes"] == 40e9
    assert t["bytes_per_param"] == bytes_per_param("bf16_mixed") == 16
    assert t["train_state_bytes"] == 16e9 and t["min_devices_for_state"] == 1
    assert "activations excluded" in t["memory_convention"]
    assert MEMORY_BYTES_PER_PARAM == {k: sum(v.values()) for k, v in TRAINING_BYTES_PER_PARAM.items()}
    assert MEMORY_BYTES_PER_PARAM == {"fp32": 16, "bf16_mixed": 16, "bf16": 8}


def test_unknown_gpu_name_is_one_line_with_the_known_names():
    from research.errors import UserError

    with pytest.raises(UserError, match=r"unknown --gpu 'h1000'.*known: .*h100.*l4"):
        training_cost(1e21, 1e9, gpu="h1000")
