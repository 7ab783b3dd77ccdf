"""`scaling size`: parameter counts, FLOPs per token and training memory of one shape."""

from __future__ import annotations

import json
import math

from research.config import ModelConfig, RunConfig, TrainConfig, validate
from research.errors import UserError
from research.model.accounting import count_model


def register(sub) -> None:
    p = sub.add_parser("size", help="count parameters, FLOPs per token and training memory of a model shape",
                       description="Count parameters (with and without embeddings), training FLOPs per token "
                                   "under the '6n' and 'chinchilla' (Hoffmann et al. 2022 App. F) conventions, "
                                   "and training memory per precision for one transformer shape.")
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--d-model", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
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
    counts = count_model(cfg)
    out = counts.to_dict()
    if args.tokens:
        out["tokens"] = args.tokens
        out["flops_6n"] = counts.training_flops(args.tokens, "6n")
        out["flops_chinchilla"] = counts.training_flops(args.tokens, "chinchilla")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"shape            layers {cfg.layers}, d_model {cfg.d_model}, heads {cfg.heads}, ffw {cfg.d_ffw}, "
          f"vocab {cfg.vocab_size}, seq_len {cfg.seq_len}, mlp {cfg.mlp}, "
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
    if args.tokens:
        print(f"training FLOPs   {out['flops_6n']:>16.4e}  [6n]   {out['flops_chinchilla']:.4e}  [chinchilla]"
              f"  for D = {args.tokens:.4g} tokens")
    return 0
