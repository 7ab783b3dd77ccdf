"""results.csv, rebuilt from the trial directories every time, so it never disagrees with them."""

from __future__ import annotations

import math
from pathlib import Path

from research.fsutil import atomic_write_text, read_json
from research.sweep.trial import spent_fraction, trial_role, trial_status

COLUMNS = ["trial", "status", "kind", "seed", "budget", "requested_n", "requested_tokens_per_param", "family",
           "layers", "d_model", "heads", "seq_len", "vocab_size", "n_params", "n_params_nonembedding", "tokens",
           "flops_6n", "flops_chinchilla", "final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s",
           "steps", "batch_size", "lr", "lr_multiplier", "trunk", "branch_step", "flops_spent_6n", "error"]
TEXT_COLUMNS = ("trial", "status", "kind", "family", "trunk", "error")


def planned_trials(sweep_dir: Path) -> list[str]:
    plan = read_json(sweep_dir / "plan.json")
    trials = plan.get("trials") if isinstance(plan, dict) else None
    if not isinstance(trials, list) or not all(isinstance(t, dict) and isinstance(t.get("trial"), str) for t in trials):
        return sorted(p.name for p in (sweep_dir / "trials").glob("*")
                      if (p / "trial.json").exists() and trial_role(p) != "trunk")
    return [t["trial"] for t in trials]


def planned_trunks(sweep_dir: Path) -> list[str]:
    plan = read_json(sweep_dir / "plan.json")
    trunks = plan.get("trunks") if isinstance(plan, dict) else None
    if not isinstance(trunks, list):
        return []
    return [t["trial"] for t in trunks if isinstance(t, dict) and isinstance(t.get("trial"), str)]


def trial_row(trial_dir: Path) -> dict:
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
    for key in ("n_params", "n_params_nonembedding", "tokens", "flops_6n", "flops_chinchilla"):
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


def collect(sweep_dir: str | Path):
    """Write <sweep>/results.csv (one row per planned trial) and return it as a DataFrame."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    rows = [trial_row(sweep_dir / "trials" / t) for t in planned_trials(sweep_dir)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in COLUMNS:  # a damaged trial file leaves a number missing (NaN), never a string in a number column
        if column not in TEXT_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["trunk"] = frame["trunk"].fillna("").astype(str)
    frame["family"] = frame["family"].fillna("").astype(str)  # "" for a trial planned before families were recorded
    frame["error"] = frame["error"].fillna("").astype(str).str.replace("\n", " ").str.slice(0, 300)
    atomic_write_text(sweep_dir / "results.csv", frame.to_csv(index=False))
    return frame


def status_counts(frame) -> dict:
    counts = frame["status"].value_counts().to_dict()
    return {s: int(counts.get(s, 0)) for s in ("completed", "running", "failed", "diverged", "pending")}


def fmt_seconds(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
