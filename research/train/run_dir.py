"""A run directory: the single source of truth for one training run.

    config.json      resolved config, its hash, the dataset fingerprint, counts
    metrics.jsonl    one row per logged step (FLOPs name their convention)
    summary.json     written at the end (status completed / diverged / interrupted)
    checkpoints/     orbax steps (never committed)
    .lock            held while a process trains here
"""

from __future__ import annotations

import json
from pathlib import Path

from research.config import RunConfig
from research.errors import UserError
from research.fsutil import ProcessLock, atomic_write_json, atomic_write_text, read_json, read_jsonl

# Keys that change how a run is operated, not what it trains: they may differ on resume.
OPERATIONAL_KEYS = {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.prefetch",
                    "train.loss_chunk", "logging.wandb", "logging.tensorboard"}  # loss_chunk: same loss to rounding


def identity(config: RunConfig, data_fingerprint: str) -> dict:
    """What makes two runs the same run: the resolved config less operational keys, plus the data."""
    flat = {f"{section}.{key}": value for section, values in config.to_dict().items()
            for key, value in values.items() if f"{section}.{key}" not in OPERATIONAL_KEYS}
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
        existing = read_json(self.config_path)
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

    def truncate_metrics(self, last_step: int) -> None:
        """Drop rows past the restored checkpoint (and any torn line) so a resumed run's log
        reads exactly like an uninterrupted one."""
        if not self.writer:
            return
        rows = [r for r in self.metrics() if r.get("step", 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict) -> None:
        if not self.writer:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
