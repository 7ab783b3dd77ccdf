"""Loss curves in: a per-step table (CSV, TSV, parquet) or a sweep / run directory.

A table has one row per optimizer step of each run, from step 1 to its last:

    run     the run's name (any text)
    step    1-based optimizer step
    lr      the learning rate used at that step
    loss    the loss measured after it (empty where it was not measured)

A sweep directory (<sweep>/trials/<trial>/) or one run directory is read from each run's
config (trial.json or config.json) and metrics.jsonl: the LR of every step is rebuilt from the
run's schedule by the trainer's own schedule function, the loss is the logged eval loss
(`loss_col="eval_loss"`: the fixed eval set), the loss on its prefix that runs with `[train]
dense_eval_tokens` log at every evaluation ("dense_eval_loss"; the default where every run logs
it, else "eval_loss"), or the training loss ("loss").
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.curves.fitting import Curve
from research.curves.schedules import config_of_record, lr_of_config
from research.errors import UserError, closest
from research.fit.data import read_frame
from research.fsutil import read_json, read_jsonl

RUN_DIR_LOSSES = ("eval_loss", "dense_eval_loss", "loss")
MAX_CURVE_STEPS = 10**7  # a run's steps: the lr of every step is held in memory (8 bytes each, several arrays)


@dataclass
class CurveTable:
    """The runs of a table, in order, and the rows to predict (run, step) where lr was given."""

    curves: dict[str, Curve]
    source: str
    lr_steps: dict  # run -> the steps whose lr the input gives (a table's rows; every step of a run dir)
    first_step: dict = None  # run -> the step number the table gives its first step (1, or 0 if counted from 0)
    models: dict = None  # run -> its [model] settings, for a run or sweep directory (a table does not say)

    def step_label(self, run: str, step_Q: np.ndarray) -> np.ndarray:
        """The table's own step numbers of 1-based steps (a table counted from 0 gets them back)."""
        return np.asarray(step_Q) - 1 + (self.first_step or {}).get(run, 1)

    def one_model(self, runs: list[str]) -> None:
        """UserError when `runs` of a run or sweep directory hold more than one model shape: a curve law
        describes the loss curves of one size (a table's rows do not say, so a table is taken as given)."""
        shapes: dict[str, list[str]] = {}
        for run in runs:
            model = (self.models or {}).get(run)
            if isinstance(model, dict):
                shapes.setdefault(json.dumps(model, sort_keys=True), []).append(run)
        if len(shapes) > 1:
            named = sorted(((json.loads(k), v) for k, v in shapes.items()),
                           key=lambda mv: (str(mv[0].get("d_model")).zfill(9), str(mv[0].get("layers"))))
            sizes = "; ".join(f"d_model {m.get('d_model')}, {m.get('layers')} layer(s): {len(v)} runs" for m, v in named)
            raise UserError(f"{self.source}: the runs hold {len(shapes)} model shapes ({sizes}); a curve law describes "
                            f"one size: pick its runs with --runs, e.g. --runs {','.join(named[0][1])}")

    def given_steps(self, run: str) -> np.ndarray:
        return self.lr_steps.get(run, np.arange(1, self.curves[run].lr_T.size + 1))

    def select(self, runs: list[str] | None) -> list[Curve]:
        if not runs:
            return list(self.curves.values())
        missing = [r for r in runs if r not in self.curves]
        if missing:
            names = list(self.curves)
            raise UserError(f"--runs: no run {missing[0]!r} in {self.source}{closest(missing[0], names)}; "
                            f"it has {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        return [self.curves[r] for r in runs]


def load_curves(path, run_col: str = "run", step_col: str = "step", lr_col: str = "lr",
                loss_col: str | None = None) -> CurveTable:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a per-step table (CSV, TSV, parquet) or a sweep directory")
    if p.is_dir():
        return _from_directory(p, loss_col)
    return _from_table(p, run_col, step_col, lr_col, loss_col or "loss")


# ---------------------------------------------------------------- tables

def _from_table(path: Path, run_col: str, step_col: str, lr_col: str, loss_col: str) -> CurveTable:
    import pandas as pd

    frame = read_frame(path)
    for col, flag in ((run_col, "--run-col"), (step_col, "--step-col"), (lr_col, "--lr-col"), (loss_col, "--loss-col")):
        if col not in frame.columns:
            cols = ", ".join(map(str, frame.columns[:20]))
            raise UserError(f"column {col!r} not in {path.name}{closest(col, map(str, frame.columns))}; "
                            f"pass {flag} (columns: {cols})")
    if frame.empty:
        raise UserError(f"{path.name} has no rows")
    no_run = frame[run_col].isna().to_numpy()
    if no_run.any():  # an empty cell (or "nan") names no run: it would join none, or all such rows one
        i = int(np.argmax(no_run))
        raise UserError(f"{path.name} row {i + 2}: {run_col} is empty; give every row its run's name (--run-col)")
    run = frame[run_col].astype(str).to_numpy()
    step = pd.to_numeric(frame[step_col], errors="coerce").to_numpy(float)
    lr = pd.to_numeric(frame[lr_col], errors="coerce").to_numpy(float)
    loss = pd.to_numeric(frame[loss_col], errors="coerce").to_numpy(float)
    bad_step = ~np.isfinite(step) | (step < 0) | (step != np.round(step)) | (step > MAX_CURVE_STEPS)
    if bad_step.any():
        i = int(np.argmax(bad_step))
        raise UserError(f"{path.name} row {i + 2}: {step_col} = {_cell(frame[step_col].iloc[i])} is not a step "
                        f"number (1, 2, ... or 0, 1, ..., at most {MAX_CURVE_STEPS:,})")
    bad_lr = np.isfinite(lr) & (lr < 0)
    if bad_lr.any():
        i = int(np.argmax(bad_lr))
        raise UserError(f"{path.name} row {i + 2}: {lr_col} = {_cell(lr[i])} is negative; a learning rate is >= 0")
    curves, lr_steps, first = {}, {}, {}
    for name in dict.fromkeys(run):  # in order of first appearance
        sel = run == name
        first[name] = 0 if step[sel].min() == 0 else 1
        if first[name] == 0:
            print(f"warning: {path.name}: run {name!r} counts its steps from 0; read as 1, 2, ... "
                  "(predictions keep the table's numbers)", file=sys.stderr)
        shifted = step[sel].astype(np.int64) + (1 - first[name])
        curves[name] = _curve(name, shifted, lr[sel], loss[sel], path.name)
        lr_steps[name] = np.sort(shifted[np.isfinite(lr[sel])])
    return CurveTable(curves, str(path), lr_steps, first)


def _curve(name: str, step: np.ndarray, lr: np.ndarray, loss: np.ndarray, where: str) -> Curve:
    order = np.argsort(step, kind="stable")
    step, lr, loss = step[order], lr[order], loss[order]
    if np.any(np.diff(step) == 0):
        dup = int(step[np.argmax(np.diff(step) == 0)])
        raise UserError(f"{where}: run {name!r} has two rows for step {dup}; one row per step")
    given = np.isfinite(lr)
    if not given.any() or not np.any(lr[given] > 0):
        raise UserError(f"{where}: run {name!r} has no positive learning rate; the curve laws need the lr "
                        "of every step")
    last = int(step[given].max())
    grid = np.arange(1, last + 1)
    first = int(step[given].min())
    if given.sum() == last and np.array_equal(step[given], grid):
        lr_T = lr[given]
    else:  # steps without a row, or without an lr: interpolate between the given ones
        # Before the first given step, a linear warmup from 0 (the usual shape) rather than the first LR held
        # flat: the area S1 the laws read would otherwise count those steps at full LR. On published-like
        # curves logged from the end of a 1000-step warmup, the worst error falls from 2.7% to 0.44%.
        lr_T = np.interp(grid, np.concatenate([[0], step[given]]), np.concatenate([[0.0], lr[given]])) if first > 1 \
            else np.interp(grid, step[given], lr[given])
        ramp = (f"; before step {first:,} (its first lr), a linear warmup from 0 is assumed: give the lr of those "
                "steps if the run had another") if first > 1 else ""
        print(f"warning: {where}: run {name!r} gives the lr at {int(given.sum()):,} of its {last:,} steps; "
              f"the others are interpolated{ramp}", file=sys.stderr)
    measured = np.isfinite(loss) & (loss > 0) & (step <= last)
    return Curve(name, lr_T, step[measured], loss[measured])


# ---------------------------------------------------------------- run and sweep directories

def _from_directory(path: Path, loss_col: str | None) -> CurveTable:
    if loss_col is not None and loss_col not in RUN_DIR_LOSSES:
        raise UserError(f"--loss-col {loss_col!r}: a run or sweep directory logs {' or '.join(RUN_DIR_LOSSES)}")
    if (path / "trials").is_dir():
        run_dirs = sorted(p for p in (path / "trials").iterdir() if (p / "metrics.jsonl").exists())
        if not run_dirs:
            raise UserError(f"{path}/trials holds no trial with metrics.jsonl; run the sweep first")
    elif (path / "metrics.jsonl").exists():
        run_dirs = [path]
    else:
        raise UserError(f"{path} is neither a sweep directory (trials/) nor a run directory (metrics.jsonl)")
    runs = {}
    for run_dir in run_dirs:
        record = read_json(run_dir / "trial.json") or read_json(run_dir / "config.json")
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            print(f"warning: {run_dir.name}: no trial.json or config.json with its config; skipped", file=sys.stderr)
            continue
        runs[run_dir] = (record, [r for r in read_jsonl(run_dir / "metrics.jsonl") if isinstance(r, dict)])
    if loss_col is None:  # the densely evaluated prefix where every run has it, else the full eval set
        dense = runs and all(any(_number(r.get("dense_eval_loss")) for r in rows) for _, rows in runs.values())
        loss_col = "dense_eval_loss" if dense else "eval_loss"
    curves, models = {}, {}
    for run_dir, (record, rows) in runs.items():
        models[run_dir.name] = record["config"].get("model")
        try:
            lr_T = lr_of_config(config_of_record(record))
        except UserError as err:
            raise UserError(f"{run_dir.name}: {err}") from None
        step = np.array([r.get("step") for r in rows if _number(r.get(loss_col)) and isinstance(r.get("step"), int)],
                        np.int64)
        loss = np.array([r[loss_col] for r in rows if _number(r.get(loss_col)) and isinstance(r.get("step"), int)],
                        float)
        keep = (step >= 1) & (step <= lr_T.size) & (loss > 0)
        curves[run_dir.name] = Curve(run_dir.name, lr_T, step[keep], loss[keep])
    if not curves:
        raise UserError(f"{path}: no run with a readable config")
    return CurveTable(curves, str(path), {}, models=models)


def _cell(v) -> str:
    """A table cell as the user wrote it (a numpy scalar as its plain number)."""
    return repr(v.item() if isinstance(v, np.generic) else v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
