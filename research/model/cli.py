"""`scaling size`: parameter counts, FLOPs per token and training memory of one shape."""

from __future__ import annotations

import json
import math

from research.config import ModelConfig, RunConfig, TrainConfig, validate
from research.errors import UserError
from research.model.accounting import WEIGHT_BYTES_PER_PARAM, count_model


def register(sub) -> None:
    p = sub.add_parser("size", help="count parameters, FLOPs per token and training memory of a model shape",
                       description="Count parameters (with and without embeddings), training FLOPs per token "
                                   "under the '6n' and 'chinchilla' (Hoffmann et al. 2022 App. F) conventions, "
                                   "training memory per precision policy, weights-only memory (fp32, bf16, int8, "
                                   "int4) and the KV cache per token of context for one transformer shape.")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--d-model", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, default=None,
                   help="K/V heads for grouped-query attention (default --heads: multi-head attention); "
                        "counted only: the harness's model trains multi-head attention")
    p.add_argument("--ffw", type=int, default=None, help="MLP hidden width (default 4 * d_model)")
    p.add_argument("--vocab", type=int, required=True, help="vocabulary size")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--mlp", choices=["gelu", "swiglu"], default="gelu")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--tokens", type=float, default=None, help="also report total training FLOPs for D tokens")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.vocab < 1:
        raise UserError(f"--vocab must be positive, got {args.vocab}")
    if args.tokens is not None and not (math.isfinite(args.tokens) and args.tokens > 0):
        raise UserError(f"--tokens must be a positive finite number of training tokens, got {args.tokens}")
    cfg = ModelConfig(layers=args.layers, d_model=args.d_model, heads=args.heads, ffw=args.ffw,
                      vocab_size=args.vocab, seq_len=args.seq_len, mlp=args.mlp,
                      tie_embeddings=args.tie_embeddings)
    validate(RunConfig(model=cfg, train=TrainConfig(steps=1)))
    if args.kv_heads is not None and not (1 <= args.kv_heads <= args.heads and args.heads % args.kv_heads == 0):
        raise UserError(f"--kv-heads {args.kv_heads} must divide --heads {args.heads} (e.g. 8 for 64 heads)")
    counts = count_model(cfg, args.kv_heads)
    out = counts.to_dict()
    if args.tokens:
        out["tokens"] = args.tokens
        out["flops_6n"] = counts.training_flops(args.tokens, "6n")
        out["flops_chinchilla"] = counts.training_flops(args.tokens, "chinchilla")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"shape            layers {cfg.layers}, d_model {cfg.d_model}, heads {cfg.heads}, ffw {cfg.d_ffw}, "
          f"kv_heads {counts.kv_heads}, vocab {cfg.vocab_size}, seq_len {cfg.seq_len}, mlp {cfg.mlp}, "
          f"{'tied' if cfg.tie_embeddings else 'untied'} embeddings")
    print(f"n_params         {counts.n_params:>16,}  (all, embeddings included)")
    print(f"  embedding      {counts.n_params_embedding:>16,}")
    print(f"  non-embedding  {counts.n_params_nonembedding:>16,}")
    print(f"FLOPs/token      {counts.flops_per_token_6n:>16.4e}  [6n: 6 x n_params]")
    print(f"FLOPs/token      {counts.flops_per_token_chinchilla:>16.4e}  [chinchilla: Hoffmann et al. 2022 App. F]"
          f"  ratio {out['flops_per_token_ratio_chinchilla_to_6n']:.3f}")
    print(f"FLOPs/token      {counts.flops_per_token_model:>16.4e}  [model, for MFU: 6 x {counts.n_params_matmul:,} "
          "matmul params + 12 L T d; PaLM App. B, no causal halving]")
    for name, nbytes in counts.memory_bytes().items():
        print(f"train memory     {nbytes / 2**30:>16.3f} GiB  [{name}: {counts.to_dict()['memory_bytes_per_param'][name]}"
              f" bytes/param: weights+grads+AdamW, no activations]")
    for name, nbytes in out["weights_memory_bytes"].items():
        print(f"weights only     {nbytes / 2**30:>16.3f} GiB  [{name}: {WEIGHT_BYTES_PER_PARAM[name]:g} bytes/param]")
    kv = out["kv_cache_bytes_per_token"]
    print(f"KV cache/token   {kv['bf16'] / 2**20:>16.4f} MiB  [bf16: 2 x {cfg.layers} layers x {counts.kv_heads} kv_heads "
          f"x {counts.head_dim} head_dim x 2 B]; x seq_len {cfg.seq_len}: {kv['bf16'] * cfg.seq_len / 2**30:.3f} GiB "
          "per sequence")
    if args.tokens:
        print(f"training FLOPs   {out['flops_6n']:>16.4e}  [6n]   {out['flops_chinchilla']:.4e}  [chinchilla]"
              f"  for D = {args.tokens:.4g} tokens")
    return 0
