"""Parameter and FLOP accounting for the transformer family in `transformer.py`.

Parameters
    n_params                 every parameter, embeddings included (what Chinchilla counts)
    n_params_embedding       the input embedding plus, when untied, the output projection
    n_params_nonembedding    n_params - n_params_embedding (what Kaplan et al. 2020 count)

Model FLOPs per training token, for MFU (what the hardware has to compute; PaLM,
Chowdhery et al. 2022 App. B, as nanoGPT counts it):
    flops_per_token_model = 6 · n_params_matmul + 12 · L · T · d
        n_params_matmul  the parameters that take part in matrix multiplies: every layer's
                         QKV, output, and MLP matrices plus the output head (d · V). The input
                         embedding is a lookup, not a matmul, so it is excluded; with tied
                         embeddings the one matrix is counted once, as the head. Norm scales
                         are excluded (elementwise).
        12 · L · T · d   attention scores QK^T and their product with V (2 matmuls of
                         2·T·d FLOPs per token per layer in the forward pass, × 3 for
                         training), T = seq_len. Causal masking is NOT halved (as PaLM):
                         the count is the full T × T square a dense kernel computes.
    MFU = flops_per_token_model × tokens/s ÷ (devices × dense bf16 peak), see
    research/train/devices.py. The conventions below are for C, not for MFU.

FLOPs per training token, by named convention for C (always say which one):
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
included), by precision: TRAINING_BYTES_PER_PARAM, the one table every estimate uses
(`scaling size`, sweep plans, `scaling optimal --gpu`):
    "fp32"        4 + 4 + 8 = 16 bytes  (this harness: fp32 weights, fp32 grads, fp32 m and v)
    "bf16_mixed"  4 + 8 + 2 + 2 = 16 bytes (fp32 master + fp32 m, v; bf16 working weights and grads)
    "bf16"        2 + 2 + 4 = 8 bytes   (everything in bf16)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from research.config import FLOP_CONVENTIONS, FlopConvention, ModelConfig  # noqa: F401 (FLOP_CONVENTIONS: re-exported)


# precision -> {what is stored: bytes per parameter}
TRAINING_BYTES_PER_PARAM: dict[str, dict[str, int]] = {
    "fp32": {"weights_fp32": 4, "grads_fp32": 4, "adamw_m_v_fp32": 8},
    "bf16_mixed": {"master_weights_fp32": 4, "adamw_m_v_fp32": 8, "weights_bf16": 2, "grads_bf16": 2},
    "bf16": {"weights_bf16": 2, "grads_bf16": 2, "adamw_m_v_bf16": 4},
}
MEMORY_BYTES_PER_PARAM = {k: sum(v.values()) for k, v in TRAINING_BYTES_PER_PARAM.items()}


def bytes_per_param(precision: str) -> int:
    """Training-state bytes per parameter (weights + grads + AdamW m, v) for a precision."""
    return MEMORY_BYTES_PER_PARAM[precision]


def memory_convention(precision: str) -> str:
    """'16 B/param (bf16_mixed): master_weights_fp32 4 + ...; activations excluded' for a precision."""
    parts = " + ".join(f"{k} {v}" for k, v in TRAINING_BYTES_PER_PARAM[precision].items())
    return f"{bytes_per_param(precision)} B/param ({precision}): {parts}; activations excluded"


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
    n_params_matmul: int
    flops_per_token_6n: float
    flops_per_token_chinchilla: float
    flops_per_token_model: float

    def flops_per_token(self, convention: FlopConvention) -> float:
        if convention not in FLOP_CONVENTIONS:
            raise ValueError(f"unknown FLOP convention {convention!r}; expected one of {FLOP_CONVENTIONS}")
        return self.flops_per_token_6n if convention == "6n" else self.flops_per_token_chinchilla

    def training_flops(self, tokens: float, convention: FlopConvention) -> float:
        return self.flops_per_token(convention) * tokens

    def memory_bytes(self) -> dict[str, float]:
        return {k: v * self.n_params for k, v in MEMORY_BYTES_PER_PARAM.items()}

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["memory_bytes_per_param"] = dict(MEMORY_BYTES_PER_PARAM)
        out["training_memory_bytes"] = self.memory_bytes()
        out["flops_per_token_ratio_chinchilla_to_6n"] = self.flops_per_token_chinchilla / self.flops_per_token_6n
        return out



@dataclass(frozen=True)
class RunSize:
    """A run's N (with and without embeddings), D and C in both conventions: the columns a trial's
    plan (trial.json "planned", plan.json), its summary.json and its results.csv row share."""

    n_params: int
    n_params_nonembedding: int
    tokens: int
    flops_6n: float
    flops_chinchilla: float

    @classmethod
    def of(cls, counts: ModelCounts, tokens: int) -> RunSize:
        return cls(n_params=counts.n_params, n_params_nonembedding=counts.n_params_nonembedding, tokens=tokens,
                   flops_6n=counts.training_flops(tokens, "6n"),
                   flops_chinchilla=counts.training_flops(tokens, "chinchilla"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RUN_SIZE_FIELDS = tuple(f.name for f in dataclasses.fields(RunSize))

def mlp_matrices(cfg: ModelConfig) -> int:
    return 3 if cfg.mlp == "swiglu" else 2


def count_params(cfg: ModelConfig) -> tuple[int, int]:
    """(n_params, n_params_embedding) of `Transformer(cfg)`."""
    d, V, f = cfg.d_model, cfg.vocab_size, cfg.d_ffw
    per_layer = 2 * d + 4 * d * d + mlp_matrices(cfg) * d * f  # two norms, qkv + out, MLP
    embedding = V * d + (0 if cfg.tie_embeddings else d * V)
    return embedding + cfg.layers * per_layer + d, embedding  # + final norm


def count_matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in matrix multiplies: the layers' matrices + the output head."""
    d, V, f = cfg.d_model, cfg.vocab_size, cfg.d_ffw
    return cfg.layers * (4 * d * d + mlp_matrices(cfg) * d * f) + d * V


def model_flops_per_token(cfg: ModelConfig) -> float:
    """PaLM App. B training FLOPs per token: 6 · n_params_matmul + 12 · L · T · d (no causal halving)."""
    return 6.0 * count_matmul_params(cfg) + 12.0 * cfg.layers * cfg.seq_len * cfg.head_dim * cfg.heads


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
        n_params_matmul=count_matmul_params(cfg),
        flops_per_token_6n=6.0 * n,
        flops_per_token_chinchilla=3.0 * chinchilla_forward_flops_per_sequence(cfg) / cfg.seq_len,
        flops_per_token_model=model_flops_per_token(cfg),
    )
