"""`scaling plot DIR`: every figure the sweep's data supports, PNG and SVG, into DIR/plots/."""

from __future__ import annotations

from research.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("plot", help="plot fitted scaling laws for a sweep directory (PNG and SVG)",
                              description="Write IsoFLOP curves, loss vs compute with the Approach-1 envelope, "
                                          "N_opt/D_opt vs the published laws, Approach-3 contours and residuals "
                                          "into DIR/plots/. Runs `scaling fit` first if DIR/fit.json is missing.")
    p.add_argument("path", help="sweep directory (or its results.csv)")
    p.add_argument("--out", default=None, help="output folder (default DIR/plots)")
    p.add_argument("--format", default="png,svg", help="comma-separated formats (default png,svg)")
    p.set_defaults(func=handler)


def handler(args) -> int:
    from research.plots import plot_sweep_dir  # lazy: matplotlib and pandas; --help stays fast

    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise UserError(f"unsupported --format {','.join(bad) or args.format!r}; use png, svg and/or pdf")
    for p in plot_sweep_dir(args.path, out_dir=args.out, formats=formats, quiet=False):
        print(p)
    return 0
