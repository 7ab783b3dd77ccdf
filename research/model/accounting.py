"""Parameter and FLOP accounting for the transformer family in `transformer.py`.

Parameters
    n_params                 every parameter, embeddings included (what Chinchilla counts)
    n_params_embedding       the input embedding plus, when untied, the output projection
    n_params_nonembedding    n_params - n_params_embedding (what Kaplan et al. 2020 count)

FLOPs per training token, by named convention (always say which one):
    "6n"          6 * n_params (embeddings included); the context-length term is dropped.
    "chinchilla"  Hoffmann et al. 2022, Appendix F, per forward pass on a sequence of s tokens:
                    embeddings 2·s·V·d
                    per layer  QKV 2·3·s·d·(k·h), QK^T 2·s²·(k·h), softmax 3·h·s²,
                               softmax·V 2·s²·(k·h), output 2·s·(k·h)·d,
                               dense 2·s·(m·d·ffw)  [m = 2 matrices for GELU, 3 for SwiGLU]
                    logits     2·s·d·V
                  training = 3 × forward (backward = 2 × forward); per token = / s.
                  Attention is counted over the full s×s square (no causal halving),
                  as in the paper.

Training memory per parameter (weights + gradients + AdamW moments; activations not
included), by precision:
    "fp32"        4 + 4 + 8 = 16 bytes  (this harness: fp32 master weights, fp32 grads)
    "bf16_mixed"  2 + 2 + 4 + 8 = 16 bytes (bf16 weights/grads, fp32 master + moments; ZeRO-style)
    "bf16"        2 + 2 + 4 = 8 bytes   (everything in bf16)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from research.config import ModelConfig

FLOP_CONVENTIONS = ("6n", "chinchilla")
MEMORY_BYTES_PER_PARAM = {"fp32": 16, "bf16_mixed": 16, "bf16": 8}


@dataclass(frozen=True)
class ModelCounts:
    layers: int
    d_model: int
    heads: int
    ffw: int
    vocab_size: int
    seq_len: int
    n_params: int
    n_params_embedding: int
    n_params_nonembedding: int
    flops_per_token_6n: float
    flops_per_token_chinchilla: float

    def flops_per_token(self, convention: str) -> float:
        if convention not in FLOP_CONVENTIONS:
            raise ValueError(f"unknown FLOP convention {convention!r}; expected one of {FLOP_CONVENTIONS}")
        return self.flops_per_token_6n if convention == "6n" else self.flops_per_token_chinchilla

    def training_flops(self, tokens: float, convention: str) -> float:
        return self.flops_per_token(convention) * tokens

    def memory_bytes(self) -> dict[str, float]:
        return {k: v * self.n_params for k, v in MEMORY_BYTES_PER_PARAM.items()}

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["memory_bytes_per_param"] = dict(MEMORY_BYTES_PER_PARAM)
        out["training_memory_bytes"] = self.memory_bytes()
        out["flops_per_token_ratio_chinchilla_to_6n"] = self.flops_per_token_chinchilla / self.flops_per_token_6n
        return out


def mlp_matrices(cfg: ModelConfig) -> int:
    return 3 if cfg.mlp == "swiglu" else 2


def count_params(cfg: ModelConfig) -> tuple[int, int]:
    """(n_params, n_params_embedding) of `Transformer(cfg)`."""
    d, V, f = cfg.d_model, cfg.vocab_size, cfg.d_ffw
    per_layer = 2 * d + 4 * d * d + mlp_matrices(cfg) * d * f  # two norms, qkv + out, MLP
    embedding = V * d + (0 if cfg.tie_embeddings else d * V)
    return embedding + cfg.layers * per_layer + d, embedding  # + final norm


def chinchilla_forward_flops_per_sequence(cfg: ModelConfig) -> float:
    s, d, V, f, h = cfg.seq_len, cfg.d_model, cfg.vocab_size, cfg.d_ffw, cfg.heads
    kh = cfg.head_dim * h
    attention = 2 * 3 * s * d * kh + 2 * s * s * kh + 3 * h * s * s + 2 * s * s * kh + 2 * s * kh * d
    dense = 2 * s * mlp_matrices(cfg) * d * f
    return 2 * s * V * d + cfg.layers * (attention + dense) + 2 * s * d * V


def count_model(cfg: ModelConfig) -> ModelCounts:
    if cfg.vocab_size is None:
        raise ValueError("vocab_size must be set to count parameters")
    n, n_emb = count_params(cfg)
    return ModelCounts(
        layers=cfg.layers, d_model=cfg.d_model, heads=cfg.heads, ffw=cfg.d_ffw,
        vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        n_params=n, n_params_embedding=n_emb, n_params_nonembedding=n - n_emb,
        flops_per_token_6n=6.0 * n,
        flops_per_token_chinchilla=3.0 * chinchilla_forward_flops_per_sequence(cfg) / cfg.seq_len,
    )
