"""A trunks-only design, evaluated on a finished branch sweep: the curve law stands in for most cooldowns.

A branch design trains one constant-LR trunk per size and seed, plus one cooldown per horizon.
Here only the trunks and one or two cooldowns per trunk are kept: the longest, or the
shortest and the longest. For each size, one curve law is fitted to every logged step of
those runs (all seeds). It predicts the final loss of every other branch from that branch's
own schedule, times its trunk's offset (the centred median log residual, as
`research.curves.offsets` computes it). Fitted to the training loss (`loss_col="loss"`: every
logged step, where a sweep's eval losses are sparse), the law's predictions are moved onto the
eval set by the median log gap between the kept runs' eval losses and the law
(`research.curves.offsets.eval_log_gap`), so that predicted and measured rows share one scale.
`from_step="plateau"` fits each size from where its trunks have left their early plateau
(`research.curves.fitting.plateau_start`), which neither law describes. `anchor="loss"` or
`"dense_eval_loss"` instead anchors each lineage to its own trunk's curve in that loss
(`research.curves.anchor`): the trunk gives the loss level at each area under the schedule,
plateau included; the law gives only the drop a cooldown buys and the gap to the eval set; no
offsets are needed. The result is a results table that `scaling fit` reads like the real one:
measured rows where the runs were kept, predicted rows elsewhere (column `source`). Its FLOPs are compared:

    spent        what the trunks-only design computes: each trunk once, plus the kept cooldowns
    represented  the IsoFLOP points it stands for: every row's whole-history FLOPs (6N per token)

Fitting both tables (`scaling fit`) gives the two designs' exponent a on the same sizes.

`per_doubling=K` lets the curve law stand for more IsoFLOP points than the sweep trained: budgets
2^(1/K) apart between the sweep's smallest and largest (those not already trained), each size at
the horizon D = C / 6N where D/N lies within the sweep's own range and the horizon between its
trunk's shortest and longest branch (an interpolation between trained cooldowns, never beyond the
trunk). Each such row is the law's loss for that horizon's WSD branch (the trunk's own schedule
with its steps changed) times the trunk's offset; it adds to the FLOPs represented, not to those
spent, and is marked `between = True`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import numpy as np

from research.curves.anchor import ANCHOR_LOSSES, anchored_for_size, target_weight
from research.curves.fitting import plateau_start
from research.curves.laws import CurveSums
from research.curves.offsets import eval_log_gap, lineage_of, size_offsets
from research.curves.schedules import config_of_record, lr_of_config
from research.curves.table import load_curves
from research.errors import UserError
from research.fit.data import read_frame
from research.fsutil import read_json


def kept_horizons(steps: list[int], keep: int) -> set[int]:
    """The horizons (steps) of one trunk's branches whose cooldowns are trained: the longest, or the
    shortest and the longest."""
    s = sorted(set(steps))
    return {s[-1]} if keep == 1 else {s[0], s[-1]}


def between_budgets(budgets, per_doubling: int) -> list[float]:
    """Budgets 2^(1/per_doubling) apart from the largest of `budgets` down to the smallest, without
    those within 1% of one of `budgets` (trained already)."""
    low, high = min(budgets), max(budgets)
    out, j = [], 0
    while (c := high * 2.0 ** (-j / per_doubling)) >= low * (1 - 1e-9):
        if all(abs(c / b - 1) > 0.01 for b in budgets):
            out.append(c)
        j += 1
    return sorted(out)


BRANCH_COLUMNS = ("trial", "n_params", "steps", "flops_6n")  # what each completed branch row must give
MEASURED_ONLY = ("final_train_loss", "eval_bits_per_byte", "wall_time_s", "error")  # empty in a row never trained


def _checked_branch_rows(frame, results: Path):
    """The completed branch rows with the columns the evaluation reads as numbers: N, steps and FLOPs
    positive (steps whole), branch_step a whole step in [0, steps] (empty: 0); UserError naming the row."""
    import pandas as pd  # lazy: pandas costs a second at start-up; only this command reads a table here

    for col in BRANCH_COLUMNS:
        if col not in frame.columns:
            raise UserError(f"{results} has no {col!r} column; `scaling sweep run` rebuilds results.csv from the trials")
    frame = frame.copy()
    for col in BRANCH_COLUMNS[1:] + ("branch_step",):
        if col not in frame.columns:
            frame[col] = 0
        raw = frame[col]
        value = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        if col == "branch_step":
            value = np.where(raw.isna(), 0.0, value)
        steps = pd.to_numeric(frame["steps"], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(value) | (value < 0 if col == "branch_step" else value <= 0)
        if col in ("steps", "branch_step"):
            bad |= np.isfinite(value) & (value != np.round(value))
        if col == "branch_step":
            bad |= np.isfinite(steps) & (value > steps)
        if bad.any():
            i = int(np.argmax(bad))
            want = "a whole step in [0, steps]" if col == "branch_step" else \
                "a positive whole number" if col == "steps" else "a positive number"
            cell = raw.iloc[i].item() if isinstance(raw.iloc[i], np.generic) else raw.iloc[i]
            raise UserError(f"{results}: branch {frame['trial'].iloc[i]!s:.40} has {col} = {repr(cell)[:40]}, "
                            f"not {want}; `scaling sweep run` rebuilds results.csv from the trials")
        frame[col] = value
    return frame


def _any_config(sweep_dir: Path, rows: list[dict]) -> dict:
    """The config of the sweep's first branch that records one (the eval and batch sizes are the sweep's)."""
    for r in rows:
        record = read_json(sweep_dir / "trials" / str(r["trial"]) / "trial.json") or {}
        if isinstance(record.get("config"), dict):
            return record["config"]
    raise UserError(f"no branch of {sweep_dir} has a trial.json with its config")


def _between_rows(members: list[dict], grid: list[float], window: tuple[float, float], predict,
                  sweep_dir: Path) -> list[dict]:
    """One trunk's rows at the grid budgets it can stand for (see the module docstring): its longest
    branch's row and schedule with the horizon changed, the loss `predict(sums, step_Q)` gives (on the eval set)."""
    template = max(members, key=lambda r: int(r["steps"]))
    shortest, longest = min(int(r["steps"]) for r in members), int(template["steps"])
    record = read_json(sweep_dir / "trials" / str(template["trial"]) / "trial.json") or {}
    config = config_of_record(record)
    n, per_step = float(template["n_params"]), float(template["tokens"]) / longest
    rows = []
    for c in grid:
        steps = round(c / (6 * n) / per_step)
        tokens = steps * per_step
        if not shortest <= steps <= longest or not window[0] <= tokens / n <= window[1]:
            continue
        lr_T = lr_of_config(dataclasses.replace(config, train=dataclasses.replace(config.train, steps=steps)))
        loss = float(predict(CurveSums.of(lr_T), np.array([steps]))[0])
        scale = tokens / float(template["tokens"])
        row = dict(template, **{k: math.nan for k in MEASURED_ONLY if k in template})
        row.update(trial=f"{lineage_of(template)}@{steps}", budget=c, steps=steps, tokens=tokens,
                   requested_tokens_per_param=tokens / n, flops_6n=6 * n * tokens, final_eval_loss=loss,
                   n_params=n, branch_step=math.nan, flops_spent_6n=0.0,
                   status="completed", between=True)
        for col in ("flops_chinchilla", "n_params_nonembedding"):
            if col in template:
                row[col] = float(template[col]) * (scale if col == "flops_chinchilla" else 1.0)
        rows.append(row)
    return rows


def _size_law(n: float, fit_runs: dict, lineages: dict, law: str, loss_col: str, start, eval_curves: dict,
              anchor: str | None, weight: float | None, gaps: dict):
    """predict(lineage, sums, step_Q) -> the eval loss, from the law of one size fitted to `fit_runs`:
    anchored to each lineage's trunk (`anchor`: the loss it is read in), or the formula times the
    lineage's offset (and moved onto the eval set by the median log gap when fitted to another loss).
    Records the gap to the eval set (log for the formula, nats when anchored) in `gaps`."""
    if anchor:
        anchored = anchored_for_size(law, fit_runs, eval_curves, lineages, list(fit_runs), weight)
        gaps[f"{n:.0f}"] = anchored.gap
        return anchored.loss
    offsets = size_offsets(n, fit_runs, lineages, law, start)
    fitted, gap = offsets.curve_law, 0.0
    if loss_col != "eval_loss":  # onto the eval set, each run's trunk offset left out
        shift = {run: offsets.offsets.get(lineages[run], 0.0) for run in fit_runs}
        gap = eval_log_gap(fitted, [eval_curves[run] for run in fit_runs if run in eval_curves], shift)
        gaps[f"{n:.0f}"] = gap

    def predict(lineage: str, sums, step_Q):
        return fitted.loss(sums, step_Q) * math.exp(offsets.offsets.get(lineage, 0.0) + gap)
    return predict


def trunks_only(sweep_dir, keep: int = 2, law: str = "multipower", loss_col: str = "eval_loss",
                from_step: int | str | None = None, per_doubling: int | None = None, anchor: str | None = None):
    """(table, summary): results.csv with the non-kept branches' final losses predicted, and the FLOPs.
    `from_step`: fit from this step on, "plateau" (per size, past its trunks' early plateau), or None
    (each run's steps after its warmup). `per_doubling`: also represent budgets between the trained
    ones (module docstring)."""
    if keep not in (1, 2):
        raise UserError(f"--keep {keep}: keep 1 (the longest) or 2 (the shortest and longest) cooldowns per trunk")
    if per_doubling is not None and not 1 <= per_doubling <= 64:
        raise UserError(f"--budgets-per-doubling {per_doubling}: give a whole number from 1 to 64")
    sweep_dir = Path(sweep_dir)
    results = sweep_dir / "results.csv"
    if not (sweep_dir / "trials").is_dir() or not results.is_file():
        raise UserError(f"{sweep_dir} is not a sweep directory with results.csv and trials/")
    frame = read_frame(results)
    if "kind" not in frame.columns or not (frame["kind"].astype(str) == "branch").any():
        raise UserError(f"{results} has no branch rows; a trunks-only design is evaluated on a branch design's sweep")
    done = frame["status"].astype(str) == "completed" if "status" in frame else True
    frame = _checked_branch_rows(frame[done & (frame["kind"].astype(str) == "branch")].reset_index(drop=True), results)
    rows = frame.to_dict("records")
    if anchor is not None:
        if anchor not in ANCHOR_LOSSES:
            raise UserError(f"--anchor {anchor!r}: anchor to {' or '.join(ANCHOR_LOSSES)}")
        if from_step is not None:
            raise UserError("--from-step does not apply with --anchor: the trunks' own curves stand in for the "
                            "formula from their warmup on")
        loss_col = anchor
    table = load_curves(sweep_dir, loss_col=loss_col)
    weight = target_weight(_any_config(sweep_dir, rows), anchor) if anchor else None
    eval_curves = table.curves if loss_col == "eval_loss" else load_curves(sweep_dir, loss_col="eval_loss").curves
    lineage = {str(r["trial"]): lineage_of(r) for r in rows}
    kept: set[str] = set()
    by_lineage: dict[str, list] = {}
    for r in rows:
        by_lineage.setdefault(lineage[str(r["trial"])], []).append(r)
    for members in by_lineage.values():
        horizons = kept_horizons([int(r["steps"]) for r in members], keep)
        kept |= {str(r["trial"]) for r in members if int(r["steps"]) in horizons}
    grid, window = [], (0.0, math.inf)
    if per_doubling:
        trained = sorted({float(r.get("budget") or r["flops_6n"]) for r in rows})
        grid = between_budgets(trained, per_doubling)
        ratios = [float(r["tokens"]) / float(r["n_params"]) for r in rows]
        window = (min(ratios) * (1 - 1e-9), max(ratios) * (1 + 1e-9))
    predicted, spent, represented, trunk_flops, gaps, starts = {}, 0.0, 0.0, 0.0, {}, {}
    between: list[dict] = []
    for n in sorted({float(r["n_params"]) for r in rows}):
        size_rows = [r for r in rows if float(r["n_params"]) == n]
        size_lineages = {lineage[str(r["trial"])] for r in size_rows}
        fit_runs = {run: c for run, c in table.curves.items()
                    if run in size_lineages or run in kept and lineage.get(run) in size_lineages}
        missing = sorted(size_lineages - set(table.curves))
        if missing:
            raise UserError(f"trunk {missing[0]} of N = {n:,.0f} has no metrics.jsonl in {sweep_dir}/trials")
        start = plateau_start(list(fit_runs.values())) if from_step == "plateau" else from_step
        starts[f"{n:.0f}"] = start
        predict = _size_law(n, fit_runs, {run: lineage.get(run, run) for run in fit_runs}, law, loss_col, start,
                            eval_curves, anchor, weight, gaps)
        per_step = {float(r["flops_6n"]) / int(r["steps"]) for r in size_rows}
        flops_per_step = sum(per_step) / len(per_step)
        for trunk in size_lineages:
            record = read_json(sweep_dir / "trials" / trunk / "trial.json") or {}
            trunk_steps = ((record.get("config") or {}).get("train") or {}).get("steps")
            if trunk_steps is None:
                raise UserError(f"trunk {trunk} has no trial.json with its steps")
            trunk_flops += flops_per_step * int(trunk_steps)
        for r in size_rows:
            trial = str(r["trial"])
            represented += float(r["flops_6n"])
            if trial in kept:
                spent += float(r["flops_6n"]) * (1 - int(r["branch_step"] or 0) / int(r["steps"]))
                continue
            curve = table.curves.get(trial)
            if curve is None:
                raise UserError(f"branch {trial} has no config in {sweep_dir}/trials; its schedule is unknown")
            predicted[trial] = float(predict(lineage[trial], curve.sums, np.array([curve.lr_T.size]))[0])
        for trunk in sorted(size_lineages) if grid else ():
            added = _between_rows([r for r in size_rows if lineage[str(r["trial"])] == trunk], grid, window,
                                  functools.partial(predict, trunk), sweep_dir)
            represented += sum(r["flops_6n"] for r in added)
            between += added
        print(f"N = {n:,.0f}: {len(fit_runs)} runs fitted, "
              f"{sum(1 for r in size_rows if str(r['trial']) in predicted)} branch end points predicted", file=sys.stderr)
    out = frame.copy()
    out["source"] = ["predicted" if str(t) in predicted else "measured" for t in out["trial"]]
    out["final_eval_loss_measured"] = out["final_eval_loss"]
    out["final_eval_loss"] = [predicted.get(str(t), v) for t, v in zip(out["trial"], out["final_eval_loss"])]
    if per_doubling:
        import pandas as pd  # lazy, as above

        out["between"] = False
        added = pd.DataFrame(between, columns=list(out.columns))
        added["source"], added["between"] = "predicted", True
        out = pd.concat([out, added], ignore_index=True) if len(added) else out
    spent += trunk_flops
    cooldowns = sum(float(r["flops_6n"]) * (1 - int(r["branch_step"] or 0) / int(r["steps"])) for r in rows)
    summary = {"keep": keep, "law": law, "loss_col": loss_col, "anchor": anchor, "from_step": starts,
               "flops_spent_6n": spent, "flops_represented_6n": represented,
               "spent_over_represented": spent / represented if represented else float("nan"),
               "branch_design_spent_over_represented": (trunk_flops + cooldowns) / represented if represented
               else float("nan"), "n_rows": len(out), "n_predicted": len(predicted) + len(between)}
    if per_doubling:
        summary.update(budgets_per_doubling=per_doubling, n_between=len(between),
                       between_budgets=sorted({r["budget"] for r in between}))
    if gaps:
        # per size (n_params): anchored, eval - anchor loss (nats); else log(eval / law fitted to the training loss)
        summary["anchor_gap_nats" if anchor else "eval_log_gap"] = gaps
    return out, summary
