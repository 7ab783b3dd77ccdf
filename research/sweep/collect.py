"""results.csv, rebuilt from the trial directories every time, so it never disagrees with them."""

from __future__ import annotations

import math
from pathlib import Path

from research.fsutil import atomic_write_text, read_json
from research.sweep.trial import trial_status

COLUMNS = ["trial", "status", "budget", "requested_n", "requested_tokens_per_param", "layers", "d_model", "heads", "seq_len",
           "vocab_size", "n_params", "n_params_nonembedding", "tokens", "flops_6n", "flops_chinchilla",
           "final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s", "steps", "batch_size",
           "lr", "lr_multiplier", "error"]


def planned_trials(sweep_dir: Path) -> list[str]:
    plan = read_json(sweep_dir / "plan.json")
    trials = plan.get("trials") if isinstance(plan, dict) else None
    if not isinstance(trials, list) or not all(isinstance(t, dict) and isinstance(t.get("trial"), str) for t in trials):
        return sorted(p.name for p in (sweep_dir / "trials").glob("*") if (p / "trial.json").exists())
    return [t["trial"] for t in trials]


def trial_row(trial_dir: Path) -> dict:
    record, summary, failed = (_object(trial_dir / name) for name in ("trial.json", "summary.json", "failed.json"))
    config = _object_of(record.get("config"))
    model, train = _object_of(config.get("model")), _object_of(config.get("train"))
    planned = _object_of(record.get("planned"))
    row = {"trial": trial_dir.name, "status": trial_status(trial_dir), **_object_of(record.get("coords")),
           "layers": model.get("layers"), "d_model": model.get("d_model"), "heads": model.get("heads"),
           "seq_len": model.get("seq_len"), "vocab_size": model.get("vocab_size"),
           "steps": train.get("steps"), "batch_size": train.get("batch_size"), "lr": train.get("lr"),
           "error": failed.get("error", "")}
    for key in ("n_params", "n_params_nonembedding", "tokens", "flops_6n", "flops_chinchilla"):
        row[key] = summary.get(key, planned.get(key))
    for key in ("final_train_loss", "final_eval_loss", "eval_bits_per_byte", "wall_time_s"):
        row[key] = summary.get(key)
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
        if column not in ("trial", "status", "error"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
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
