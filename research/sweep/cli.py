"""`scaling sweep plan|run|status|collect`: a whole study from one file and one command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from research.errors import UserError
from research.records import METHOD_KEYS, METHOD_RECORDS, AllocationResult, Approach3Result, Skipped, as_fit_result
from research.sweep.collect import fmt_seconds, status_counts
from research.train.sweep_dir import SweepDir, trial_row
from research.train.tracking import add_flags as add_tracking_flags, apply_flags, log_sweep


def register(sub) -> None:
    p = sub.add_parser("sweep", help="plan, run and inspect a sweep of training runs",
                       description="A sweep file = shared [data]/[model]/[train] + a [design] of (N, D) points "
                                   "+ a [recipe] of architecture and hyperparameter rules.")
    s = p.add_subparsers(dest="sweep_command", metavar="SUBCOMMAND", required=True)

    plan = s.add_parser("plan", help="list the trials (N, D, FLOPs, time) and the total compute")
    plan.add_argument("sweep", help="sweep file (TOML)")
    plan.add_argument("--out", default=None, help="sweep directory, to calibrate time from finished trials")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.set_defaults(func=cmd_plan)

    run = s.add_parser("run", help="run the trials not done yet, then collect, fit and plot")
    run.add_argument("sweep", help="sweep file (TOML)")
    run.add_argument("--out", default=None, help="sweep directory (default results/<name>)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    run.add_argument("--executor", choices=["local", "slurm"], default="local")
    run.add_argument("--workers", type=int, default=1, help="local: trials at once (one per GPU when several)")
    run.add_argument("--retries", type=int, default=2, help="extra attempts for a failing trial (default 2)")
    run.add_argument("--retry-failed", action="store_true", help="also retry trials recorded as failed")
    run.add_argument("--fresh-processes", action="store_true",
                     help="local: a new Python process per trial instead of forking each from a warm worker")
    run.add_argument("--no-fit", action="store_true", help="skip fitting and plotting at the end")
    run.add_argument("--partition", default=None, help="slurm: partition (overrides [slurm] partition)")
    run.add_argument("--time-min", type=int, default=None, help="slurm: time limit per job in minutes")
    run.add_argument("--gpus", type=int, default=None, help="slurm: GPUs per job")
    run.add_argument("--quiet", action="store_true", help="no live progress lines")
    add_tracking_flags(run)
    run.set_defaults(func=cmd_run)

    status = s.add_parser("status", help="done / running / failed / diverged / pending, with totals")
    status.add_argument("dir", help="sweep directory")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    collect = s.add_parser("collect", help="rebuild results.csv from the trial directories")
    collect.add_argument("dir", help="sweep directory")
    collect.set_defaults(func=cmd_collect)

    trial = s.add_parser("trial", help=argparse.SUPPRESS)  # what the local executor runs per trial
    trial.add_argument("dir")
    trial.set_defaults(func=cmd_trial)


def _sweep_dir(args, sweep) -> Path:
    return Path(args.out) if args.out else Path("results") / sweep.name


def cmd_plan(args) -> int:
    from research.fit.support import plan_support, support_lines  # lazy: --help builds every parser; fit ~0.15 s
    from research.sweep.plan import load_sweep, plan  # lazy: --help builds every parser; the planner and runner ~0.1 s
    from research.sweep.runner import measured_flops_per_s  # lazy: as above

    sweep = load_sweep(args.sweep, args.overrides)
    p = plan(sweep)
    out = p.to_dict(measured_flops_per_s(_sweep_dir(args, sweep)))
    support = plan_support(out)
    if sweep.validate is not None:
        from research.sweep.validate import estimate  # lazy: as in cmd_plan

        out["validate"] = estimate(sweep.validate, p, out["throughput_flops_per_s"])
    if args.json:
        print(json.dumps(dict(out, fit_support=support), indent=2))
        return 0
    print_plan(out)
    for line in support_lines(support) if support else ():
        print(line)
    for line in out["lr_rule_notes"]:
        print(line)
    if "validate" in out:
        from research.sweep.validate import estimate_lines  # lazy: as in cmd_plan

        print("\n".join(estimate_lines(out["validate"])))
    return 0


def print_plan(out: dict) -> None:
    asked = len(out["trials"]) + len(out.get("rejected", [])) + len(out.get("dropped", []))
    seeds = out.get("seeds", 1)
    print(f"sweep {out['sweep']}: {len(out['trials'])} trials of {asked} design points"
          + (f" ({seeds} seeds each)" if seeds > 1 else "")
          + (f", trained as {len(out['trunks'])} trunks and their cooldown branches" if out.get("trunks") else "")
          + f"; design FLOPs convention {out['flops_convention']}; N counts embeddings")
    head = (f"{'trial':16} {'budget':>9} {'L':>3} {'d':>5} {'N':>10} {'N non-emb':>10} {'D':>11} {'D/N':>7} "
            f"{'C [6n]':>9} {'C [chin]':>9} {'steps':>6} {'seed':>4} {'lr':>8} {'time':>8} {'mem':>8}")
    print(head)
    print("-" * len(head))
    trunks = {t["trial"]: t for t in out.get("trunks", [])}
    shown = set()
    for t in out["trials"]:
        trunk = trunks.get(t.get("trunk") or "")
        if trunk is not None and trunk["trial"] not in shown:
            shown.add(trunk["trial"])
            print(f"{trunk['trial']:16} {'trunk':>9} {trunk['layers']:>3} {trunk['d_model']:>5} "
                  f"{trunk['n_params']:>10,} {trunk['n_params_nonembedding']:>10,} {trunk['tokens']:>11,} "
                  f"{trunk['tokens_per_param']:>7.1f} {trunk['flops_6n']:>9.2e} {trunk['flops_chinchilla']:>9.2e} "
                  f"{trunk['steps']:>6} {trunk['seed']:>4} {trunk['lr']:>8.2e} {fmt_seconds(trunk['est_time_s']):>8} "
                  f"{trunk['memory_bytes_fp32'] / 2**20:>6.1f}MB  constant LR; branches leave at steps "
                  + ", ".join(map(str, trunk["branch_steps"])))
        budget = f"{t['budget']:.2e}" if t.get("budget") else "-"
        print(f"{t['trial']:16} {budget:>9} {t['layers']:>3} {t['d_model']:>5} {t['n_params']:>10,} "
              f"{t['n_params_nonembedding']:>10,} {t['tokens']:>11,} {t['tokens_per_param']:>7.1f} "
              f"{t['flops_6n']:>9.2e} {t['flops_chinchilla']:>9.2e} {t['steps']:>6} {t['seed']:>4} {t['lr']:>8.2e} "
              f"{fmt_seconds(t['est_time_s']):>8} {t['memory_bytes_fp32'] / 2**20:>6.1f}MB"
              + (f"  branch of {t['trunk'][:8]} from step {t['branch_step']}" if t.get("trunk") else ""))
    print("-" * len(head))
    print(f"total: C = {out['total_flops_6n']:.3e} FLOPs [6n], {out['total_flops_chinchilla']:.3e} [chinchilla]; "
          f"D = {out['total_tokens']:,} tokens; estimated {fmt_seconds(out['est_time_s'])} one at a time at "
          f"{out['throughput_flops_per_s']:.2g} FLOP/s (rough; memory = weights+grads+AdamW in fp32)")
    if out.get("trunks"):
        print(f"FLOPs represented {out['total_flops_6n']:.3e} [6n] (each row's whole history), spent "
              f"{out['total_flops_spent_6n']:.3e} (each trunk once + each cooldown): "
              f"{out['flops_spent_over_represented']:.2f}x")
    families = out.get("families") or []
    if families:
        print("model families: " + "; ".join(f"{f['family']} (d_model {', '.join(map(str, f['d_model']))})"
                                             for f in families))
    for change in out.get("family_changes") or []:
        print(f"family change: the size axis changes family {change}")
    for kind in ("rejected", "dropped"):
        for r in out.get(kind, []):
            print(f"{kind}: layers {r['layers']}, d_model {r['d_model']}, N {r['n_params']:,}"
                  + (f", budget {r['budget']:.2e}" if r.get("budget") else "") + f": {r['reason']}")


def cmd_run(args) -> int:
    from research.fit.support import plan_support, support_lines  # lazy: as in cmd_plan
    from research.sweep.plan import load_sweep, plan  # lazy: as in cmd_plan
    from research.sweep.runner import LocalRunner, prepare_sweep_dir, run_slurm  # lazy: as in cmd_plan

    sweep = load_sweep(args.sweep, args.overrides)
    sweep.base = sweep.base.replace(logging=apply_flags(sweep.base.logging, args))
    p = plan(sweep)
    sweep_dir = _sweep_dir(args, sweep).absolute()
    support = plan_support(p.to_dict())
    if support and not args.no_fit:
        for line in support_lines(support):
            if line.startswith("warning"):  # said before hours of training, not after
                print(line, file=sys.stderr)
    for line in p.lr_rule_notes:  # said before hours of training, not after
        print(line, file=sys.stderr)
    trial_dirs = prepare_sweep_dir(p, sweep_dir)
    print(f"sweep {sweep.name}: {len(p.trials)} trials"
          + (f" ({len(p.trunks)} trunks + their cooldown branches)" if p.trunks else "") + f" in {sweep_dir}"
          + (f" ({len(p.rejected)} rejected, {len(p.dropped)} dropped; see 'scaling sweep plan')"
             if p.rejected or p.dropped else ""), file=sys.stderr)
    if sweep.validate is not None:  # its targets checked (beyond the fitted budgets) before anything trains
        from research.sweep.validate import targets  # lazy: as in cmd_plan

        targets(sweep.validate, p)

    def execute(the_plan, dirs) -> None:
        if args.executor == "local":
            LocalRunner(the_plan, sweep_dir, workers=args.workers, retries=args.retries,
                        retry_failed=args.retry_failed, live=not args.quiet, warm=not args.fresh_processes).run(dirs)
        else:
            options = dict(sweep.slurm)
            for key, value in (("partition", args.partition), ("time_min", args.time_min), ("gpus_per_node", args.gpus)):
                if value is not None:
                    options[key] = value
            run_slurm(the_plan, sweep_dir, dirs, options, args.retries, args.retry_failed)

    execute(p, trial_dirs)
    frame = SweepDir(sweep_dir).collect()
    counts = status_counts(frame)
    print(f"results: {SweepDir(sweep_dir).results_path} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)})",
          file=sys.stderr)
    totals = p.to_dict()
    if p.trunks:
        print(f"compute: FLOPs represented {totals['total_flops_6n']:.3e} [6n], spent {totals['total_flops_spent_6n']:.3e} "
              f"({totals['flops_spent_over_represented']:.2f}x; trunks shared by their branches)", file=sys.stderr)
    if not args.no_fit:
        fit_and_plot(sweep_dir)
        if sweep.validate is not None:
            from research.sweep.validate import report_lines, run_rung  # lazy: as in cmd_plan

            for line in report_lines(run_rung(p, sweep_dir, execute)):
                print(line, file=sys.stderr)
        log_sweep(sweep_dir, sweep.base.logging, sweep.name)  # the sweep's own W&B/TensorBoard run
    return 0 if counts["failed"] == 0 else 1


SWEEP_FIT_BOOTSTRAP = 200  # resamples for the intervals a finished sweep reports (a few seconds)


def fit_and_plot(sweep_dir: Path) -> None:
    """Fit every law the results support and draw every figure; never fails the sweep.

    This is the package's one deliberate catch-all boundary: by now every trial's result is
    in results.csv, and no failure of a fit or a figure (a solver's RuntimeError, a plotting
    bug, a missing optional library) may turn a finished sweep into a crashed one. Each
    failure is printed as one line and recorded in fit.json as {"skipped": reason}; the
    command to reproduce it with a full traceback is `scaling fit DIR` / `scaling plot DIR`.
    Nothing here touches results.csv. An lr sweep ([design] kind = "lr") fits its learning-rate
    rule (DIR/lr_rule.json, research/fit/lr_rule.py) instead of the Chinchilla approaches."""
    if SweepDir(sweep_dir).is_lr_sweep():
        _guarded("fit", sweep_dir, _lr_rule_stage)
        _guarded("plots", sweep_dir, _plot_stage)
        return
    fit = _guarded("fit", sweep_dir, _fit_stage)
    if fit is not None:
        _print_fit_summary(fit)
    _guarded("plots", sweep_dir, _plot_stage)


def _fit_stage(sweep_dir: Path):
    from research.fit import fit_sweep_dir  # lazy: --help builds every parser; fit modules ~0.15 s

    # Intervals on every exponent and a held-out check of the largest budget: a law is printed
    # with what it takes to judge it (`scaling fit DIR --bootstrap 1000` refits with more).
    fit = fit_sweep_dir(sweep_dir, bootstrap=SWEEP_FIT_BOOTSTRAP, holdout="largest-budget",
                        holdout_bootstrap=SWEEP_FIT_BOOTSTRAP)
    print(f"fit: {SweepDir(sweep_dir).fit_path}", file=sys.stderr)
    return fit


def _lr_rule_stage(sweep_dir: Path):
    from research.fit.lr_sweep import fit_lr_sweep_dir, summary_lines  # lazy: as in _fit_stage

    rule = fit_lr_sweep_dir(sweep_dir)  # 1000 resamples: well under a second
    for line in summary_lines(rule):
        print(line, file=sys.stderr)
    print(f"lr rule: {rule['path']} (use it with [recipe] lr_rule = \"...\")", file=sys.stderr)
    return rule


def _plot_stage(sweep_dir: Path):
    from research.plots import plot_sweep_dir  # lazy: matplotlib (seconds); only a finished sweep draws

    paths = plot_sweep_dir(sweep_dir)
    print(f"plots: {len(paths)} files in {SweepDir(sweep_dir).plots_dir}", file=sys.stderr)
    return paths


def _guarded(stage: str, sweep_dir: Path, run):
    """Run one stage of fit_and_plot; on any failure print one line, record it in fit.json, return None."""
    try:
        return run(sweep_dir)
    except Exception as err:  # noqa: BLE001 - the deliberate boundary described in fit_and_plot
        if isinstance(err, UserError):
            reason = str(err)
        elif isinstance(err, ImportError):
            reason = f"a library is missing ({err})"
        else:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            reason = (f"{type(err).__name__}: {first}"[:300]
                      + f" (an internal error; `scaling {'fit' if stage == 'fit' else 'plot'} {sweep_dir}` "
                        "shows the traceback)")
    print(f"{stage} skipped: {reason}", file=sys.stderr)
    _record_skipped(sweep_dir, stage, reason)
    return None


def _record_skipped(sweep_dir: Path, stage: str, reason: str) -> None:
    """fit.json gets {"skipped": reason} (a failed fit replaces a previous fit, kept as fit.prev.json);
    a failed plot adds "plots": {"skipped": reason} to whatever fit.json holds."""
    from research.fit.record import write_fit  # lazy: as in _fit_stage

    layout = SweepDir(sweep_dir)
    path = layout.fit_path
    try:
        if stage == "fit":
            if path.exists():
                os.replace(path, layout.fit_prev_path)
            write_fit(path, Skipped.of(extra={"version": 1}, reason=reason), merge=False)
        else:
            write_fit(path, {"plots": Skipped(reason=reason).to_json()}, merge=True)
    except OSError as err:  # the sweep's results are safe; say why the record is missing
        print(f"{stage}: could not record the skip in {path}: {err}", file=sys.stderr)


def _num(value, spec: str) -> str:
    """`value` formatted by `spec`, or "n/a" where fit.json holds null (a NaN the fit wrote as null)."""
    return "n/a" if value is None else format(value, spec)


def _print_fit_summary(data: dict) -> None:
    from research.fit.agreement import agreement_line, all_warnings, noise_line  # lazy: as in _fit_stage

    fit = as_fit_result(data, "fit.json")
    for name in (*METHOD_KEYS, *METHOD_RECORDS):  # the built-in methods, then any other registered one
        result = fit.fitted(name)
        if isinstance(result, AllocationResult | Approach3Result):
            a_iv = result.bootstrap.intervals.get("a") if result.bootstrap and result.bootstrap.intervals else None
            level = f"{result.bootstrap.level:.0%}" if result.bootstrap and result.bootstrap.level is not None else ""
            interval = f" [{level} {a_iv[0]:.3f}, {a_iv[1]:.3f}]" if a_iv and None not in a_iv[:2] else ""
            print(f"  {name}: N_opt ~ C^{_num(result.a, '.3f')}{interval}, D_opt ~ C^{_num(result.b, '.3f')} "
                  f"(C in {result.flops_convention or '6n'} FLOPs)", file=sys.stderr)
    for line in (agreement_line(fit), noise_line(fit)):
        if line:
            print(f"  {line}", file=sys.stderr)
    spread = fit.sensitivity.range if fit.fitted("sensitivity") is not None else None
    if spread is not None:
        lo, hi = spread.widest()
        print(f"  sensitivity: Approach 3's a ranges over [{lo:.3f}, {hi:.3f}] across the analyst's choices "
              "(E profiled, seed means, N without embeddings, leave one size/budget out, families; fit.json)",
              file=sys.stderr)
    held = fit.fitted("extrapolation")
    summary = held.approach3.summary if held is not None and held.approach3 is not None else None
    if summary:
        print(f"  held out ({held.holdout}): Approach 3 predicts {summary.n} unseen runs with mean |error| "
              f"{_num(summary.mean_abs_rel_error, '.2%')} (signed {_num(summary.mean_rel_error, '+.2%')}); "
              f"{_num(summary.n_inside, 'd')}/{summary.n} inside their {_num(summary.level, '.0%')} intervals",
              file=sys.stderr)
        for name, block in (held.baselines or {}).items():
            s = None if block.skipped else block.summary
            if s:
                print(f"    baseline {name}: mean |error| {_num(s.mean_abs_rel_error, '.2%')} (signed "
                      f"{_num(s.bias, '+.2%')}) on the "
                      "same runs", file=sys.stderr)
    for w in all_warnings(fit):
        print(f"  warning: {w}", file=sys.stderr)


def cmd_status(args) -> int:
    from research.sweep.plan import STARTUP_S  # lazy: as in cmd_plan
    from research.sweep.runner import measured_flops_per_s  # lazy: as in cmd_plan

    sweep = SweepDir.require(args.dir)
    sweep_dir = sweep.path
    frame = sweep.collect()
    counts = status_counts(frame)
    done = frame["status"].isin(["completed", "diverged", "failed"])
    trunks = [trial_row(sweep.trial_dir(t)) for t in sweep.planned_trunks()]
    trunk_left = sum(t["flops_6n"] or 0.0 for t in trunks if t["status"] not in ("completed", "diverged", "failed"))
    spent = frame["flops_spent_6n"].fillna(frame["flops_6n"])  # what each trial computes itself
    left = spent[~done].sum() + trunk_left
    rate = measured_flops_per_s(sweep_dir)
    out = {"dir": str(sweep_dir), "trials": len(frame), **counts,
           "flops_6n_done": float(frame.loc[done, "flops_6n"].sum()), "flops_6n_total": float(frame["flops_6n"].sum()),
           "est_time_left_s": float(left / rate + STARTUP_S * ((~done).sum() + sum(t["status"] == "pending" for t in trunks))),
           "trunks": [{k: t[k] for k in ("trial", "status", "n_params", "tokens", "seed")} for t in trunks],
           "per_trial": frame[["trial", "status", "n_params", "tokens", "final_eval_loss"]].to_dict("records")}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0

    def shown(value, fmt):  # "-" for a number a damaged or unstarted trial does not have
        return format(value, fmt) if value is not None and value == value else "-"

    for row in out["trunks"]:
        print(f"{row['trial']:16} {row['status']:10} N {shown(row['n_params'], '>10,.0f')}  "
              f"D {shown(row['tokens'], '>11,.0f')}  trunk (constant LR) of seed {row['seed']}")
    for row in out["per_trial"]:
        print(f"{row['trial']:16} {row['status']:10} N {shown(row['n_params'], '>10,.0f')}  "
              f"D {shown(row['tokens'], '>11,.0f')}  eval loss {shown(row['final_eval_loss'], '.4f')}")
    print(f"{out['trials']} trials: " + ", ".join(f"{counts[k]} {k}" for k in counts)
          + f"; FLOPs {out['flops_6n_done']:.2e} of {out['flops_6n_total']:.2e} [6n] done; "
            f"about {fmt_seconds(out['est_time_left_s'])} left one at a time")
    return 0


def cmd_collect(args) -> int:
    sweep = SweepDir.require(args.dir)
    frame = sweep.collect()
    print(f"{sweep.results_path}: {len(frame)} rows")
    return 0


def cmd_trial(args) -> int:
    from research.sweep.trial import run_trial  # lazy: as in cmd_plan
    from research.train.loop import exit_code  # lazy: jax; only a trial process needs it

    return exit_code(run_trial(args.dir))
