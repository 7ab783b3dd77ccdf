"""`scaling fit TABLE_OR_DIR --holdout SPEC`: run the held-out check, print it, write it and its figure."""

from __future__ import annotations

import sys
from pathlib import Path

from research.fit.holdout import DEFAULT_BOOTSTRAP, check_split, holdout_mask, interval_text, run_holdout
from research.fit.methods import loss_methods
from research.fit.record import dumps, output_path, write_fit
from research.records import Extrapolation
from research.train.sweep_dir import SweepDir


def holdout_command(args, table) -> int:
    methods = loss_methods() if args.method == "all" else [args.method]
    bootstrap = args.bootstrap
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if bootstrap == 0 and "approach3" in methods:
        bootstrap = DEFAULT_BOOTSTRAP
        mask = holdout_mask(table.df, args.holdout)  # a bad spec fails before any message
        check_split(table.df, mask, args.holdout, methods)
        log(f"holdout: using --bootstrap {bootstrap} (prediction intervals need a bootstrap of the fit)")
    result = Extrapolation.from_json(
        run_holdout(table, args.holdout, methods, bootstrap=bootstrap, seed=args.seed, level=args.level,
                    grid=args.grid, reduction=args.reduction, backend=args.backend, tol=args.tolerances,
                    solver=args.solver, log=log, allocation=args.method == "all"), "the held-out check")
    out = output_path(args.out, args.no_write, table.sweep_dir)  # --out was checked before fitting
    if out is not None:
        write_fit(out, {"extrapolation": result.to_json()}, merge=True)
        print(f"wrote {out} (key extrapolation)", file=sys.stderr)
        for p in write_figure(result, out, table.sweep_dir):
            print(f"wrote {p}", file=sys.stderr)
    else:
        print("holdout: nothing written (plain table without --out); pass --out FILE to keep the result "
              "and its figure", file=sys.stderr)
    if args.json:
        print(dumps(result.to_json()))
    else:
        print_holdout(result)
    return 0


def write_figure(result: Extrapolation, out: Path, sweep_dir) -> list[Path]:
    from research.plots.extrapolation import extrapolation_figure  # lazy: matplotlib; --help stays fast

    fig = extrapolation_figure(result)
    if sweep_dir is not None and out == SweepDir(sweep_dir).fit_path:
        base = SweepDir(sweep_dir).plots_dir / "extrapolation"
    else:
        base = out.parent / f"{out.stem}_extrapolation"
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "svg"):
        p = base.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=150 if fmt == "png" else None)
        paths.append(p)
    return paths


def print_holdout(r: Extrapolation) -> None:
    dec = r.extrapolation_decades
    print(f"holdout {r.holdout!r}: fitted on {r.n_train} runs, predicting {r.n_heldout} held-out runs "
          f"(up to {dec['budget']:.2f} decades beyond the fitted budgets, {dec['n_params']:.2f} in N, "
          f"{dec['tokens']:.2f} in D)")
    for m, b in r.laws():
        s = b.summary
        print(f"{m}: {b.law}  ({', '.join(f'{k}={v:.4g}' for k, v in b.params.items())})")
        print(f"  interval: {b.interval['description']}")
        print(f"  {'n_params':>10} {'tokens':>10} {'measured':>9} {'predicted':>9} {'interval':>19} "
              f"{'rel.err':>8} inside")
        for p in b.points:
            iv = (f"[{p.loss_low:.4f}, {p.loss_high:.4f}]" if p.loss_low is not None else "n/a")
            print(f"  {p.n_params:>10.4g} {p.tokens:>10.4g} {p.measured:>9.4f} {p.predicted:>9.4f} "
                  f"{iv:>19} {p.rel_error:>+8.2%} {_yes_no(p.inside)}")
        cov = "n/a" if s.coverage is None else f"{s.coverage:.0%} ({s.n_inside}/{s.n})"
        print(f"  summary: mean |rel.err| {s.mean_abs_rel_error:.2%}, mean signed {s.mean_rel_error:+.2%}, "
              f"max |rel.err| {s.max_abs_rel_error:.2%}, coverage of the {s.level:.0%} intervals {cov}")
        for w in b.fit_warnings:
            print(f"  fit warning: {w}")
    for line in baseline_lines(r):
        print(line)
    a2 = r.approach2
    if a2 is not None and a2.skipped:
        print(f"approach2 (N_opt at held-out budgets): skipped: {a2.reason}")
    elif a2 is not None:
        print(f"approach2: N_opt = k_N*C^a from the other budgets (a={a2.a:.3f}) against each held-out budget's "
              "IsoFLOP minimum")
        for b in a2.budgets:
            print(f"  C={b['flops']:.3g}: predicted N_opt {b['n_opt_predicted']:.4g} "
                  f"{interval_text(b['n_opt_predicted_interval'])}, measured {b['n_opt_measured']:.4g} "
                  f"{interval_text(b['n_opt_measured_interval'])}, ratio {b['ratio']:.3f}"
                  f", {'consistent' if b['consistent'] else 'INCONSISTENT'}")
    for w in r.warnings:
        print(f"warning: {w}")


def _yes_no(inside) -> str:
    return "-" if inside is None else "yes" if inside else "no"


def baseline_lines(r: Extrapolation) -> list[str]:
    """The baselines' errors on the same held-out runs, and those runs' own seed spread."""
    lines = []
    for name, b in (r.baselines or {}).items():
        s = None if b.skipped else b.summary
        if s is None:
            lines.append(f"baseline {name}: skipped: {b.reason if b.skipped else None}")
            continue
        spread = "" if s.std_rel_error is None else f", spread {s.std_rel_error:.2%}"
        same = b.law_on_same_runs
        law = "" if same is None else f"; Approach 3 on the same {same.n} runs {same.mean_abs_rel_error:.2%}"
        lines.append(f"baseline {name}: mean |rel.err| {s.mean_abs_rel_error:.2%}, bias {s.bias:+.2%}{spread} "
                     f"({s.n} runs{law})")
    noise = r.heldout_noise
    if noise:
        lines.append(f"held-out runs' own seed spread: sigma of ln L {noise['sigma_log']:.4f} ({noise['dof']} dof)")
    return lines
