"""`scaling predict`: the loss a law predicts at given (N, D) pairs, with prediction intervals."""

from __future__ import annotations

from pathlib import Path

from research.errors import UserError

APPROACH_CHOICES = ("approach3", "kaplan", "approach1", "approach2")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predicted loss L(N, D) of (N, D) pairs under a law, with prediction intervals",
        description="Predicted loss (nats/token) of models with N parameters trained on D tokens, under a "
                    "published law (chinchilla = chinchilla-approach3, chinchilla-rounded, epoch-2024, muennighoff-2023, "
                    "kaplan-2020: Kaplan's joint L(N, D), non-embedding N) "
                    "or a fit.json (Approach 3, or Kaplan's joint law). Approaches 1 and 2 give only the "
                    "compute-optimal allocation, not L(N, D), so they cannot predict. A fit with a bootstrap "
                    "gives a prediction interval for a new run: parameter uncertainty plus run-to-run noise.")
    p.add_argument("--law", default="chinchilla",
                   help="chinchilla | chinchilla-rounded | epoch-2024 | muennighoff-2023 | kaplan-2020 | path to fit.json (or a sweep dir, or a JSON "
                        "file with E, A, B, alpha, beta)")
    p.add_argument("--approach", choices=APPROACH_CHOICES, default=None,
                   help="which law in a fit.json (default: approach3, else kaplan)")
    p.add_argument("--n-params", nargs="+", default=None, metavar="N",
                   help="parameter counts, one per pair (a single value pairs with every --tokens value)")
    p.add_argument("--tokens", nargs="+", default=None, metavar="D",
                   help="training tokens, one per pair (a single value pairs with every --n-params value)")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="read pairs from a CSV/parquet with columns n_params and tokens (or N and D)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the interval's Monte Carlo draws")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=handler)


def _numbers(values, flag: str) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise UserError(f"{flag} expects numbers like 1e9, got {v!r}") from None
    return out


def _pairs_from_csv(path: str):
    import pandas as pd  # lazy: pandas (~1 s), off --help

    from research.fit.data import read_frame  # lazy: --help builds every parser; fit modules ~0.15 s

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--csv {path}: no such file; pass a CSV with columns n_params and tokens")
    frame = read_frame(p)
    for n_col, d_col in (("n_params", "tokens"), ("N", "D")):
        if n_col in frame.columns and d_col in frame.columns:
            break
    else:
        raise UserError(f"--csv {path} needs columns n_params and tokens (or N and D); it has "
                        f"{', '.join(map(str, frame.columns[:12]))}")
    N = pd.to_numeric(frame[n_col], errors="coerce").to_numpy(float)
    D = pd.to_numeric(frame[d_col], errors="coerce").to_numpy(float)
    return N, D


def handler(args) -> int:
    from research.fit.predict import check_pairs, load_predictor, predict  # lazy: as in _pairs_from_csv
    from research.fit.record import dumps  # lazy: as in _pairs_from_csv

    if args.csv and (args.n_params or args.tokens):
        raise UserError("give pairs either with --n-params/--tokens or with --csv, not both")
    if args.csv:
        N, D = _pairs_from_csv(args.csv)
    elif args.n_params and args.tokens:
        N, D = _numbers(args.n_params, "--n-params"), _numbers(args.tokens, "--tokens")
    else:
        raise UserError("need --n-params N and --tokens D (one value each per pair), or --csv FILE")
    N, D = check_pairs(N, D)
    pred = load_predictor(args.law, args.approach)
    out = predict(pred, N, D, level=args.level, seed=args.seed)
    if args.json:
        print(dumps(out))
        return 0
    print(f"law: {out['law']} - {out['source']}")
    print(f"     {out['form']}  ({', '.join(f'{k}={v:.4g}' for k, v in out['params'].items())})")
    print(f"     N counts {out['n_kind']} parameters; loss in nats/token")
    print(f"interval: {out['interval']['description']}")
    has_iv = out["rows"][0]["loss_low"] is not None
    head = f"{'n_params':>11} {'tokens':>11} {'tok/param':>9} {'loss':>8}"
    print(head + (f"  {out['interval']['level']:.0%} interval" if has_iv else ""))
    for r in out["rows"]:
        line = f"{r['n_params']:>11.4g} {r['tokens']:>11.4g} {r['tokens_per_param']:>9.3g} {r['loss']:>8.4f}"
        if has_iv:
            line += f"  [{r['loss_low']:.4f}, {r['loss_high']:.4f}]"
        print(line)
    for n in out["notes"]:
        print(f"note: {n}")
    for w in out["warnings"]:
        print(f"warning: {w}")
    return 0
