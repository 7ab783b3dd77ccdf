"""What a run reports: its metrics rows (metrics.jsonl and every sink), the training
throughput in them, and summary.json."""

from __future__ import annotations

import math
import os
import platform
import signal
import time
from importlib import metadata

import jax

from research.data.prepare import bits_per_byte
from research.model.accounting import RunSize
from research.train.devices import mfu_fields
from research.train.run_dir import RunDir, identity, identity_hash


def bits_per_byte_or_none(nats_per_token: float | None, bytes_per_token: float) -> float | None:
    """bits/byte beside a loss; None without a loss or where the text behind the tokens is
    unknown (a corpus that came already tokenized, `ids:V`)."""
    if nats_per_token is None or not math.isfinite(bytes_per_token) or bytes_per_token <= 0:
        return None
    return bits_per_byte(nats_per_token, bytes_per_token)


class Throughput:
    """Training tokens/s between logged rows, counting neither compilation (the first step of
    a process is excluded) nor evaluation time (`exclude`: the time an evaluation itself took,
    measured after the queued train steps it would otherwise wait for have finished)."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.step_mark: int | None = None
        self.t_mark = 0.0
        self.excluded_s = 0.0

    def start(self, step: int) -> None:
        """Call once `step` (the compiled first step) has finished on the device."""
        self.step_mark, self.t_mark, self.excluded_s = step, time.perf_counter(), 0.0

    def exclude(self, seconds: float) -> None:
        self.excluded_s += seconds

    def tokens_per_s(self, step: int, now: float) -> float | None:
        """Rate since the last call (None before `start` or with no step in between)."""
        if self.step_mark is None or step <= self.step_mark:
            return None
        rate = (step - self.step_mark) * self.tokens_per_step / max(now - self.t_mark - self.excluded_s, 1e-9)
        self.step_mark, self.t_mark, self.excluded_s = step, now, 0.0
        return rate


class MetricsLogger:
    """Builds each metrics row (the one place a row is made), appends it to metrics.jsonl and
    hands it to every sink: `sink.log_row(step, row)` (the progress display, trackers).

    Rows are fetched from the device one logged step behind (`hold`, then `flush` after the
    next step is dispatched), so logging never stalls the device.
    """

    def __init__(self, run: RunDir, counts, tokens_per_step: int, lr_at, eval_bytes_per_token: float,
                 wall_before: float, sinks=(), devices=()):
        self.devices = list(devices)
        self.run, self.counts, self.tokens_per_step, self.lr_at = run, counts, tokens_per_step, lr_at
        self.eval_bytes_per_token = eval_bytes_per_token
        self.sinks = list(sinks)
        self.throughput = Throughput(tokens_per_step)
        self.wall_before, self.t_start = wall_before, time.perf_counter()
        self.pending = None  # (step, device metrics) of the last logged step, not yet fetched
        self.last_train_loss: float | None = None
        float(lr_at(0))  # compiles the schedule's eager ops now, not inside the first measured interval

    def wall_time_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def hold(self, step: int, dev_metrics) -> None:
        self.pending = (step, dev_metrics)

    def flush(self, eval_loss: float | None = None, dense_eval_loss: float | None = None) -> bool:
        """Write the pending row (if any); False if its loss is not finite. `dense_eval_loss`: the
        loss on the eval set's prefix (`[train] dense_eval_tokens`)."""
        if self.pending is None:
            return True
        step, dev = self.pending
        self.pending = None
        values = jax.device_get(dev)
        row = self.row(step, float(values["loss"]), float(values["grad_norm"]), eval_loss)
        if dense_eval_loss is not None:
            row["dense_eval_loss"] = dense_eval_loss
        self.run.append_metrics(row)
        for sink in self.sinks if self.run.writer else ():  # like metrics.jsonl: process 0 only
            sink.log_row(step, row)
        self.last_train_loss = row["loss"]
        return math.isfinite(row["loss"]) and all(v is None or math.isfinite(v) for v in (eval_loss, dense_eval_loss))

    def row(self, step: int, loss: float, grad_norm: float, eval_loss: float | None) -> dict:
        """One metrics row. FLOPs name their convention; rates are over the steps since the last row."""
        now = time.perf_counter()
        tokens = step * self.tokens_per_step
        tokens_per_s = self.throughput.tokens_per_s(step, now)
        row = {"step": step, "tokens": tokens, "flops_6n": self.counts.flops_per_token_6n * tokens,
               "flops_chinchilla": self.counts.flops_per_token_chinchilla * tokens,
               "lr": float(self.lr_at(step - 1)), "loss": loss, "grad_norm": grad_norm,
               "tokens_per_s": tokens_per_s,
               "flops_per_s_6n": None if tokens_per_s is None else self.counts.flops_per_token_6n * tokens_per_s,
               "flops_per_s_chinchilla": None if tokens_per_s is None
               else self.counts.flops_per_token_chinchilla * tokens_per_s,
               "wall_time_s": self.wall_before + now - self.t_start}
        if tokens_per_s is not None:
            row.update(mfu_fields(self.counts, tokens_per_s, self.devices))  # where the devices' peak is known
        if eval_loss is not None:
            row.update(eval_loss=eval_loss,
                       eval_bits_per_byte=bits_per_byte_or_none(eval_loss, self.eval_bytes_per_token))
        return row


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scaling-research"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info() -> dict:
    d = jax.devices()
    return {"backend": jax.default_backend(), "kind": d[0].device_kind, "count": len(d)}


def build_summary(config, run: RunDir, dataset, counts, *, status: str, steps: int, steps_done: int,
                  final_train_loss: float | None, final_eval_loss: float | None, eval_bytes_per_token: float,
                  wall_time_s: float, stop_signal: int | None) -> dict:
    """summary.json: the run's shape, N/D/C (conventions named), final losses, provenance."""
    t, m = config.train, config.model
    tokens = steps_done * t.batch_size * m.seq_len
    return {
        "status": status, "steps": steps, "steps_done": steps_done,
        "stop_signal": None if stop_signal is None else signal.Signals(stop_signal).name,
        "layers": m.layers, "d_model": m.d_model, "heads": m.heads, "ffw": m.d_ffw,
        "seq_len": m.seq_len, "vocab_size": m.vocab_size, "batch_size": t.batch_size,
        **RunSize.of(counts, tokens).to_dict(),
        "final_train_loss": final_train_loss, "final_eval_loss": final_eval_loss,
        "eval_bits_per_byte": bits_per_byte_or_none(final_eval_loss, eval_bytes_per_token),
        "eval_bytes_per_token": eval_bytes_per_token,
        "loss_unit": "nats/token", "wall_time_s": wall_time_s,
        "identity_hash": identity_hash(identity(config, dataset.fingerprint)),
        "entropy_floor_nats_per_token": dataset.entropy_rate_nats_per_token,
        "versions": versions(), "device": device_info(), "host": platform.node(), "pid": os.getpid(),
    }
