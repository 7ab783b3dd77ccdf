"""`scaling fit` and `scaling optimal`.

Heavy imports (jax, pandas, scipy) happen inside the handlers so `--help` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from research.errors import UserError



class _MethodChoices:
    """--method's choices, "all" and every registered fitting method, read from the registry when
    argparse first needs them (to check a value or format `scaling fit --help`)."""

    def _names(self) -> list[str]:
        from research.fit.methods import METHODS  # lazy: fit modules ~0.15 s, off `scaling --help`

        return ["all", *METHODS]

    def __iter__(self):
        return iter(self._names())

    def __contains__(self, name) -> bool:
        return name in self._names()


METHOD_CHOICES = _MethodChoices()


def _floats(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1e20,1e21, got {text!r}") from None
    if not vals or any(not v > 0 for v in vals):
        raise argparse.ArgumentTypeError(f"budgets must be positive numbers, got {text!r}")
    return vals


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number like 5.76e23, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="fit scaling laws (Chinchilla Approaches 1-3, Kaplan) to a results table or sweep dir",
        description="Fit scaling laws to a results table (CSV/parquet) or a sweep directory. "
                    "Writes DIR/fit.json for a sweep directory (or --out FILE).")
    p.add_argument("path", help="results table (CSV/parquet) or sweep directory holding results.csv")
    p.add_argument("--method", default="all", choices=METHOD_CHOICES,
                   help="which fit (default: every approach the data supports)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap resamples (runs drawn with replacement) for intervals (default 0)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--budgets", type=_floats, default=None, metavar="C1,C2",
                   help="FLOP budgets at which to report N_opt/D_opt intervals")
    p.add_argument("--n-col", default=None, help="column with parameter counts (default n_params)")
    p.add_argument("--d-col", default=None, help="column with training tokens (default tokens)")
    p.add_argument("--loss-col", default=None,
                   help="column with loss in nats/token (default final_eval_loss, else final_train_loss)")
    p.add_argument("--flops-col", default=None,
                   help="column with each row's FLOP budget (default: the sweep's `budget` column, else 6*N*D)")
    p.add_argument("--kaplan-n", choices=("nonembedding", "total"), default="nonembedding",
                   help="N for the Kaplan fits when --n-col is not given (default nonembedding, as Kaplan)")
    p.add_argument("--reduction", choices=("sum", "mean"), default="sum",
                   help="Approach 3 Huber reduction over runs (default sum; mean reproduces the published bug)")
    p.add_argument("--tolerances", choices=("tight", "scipy"), default="tight",
                   help="Approach 3 L-BFGS stopping rules (default tight; scipy = scipy's defaults)")
    p.add_argument("--grid", choices=("full", "small"), default="full",
                   help="Approach 3 start grid: full = Hoffmann's 4,500 starts; small = 243 (quick look)")
    p.add_argument("--backend", choices=("jax", "scipy"), default="jax",
                   help="Approach 3 solver: vectorised jax L-BFGS (default) or a scipy L-BFGS-B loop")
    p.add_argument("--approach1-source", choices=("endpoints", "curves"), default="endpoints",
                   help="Approach 1 envelope from finished runs' end points (default) or from training curves "
                        "(trials/*/metrics.jsonl; not for branch designs)")
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="fit on the runs outside SPEC, predict those inside: largest-budget | largest-n | "
                        "largest-tokens | a condition on n_params, tokens, flops, budget, loss, e.g. "
                        "'n_params>=5e8' or 'tokens/n_params>100'; result under `extrapolation` in fit.json")
    p.add_argument("--out", default=None, help="write the fit JSON here (default DIR/fit.json for a sweep)")
    p.add_argument("--no-write", action="store_true", help="do not write fit.json")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=fit_handler)

    o = subparsers.add_parser(
        "optimal", help="compute-optimal N, D and loss for a FLOP budget under a law",
        description="Compute-optimal allocation for a published law (chinchilla, epoch-2024, kaplan-2020: "
                    "C = 6*N*D, the 6n convention) or a fit.json (in the FLOP convention of the sweep it was "
                    "fitted on, stated in the output); optional training-cost estimate.")
    o.add_argument("--flops", type=_positive_float, nargs="+", required=True, metavar="C",
                   help="training compute budget(s) in FLOPs, e.g. 5.76e23")
    o.add_argument("--law", default="chinchilla",
                   help="chinchilla | epoch-2024 | kaplan-2020 | path to fit.json (or a sweep dir)")
    o.add_argument("--approach", choices=("approach1", "approach2", "approach3"), default=None,
                   help="which fit in a fit.json (default: approach3, else 2, else 1)")
    o.add_argument("--gpu", default=None, help="h100 | h200 | a100 | l4 | b200 | tpu-v5p | ... (research/train/devices.py): "
                   "estimate memory and device-hours")
    o.add_argument("--peak-flops", type=_positive_float, default=None,
                   help="device dense peak FLOP/s (overrides --gpu's)")
    o.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.set_defaults(func=optimal_handler)


def _fmt(x, unit=""):
    if x is None:
        return "n/a"
    return f"{x:.4g}{unit}"


def _print_fit(name, r):
    from research.fit.methods import METHODS  # lazy: as in fit_handler

    if "skipped" in r:
        print(f"{name}: skipped: {r['skipped']}")
        return
    bs = r.get("bootstrap", {})
    for line in METHODS[name].describe(r):
        print(line)
    if bs.get("n_resamples"):
        print(f"  ({bs['level']:.0%} bootstrap intervals, {bs['n_resamples']} resamples; "
              f"{bs.get('resampling', 'runs with replacement')})")
    for w in r.get("warnings", []):
        print(f"  warning: {w}")


def fit_handler(args) -> int:
    from research.fit.core import run_fits  # lazy: --help builds every parser; fit modules ~0.15 s
    from research.fit.data import load_table  # lazy: as above
    from research.fit.method import FitOptions  # lazy: as above
    from research.fit.methods import METHODS  # lazy: as above
    from research.fit.record import dumps, output_path, write_fit  # lazy: as above

    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    if not 0 < args.level < 1:
        raise UserError(f"--level must be between 0 and 1, got {args.level}")
    if args.out and not args.no_write:
        out_path = Path(args.out)
        if out_path.is_dir():
            raise UserError(f"--out {out_path} is a directory; pass a file name like {out_path / 'fit.json'}")
        blocker = next((p for p in out_path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise UserError(f"--out {out_path}: {blocker} is a file, not a directory")
    table = load_table(args.path, args.n_col, args.d_col, args.loss_col, args.flops_col)
    if args.holdout is not None:
        from research.fit.holdout_cli import holdout_command  # lazy: as above

        return holdout_command(args, table)
    methods = list(METHODS) if args.method == "all" else [args.method]
    kaplan_table, kaplan_n = None, "total" if args.n_col is None else f"column {args.n_col}"
    if "kaplan" in methods and args.n_col is None and args.kaplan_n == "nonembedding":
        try:
            kaplan_table = load_table(args.path, None, args.d_col, args.loss_col, args.flops_col,
                                      n_kind="nonembedding", quiet=True)
            kaplan_n = "nonembedding"
        except UserError:
            kaplan_n = "total (table has no n_params_nonembedding column)"
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    options = FitOptions(bootstrap=args.bootstrap, seed=args.seed, grid=args.grid, reduction=args.reduction,
                         backend=args.backend, tol=args.tolerances, level=args.level,
                         budgets=tuple(args.budgets) if args.budgets else None, strict=args.method != "all",
                         kaplan_n=kaplan_n, approach1_source=args.approach1_source)
    result = run_fits(table, methods, options, kaplan_df=kaplan_table, log=log)
    if all("skipped" in result[m] for m in methods):  # nothing fitted: say so, and leave fit.json as it is
        reasons = "; ".join(f"{m}: {result[m]['skipped']}" for m in methods)
        raise UserError(f"no fit possible on {table.drop_message().replace('using', 'the', 1)} ({reasons})")
    out = output_path(args.out, args.no_write, table.sweep_dir)
    if out is not None:
        write_fit(out, result, merge=True)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print(dumps(result[methods[0]] if len(methods) == 1 else result))
    else:
        from research.fit.agreement import agreement_line, noise_line  # lazy: as above

        for m in methods:
            _print_fit(m, result[m])
        for line in (agreement_line(result), noise_line(result)):
            if line:
                print(line)
        for w in result.get("warnings", []):
            print(f"warning: {w}")
    return 0


def optimal_handler(args) -> int:
    from research.fit.hardware import training_cost  # lazy: as above
    from research.fit.laws import load_law, optimum  # lazy: as above

    law = load_law(args.law, args.approach)
    rows = []
    for c in args.flops:
        row = optimum(law, c)
        row["law_source"] = law.source
        row["law_form"] = law.describe()
        notes = list(getattr(law, "notes", []))
        if row["loss"] is None and not notes:
            notes.append("loss unavailable for this law")
        row["notes"] = notes
        if args.gpu or args.peak_flops:
            row["training"] = training_cost(c, row["n_params"], args.gpu, args.peak_flops, args.mfu)
        rows.append(row)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else {"rows": rows}))
        return 0
    print(f"law: {law.name} - {law.source}")
    print(f"     {law.describe()}")
    print(f"convention: {rows[0]['convention_form']}" + (" (--flops are read in this convention)"
                                                        if rows[0]["convention"] != "6n" else ""))
    for row in rows:
        print(f"C = {row['flops']:.4g} FLOPs")
        print(f"  N_opt            {row['n_params']:.4g} parameters")
        print(f"  D_opt            {row['tokens']:.4g} tokens")
        print(f"  tokens/param     {row['tokens_per_param']:.3g}")
        print(f"  predicted loss   {_fmt(row['loss'])}" + (" nats/token" if row["loss"] is not None else ""))
        for n in row["notes"]:
            print(f"  note: {n}")
        t = row.get("training")
        if t:
            print(f"  training state   {t['train_state_bytes'] / 1e9:.4g} GB ({t['memory_convention']})")
            if "min_devices_for_state" in t:
                print(f"  devices to hold  >= {t['min_devices_for_state']} x {t['device']} "
                      f"({t['device_memory_bytes'] / 1e9:.0f} GB each)")
            print(f"  device-hours     {t['device_hours']:.4g} at {t['peak_flops'] / 1e12:.4g} TFLOP/s dense "
                  f"peak x MFU {t['mfu']:g} ({t['device_days']:.4g} device-days)")
    return 0
