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
PUBLISHED_NAMES = ("chinchilla", "chinchilla-approach1", "chinchilla-approach1-line", "chinchilla-approach2",
                   "chinchilla-approach3",
                   "chinchilla-rounded", "epoch-2024", "kaplan-2020", "muennighoff-2023", "deepseek-2024")


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
    p.add_argument("--solver", choices=("varpro", "lbfgs"), default=None,
                   help="Approach 3 solver: varpro = variable projection over an (alpha, beta) grid, polished in all "
                        "five parameters, with the objective's profile (default); lbfgs = Hoffmann's multi-start "
                        "L-BFGS (--grid, --backend, --tolerances apply to it; --tolerances scipy selects it)")
    p.add_argument("--tolerances", choices=("tight", "scipy"), default="tight",
                   help="Approach 3 L-BFGS stopping rules (default tight; scipy = scipy's defaults, lbfgs solver)")
    p.add_argument("--grid", choices=("full", "small"), default="full",
                   help="Approach 3 lbfgs start grid: full = Hoffmann's 4,500 starts; small = 243 (quick look)")
    p.add_argument("--backend", choices=("jax", "scipy"), default="jax",
                   help="Approach 3 lbfgs backend: vectorised jax L-BFGS (default) or a scipy L-BFGS-B loop")
    p.add_argument("--approach1-source", choices=("endpoints", "curves"), default="endpoints",
                   help="Approach 1 envelope from finished runs' end points (default) or from training curves "
                        "(trials/*/metrics.jsonl; not for branch designs)")
    p.add_argument("--holdout", default=None, metavar="SPEC",
                   help="fit on the runs outside SPEC, predict those inside: largest-budget | largest-n | "
                        "largest-tokens | a condition on n_params, tokens, flops, budget, loss, e.g. "
                        "'n_params>=5e8' or 'tokens/n_params>100'; result under `extrapolation` in fit.json")
    p.add_argument("--trunk-offsets", action="store_true",
                   help="a sweep directory only: fit the points corrected by one offset per trunk, from a "
                        "Multi-Power Law fitted to every logged step of each size's trunks and branches "
                        "(as `scaling curves offsets`); written to DIR/fit-trunk-offsets.json unless --out")
    p.add_argument("--out", default=None, help="write the fit JSON here (default DIR/fit.json for a sweep)")
    p.add_argument("--no-write", action="store_true", help="do not write fit.json")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=fit_handler)

    o = subparsers.add_parser(
        "optimal", help="compute-optimal N, D and loss for a FLOP budget under a law",
        description="Compute-optimal allocation for a published law (chinchilla-approach3 = chinchilla, "
                    "chinchilla-approach1/2, chinchilla-rounded, epoch-2024, kaplan-2020, muennighoff-2023, "
                    "deepseek-2024: C = 6*N*D, the 6n convention) or a fit.json (in the FLOP convention of the sweep it was "
                    "fitted on, stated in the output); optional training-cost estimate.")
    o.add_argument("--flops", type=_positive_float, nargs="+", required=True, metavar="C",
                   help="training compute budget(s) in FLOPs, e.g. 5.76e23")
    o.add_argument("--law", default="chinchilla",
                   help="a published law (" + ", ".join(PUBLISHED_NAMES) + ") or a path to fit.json (or a sweep dir)")
    o.add_argument("--approach", choices=("approach1", "approach2", "approach3"), default=None,
                   help="which fit in a fit.json (default: approach3, else 2, else 1)")
    o.add_argument("--inference-tokens", type=float, default=None, metavar="T",
                   help="tokens the model will serve: also the (N, D) reaching the compute-optimal loss with the "
                        "least training + inference FLOPs (2*N per token; Sardana et al. 2024)")
    o.add_argument("--unique-tokens", type=float, default=None, metavar="U",
                   help="unique training tokens available: also the best (N, D) when data beyond U is repeated "
                        "(Muennighoff et al. 2023 effective data, R_D* = 15.4) and the epochs it implies")
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

    if r.skipped:
        print(f"{name}: skipped: {r.reason}")
        return
    bs = r.bootstrap
    for line in METHODS[name].describe(r):
        print(line)
    if bs is not None and bs.n_resamples:
        print(f"  ({bs.level:.0%} bootstrap intervals, {bs.n_resamples} resamples; "
              f"{bs.resampling or 'runs with replacement'})")
    for w in r.warnings:
        print(f"  warning: {w}")


def fit_handler(args) -> int:
    from research.fit.core import fit_records  # lazy: --help builds every parser; fit modules ~0.15 s
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
        if out_path.exists() and not out_path.is_file():
            raise UserError(f"--out {out_path} is a device, pipe or socket, not a regular file; pass a file name")
        blocker = next((p for p in out_path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise UserError(f"--out {out_path}: {blocker} is a file, not a directory")
    corrected, offsets = _trunk_offsets(args) if args.trunk_offsets else (None, None)
    table = load_table(args.path, args.n_col, args.d_col, args.loss_col, args.flops_col, frame=corrected)
    if args.holdout is not None:
        from research.fit.holdout_cli import holdout_command  # lazy: as above

        return holdout_command(args, table)
    methods = list(METHODS) if args.method == "all" else [args.method]
    kaplan_table, kaplan_n = None, "total" if args.n_col is None else f"column {args.n_col}"
    if "kaplan" in methods and args.n_col is None and args.kaplan_n == "nonembedding":
        try:
            kaplan_table = load_table(args.path, None, args.d_col, args.loss_col, args.flops_col,
                                      n_kind="nonembedding", quiet=True, frame=corrected)
            kaplan_n = "nonembedding"
        except UserError:
            kaplan_n = "total (table has no n_params_nonembedding column)"
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    options = FitOptions(bootstrap=args.bootstrap, seed=args.seed, grid=args.grid, reduction=args.reduction,
                         backend=args.backend, tol=args.tolerances, level=args.level,
                         budgets=tuple(args.budgets) if args.budgets else None, strict=args.method != "all",
                         kaplan_n=kaplan_n, approach1_source=args.approach1_source, solver=args.solver)
    result = fit_records(table, methods, options, kaplan_df=kaplan_table, log=log)
    if all(result.method(m).skipped for m in methods):  # nothing fitted: say so, and leave fit.json as it is
        reasons = "; ".join(f"{m}: {result.method(m).reason}" for m in methods)
        raise UserError(f"no fit possible on {table.drop_message().replace('using', 'the', 1)} ({reasons})")
    if offsets is not None:
        result.extra["trunk_offsets"] = offsets  # a block of its own, kept as written
    out = output_path(args.out or (str(Path(args.path) / "fit-trunk-offsets.json") if args.trunk_offsets else None),
                      args.no_write, table.sweep_dir)
    if out is not None:
        write_fit(out, result, merge=True)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        print(dumps((result.method(methods[0]) if len(methods) == 1 else result).to_json()))
    else:
        from research.fit.agreement import agreement_line, noise_line  # lazy: as above

        for m in methods:
            _print_fit(m, result.method(m))
        for line in (agreement_line(result), noise_line(result)):
            if line:
                print(line)
        from research.fit.sensitivity import sensitivity_lines  # lazy: as above

        for line in sensitivity_lines(result.sensitivity):
            if not line.lstrip().startswith("warning:"):  # its warning is among those printed below
                print(line)
        for w in result.warnings or []:
            print(f"warning: {w}")
    return 0


def _trunk_offsets(args) -> tuple:
    """(results frame with trunk-offset-corrected losses, a record of the offsets) of the sweep
    directory `args.path`: `research.curves.offsets` fits one curve law per size."""
    from research.curves.offsets import corrected_results  # lazy: pandas, scipy and jax (the schedules)

    if not (Path(args.path).is_dir() and (Path(args.path) / "trials").is_dir()):
        raise UserError(f"--trunk-offsets needs a sweep directory (results.csv and trials/), not {args.path}; "
                        "for a table, correct it first with `scaling curves offsets SWEEP --out TABLE`")
    if args.loss_col not in (None, "final_eval_loss", "eval_bits_per_byte"):
        raise UserError(f"--trunk-offsets corrects final_eval_loss and eval_bits_per_byte, not --loss-col "
                        f"{args.loss_col}")
    frame, sizes = corrected_results(args.path)
    record = {"law": "multipower", "loss": "final_eval_loss divided by exp(offset of its trunk)",
              "sizes": [{"n_params": s.n_params, "offsets": s.offsets, "n_points": s.n_points} for s in sizes]}
    shift = frame["trunk_offset"].dropna().abs()
    print(f"trunk offsets: {len(shift)} rows corrected, median |offset| {100 * shift.median():.2f}%, "
          f"largest {100 * shift.max():.2f}%", file=sys.stderr)
    return frame, record


def _print_memory(mem: dict) -> None:
    w, t = mem["weights_bytes"], mem["training_state_bytes"]
    print("  weights only     " + ", ".join(f"{k} {v / 1e9:.4g} GB" for k, v in w.items()))
    print("  training state   " + ", ".join(f"{k} {v / 1e9:.4g} GB" for k, v in t.items())
          + " (weights, grads, AdamW m and v, master copy; no activations)")
    print("  KV cache         needs the shape (layers, kv heads, head dim): `scaling size ... --kv-heads K`")


def _print_plans(row: dict) -> None:
    inf = row.get("inference")
    if inf:
        base = inf["chinchilla_optimal"]
        print(f"  with {inf['inference_tokens']:.4g} inference tokens (Sardana et al. 2024; same loss "
              f"{inf['target_loss']:.4g}):")
        print(f"    N {inf['n_params']:.4g}, D {inf['tokens']:.4g}, tokens/param {inf['tokens_per_param']:.3g}")
        print(f"    FLOPs: training {inf['training_flops']:.4g} + inference {inf['inference_flops']:.4g} = "
              f"{inf['total_flops']:.4g}; compute-optimal model: {base['total_flops']:.4g}; saved "
              f"{inf['flops_saved']:.4g} ({inf['flops_saved_fraction']:.1%})")
    dc = row.get("data_constrained")
    if dc:
        un = dc["unconstrained"]
        print(f"  with {dc['unique_tokens']:.4g} unique tokens (Muennighoff et al. 2023, R_D* 15.4):")
        print(f"    N {dc['n_params']:.4g}, D {dc['tokens']:.4g} ({dc['epochs']:.3g} epochs; effective "
              f"{dc['effective_tokens']:.4g}), tokens/param {dc['tokens_per_param']:.3g}, loss {dc['loss']:.4g}")
        print(f"    unconstrained optimum needs {un['epochs']:.3g} epochs: loss {un['loss']:.4g} with fresh data, "
              f"{un['loss_with_repeats']:.4g} with repeats")
        for n in dc["notes"]:
            print(f"    note: {n}")


def optimal_handler(args) -> int:
    from research.fit.hardware import training_cost  # lazy: as above
    from research.fit.law_warnings import law_own_warnings, range_warnings  # lazy: as above
    from research.fit.laws import load_law, optimum  # lazy: as above
    from research.fit.planning import data_constrained, inference_optimal  # lazy: as above
    from research.model.accounting import memory_report  # lazy: as above

    law = load_law(args.law, args.approach)
    own = law_own_warnings(getattr(law, "E", None), getattr(law, "loss", None), law.data_range, law.fit_block,
                           law.warnings)
    rows = []
    for c in args.flops:
        row = optimum(law, c)
        row["law_source"] = law.source
        row["law_form"] = law.describe()
        notes = law.notes_at(c)
        if row["loss"] is None and not notes:
            notes.append("loss unavailable for this law")
        row["notes"] = notes
        row["warnings"] = list(law.warnings) + own + range_warnings(
            law.data_range, flops=c, n=row["n_params"], d=row["tokens"])
        row["memory"] = memory_report(row["n_params"])
        if args.inference_tokens is not None:
            row["inference"] = inference_optimal(law, c, args.inference_tokens)
            row["warnings"] += range_warnings(law.data_range, n=row["inference"]["n_params"],
                                              d=row["inference"]["tokens"], label="inference plan: ")
        if args.unique_tokens is not None:
            row["data_constrained"] = data_constrained(law, c, args.unique_tokens)
            row["warnings"] += range_warnings(law.data_range, n=row["data_constrained"]["n_params"],
                                              d=row["data_constrained"]["tokens"], label="data-constrained plan: ")
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
        _print_memory(row["memory"])
        _print_plans(row)
        for w in row["warnings"]:
            print(f"  warning: {w}")
        t = row.get("training")
        if t:
            print(f"  training state   {t['train_state_bytes'] / 1e9:.4g} GB ({t['memory_convention']})")
            if "min_devices_for_state" in t:
                print(f"  devices to hold  >= {t['min_devices_for_state']} x {t['device']} "
                      f"({t['device_memory_bytes'] / 1e9:.0f} GB each)")
            print(f"  device-hours     {t['device_hours']:.4g} at {t['peak_flops'] / 1e12:.4g} TFLOP/s dense "
                  f"peak x MFU {t['mfu']:g} ({t['device_days']:.4g} device-days)")
    return 0
