"""`scaling curves fit|predict`: loss-curve laws that know the learning-rate schedule."""

from __future__ import annotations

import argparse
import json
import sys

from research.errors import UserError

LAW_CHOICES = ("multipower", "annealing")
SCHEDULE_CHOICES = ("constant", "cosine", "wsd")


def _table_flags(p) -> None:
    p.add_argument("--run-col", default="run", help="column naming the run (default run)")
    p.add_argument("--step-col", default="step", help="column of the 1-based optimizer step (default step)")
    p.add_argument("--lr-col", default="lr", help="column of the learning rate used at that step (default lr)")
    p.add_argument("--loss-col", default=None,
                   help="column of the measured loss, empty where not measured (default loss; for a sweep or "
                        "run directory: eval_loss, the fixed eval set; dense_eval_loss, its prefix evaluated at "
                        "every eval step by runs with [train] dense_eval_tokens, the default where every run "
                        "logs it; or loss, the training loss)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "curves", help="fit and predict whole loss curves under any learning-rate schedule",
        description="Loss-curve laws that read the learning-rate schedule: the Multi-Power Law (Luo et al. 2025) "
                    "and the LR-annealing law (Tissue et al. 2024), fitted to every logged step of a few runs of "
                    "one model size, then used to predict the curve of any other schedule of that size.")
    s = p.add_subparsers(dest="curves_command", metavar="SUBCOMMAND", required=True)

    fit = s.add_parser("fit", help="fit a law to the logged steps of some runs of one size; write LAW.json",
                       description="TABLE: CSV, TSV or parquet with one row per optimizer step of each run (columns "
                                   "run, step, lr, loss; loss empty where not measured), or a sweep or run "
                                   "directory. One table = one model size.")
    fit.add_argument("table", help="per-step table, or a sweep / run directory")
    fit.add_argument("--law", choices=LAW_CHOICES, default="multipower", help="which law (default multipower)")
    fit.add_argument("--runs", default=None, help="comma-separated runs to fit on (default: all)")
    fit.add_argument("--out", required=True, help="where to write the fitted law (JSON)")
    fit.add_argument("--bootstrap", type=int, default=16,
                     help="refits on residuals resampled in blocks, for prediction intervals (default 16; 0 = none)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    fit.add_argument("--max-points", type=int, default=400,
                     help="longer runs are summarised in this many bins of consecutive steps (default 400)")
    fit.add_argument("--from-step", type=int, default=None,
                     help="fit the losses from this step on (default: each run's first step after its warmup)")
    fit.add_argument("--lambda", dest="lam", default="0.999",
                     help="annealing law: its momentum decay, a number in (0.9, 1) or 'fit' (default 0.999)")
    fit.add_argument("--no-shape-prior", dest="shape_prior", action="store_false",
                     help="multipower: drop the weak prior on beta and gamma (centred on Luo et al.'s fits) that "
                          "keeps runs whose LR falls only smoothly from choosing an arbitrary loss-drop shape")
    fit.add_argument("--anchor", default=None, metavar="RUN",
                     help="also fit the law anchored to RUN, a constant-LR run of the table (a trunk): its own "
                          "smoothed curve gives the loss at each area under the schedule, the law only the drop "
                          "that a decaying LR buys; `predict` then uses it. For curves the law's L0 + A*S1^-alpha "
                          "does not follow (a small model's early plateau)")
    fit.add_argument("--json", action="store_true", help="print the fitted law as one JSON object")
    _table_flags(fit)
    fit.set_defaults(func=cmd_fit)

    pred = s.add_parser(
        "predict", help="predicted loss at every step of the runs of a table, or of a described schedule",
        description="With TABLE: the predicted loss at every row whose lr is given (and the error where the loss "
                    "was measured). With --schedule: the curve of a constant, cosine or WSD run of --steps steps "
                    "(the trainer's own schedule), with a bootstrap interval when LAW.json has draws.")
    pred.add_argument("table", nargs="?", default=None, help="per-step table, or a sweep / run directory")
    pred.add_argument("--law", required=True, help="LAW.json written by `scaling curves fit`")
    pred.add_argument("--runs", default=None, help="comma-separated runs of TABLE to predict (default: all)")
    pred.add_argument("--schedule", choices=SCHEDULE_CHOICES, default=None, help="predict this schedule instead")
    pred.add_argument("--steps", type=int, default=None, help="--schedule: its horizon in optimizer steps")
    pred.add_argument("--tokens", type=float, default=None,
                      help="--schedule: its horizon in tokens (with --tokens-per-step)")
    pred.add_argument("--tokens-per-step", type=float, default=None, help="batch size x sequence length")
    pred.add_argument("--peak-lr", type=float, default=None, help="--schedule: peak LR (default: the fitted runs')")
    pred.add_argument("--warmup-steps", type=int, default=None,
                      help="--schedule: warmup steps (default: the fitted runs')")
    pred.add_argument("--min-lr-ratio", type=float, default=0.1, help="--schedule: final LR / peak (default 0.1)")
    pred.add_argument("--cooldown-fraction", type=float, default=0.2,
                      help="--schedule wsd: share of steps in the cooldown (default 0.2)")
    pred.add_argument("--cooldown-shape", choices=("1-sqrt", "linear"), default="1-sqrt")
    pred.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    pred.add_argument("--interval", action="store_true",
                      help="with TABLE: give every row an interval (lo, hi), not only each run's final loss "
                           "(--schedule always does)")
    pred.add_argument("--every", type=int, default=1, help="print every k-th step's row (default 1: all)")
    pred.add_argument("--json", action="store_true", help="print one JSON object with a \"rows\" list")
    _table_flags(pred)
    pred.set_defaults(func=cmd_predict)
    _register_offsets(s)
    _register_trunks_only(s)


def _table_out(args):
    """--out as a Path, never the sweep's own results.csv (a derived table must not replace it)."""
    from pathlib import Path

    out = Path(args.out)
    if out.resolve() == (Path(args.sweep) / "results.csv").resolve():
        raise UserError(f"--out {out} is the sweep's own results.csv; write the table elsewhere")
    return out


def _register_offsets(s) -> None:
    off = s.add_parser(
        "offsets", help="per-trunk offsets from a curve fit; a results table with corrected final losses",
        description="For each size of a sweep, fit one curve law to every logged step of its trunks and branches "
                    "(all seeds), take each trunk's (lineage's) median log residual as its offset, and write "
                    "results.csv with final_eval_loss divided by exp(offset) (the raw value kept as "
                    "final_eval_loss_raw). Fit the (N, D) law to it with `scaling fit OUT`.")
    off.add_argument("sweep", help="sweep directory (results.csv and trials/)")
    off.add_argument("--out", required=True, help="where to write the corrected results table (CSV)")
    off.add_argument("--law", choices=LAW_CHOICES, default="multipower")
    off.add_argument("--loss-col", default=None, choices=("eval_loss", "dense_eval_loss", "loss"),
                     help="the logged loss the curves are fitted to (default: dense_eval_loss where every run "
                          "logs it, else eval_loss, the fixed eval set)")
    off.add_argument("--json", action="store_true", help="print the offsets as one JSON object")
    off.set_defaults(func=cmd_offsets)


def cmd_offsets(args) -> int:
    from research.curves.offsets import corrected_results  # lazy: --help builds every parser; the curve fits and pandas ~1 s
    from research.fsutil import atomic_write_text  # lazy: as above

    out = _table_out(args)
    frame, sizes = corrected_results(args.sweep, args.law, args.loss_col)
    atomic_write_text(out, frame.to_csv(index=False))
    record = {"sweep": str(args.sweep), "law": args.law, "loss_col": args.loss_col, "out": str(out),
              "sizes": [{"n_params": s.n_params, "params": s.law, "offsets": s.offsets, "n_points": s.n_points}
                        for s in sizes]}
    if args.json:
        print(json.dumps(record))
    else:
        spread = [v for s in sizes for v in s.offsets.values()]
        print(f"wrote {out}: {len(frame)} rows, {len(spread)} lineages over {len(sizes)} sizes; offsets "
              f"{100 * min(spread):+.2f}% .. {100 * max(spread):+.2f}%" if spread else f"wrote {out}")
    return 0


def _register_trunks_only(s) -> None:
    t = s.add_parser(
        "trunks-only", help="evaluate a trunks-only design on a branch sweep: the curve law stands in for cooldowns",
        description="Keep each trunk and its shortest and longest cooldowns (--keep 2) or its longest (--keep 1); "
                    "fit one curve law per size to them; predict every other branch's final loss; write the "
                    "results table (column source = measured | predicted) and report FLOPs spent / represented. "
                    "Compare `scaling fit OUT` with `scaling fit SWEEP` for the two designs' exponents.")
    t.add_argument("sweep", help="a finished branch design's sweep directory")
    t.add_argument("--out", required=True, help="where to write the table (CSV)")
    t.add_argument("--keep", type=int, default=2,
                   help="cooldowns kept per trunk: 2 (shortest and longest; default) or 1 (the longest)")
    t.add_argument("--law", choices=LAW_CHOICES, default="multipower")
    t.add_argument("--loss-col", default="eval_loss", choices=("eval_loss", "loss"),
                   help="the curves the law is fitted to: eval_loss (the fixed eval set; default) or loss (the "
                        "training loss, logged every log_every steps; predictions are moved onto the eval set by "
                        "the median log gap between the kept runs' eval losses and the law)")
    t.add_argument("--from-step", type=_from_step, default=None,
                   help="fit from this step on, or 'plateau': per size, from where its trunks' loss has left the "
                        "early plateau (for the training loss or densely evaluated trunks; default: each run's "
                        "steps after its warmup)")
    t.add_argument("--anchor", choices=("loss", "dense_eval_loss"), default=None,
                   help="anchor each lineage to its trunk's own logged curve in this loss (loss: the training loss; "
                        "dense_eval_loss: the eval prefix of sweeps run with [train] dense_eval_tokens): the trunk "
                        "gives the loss level at each area under the schedule, the law only the drop a cooldown "
                        "buys and the gap to the eval set. Follows a small model's early plateau, which the law's "
                        "formula cannot (instead of --loss-col and --from-step)")
    t.add_argument("--budgets-per-doubling", type=int, default=None, metavar="K",
                   help="also let the law stand for IsoFLOP budgets 2^(1/K) apart between the sweep's smallest and "
                        "largest (rows marked between = True): each size where its D/N lies in the sweep's range and "
                        "its horizon between its trunk's shortest and longest branch; they add to the FLOPs "
                        "represented, not spent")
    t.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    t.set_defaults(func=cmd_trunks_only)


def _from_step(text: str) -> int | str:
    if text == "plateau":
        return text
    try:
        step = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a step number (1, 2, ...) or 'plateau', not {text!r}") from None
    if step < 1:
        raise argparse.ArgumentTypeError(f"give a step number of at least 1, or 'plateau', not {step}")
    return step


def cmd_trunks_only(args) -> int:
    from research.curves.trunks_only import trunks_only  # lazy: as above
    from research.fsutil import atomic_write_text  # lazy: as above

    out = _table_out(args)
    frame, summary = trunks_only(args.sweep, args.keep, args.law, args.loss_col, args.from_step,
                                 args.budgets_per_doubling, args.anchor)
    atomic_write_text(out, frame.to_csv(index=False))
    summary["out"] = str(out)
    if args.json:
        print(json.dumps(summary))
    else:
        between = f" ({summary['n_between']} at budgets between the trained ones)" if summary.get("n_between") else ""
        print(f"wrote {out}: {summary['n_predicted']} of {summary['n_rows']} branch end points predicted{between}; FLOPs "
              f"spent / represented {summary['spent_over_represented']:.3f} (the branch design: "
              f"{summary['branch_design_spent_over_represented']:.3f})")
    return 0


def _runs(text: str | None) -> list[str] | None:
    if text is None:
        return None
    runs = [r.strip() for r in text.split(",") if r.strip()]
    if not runs:
        raise UserError("--runs is empty; name runs like --runs cosine,constant")
    return runs


def _lam(text: str) -> float | None:
    if text.strip().lower() == "fit":
        return None
    try:
        lam = float(text)
    except ValueError:
        raise UserError(f"--lambda {text!r}: expected a number like 0.999 or 'fit'") from None
    if not (0.9 <= lam < 1.0):
        raise UserError(f"--lambda {lam}: expected a decay factor in [0.9, 1), e.g. 0.999")
    return lam


def cmd_fit(args) -> int:
    from research.curves.record import fit_curve_law, write_law  # lazy: as above
    from research.curves.table import load_curves  # lazy: as above

    if args.bootstrap < 0 or args.max_points < 10 or (args.from_step is not None and args.from_step < 1):
        raise UserError("--bootstrap must be >= 0, --max-points >= 10 and --from-step >= 1")
    lam = _lam(args.lam)
    table = load_curves(args.table, args.run_col, args.step_col, args.lr_col, args.loss_col)
    curves = table.select(_runs(args.runs))
    if args.anchor is not None:
        (anchor,) = table.select([args.anchor])
        if anchor.decays:
            raise UserError(f"--anchor {args.anchor}: its learning rate decays after its peak; the anchor is a "
                            "constant-LR run (a trunk) of the same model and data order")
        curves = [anchor] + [c for c in curves if c.run != anchor.run]
    table.one_model([c.run for c in curves])
    empty = [c.run for c in curves if c.step_M.size == 0]
    if empty:
        raise UserError(f"run {empty[0]!r} has no measured loss; leave it out with --runs or give its losses")
    n_fitted = sum(c.fitted_part(args.from_step).step_M.size for c in curves)
    if n_fitted < 10:
        raise UserError(f"only {n_fitted} measured losses in the fitting runs after their warmup (or --from-step); "
                        "need 10+")
    if not any(c.decays for c in curves):
        raise UserError("no fitting run's learning rate ever decays, so the law's decay terms cannot be fitted; "
                        "add a run with a cosine, WSD or step-decay schedule")
    print(f"fitting the {args.law} law to {len(curves)} run(s), {sum(c.step_M.size for c in curves):,} logged "
          "steps", file=sys.stderr)
    law = fit_curve_law(args.law, curves, max_points=args.max_points, lam=lam, from_step=args.from_step,
                        n_bootstrap=args.bootstrap, seed=args.seed, shape_prior=args.shape_prior)
    law.meta["source"] = table.source
    if args.anchor is not None:
        from research.curves.anchor import fit_anchored  # lazy: as above

        others = [(args.anchor, c, True, 1.0) for c in curves if c.run != args.anchor]
        anchored = fit_anchored(args.law, law.params, {args.anchor: curves[0]}, others, law.params, fit_gap=False,
                                shape_prior=args.shape_prior, max_points=args.max_points)
        law.meta["anchor"] = {"run": args.anchor, **anchored.to_dict(), "in_sample": _in_sample(anchored, args.anchor,
                                                                                              curves[1:])}
    write_law(args.out, law)
    if args.json:
        print(json.dumps(law.to_dict()))
    else:
        print(" ".join(f"{k}={v:.6g}" for k, v in law.params.items()))
        for run, e in law.meta["in_sample"].items():
            print(f"  {run}: mean |rel err| {100 * e['mean_rel_err']:.3f}%, max {100 * e['max_rel_err']:.3f}% "
                  f"over {e['n_measured']:,} logged steps")
        for run, e in (law.meta.get("anchor") or {}).get("in_sample", {}).items():
            print(f"  {run}, anchored to {args.anchor}: mean |rel err| {100 * e['mean_rel_err']:.3f}%, "
                  f"max {100 * e['max_rel_err']:.3f}%")
        print(f"wrote {args.out}" + (f" ({len(law.draws)} bootstrap draws)" if law.draws else ""))
    return 0


def _in_sample(anchored, lineage: str, curves) -> dict:
    """Each fitting run's (mean, max) relative error of the anchored law over its logged steps."""
    out = {}
    for c in curves:
        if c.step_M.size:
            err = abs(anchored.loss(lineage, c.sums, c.step_M) - c.loss_M) / c.loss_M
            out[c.run] = {"mean_rel_err": float(err.mean()), "max_rel_err": float(err.max())}
    return out


def _predictor(law, path):
    """predict(sums, step_Q) and whether it has a bootstrap interval: the law anchored to its trunk where
    LAW.json holds one (before the anchor's first logged area, in the warmup, the plain law's measured
    warmup curve), else the plain law."""
    record = law.meta.get("anchor")
    if not record:
        return law.loss, True
    import numpy as np

    from research.curves.anchor import AnchoredLaw  # lazy: as above

    anchored = AnchoredLaw.from_dict(record, str(path))
    run = str(record.get("run") or next(iter(anchored.anchors)))
    if run not in anchored.anchors:
        raise UserError(f"{path}: its \"anchor\" record names run {run!r} but holds no anchor for it; fit it again")
    first = float(np.exp(anchored.anchors[run].log_s1_M.min()))

    def predict(sums, step_Q):
        step_Q = np.asarray(step_Q, np.int64)
        early = sums.area(step_Q) < first
        return np.where(early, law.loss(sums, step_Q), anchored.loss(run, sums, step_Q))
    return predict, False


def _described_schedule(args, law):
    from research.curves.schedules import schedule_lr  # lazy: as above

    steps = args.steps
    if args.tokens is not None:
        if steps is not None or not args.tokens_per_step:
            raise UserError("give the horizon as --steps S, or as --tokens D with --tokens-per-step B")
        steps = max(1, round(args.tokens / args.tokens_per_step))
    if steps is None or steps < 1:
        raise UserError("--schedule needs a horizon: --steps S (or --tokens D --tokens-per-step B)")
    peak = args.peak_lr or law.peak_lr
    if not peak or peak <= 0:
        raise UserError("--peak-lr is needed: the law file records no peak LR")
    warmup = args.warmup_steps if args.warmup_steps is not None else (law.warmup_steps or None)
    name = args.schedule + (f"-cooldown{args.cooldown_fraction:g}" if args.schedule == "wsd" else "")
    return name, schedule_lr(args.schedule, steps, peak, warmup_steps=min(warmup, steps) if warmup else None,
                             min_lr_ratio=args.min_lr_ratio, cooldown_fraction=args.cooldown_fraction,
                             cooldown_shape=args.cooldown_shape)


def cmd_predict(args) -> int:
    import numpy as np

    from research.curves.fitting import Curve  # lazy: as above
    from research.curves.record import read_law  # lazy: as above
    from research.curves.table import load_curves  # lazy: as above

    if not (0 < args.level < 1) or args.every < 1:
        raise UserError("--level must lie in (0, 1) and --every be at least 1")
    law = read_law(args.law)
    if (args.table is None) == (args.schedule is None):
        raise UserError("give a TABLE (or sweep directory) to predict, or --schedule with --steps; not both")
    if args.schedule:
        name, lr_T = _described_schedule(args, law)
        curves = [Curve(name, lr_T, np.zeros(0, np.int64), np.zeros(0))]
        given = {name: np.arange(1, lr_T.size + 1)}
        label = lambda run, step_Q: step_Q  # noqa: E731
    else:
        table = load_curves(args.table, args.run_col, args.step_col, args.lr_col, args.loss_col)
        curves = table.select(_runs(args.runs))
        given = {c.run: table.given_steps(c.run) for c in curves}
        label = table.step_label
    rows, summary = [], []
    predict, has_interval = _predictor(law, args.law)
    if not has_interval:
        print(f"note: {args.law} is anchored to run {law.meta['anchor'].get('run')!r}; its predictions come "
              "without a bootstrap interval", file=sys.stderr)
    for c in curves:
        steps = given[c.run]
        pred = predict(c.sums, steps)
        every_row = args.schedule is not None or args.interval  # one prediction per draw and step: opt-in for tables
        band = law.interval(c.sums, steps if every_row else steps[-1:], args.level) if has_interval else None
        show = np.zeros(steps.size, bool)
        show[::args.every] = True
        show[-1] = True
        labels = label(c.run, steps)
        for i in np.flatnonzero(show):
            row = {"run": c.run, "step": int(labels[i]), "loss": float(pred[i])}
            if band is not None and every_row:
                row.update(lo=float(band[0][i]), hi=float(band[1][i]))
            rows.append(row)
        entry = {"run": c.run, "steps": int(c.lr_T.size), "final_loss": float(pred[-1])}
        if band is not None:
            entry.update(final_lo=float(band[0][-1]), final_hi=float(band[1][-1]), level=args.level)
        if c.step_M.size:
            err = np.abs(predict(c.sums, c.step_M) - c.loss_M) / c.loss_M
            entry.update(n_measured=int(c.step_M.size), mean_rel_err=float(err.mean()), max_rel_err=float(err.max()))
        summary.append(entry)
    if args.json:
        print(json.dumps({"law": law.law, "law_file": str(args.law), "runs": summary, "rows": rows}))
        return 0
    for e in summary:
        line = f"{e['run']}: {e['steps']:,} steps, final loss {e['final_loss']:.4f}"
        if "final_lo" in e:
            line += f" [{e['final_lo']:.4f}, {e['final_hi']:.4f}] ({100 * args.level:g}% bootstrap)"
        if "mean_rel_err" in e:
            line += (f"; vs {e['n_measured']:,} measured: mean |rel err| {100 * e['mean_rel_err']:.3f}%, "
                     f"max {100 * e['max_rel_err']:.3f}%")
        print(line)
    return 0
