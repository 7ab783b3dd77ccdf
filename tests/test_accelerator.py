"""Checks that matter on an accelerator, run on whatever device JAX has.

On the 2-core CPU of CI they run at tiny sizes against float64 numpy references; on a GPU
(`python -m research.bench.gpu`, the one GPU command) the same tests also compare cuDNN
flash attention against the XLA path and bf16 compute against float32. Tolerances follow
the usual precision bands: float32 far under 1e-3, bf16 operands 1e-3 to 1e-2 relative.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ModelConfig
from research.model.transformer import Transformer

ON_GPU = jax.default_backend() == "gpu"


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _causal_attention_f64(q_BTHK, k_BTHK, v_BTHK):
    """Plain softmax(q k^T / sqrt(K)) v with a causal mask, in float64 numpy."""
    q, k, v = (np.asarray(x, np.float64) for x in (q_BTHK, k_BTHK, v_BTHK))
    T, K = q.shape[1], q.shape[3]
    s_BHTS = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(K)
    s_BHTS = np.where(np.tril(np.ones((T, T), bool)), s_BHTS, -np.inf)
    p_BHTS = np.exp(s_BHTS - s_BHTS.max(-1, keepdims=True))
    p_BHTS /= p_BHTS.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", p_BHTS, v)


def _qkv(seed: int, B=2, T=64, H=4, K=32):
    """Fresh random inputs for every check (never zeros: they hide wrong indexing)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, T, H, K)).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("seed", [0, 1])
def test_xla_attention_matches_float64_reference(seed):
    q, k, v = _qkv(seed)
    ref = _causal_attention_f64(q, k, v)
    out = jax.nn.dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), is_causal=True,
                                       implementation="xla")
    assert np.all(np.isfinite(np.asarray(out)))
    tol = 5e-3 if ON_GPU else 1e-5  # GPUs may run float32 dots as tf32
    assert _rel(out, ref) < tol


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention exists only on an NVIDIA GPU")
@pytest.mark.parametrize("seed", [0, 1])
def test_cudnn_attention_matches_xla_in_bf16(seed):
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in _qkv(seed, B=4, T=256, H=8, K=64))
    ref = _causal_attention_f64(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    cudnn = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    xla = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    assert _rel(cudnn, ref) < 1e-2 and _rel(xla, ref) < 1e-2
    assert _rel(cudnn, xla) < 1e-2


def _model(dtype: str, attention: str = "xla") -> Transformer:
    cfg = ModelConfig(layers=2, d_model=64, heads=4, seq_len=64, vocab_size=97, compute_dtype=dtype,
                      attention=attention)
    return Transformer(cfg, nnx.Rngs(0))


def _loss(model: Transformer, tokens_BT) -> jax.Array:
    logits_BTV = model(tokens_BT[:, :-1])
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    return -jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], axis=-1).mean()


def test_bf16_model_matches_float32_model():
    """Same float32 parameters, activations in bf16 vs float32: logits and loss in the bf16 band."""
    tokens_BT = jax.random.randint(jax.random.key(3), (4, 65), 0, 97)
    m32, m16 = _model("float32"), _model("bfloat16")
    nnx.update(m16, nnx.state(m32, nnx.Param))  # identical parameters
    # jitted: one compiled program per model, not an XLA compile per eager op
    logits_and_loss = nnx.jit(lambda model, tokens_BT: (model(tokens_BT), _loss(model, tokens_BT)))
    (logits32, loss32), (logits16, loss16) = logits_and_loss(m32, tokens_BT), logits_and_loss(m16, tokens_BT)
    assert logits16.dtype == jnp.float32  # logits are always returned in float32
    assert np.all(np.isfinite(np.asarray(logits16)))
    assert 0 < _rel(logits16, logits32) < 3e-2  # > 0: the bf16 path really ran in lower precision
    assert abs(float(loss16) - float(loss32)) < 2e-2 * float(loss32)


def test_bf16_gradients_match_float32_gradients():
    tokens_BT = jax.random.randint(jax.random.key(4), (4, 65), 0, 97)
    m32, m16 = _model("float32"), _model("bfloat16")
    nnx.update(m16, nnx.state(m32, nnx.Param))
    grad = nnx.jit(nnx.grad(_loss))  # one compiled program per model, not a compile per eager op
    g32 = jax.tree.leaves(grad(m32, tokens_BT))
    g16 = jax.tree.leaves(grad(m16, tokens_BT))
    flat32 = np.concatenate([np.ravel(g) for g in g32])
    flat16 = np.concatenate([np.ravel(g) for g in g16])
    assert np.all(np.isfinite(flat16))
    assert _rel(flat16, flat32) < 5e-2


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention exists only on an NVIDIA GPU")
def test_model_with_cudnn_attention_matches_xla_attention():
    tokens_BT = jax.random.randint(jax.random.key(5), (4, 65), 0, 97)
    xla, cudnn = _model("bfloat16", "xla"), _model("bfloat16", "cudnn")
    nnx.update(cudnn, nnx.state(xla, nnx.Param))
    assert _rel(cudnn(tokens_BT), xla(tokens_BT)) < 1e-2


def test_auto_policy_picks_bf16_and_cudnn_only_on_gpu():
    from research.model.transformer import attention_impl, compute_dtype

    cfg = ModelConfig(vocab_size=97)
    assert compute_dtype(cfg) == (jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32)
    assert attention_impl(cfg) == ("cudnn" if ON_GPU else "xla")
    assert attention_impl(dataclasses.replace(cfg, attention="xla")) == "xla"


def test_sharded_step_matches_one_device_on_devices_present():
    """A data-parallel mesh over every local device gives the one-device loss and gradient."""
    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    B = 2 * len(devices)
    tokens_BT = jax.random.randint(jax.random.key(6), (B, 33), 0, 97)
    model = _model("float32")
    one_device = jax.sharding.SingleDeviceSharding(devices[0])
    loss_one = float(nnx.jit(_loss)(model, jax.device_put(tokens_BT, one_device)))
    sharded = jax.device_put(tokens_BT, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    loss_mesh = float(nnx.jit(_loss)(model, sharded))
    assert abs(loss_mesh - loss_one) < 1e-5 * max(1.0, abs(loss_one)) * (50 if ON_GPU else 1)
