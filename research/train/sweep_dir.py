"""A sweep directory: the one owner of its layout, beside `RunDir` (one run's directory).

    sweep.json        the sweep's record: name, source, FLOP convention, design, data fingerprint
    plan.json         the planned trials and trunks (`scaling sweep plan --json`)
    trials/<id>/      one trial: trial.json + a normal run directory (RunDir), failed.json, train.log
    trials/<trunk>/branch_points/<step>   a trunk's checkpoints its cooldown branches start from
    results.csv       one row per planned trial, rebuilt from trials/ every time (`collect`)
    fit.json          fitted laws (`scaling fit`); fit.prev.json: the one a failed refit replaced
    lr_rule.json      an lr sweep's learning-rate rule (`scaling lr-rule`)
    plots/            figures
    events.jsonl      the runners' log of trial starts, ends and retries
    slurm/            submitit's job files (--executor slurm)
    jax_cache/        JAX's persistent compilation cache, shared by the trials

Everything that reads or writes a sweep directory goes through `SweepDir`: the runner, collect,
the fits, the figures and the tracking. It sits in the train layer so the layers above it
(bench, fit, plots, sweep) can all read a sweep without importing each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from research.errors import UserError
from research.config import FLOP_CONVENTIONS
from research.fsutil import ProcessLock, atomic_write_text, read_json
from research.model.accounting import RUN_SIZE_FIELDS

LR_KIND = "lr"  # [design] kind of a learning-rate sweep (fits a rule, not the Chinchilla approaches)
TRIAL_STATUSES = ("completed", "running", "failed", "diverged", "pending")
COLUMNS = ["trial", "status", "kind", "seed", "budget", "requested_n", "requested_tokens_per_param", "family",
           "layers", "d_model", "heads", "seq_len", "vocab_size", "n_params", "n_params_nonembedding", "tokens",
           "flops_6n", "flops_chinchilla", "final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s",
           "steps", "batch_size", "lr", "lr_multiplier", "trunk", "branch_step", "flops_spent_6n", "error"]  # results.csv
TEXT_COLUMNS = ("trial", "status", "kind", "family", "trunk", "error")


@dataclass(frozen=True)
class SweepDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    # -- layout
    @property
    def record_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def plan_path(self) -> Path:
        return self.path / "plan.json"

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @property
    def results_path(self) -> Path:
        return self.path / "results.csv"

    @property
    def fit_path(self) -> Path:
        return self.path / "fit.json"

    @property
    def fit_prev_path(self) -> Path:
        return self.path / "fit.prev.json"

    @property
    def lr_rule_path(self) -> Path:
        return self.path / "lr_rule.json"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def slurm_dir(self) -> Path:
        return self.path / "slurm"

    @property
    def jax_cache_dir(self) -> Path:
        return self.path / "jax_cache"

    def trial_dir(self, trial_id: str) -> Path:
        return self.trials_dir / str(trial_id)

    @classmethod
    def of_trial(cls, trial_dir: str | Path) -> SweepDir:
        """The sweep a trial directory belongs to (<sweep>/trials/<id>)."""
        return cls(Path(trial_dir).parent.parent)

    # -- records
    def record(self) -> dict | None:
        """sweep.json as a dict; None when it is missing, unreadable or not an object."""
        data = read_json(self.record_path)
        return data if isinstance(data, dict) else None

    def plan(self) -> dict | None:
        data = read_json(self.plan_path)
        return data if isinstance(data, dict) else None

    def design(self) -> dict:
        design = (self.record() or {}).get("design")
        return design if isinstance(design, dict) else {}

    def design_kind(self) -> str | None:
        return self.design().get("kind")

    def is_lr_sweep(self) -> bool:
        """Whether this is an lr sweep ([design] kind = "lr"): the one place that decides it."""
        return self.design_kind() == LR_KIND

    def flops_convention(self) -> str:
        """The FLOP convention of the sweep's budgets (sweep.json), "6n" when it records none; one it records
        but that is not a convention is refused (read as 6n, a chinchilla sweep's FLOPs would be fitted
        silently in the wrong convention)."""
        record = self.record()
        if record is None and self.record_path.is_file():  # there, but not a JSON object: its convention is unknown
            raise UserError(f"{self.record_path}: not a JSON object, so the FLOP convention of the sweep's budgets "
                            "is unknown; restore it from the sweep's run (it records flops_convention), or fit a "
                            "copy of results.csv without it, which is read as 6n")
        conv = (record or {}).get("flops_convention", "6n")
        if not isinstance(conv, str) or conv not in FLOP_CONVENTIONS:
            raise UserError(f"{self.record_path}: flops_convention = {repr(conv)[:40]} is not one of "
                            f"{', '.join(FLOP_CONVENTIONS)}; set it to the convention the sweep's budgets use")
        return conv

    def looks_like_sweep(self) -> bool:
        """A table's folder that is a sweep directory (sweep.json or trials/ beside it)."""
        return self.record_path.exists() or self.trials_dir.is_dir()

    @classmethod
    def require(cls, path: str | Path) -> SweepDir:
        """A directory `scaling sweep run` made (a readable sweep.json object), before results.csv is rebuilt in it."""
        sweep = cls(path)
        if not sweep.record_path.is_file():
            raise UserError(f"{sweep.path} is not a sweep directory (no sweep.json); run 'scaling sweep run' first")
        try:
            ok = isinstance(json.loads(sweep.record_path.read_text()), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            ok = False
        if not ok:
            raise UserError(f"{sweep.record_path} is not a readable sweep record (a JSON object); it is left as it is")
        return sweep

    # -- trials
    def planned_trials(self) -> list[str]:
        plan = self.plan()
        trials = plan.get("trials") if plan is not None else None
        if not isinstance(trials, list) or not all(isinstance(t, dict) and isinstance(t.get("trial"), str)
                                                   for t in trials):
            return sorted(p.name for p in self.trials_dir.glob("*")
                          if (p / "trial.json").exists() and trial_role(p) != "trunk")
        return [t["trial"] for t in trials]

    def planned_trunks(self) -> list[str]:
        plan = self.plan()
        trunks = plan.get("trunks") if plan is not None else None
        if not isinstance(trunks, list):
            return []
        return [t["trial"] for t in trunks if isinstance(t, dict) and isinstance(t.get("trial"), str)]

    def collect(self):
        """Write results.csv (one row per planned trial) and return it as a DataFrame."""
        import pandas as pd  # lazy: trial processes and `--help` import this module without needing pandas

        rows = [trial_row(self.trial_dir(t)) for t in self.planned_trials()]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        for column in COLUMNS:  # a damaged trial file leaves a number missing (NaN), never a string in a number column
            if column not in TEXT_COLUMNS:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
        frame["trunk"] = frame["trunk"].fillna("").astype(str)
        frame["family"] = frame["family"].fillna("").astype(str)  # "" for a trial planned before families were recorded
        frame["error"] = frame["error"].fillna("").astype(str).str.replace("\n", " ").str.slice(0, 300)
        atomic_write_text(self.results_path, frame.to_csv(index=False))
        return frame


def trial_row(trial_dir: Path) -> dict:
    """One row of results.csv, read from a trial directory (a damaged file reads as missing values)."""
    trial_dir = Path(trial_dir)
    record, summary, failed = (_object(trial_dir / name) for name in ("trial.json", "summary.json", "failed.json"))
    config = _object_of(record.get("config"))
    model, train = _object_of(config.get("model")), _object_of(config.get("train"))
    planned = _object_of(record.get("planned"))
    branch = _object_of(record.get("branch"))
    row = {"trial": trial_dir.name, "status": trial_status(trial_dir), "kind": record.get("role", "run"),
           "seed": train.get("seed"), **_object_of(record.get("coords")),
           "layers": model.get("layers"), "d_model": model.get("d_model"), "heads": model.get("heads"),
           "seq_len": model.get("seq_len"), "vocab_size": model.get("vocab_size"),
           "steps": train.get("steps"), "batch_size": train.get("batch_size"), "lr": train.get("lr"),
           "trunk": branch.get("trunk", ""), "branch_step": branch.get("step"),
           "error": failed.get("error", "")}
    for key in RUN_SIZE_FIELDS:
        row[key] = summary.get(key, planned.get(key))
    for key in ("final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s"):
        row[key] = summary.get(key)
    steps, start = row["steps"], row["branch_step"] or 0
    if isinstance(row["flops_6n"], (int, float)) and isinstance(steps, int) and steps > 0 and isinstance(start, int):
        row["flops_spent_6n"] = row["flops_6n"] * spent_fraction(steps, start)  # a branch computes its cooldown only
    if "multiple" in row:  # trial.json written before the coordinate got its self-explaining name
        row.setdefault("requested_tokens_per_param", row.pop("multiple"))
    return row


def _object_of(value) -> dict:
    return value if isinstance(value, dict) else {}


def _object(path: Path) -> dict:
    """A JSON object file's contents; {} when it is missing, torn or not an object (a damaged trial reads as pending)."""
    return _object_of(read_json(path))


def spent_fraction(steps: int, branch_step: int) -> float:
    """The share of a run's steps its own trial computes: all of them for a run or trunk, the
    cooldown for a branch that leaves its trunk at `branch_step` (FLOPs spent = this x represented)."""
    return (steps - branch_step) / steps


def trial_role(trial_dir: Path) -> str:
    record = read_json(Path(trial_dir) / "trial.json")
    return record.get("role", "run") if isinstance(record, dict) else "run"


def trial_status(trial_dir: Path) -> str:
    """completed / diverged / failed / running / pending (pending includes partly trained)."""
    trial_dir = Path(trial_dir)
    summary = read_json(trial_dir / "summary.json")
    if isinstance(summary, dict) and summary.get("status") in ("completed", "diverged"):
        return summary["status"]
    if ProcessLock(trial_dir / ".lock").is_held() or ProcessLock(trial_dir / ".claim").is_held():
        return "running"
    if (trial_dir / "failed.json").exists():
        return "failed"
    return "pending"


def branch_blocked(trial_dir: Path) -> tuple[bool, str | None]:
    """(waiting, reason) for a trial that may depend on a trunk: (False, None) when it can run now
    (a run or trunk, or a branch whose branch point is kept); (True, None) while its trunk is still
    to train or training; (True, reason) when the trunk ended without the branch point."""
    record = read_json(Path(trial_dir) / "trial.json")
    branch = record.get("branch") if isinstance(record, dict) and record.get("role") == "branch" else None
    if not isinstance(branch, dict):
        return False, None
    trunk_dir = Path(trial_dir).parent / str(branch.get("trunk"))
    if (trunk_dir / "branch_points" / str(branch.get("step"))).is_dir():
        return False, None
    status = trial_status(trunk_dir)
    if status in ("pending", "running"):
        return True, None
    return True, (f"its trunk {trunk_dir.name} is {status} without the branch point at step {branch.get('step')}"
                  + ("; delete the trunk's directory to train it again" if status == "completed" else
                     "; retry the trunk (--retry-failed)"))


def steps_done(trial_dir: Path) -> int:
    """Last logged step, read cheaply from the end of metrics.jsonl."""
    path = Path(trial_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="ignore").strip().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0
