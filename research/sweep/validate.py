"""The validation rung: train what the law says at budgets beyond the fitted ones, and score the prediction.

A sweep file may add

    [validate]
    factors = [2.0]          # target budgets as multiples of the largest fitted budget ...
    # budgets = [1.2e12]     # ... or as FLOPs (the design's convention), each beyond the largest fitted one
    neighbours = 1           # ladder steps either side of N_opt (default 1: three sizes per target)
    # seeds = 2              # default: the design's seeds

After the sweep's fit (`scaling sweep run`), at each target C the Approach-3 law's N_opt(C)
(research/fit/allocation.py, in the design's FLOP convention) is snapped to the recipe's ladder (the
nearest shape in log N), and that shape and its neighbours are trained from scratch to D = C /
FLOPs-per-token, with the recipe's hyperparameters and the design's seeds (a branch design's runs
use its WSD schedule and cooldown). Each run is an ordinary content-addressed trial in
<sweep>/trials/<id> (resumable like every trial; not a row of results.csv, which holds the fitted
design only). Then fit.json gets a `validate` block: per run the loss predicted (with the interval
`scaling predict` gives: parameter uncertainty and one run's seed noise) against the loss measured
(mean over seeds), the signed error, whether it is inside; and whether N_opt's run was the best of
the three, with a warning when a neighbour beats it by more than the seed noise allows.

`scaling sweep plan` shows the rung's cost before anything runs; it is an estimate, since N_opt is
known only after the fit, but a run at budget C costs C FLOPs whatever its size.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from research.errors import UserError
from research.fit.laws import law_from_fit
from research.fit.predict import predict, predictor_from_fit
from research.fit.record import write_fit
from research.fsutil import read_json
from research.model.accounting import count_model
from research.records import FitResult, Skipped, Validation, as_fit_result
from research.sweep.collect import fmt_seconds
from research.sweep.plan import Plan, _trial, checked, estimate_seconds, seeded
from research.sweep.trial import write_trial
from research.sweep.validate_config import ValidateConfig
from research.train.run_dir import identity, identity_hash
from research.train.sweep_dir import SweepDir, trial_status

NOISE_Z = 2.0  # a neighbour beats N_opt "beyond the noise" when better by more than this many standard errors


def largest_fitted_budget(plan) -> float:
    """The largest budget the fit sees: the design's budgets, else the trials' FLOPs (design convention)."""
    convention = plan.sweep.design.flops_convention
    return max(t.coords.get("budget") or getattr(t, f"flops_{convention}") for t in plan.trials)


def targets(cfg: ValidateConfig, plan) -> list[float]:
    """The rung's budgets, each checked to lie beyond the largest fitted one."""
    largest = largest_fitted_budget(plan)
    if cfg.factors is not None:
        return [f * largest for f in cfg.factors]
    below = [b for b in cfg.budgets if b <= largest]
    if below:
        raise UserError(f"[validate] budgets {', '.join(f'{b:.3g}' for b in below)} are not beyond the largest fitted "
                        f"budget {largest:.3g}: a rung tests extrapolation (or use factors = [2.0])")
    return list(cfg.budgets)


def seeds_of(cfg: ValidateConfig, plan) -> int:
    return cfg.seeds or plan.sweep.design.seeds


def estimate(cfg: ValidateConfig, plan, flops_per_s: float) -> dict:
    """The rung's cost before the fit: every run at budget C costs C FLOPs, whatever N_opt turns out to be."""
    sizes, seeds = 2 * cfg.neighbours + 1, seeds_of(cfg, plan)
    largest = largest_fitted_budget(plan)
    rows = []
    for c in targets(cfg, plan):
        run = SimpleNamespace(flops_6n=c, own_fraction=1.0)  # C in the design's convention, read as 6n FLOPs
        rows.append({"flops": c, "factor": c / largest, "runs": sizes * seeds,
                     "est_time_s": sizes * seeds * estimate_seconds(run, flops_per_s),
                     # D = C / (6N) tokens must fit in the training split (6n; the chinchilla count is close)
                     "min_n_params_fed": None if plan.sweep.design.allow_repeat
                     else c / (6.0 * plan.train_tokens_available)})
    return {"targets": rows, "sizes_per_target": sizes, "seeds": seeds,
            "total_flops": sum(r["flops"] * r["runs"] for r in rows), "est_time_s": sum(r["est_time_s"] for r in rows),
            "flops_convention": plan.sweep.design.flops_convention, "throughput_flops_per_s": flops_per_s,
            "note": "estimated: N_opt is known only after the fit; a run at budget C costs C FLOPs whatever its "
                    "size, so the FLOPs are exact and the time is as rough as the sweep's own"}


def estimate_lines(est: dict) -> list[str]:
    budgets = ", ".join(f"{r['flops']:.3g} ({r['factor']:.2g}x)" for r in est["targets"])
    return [f"validation rung: {len(est['targets'])} target budget(s) {budgets} beyond the largest fitted one: "
            f"N_opt and {est['sizes_per_target'] - 1} neighbour size(s) x {est['seeds']} seed(s) = "
            f"{sum(r['runs'] for r in est['targets'])} runs, {est['total_flops']:.3e} FLOPs "
            f"[{est['flops_convention']}], about {fmt_seconds(est['est_time_s'])} after the sweep",
            f"  ({est['note']})"] + [
        f"  at {r['flops']:.3g}: a size below N = {r['min_n_params_fed']:,.0f} would need more tokens than the "
        "training split holds (such a size is not trained; [design] allow_repeat = true allows it)"
        for r in est["targets"] if r.get("min_n_params_fed")]


# ----------------------------------------------------------------------------- planning after the fit

def _ladder(plan):
    """(model config, counts) of every shape of the recipe, with the sweep's shared [model] settings."""
    vocab = plan.trials[0].config.model.vocab_size
    base_model = dataclasses.replace(plan.sweep.base.model, vocab_size=vocab)
    out = []
    for shape in plan.sweep.recipe.ladder():
        model = dataclasses.replace(base_model, **shape)
        out.append((model, count_model(model)))
    return out


def rung_trials(cfg: ValidateConfig, plan, law) -> tuple[list[dict], list]:
    """([{flops, n_opt, d_opt, runs: [{role, index, trials}]}], every Trial) for the law's N_opt at each target."""
    sweep, design = plan.sweep, plan.sweep.design
    convention = design.flops_convention
    ladder = _ladder(plan)
    tokens_per_step = sweep.base.train.batch_size * sweep.base.model.seq_len
    targets_out, trials = [], []
    for c in targets(cfg, plan):
        n_opt = float(law.n_opt(c))
        best = min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i][1].n_params / n_opt)))
        picks = [(i, "n_opt" if i == best else "smaller" if i < best else "larger")
                 for i in range(best - cfg.neighbours, best + cfg.neighbours + 1) if 0 <= i < len(ladder)]
        target = {"flops": c, "n_opt_law": n_opt, "d_opt_law": float(law.d_opt(c)), "runs": [], "notes": []}
        if len(picks) < 2 * cfg.neighbours + 1:
            target["notes"].append("N_opt lies at the end of the recipe's ladder: fewer neighbours than asked")
        for i, role in picks:
            model, counts = ladder[i]
            steps = max(1, round(c / counts.flops_per_token(convention) / tokens_per_step))
            tokens = steps * tokens_per_step
            size = {"role": role, "layers": model.layers, "d_model": model.d_model, "n_params": counts.n_params,
                    "tokens": tokens}
            if tokens > plan.train_tokens_available and not design.allow_repeat:
                target["runs"].append(dict(size, trials=[], skipped=(
                    f"needs {tokens:,} tokens but the training split holds {plan.train_tokens_available:,} "
                    "(set [design] allow_repeat = true to repeat data)")))
                continue
            hyper = sweep.recipe.hyperparameters(counts.n_params, tokens, steps)
            train = dataclasses.replace(sweep.base.train, steps=steps, **hyper)
            train = design.straight_train(train)  # a cooldown branch stands for the straight WSD run
            coords = {"budget": c, "requested_n": n_opt, "requested_tokens_per_param": tokens / counts.n_params,
                      "validate": role}
            ids = []
            for config in seeded(sweep.base.replace(model=model, train=train), seeds_of(cfg, plan)):
                checked(config, counts)
                trial = _trial(identity_hash(identity(config, plan.data_fingerprint)), config, coords, counts,
                               tokens, steps, recipe=sweep.recipe)
                trials.append(trial)
                ids.append(trial.trial_id)
            target["runs"].append(dict(size, trials=ids))
        targets_out.append(target)
    return targets_out, trials


def _measured(sweep_dir: Path, ids: list[str]) -> tuple[list[float], list[str]]:
    """Final eval losses of the completed trials, and the status of the others."""
    losses, other = [], []
    for trial_id in ids:
        summary = read_json(SweepDir(sweep_dir).trial_dir(trial_id) / "summary.json")
        loss = summary.get("final_eval_loss") if isinstance(summary, dict) else None
        if isinstance(summary, dict) and summary.get("status") == "completed" and isinstance(loss, (int, float)) \
                and math.isfinite(loss):
            losses.append(float(loss))
        else:
            other.append(f"{trial_id}: {trial_status(SweepDir(sweep_dir).trial_dir(trial_id))}")
    return losses, other


def score(fit: FitResult, cfg: ValidateConfig, target_rows: list[dict], sweep_dir: Path, largest: float) -> dict:
    """The `validate` block: predicted against measured loss per run, and whether N_opt's run was the best."""
    pred = predictor_from_fit(fit, "approach3")
    pooled = fit.noise.pooled if fit.noise is not None else None
    noise_std = pooled.std if pooled is not None else None
    warnings, scored = [], []
    for target in target_rows:
        runs = target["runs"]
        p = predict(pred, [r["n_params"] for r in runs], [r["tokens"] for r in runs], level=cfg.level)
        for run, row in zip(runs, p["rows"]):
            losses, other = _measured(sweep_dir, run["trials"])
            run.update(predicted=row["loss"], low=row["loss_low"], high=row["loss_high"], seeds=len(losses))
            if other:
                run["not_completed"] = other
            if losses:
                mean = float(np.mean(losses))
                run.update(measured=mean, measured_std=float(np.std(losses, ddof=1)) if len(losses) > 1 else None,
                           error=mean - row["loss"], rel_error=(mean - row["loss"]) / row["loss"],
                           inside=None if row["loss_low"] is None else bool(row["loss_low"] <= mean <= row["loss_high"]))
        done = [r for r in runs if "measured" in r]
        centre = next((r for r in runs if r["role"] == "n_opt"), None)
        target["factor"] = target["flops"] / largest
        if centre is not None and "measured" in centre and len(done) > 1:
            best = min(done, key=lambda r: r["measured"])
            target["n_opt_best"] = best is centre
            target["best_n_params"] = best["n_params"]
            seeds = max(1, min(r["seeds"] for r in done))
            if noise_std is not None:
                se_diff = noise_std * math.sqrt(2.0 / seeds)
                target["noise_std"] = noise_std
                target["beyond_noise"] = bool(centre["measured"] - best["measured"] > NOISE_Z * se_diff)
            if not target["n_opt_best"]:
                margin = centre["measured"] - best["measured"]
                if noise_std is None:
                    warnings.append(f"at C = {target['flops']:.3g}: the law's N_opt ({centre['n_params']:,}) was beaten "
                                    f"by N = {best['n_params']:,} by {margin:.4f}; the sweep's seed noise is unmeasured "
                                    "(no replicate runs), so whether that is beyond the noise is unknown")
                elif target["beyond_noise"]:
                    warnings.append(f"at C = {target['flops']:.3g}: the law's N_opt ({centre['n_params']:,}) is not the "
                                    f"best size: N = {best['n_params']:,} is better by {margin:.4f} nats, more than "
                                    f"{NOISE_Z:g} standard errors of the seed noise ({se_diff:.4f}): the law's "
                                    "allocation does not hold at this budget")
        elif centre is not None and "measured" not in centre:
            warnings.append(f"at C = {target['flops']:.3g}: N_opt's run did not complete; nothing to score")
        scored += [r for r in done]
    inside = [r for r in scored if r.get("inside") is not None]
    summary = {"n": len(scored), "n_inside": sum(r["inside"] for r in inside),
               "mean_rel_error": float(np.mean([r["rel_error"] for r in scored])) if scored else None,
               "mean_abs_rel_error": float(np.mean([abs(r["rel_error"]) for r in scored])) if scored else None}
    a3 = fit.approach3  # predictor_from_fit above refused a fit without one
    return {"level": cfg.level, "config": cfg.to_dict(), "largest_fitted_budget": largest, "law": a3.params(),
            "flops_convention": a3.flops_convention or "6n",
            "interval": p["interval"]["description"] if target_rows else None,
            "error": "measured - predicted (nats/token; positive: worse than predicted); measured = mean over seeds",
            "targets": target_rows, "summary": summary, "warnings": warnings}


def report_lines(block: Validation | dict) -> list[str]:
    """The printed lines of fit.json's `validate` block (a record, or its JSON object)."""
    if isinstance(block, dict):
        block = Validation.read(block, "the validate block")
    if block.skipped:
        return [f"validate: skipped: {block.reason}"]
    lines = []
    for t in block.targets:
        sizes = ", ".join(f"{r['n_params']:,}" for r in t["runs"])
        lines.append(f"validate: C = {t['flops']:.3g} [{block.flops_convention}] ({t['factor']:.2g}x the largest "
                     f"fitted budget): law's N_opt = {t['n_opt_law']:,.0f}; trained N = {sizes}")
        for r in t["runs"]:
            iv = "" if r.get("low") is None else f" [{r['low']:.4f}, {r['high']:.4f}]"
            if "measured" in r:
                where = "" if r.get("inside") is None else (" inside" if r["inside"] else " OUTSIDE")
                lines.append(f"  {r['role']:7} N {r['n_params']:>10,}  D {r['tokens']:>12,}  predicted "
                             f"{r['predicted']:.4f}{iv}  measured {r['measured']:.4f} ({r['seeds']} seed(s)), error "
                             f"{r['error']:+.4f} ({r['rel_error']:+.2%}){where}")
            else:
                why = r.get("skipped") or "not completed: " + "; ".join(r.get("not_completed", []))
                lines.append(f"  {r['role']:7} N {r['n_params']:>10,}  {why}")
        if "n_opt_best" in t:
            lines.append("  N_opt's run was the best of the sizes trained" if t["n_opt_best"] else
                         f"  N_opt's run was not the best: N = {t['best_n_params']:,} was"
                         + ("" if "beyond_noise" not in t else " (beyond the noise)" if t["beyond_noise"]
                            else " (within the seed noise)"))
    s = block.summary
    if s["n"]:
        lines.append(f"validate: {s['n_inside']}/{s['n']} measured losses inside their {block.level:.0%} intervals; "
                     f"mean error {s['mean_rel_error']:+.2%} (|error| {s['mean_abs_rel_error']:.2%})")
    lines += [f"warning: {w}" for w in block.warnings]
    return lines


def rung_law(fit: FitResult | None):
    """The Approach 3 law of a fit.json, with a finite compute-optimal allocation; UserError otherwise."""
    a3 = fit.approach3 if fit is not None else None
    if a3 is None or a3.skipped:
        why = a3.reason if a3 is not None else "no fit.json with an Approach 3 law"
        raise UserError(f"the rung needs the Approach 3 law's N_opt: {why}")
    try:
        law = law_from_fit(a3.to_json(), name="approach3")
    except UserError as err:
        raise UserError(f"the Approach 3 law gives no compute-optimal N to train ({err})") from None
    if not (math.isfinite(law.a) and 0 < law.a < 1 and math.isfinite(law.G) and law.G > 0):
        raise UserError(f"the Approach 3 law's allocation is degenerate (N_opt ~ C^{law.a:.3g}); nothing sensible "
                        "to train: widen the sweep")
    return law


def run_rung(plan, sweep_dir: Path, run_trials) -> dict:
    """Plan the rung from DIR/fit.json, train it (`run_trials(rung_plan, trial_dirs)`, the sweep's executor),
    score it and write fit.json's `validate` block; returns the block ({"skipped": why} without a usable fit)."""
    cfg = plan.sweep.validate
    data = read_json(SweepDir(sweep_dir).fit_path)
    try:
        fit = as_fit_result(data, str(SweepDir(sweep_dir).fit_path)) if isinstance(data, dict) else None
        target_rows, trials = rung_trials(cfg, plan, rung_law(fit))
    except UserError as err:  # no law to ask, or a rung the corpus cannot feed: recorded, the sweep stands
        block = Skipped(reason=str(err)).to_json()
    else:
        dirs = []
        for trial in trials:
            trial_dir = SweepDir(sweep_dir).trial_dir(trial.trial_id)
            trial_dir.mkdir(parents=True, exist_ok=True)
            write_trial(trial_dir, trial, plan.sweep.name)
            dirs.append(trial_dir)
        rung = Plan(sweep=plan.sweep, trials=trials, rejected=[], data_fingerprint=plan.data_fingerprint,
                    train_tokens_available=plan.train_tokens_available)
        print(f"validate: {len(trials)} run(s) at {len(target_rows)} target budget(s)", file=sys.stderr)
        run_trials(rung, dirs)
        block = score(fit, cfg, target_rows, sweep_dir, largest_fitted_budget(plan))
    write_fit(SweepDir(sweep_dir).fit_path, {"validate": block}, merge=True)
    return block
