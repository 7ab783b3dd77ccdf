"""`scaling compare SWEEP_A SWEEP_B`: is recipe B worth it? The effective-compute multiplier with its interval,
and the figure (both loss frontiers with bands; the multiplier against compute). The numbers come from
research/fit/compare.py."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from research.errors import UserError

COLORS = {"A": "#1b9e77", "B": "#7570b3"}
MAX_SHOWN = 100.0  # the multiplier axis spans at most 1/100 to 100 (an unreached loss is infinite)


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
    import argparse

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

    from research.fit.compare import CompareOptions, fit_pair, parse_shared, summarize
    from research.fit.core import dumps

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
    else:
        lines.append(f"crossover: none in {window} FLOPs" + (f" ({x['fraction_of_resamples']:.0%} of the resamples "
                                                             "cross there)" if x.get("fraction_of_resamples") else ""))
    lines += [f"warning: {w}" for w in r["warnings"]] + [f"note: {n}" for n in r["notes"]]
    return lines


def compare_figure(fa, fb, result: dict, opts) -> Figure:
    """Left: each sweep's runs and its loss frontier L*(C) with its bootstrap band; right: the multiplier
    against compute with its band, 1 marked, each sweep's budget range shaded."""
    from research.fit.compare import multiplier
    from research.plots.figures import _figure

    lo = min(fa.budget_range()[0], fb.budget_range()[0], *opts.at) / 2
    hi = max(fa.budget_range()[1], fb.budget_range()[1], *opts.at) * 2
    grid = np.geomspace(lo, hi, 60)
    fig, (ax_l, ax_m) = _figure(10, 4.2, ncols=2)
    q = [(1 - opts.level) / 2, (1 + opts.level) / 2]
    boot = result["bootstrap"]["n_resamples"] > 0
    for f in (fa, fb):
        color = COLORS[f.label]
        name = result["sweeps"][f.label]["name"]
        df = f.table.df
        ax_l.scatter(df["C"], df["L"], s=8, color=color, alpha=0.35, lw=0)
        ax_l.plot(grid, f.law().loss_opt(grid)[0], color=color, label=f"{f.label}: {name}")
        if boot:
            with np.errstate(invalid="ignore"):
                band = np.nanquantile(f.law("samples").loss_opt(grid[None, :]), q, axis=0)
            ax_l.fill_between(grid, band[0], band[1], color=color, alpha=0.2, lw=0)
        ax_m.axvspan(*f.budget_range(), color=color, alpha=0.08, lw=0)
    m = multiplier(fa.law(), fb.law(), grid[None, :])[0]
    ax_m.plot(grid, m, color="k", label="multiplier (B over A)")
    if boot:
        ms = multiplier(fa.law("samples"), fb.law("samples"), grid[None, :])
        with np.errstate(invalid="ignore"):  # a loss A never reaches (inf) stays in, clipped to the axis
            band = np.nanquantile(np.minimum(ms, MAX_SHOWN), q, axis=0)
        ax_m.fill_between(grid, band[0], band[1], color="k", alpha=0.15, lw=0, label=f"{opts.level:.0%} interval")
    ax_m.axhline(1.0, color="#999999", ls="--", lw=1)
    units = result["loss_units"]
    for ax in (ax_l, ax_m):
        ax.set_xscale("log")
        ax.set_xlabel(f"training compute C [FLOPs, {result['flops_convention']}]")
    ax_m.set_yscale("log")
    ax_m.set_ylim(max(1 / MAX_SHOWN, np.nanmin(m) / 4), min(MAX_SHOWN, np.nanmax(np.minimum(m, MAX_SHOWN)) * 4))
    ax_m.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_m.yaxis.set_major_formatter(ScalarFormatter())
    ax_m.yaxis.set_minor_formatter(NullFormatter())
    ax_l.set_ylabel(f"loss [{units}]; line: compute-optimal L*(C)")
    ax_m.set_ylabel("compute multiplier C_A / C at equal loss")
    ax_l.set_title("loss frontiers")
    ax_m.set_title("compute A needs to match B (shaded: the sweeps' budgets)")
    ax_l.legend(loc="upper right")
    ax_m.legend(loc="best")
    return fig
