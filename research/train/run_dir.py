"""A run directory: the single source of truth for one training run.

    config.json      resolved config, its hash, the dataset fingerprint, counts
    metrics.jsonl    one row per logged step (FLOPs name their convention)
    metrics.removed.jsonl  rows dropped on resume (past the restored checkpoint), kept here
    summary.json     written at the end (status completed / diverged / interrupted)
    checkpoints/     orbax steps (never committed)
    .lock            held while a process trains here
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from research.config import RunConfig
from research.errors import UserError
from research.fsutil import ProcessLock, atomic_write_json, atomic_write_text, read_json, read_jsonl

# Keys that change how a run is operated, not what it trains: they may differ on resume.
OPERATIONAL_KEYS = {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.prefetch",
                    "train.loss_chunk", "logging.wandb", "logging.tensorboard"}  # loss_chunk: same loss to rounding
# Keys added after sweeps were run: left out of the identity at these values (their defaults), so
# every run that does not set them keeps the hash it had before they existed.
LATER_KEYS_DEFAULTS = {"train.dense_eval_tokens": None}


def identity(config: RunConfig, data_fingerprint: str) -> dict:
    """What makes two runs the same run: the resolved config less operational keys, plus the data."""
    flat = {f"{section}.{key}": value for section, values in config.to_dict().items()
            for key, value in values.items() if f"{section}.{key}" not in OPERATIONAL_KEYS}
    for key, default in LATER_KEYS_DEFAULTS.items():
        if key in flat and flat[key] == default:
            del flat[key]
    flat["data.fingerprint"] = data_fingerprint
    return flat


def identity_hash(ident: dict) -> str:
    import hashlib

    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunDir:
    """`writer=False` (every process but the first of a multi-process run) reads but never
    writes or locks; checkpoints are written by all processes together through orbax."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path).absolute()
        self.writer = writer
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.removed_metrics_path = self.path / "metrics.removed.jsonl"
        self.summary_path = self.path / "summary.json"
        self.checkpoint_dir = self.path / "checkpoints"
        self.lock = ProcessLock(self.path / ".lock")

    def acquire(self) -> None:
        if self.writer and not self.lock.acquire():
            raise UserError(f"another process (pid {self.lock.holder()}) is training in {self.path}; "
                            "wait for it or choose another --out")

    def release(self) -> None:
        self.lock.release()

    def check_or_write_config(self, record: dict) -> None:
        """Refuse a directory that holds a run of a different config; never mix results."""
        existing = read_json(self.config_path) if self.config_path.is_file() else None
        if (existing is None and (self.config_path.exists() or self.config_path.is_symlink())) \
                or (existing is not None and not (isinstance(existing, dict)
                                                  and isinstance(existing.get("identity", {}), dict))):
            raise UserError(f"{self.config_path} is corrupt (not a run's config object), so the run in "
                            f"{self.path} cannot be identified; nothing was changed: choose another --out, "
                            "or restore config.json")
        if existing is None:
            artifacts = [p.name for p in (self.metrics_path, self.summary_path, self.checkpoint_dir) if p.exists()]
            if artifacts:
                raise UserError(f"{self.path} holds {', '.join(artifacts)} but no config.json, so its run cannot "
                                "be identified; choose another --out")
            if self.writer:
                atomic_write_json(self.config_path, record)
            return
        if existing.get("identity_hash") != record["identity_hash"]:
            old, new = existing.get("identity", {}), record["identity"]
            diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k)]
            raise UserError(f"{self.path} holds a run of a different config ({'; '.join(diffs[:4])}); "
                            "choose another --out")
        if self.writer:
            atomic_write_json(self.config_path, dict(record, created=existing.get("created", record.get("created"))))

    def summary(self) -> dict | None:
        return read_json(self.summary_path)

    def write_summary(self, summary: dict) -> None:
        if self.writer:
            atomic_write_json(self.summary_path, summary)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def truncate_metrics(self, last_step: int) -> int:
        """Drop rows past the restored checkpoint's step (and any torn line), so a resumed run's
        log reads exactly like an uninterrupted one; return how many lines were dropped.

        Rows up to `last_step` are kept byte for byte. Dropped lines are first appended to
        metrics.removed.jsonl, each wrapped with when and why it was removed, so nothing
        that was logged is ever lost.
        """
        if not self.writer:
            return 0
        try:
            lines = self.metrics_path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return 0
        keep, drop, unreadable, salvaged = [], [], 0, 0
        for line in lines:
            try:
                row = json.loads(line)
                step = row.get("step") if isinstance(row, dict) else None
            except json.JSONDecodeError:
                step = None
                unreadable += line.strip() != ""
                rescued = _row_after_cut(line)  # `{"step": 15, "lo{"step": 16, ...}`: row 16 is whole
                if rescued is not None and rescued[0] <= last_step and line.endswith("\n"):
                    keep.append(rescued[1])
                    salvaged += 1
            whole = line.endswith("\n")
            (keep if whole and isinstance(step, int) and step <= last_step else drop).append(line)
        if unreadable:
            print(f"warning: {self.metrics_path} has {unreadable} unreadable line(s) (cut mid-line); they are "
                  f"kept in {self.removed_metrics_path.name}" + (f", and {salvaged} whole row(s) found after "
                                                                 "the cut were kept" if salvaged else ""),
                  file=sys.stderr)
        if not drop:
            return 0
        removed_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with open(self.removed_metrics_path, "a") as f:
            for line in drop:
                f.write(json.dumps({"removed_at": removed_at, "resumed_from_step": last_step,
                                    "line": line.rstrip("\n")}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.metrics_path, "".join(keep))
        return len(drop)

    def append_metrics(self, row: dict) -> None:
        if not self.writer:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _row_after_cut(line: str) -> tuple[int, str] | None:
    """(step, text) of the whole row that ends a damaged line, if one does."""
    decoder = json.JSONDecoder()
    start = line.find('{"', 1)
    while start != -1:
        try:
            row, end = decoder.raw_decode(line, start)
        except json.JSONDecodeError:
            start = line.find('{"', start + 1)
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and not line[end:].strip():
            return row["step"], line[start:end] + "\n"
        start = line.find('{"', start + 1)
    return None
