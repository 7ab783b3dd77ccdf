"""Decoder-only transformer in flax.nnx.

Pre-norm (RMSNorm) blocks, rotary positions, multi-head causal attention via
`jax.nn.dot_product_attention` (cuDNN flash attention on GPU in bf16), a GELU
MLP (two matrices) or SwiGLU (three), no biases, untied embeddings by default.
Parameters are float32; activations use `compute_dtype`.

Shape suffixes: B batch, T time, D d_model, F ffw, H heads, K head dim, V vocab.
`research.model.accounting` counts exactly the parameters created here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from research.config import ModelConfig


def compute_dtype(cfg: ModelConfig):
    if cfg.compute_dtype == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(cfg.compute_dtype)


def attention_impl(cfg: ModelConfig) -> str | None:
    if cfg.attention != "auto":
        return cfg.attention
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and compute_dtype(cfg) == jnp.bfloat16 else "xla"


def rotary(x_BTHK: jax.Array, theta: float) -> jax.Array:
    """Rotate channel pairs (i, i + K/2) by position-dependent angles (RoFormer)."""
    T, K = x_BTHK.shape[1], x_BTHK.shape[3]
    freq_K2 = theta ** (-jnp.arange(0, K // 2, dtype=jnp.float32) / (K // 2))
    angle_TK2 = jnp.arange(T, dtype=jnp.float32)[:, None] * freq_K2[None, :]
    sin_T1K2 = jnp.sin(angle_TK2)[:, None, :].astype(x_BTHK.dtype)
    cos_T1K2 = jnp.cos(angle_TK2)[:, None, :].astype(x_BTHK.dtype)
    x1, x2 = jnp.split(x_BTHK, 2, axis=-1)
    return jnp.concatenate([x1 * cos_T1K2 - x2 * sin_T1K2, x2 * cos_T1K2 + x1 * sin_T1K2], axis=-1)


def _linear(d_in: int, d_out: int, cfg: ModelConfig, rngs: nnx.Rngs, std: float) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=False, dtype=compute_dtype(cfg), param_dtype=jnp.float32,
                      kernel_init=nnx.initializers.normal(std), rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        out_std = cfg.init_std / (2 * cfg.layers) ** 0.5  # GPT-2 residual scaling
        self.qkv = _linear(cfg.d_model, 3 * cfg.d_model, cfg, rngs, cfg.init_std)
        self.out = _linear(cfg.d_model, cfg.d_model, cfg, rngs, out_std)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        B, T, _ = x_BTD.shape
        H, K = self.cfg.heads, self.cfg.head_dim
        q_BTHK, k_BTHK, v_BTHK = jnp.split(self.qkv(x_BTD).reshape(B, T, 3 * H, K), 3, axis=2)
        q_BTHK, k_BTHK = rotary(q_BTHK, self.cfg.rope_theta), rotary(k_BTHK, self.cfg.rope_theta)
        y_BTHK = jax.nn.dot_product_attention(q_BTHK, k_BTHK, v_BTHK, is_causal=True,
                                              implementation=attention_impl(self.cfg))
        return self.out(y_BTHK.reshape(B, T, H * K))


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.swiglu = cfg.mlp == "swiglu"
        out_std = cfg.init_std / (2 * cfg.layers) ** 0.5
        self.up = _linear(cfg.d_model, cfg.d_ffw, cfg, rngs, cfg.init_std)
        if self.swiglu:
            self.gate = _linear(cfg.d_model, cfg.d_ffw, cfg, rngs, cfg.init_std)
        self.down = _linear(cfg.d_ffw, cfg.d_model, cfg, rngs, out_std)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        if self.swiglu:
            h_BTF = jax.nn.silu(self.gate(x_BTD)) * self.up(x_BTD)
        else:
            h_BTF = jax.nn.gelu(self.up(x_BTD))
        return self.down(h_BTF)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        norm = dict(epsilon=1e-6, dtype=compute_dtype(cfg), param_dtype=jnp.float32, rngs=rngs)
        self.attn_norm = nnx.RMSNorm(cfg.d_model, **norm)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = nnx.RMSNorm(cfg.d_model, **norm)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD))
        return x_BTD + self.mlp(self.mlp_norm(x_BTD))


class Transformer(nnx.Module):
    """tokens [B, T] int -> logits [B, T, V] float32."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        if cfg.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be resolved (from the dataset) before building")
        self.cfg = cfg
        dtype = compute_dtype(cfg)
        self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=jnp.float32,
                               embedding_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.layers)])
        self.final_norm = nnx.RMSNorm(cfg.d_model, epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        if not cfg.tie_embeddings:
            self.unembed = _linear(cfg.d_model, cfg.vocab_size, cfg, rngs, cfg.init_std)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        return self.logits(self.hidden(tokens_BT))

    def hidden(self, tokens_BT: jax.Array) -> jax.Array:
        """tokens [B, T] -> final-normed activations [B, T, D] (the input of `logits`)."""
        x_BTD = self.embed(tokens_BT)
        for block in self.blocks:
            if self.cfg.remat:
                x_BTD = nnx.remat(lambda b, x: b(x))(block, x_BTD)
            else:
                x_BTD = block(x_BTD)
        return self.final_norm(x_BTD)

    def logits(self, x_BTD: jax.Array) -> jax.Array:
        """[..., D] activations -> [..., V] float32 logits."""
        logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.unembed(x_BTD)
        return logits_BTV.astype(jnp.float32)
