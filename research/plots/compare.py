"""`scaling compare SWEEP_A SWEEP_B`: is recipe B worth it? The effective-compute multiplier with its interval,
and the figure (both loss frontiers with bands; the multiplier against compute). The numbers come from
research/fit/compare.py; the figure from research/plots/compare_figure.py. Heavy libraries are imported in
the handler, so `scaling --help` stays fast."""

from __future__ import annotations

import argparse
import math

from research.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="compare two sweeps: B's effective-compute multiplier over A, with intervals",
        description="Fit both sweeps (directories or results tables) with Approach 3 and report, at every budget of "
                    "either sweep and at --at: each one's compute-optimal loss, the multiplier (the compute A needs "
                    "to reach B's loss at C, over C; > 1: B is better) and where the two are equal, each with a "
                    "bootstrap interval resampling both sweeps by point and by seed. Refuses sweeps that differ in "
                    "FLOP convention, or in data/tokenizer/eval set unless --bpb.")
    p.add_argument("sweep_a", metavar="SWEEP_A", help="the baseline: sweep directory or results table (CSV/parquet)")
    p.add_argument("sweep_b", metavar="SWEEP_B", help="the change: sweep directory or results table")
    p.add_argument("--shared", default=None, metavar="PARAMS",
                   help="fit both jointly with these law parameters in common: E, or alpha,beta (any of E, A, B, "
                        "alpha, beta; default: separate fits)")
    p.add_argument("--at", type=_positive_floats, action="append", default=[], metavar="C",
                   help="also report at these budgets (FLOPs, comma-separated; repeatable)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N", help="resamples of each sweep (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--grid", choices=("full", "small"), default="full",
                   help="Approach 3 start grid (full = Hoffmann's 4,500 starts; small = 243, a quick look)")
    p.add_argument("--bpb", action="store_true",
                   help="compare bits per byte (eval_bits_per_byte) instead of nats/token: needed when the sweeps' "
                        "tokenizers or eval data differ")
    p.add_argument("--plot", default=None, metavar="FILE", help="write the figure here (.png, .svg or .pdf)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=handler)


def _positive_floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FLOP budgets like 1e12,3e12, got {text!r}") from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"budgets must be positive finite numbers, got {text!r}")
    return values


def handler(args) -> int:
    import sys
    from pathlib import Path

    from research.fit.compare import CompareOptions, fit_pair, parse_shared, summarize  # lazy: a command handler; --help builds every parser (fit ~0.15 s)
    from research.fit.record import dumps  # lazy: as above
    from research.plots.compare_figure import compare_figure  # lazy: matplotlib (1-3 s), off `scaling --help`

    plot = Path(args.plot) if args.plot else None
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--plot {plot}: name a .png, .svg or .pdf file")
    if plot is not None and plot.is_dir():
        raise UserError(f"--plot {plot} is a directory; name a file such as {plot / 'compare.png'}")
    opts = CompareOptions(shared=parse_shared(args.shared), bootstrap=args.bootstrap, seed=args.seed,
                          level=args.level, grid=args.grid, bpb=args.bpb,
                          at=tuple(c for group in args.at for c in group))
    fa, fb, prov, notes = fit_pair(args.sweep_a, args.sweep_b, opts, quiet=args.json)
    result = summarize(fa, fb, prov, notes, opts=opts)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        compare_figure(fa, fb, result, opts).savefig(plot, dpi=150)
        print(f"wrote {plot}", file=sys.stderr)
    if args.json:
        print(dumps(result))
    else:
        for line in report_lines(result):
            print(line)
    return 0


def _iv(block: dict, fmt: str) -> str:
    low, high = block.get("low"), block.get("high")
    if low is None and high is None:
        return ""
    shown = lambda v: "inf" if v is None or not math.isfinite(v) else format(v, fmt)  # noqa: E731
    return f" [{shown(low)}, {shown(high)}]"


def report_lines(r: dict) -> list[str]:
    """The comparison as text: one line per budget, then the crossover, warnings and notes."""
    a, b = r["sweeps"]["A"], r["sweeps"]["B"]
    how = f"joint fit sharing {', '.join(r['shared'])}" if r["shared"] else "separate fits"
    lines = [f"A = {a['name']} ({a['n_points']} runs), B = {b['name']} ({b['n_points']} runs): Approach 3, {how}; "
             f"loss in {r['loss_units']}, C in {r['flops_convention']} FLOPs",
             "multiplier = the compute A needs to reach B's compute-optimal loss at C, over C (> 1: B is better)"
             + (f"; {r['level']:.0%} bootstrap intervals, {r['bootstrap']['n_resamples']} resamples"
                if r["bootstrap"]["n_resamples"] else "")]
    lines.append(f"{'C':>10}  {'L*_A':>24}  {'L*_B':>24}  {'multiplier':>22}")
    for row in r["rows"]:
        m = row["multiplier"]
        verdict = ("B better" if m["value"] > 1 else "A better") if row["detectable"] else \
            ("no detectable difference" if row["detectable"] is False else "")
        text = (f"{row['flops']:>10.3g}  {row['loss_a']['value']:>7.4f}{_iv(row['loss_a'], '.4f'):<17}  "
                f"{row['loss_b']['value']:>7.4f}{_iv(row['loss_b'], '.4f'):<17}  "
                f"{m['value']:>6.3g}{_iv(m, '.3g'):<16}  {verdict}")
        if row["extrapolated"]:
            text += f" (extrapolated: {row['extrapolation']})"
        lines.append(text.rstrip())
    x = r["crossover"]
    window = f"[{x['window'][0]:.3g}, {x['window'][1]:.3g}]"
    if x["flops"] is not None:
        lines.append(f"crossover (frontiers equal): C = {x['flops']:.3g}{_iv(x, '.3g')}"
                     + (" (extrapolated: outside a sweep's budgets)" if x.get("extrapolated") else ""))
        if len(x.get("all") or ()) > 1:
            lines.append(f"  the frontiers cross {len(x['all'])} times in {window} FLOPs, at "
                         + ", ".join(f"{c:.3g}" for c in x["all"]) + "; the one nearest the budgets is reported")
    else:
        lines.append(f"crossover: none in {window} FLOPs" + (f" ({x['fraction_of_resamples']:.0%} of the resamples "
                                                             "cross there)" if x.get("fraction_of_resamples") else ""))
    lines += [f"warning: {w}" for w in r["warnings"]] + [f"note: {n}" for n in r["notes"]]
    return lines
