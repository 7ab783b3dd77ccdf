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

Weights-only memory (serving, or a checkpoint), WEIGHT_BYTES_PER_PARAM: fp32 4, bf16 2, int8 1,
int4 0.5 bytes per parameter (quantisation scales and zero points not included).

KV cache for serving, per token of context (`kv_cache_bytes_per_token`):
    2 (K and V) · layers · kv_heads · head_dim · bytes per value
with kv_heads = heads for multi-head attention and fewer for grouped-query attention (GQA,
Ainslie et al. 2023: kv_heads groups of query heads share one K and V head).

Grouped-query attention in the counts: the Q and output projections are d × (heads·head_dim),
K and V are d × (kv_heads·head_dim) each; `kv_heads` defaults to the config's `kv_heads` when
it has one, else to `heads` (plain multi-head attention, what `transformer.py` builds).
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
# precision -> bytes per stored value, for weights only and for KV-cache entries
WEIGHT_BYTES_PER_PARAM: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def weights_memory(n_params: float) -> dict[str, float]:
    """Bytes to hold n_params weights in each precision of WEIGHT_BYTES_PER_PARAM."""
    return {k: v * float(n_params) for k, v in WEIGHT_BYTES_PER_PARAM.items()}


def training_memory(n_params: float) -> dict[str, float]:
    """Bytes of training state (weights, grads, AdamW moments, master copy) per precision policy."""
    return {k: v * float(n_params) for k, v in MEMORY_BYTES_PER_PARAM.items()}


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int) -> dict[str, float]:
    """KV-cache bytes per token of context, per precision: 2 · layers · kv_heads · head_dim · bytes."""
    return {k: 2.0 * layers * kv_heads * head_dim * v for k, v in WEIGHT_BYTES_PER_PARAM.items()}


def memory_report(n_params: float) -> dict:
    """Weights-only and training-state memory of a model of n_params parameters, with conventions."""
    return {"weights_bytes": weights_memory(n_params),
            "weights_convention": "weights only: " + ", ".join(f"{k} {v:g}" for k, v in
                                                               WEIGHT_BYTES_PER_PARAM.items())
                                  + " B/param (no quantisation scales, no activations)",
            "training_state_bytes": training_memory(n_params),
            "training_conventions": {k: memory_convention(k) for k in TRAINING_BYTES_PER_PARAM}}


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
    kv_heads: int
    head_dim: int
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
        return training_memory(self.n_params)

    def kv_cache_bytes_per_token(self) -> dict[str, float]:
        return kv_cache_bytes_per_token(self.layers, self.kv_heads, self.head_dim)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["memory_bytes_per_param"] = dict(MEMORY_BYTES_PER_PARAM)
        out["training_memory_bytes"] = self.memory_bytes()
        out["weights_memory_bytes"] = weights_memory(self.n_params)
        out["kv_cache_bytes_per_token"] = self.kv_cache_bytes_per_token()
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


def kv_heads_of(cfg: ModelConfig, kv_heads: int | None = None) -> int:
    """K/V heads: the argument, else the config's `kv_heads` if it has one, else `heads` (MHA)."""
    return int(kv_heads or getattr(cfg, "kv_heads", None) or cfg.heads)


def attention_params(cfg: ModelConfig, kv_heads: int | None = None) -> int:
    """Q, K, V and output matrices of one layer: Q and out d × heads·head_dim, K and V d × kv_heads·head_dim."""
    d, hd = cfg.d_model, cfg.head_dim
    return 2 * d * cfg.heads * hd + 2 * d * kv_heads_of(cfg, kv_heads) * hd


def count_params(cfg: ModelConfig, kv_heads: int | None = None) -> tuple[int, int]:
    """(n_params, n_params_embedding) of `Transformer(cfg)` (with `kv_heads` K/V heads, GQA)."""
    d, V, f = cfg.d_model, cfg.vocab_size, cfg.d_ffw
    per_layer = 2 * d + attention_params(cfg, kv_heads) + mlp_matrices(cfg) * d * f  # two norms, attention, MLP
    embedding = V * d + (0 if cfg.tie_embeddings else d * V)
    return embedding + cfg.layers * per_layer + d, embedding  # + final norm


def count_matmul_params(cfg: ModelConfig, kv_heads: int | None = None) -> int:
    """Parameters that take part in matrix multiplies: the layers' matrices + the output head."""
    d, V, f = cfg.d_model, cfg.vocab_size, cfg.d_ffw
    return cfg.layers * (attention_params(cfg, kv_heads) + mlp_matrices(cfg) * d * f) + d * V


def model_flops_per_token(cfg: ModelConfig, kv_heads: int | None = None) -> float:
    """PaLM App. B training FLOPs per token: 6 · n_params_matmul + 12 · L · T · d (no causal halving)."""
    return 6.0 * count_matmul_params(cfg, kv_heads) + 12.0 * cfg.layers * cfg.seq_len * cfg.head_dim * cfg.heads


def chinchilla_forward_flops_per_sequence(cfg: ModelConfig, kv_heads: int | None = None) -> float:
    """App. F forward FLOPs; with GQA the QKV projection is 2·s·d·(k·h + 2·k·kv_heads) (App. F's
    2·3·s·d·(k·h) when kv_heads = h)."""
    s, d, V, f, h = cfg.seq_len, cfg.d_model, cfg.vocab_size, cfg.d_ffw, cfg.heads
    kh = cfg.head_dim * h
    qkv = 2 * s * d * (kh + 2 * cfg.head_dim * kv_heads_of(cfg, kv_heads))
    attention = qkv + 2 * s * s * kh + 3 * h * s * s + 2 * s * s * kh + 2 * s * kh * d
    dense = 2 * s * mlp_matrices(cfg) * d * f
    return 2 * s * V * d + cfg.layers * (attention + dense) + 2 * s * d * V


def count_model(cfg: ModelConfig, kv_heads: int | None = None) -> ModelCounts:
    """Every count of one shape; `kv_heads` < heads counts grouped-query attention."""
    if cfg.vocab_size is None:
        raise ValueError("vocab_size must be set to count parameters")
    kv = kv_heads_of(cfg, kv_heads)
    if not 1 <= kv <= cfg.heads or cfg.heads % kv:
        raise ValueError(f"kv_heads = {kv} must divide heads = {cfg.heads}")
    n, n_emb = count_params(cfg, kv)
    return ModelCounts(
        layers=cfg.layers, d_model=cfg.d_model, heads=cfg.heads, kv_heads=kv, head_dim=cfg.head_dim, ffw=cfg.d_ffw,
        vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
        n_params=n, n_params_embedding=n_emb, n_params_nonembedding=n - n_emb,
        n_params_matmul=count_matmul_params(cfg, kv),
        flops_per_token_6n=6.0 * n,
        flops_per_token_chinchilla=3.0 * chinchilla_forward_flops_per_sequence(cfg, kv) / cfg.seq_len,
        flops_per_token_model=model_flops_per_token(cfg, kv),
    )
