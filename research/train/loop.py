"""The training loop: resolve, resume, step, log, evaluate, checkpoint, summarise.

Resuming is a seek: the batch at step s is a pure function of (seed, s), and the
restored checkpoint holds parameters, optimiser state and the step, so a run that
is killed and restarted produces the same losses as one that never stopped.
Metrics are fetched from the device one logged step behind, so logging never
stalls the device; the only host syncs are evaluations and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import queue
import signal
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

from research.config import RunConfig, total_steps, warmup_steps
from research.data import get_dataset
from research.data.prepare import bits_per_byte
from research.errors import UserError
from research.fsutil import read_json
from research.model.accounting import RunSize, count_model
from research.train.checkpoint import Checkpoints, abstract_like
from research.train.devices import mfu_fields
from research.train.optim import learning_rate_schedule
from research.train.progress import Progress
from research.train.run_dir import RunDir, identity, identity_hash
from research.train.step import Stepper, check_memory, make_mesh
from research.train.tracking import open_run_tracking

EXIT_DIVERGED, EXIT_INTERRUPTED = 3, 143


def resolve(config: RunConfig, dataset) -> RunConfig:
    """Fill what comes from the data (vocabulary) and check what the data can supply."""
    m = config.model
    if m.vocab_size is None:
        config = config.replace(model=dataclasses.replace(m, vocab_size=dataset.vocab_size))
    elif m.vocab_size < dataset.vocab_size:
        raise UserError(f"[model] vocab_size = {m.vocab_size} is smaller than the tokenizer's "
                        f"{dataset.vocab_size}; remove it to use the dataset's")
    for split in ("train", "val"):
        if dataset.windows_available(split, m.seq_len) < 1:
            raise UserError(f"[model] seq_len = {m.seq_len} is longer than the {split} split "
                            f"({dataset.n_tokens(split):,} tokens); lower seq_len or use a larger corpus")
    return config


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


class Prefetcher:
    """Prepares batches for the coming steps on a background thread and puts them on device."""

    def __init__(self, make_batch, put, start: int, stop: int, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._make, self._put = make_batch, put
        self._thread = threading.Thread(target=self._run, args=(start, stop), daemon=True)
        self._thread.start()

    def _run(self, start: int, stop: int) -> None:
        for step in range(start, stop):
            try:
                self._queue.put((step, self._put(self._make(step))))
            except BaseException as err:  # surfaced in the main thread
                self._queue.put((step, err))
                return

    def get(self, step: int):
        got_step, batch = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        assert got_step == step, (got_step, step)
        return batch


class StopSignals:
    """Inside the training loop, SIGINT (Ctrl-C), SIGTERM (`kill`, cluster preemption) and
    SIGUSR2 (Slurm's pre-timeout / preemption warning) set `signal` instead of killing the
    process: the loop finishes its step, checkpoints and stops. A second Ctrl-C stops at once.

    With several processes, `agreed()` is the first signal any of them received (a collective
    call: every process must make it at the same steps), so all stop at the same step and
    write the checkpoint together. After the loop, `forward()` hands a SIGUSR2 on to the
    handler installed before (submitit's, which requeues the job), now that the checkpoint
    is written.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signal: int | None = None
        self._old: dict = {}
        self._usr2_before = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.HANDLED}
            self._usr2_before = self._old[signal.SIGUSR2]
        return self

    def _handle(self, signum, frame):  # no I/O here: the main thread may be mid-write
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signum

    def agreed(self) -> int | None:
        if jax.process_count() == 1:
            return self.signal
        from jax.experimental import multihost_utils

        received = multihost_utils.process_allgather(np.int32(self.signal or 0))
        first = next((int(s) for s in np.ravel(received) if s), 0)
        if first:
            self.signal = first  # the same on every process
        return first or None

    def _restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()

    def forward(self) -> None:
        """Re-raise a SIGUSR2 caught in the loop if someone else (submitit) was handling it."""
        if self.signal == signal.SIGUSR2 and callable(self._usr2_before):
            signal.raise_signal(signal.SIGUSR2)


def exit_code(summary: dict) -> int:
    """The process exit status a run's summary calls for: 0 completed, 3 diverged, 128 + the
    signal number when a signal stopped it (130 Ctrl-C, 143 SIGTERM, 140 SIGUSR2)."""
    status = summary.get("status")
    if status == "completed":
        return 0
    if status == "diverged":
        return EXIT_DIVERGED
    if status == "interrupted":
        name = summary.get("stop_signal") or "SIGTERM"
        return 128 + int(getattr(signal, name, signal.SIGTERM))
    return 1


@dataclasses.dataclass(frozen=True)
class BranchFrom:
    """Start a cooldown branch from its trunk: the trunk run's directory and the step it leaves it.

    The branch's config is that of a straight WSD run to its own horizon; the trunk (a
    constant-LR run of the same model, optimiser, warmup and seed) kept its checkpoint at
    `step` in `<trunk>/branch_points/<step>` (see `keep_steps`). Both follow the same data
    order (a pure function of the seed and step), so the branch continues exactly where a
    straight run would be at that step."""

    trunk_dir: Path
    step: int


def train(config: RunConfig, out_dir: str | Path, *, progress: bool = True, sinks=(), keep_steps=(),
          branch_from: BranchFrom | None = None) -> dict:
    """Train (or resume, or recognise as finished) the run in `out_dir`; return its summary.

    `sinks`: experiment trackers and the like, called on process 0 only: `sink.log_row(step, row)`
    for every metrics row, and where defined `sink.log_config(record)` (config.json's record,
    before training) and `sink.log_summary(summary)` (at the end, whatever the status).
    `keep_steps`: steps whose checkpoints are kept for good in `<out_dir>/branch_points` (a trunk's
    branch points). `branch_from`: start, when the run has no checkpoint of its own, from a trunk's
    branch point instead of from initialisation.
    """

    # Everything the config and the data can refuse is refused before the run directory is touched.
    d = config.data
    dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
    config = resolve(config, dataset)
    counts = count_model(config.model)
    check_memory(config, counts.n_params, make_mesh(config))
    if branch_from is not None:
        check_trunk(config, branch_from, total_steps(config))
    run = RunDir(out_dir, writer=jax.process_index() == 0)
    run.path.mkdir(parents=True, exist_ok=True)
    run.acquire()
    try:
        ident = identity(config, dataset.fingerprint)
        steps = total_steps(config)
        tokens_per_step = config.train.batch_size * config.model.seq_len
        record = {
            "config": config.to_dict(), "identity": ident, "identity_hash": identity_hash(ident),
            "data": {"path": str(dataset.path), "fingerprint": dataset.fingerprint},
            "counts": counts.to_dict(), "steps": steps, "warmup_steps": warmup_steps(config),
            "tokens": steps * tokens_per_step, "flops_conventions": ["6n", "chinchilla"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        run.check_or_write_config(record)
        for sink in sinks if run.writer else ():
            if hasattr(sink, "log_config"):
                sink.log_config(record)
        done = run.summary()
        if done and done.get("status") in ("completed", "diverged"):
            print(f"{run.path}: already finished ({done['status']} at step {done.get('steps_done')}); "
                  "nothing to do", file=sys.stderr)
            return done
        return _train_loop(config, run, dataset, counts, steps, progress, sinks, sorted(set(keep_steps)),
                           branch_from)
    finally:
        run.release()


BRANCH_SHARED_KEYS = ("train.lr", "train.warmup_steps", "train.seed", "train.batch_size", "train.beta1", "train.beta2",
                      "train.eps", "train.weight_decay", "train.grad_clip")


def check_trunk(config: RunConfig, branch_from: BranchFrom, steps: int) -> None:
    """Refuse, before anything is written, a branch its trunk cannot start: a different model,
    optimiser, warmup, seed or data, or a branch point outside the branch's horizon or beyond
    the trunk's."""
    trunk = read_json(Path(branch_from.trunk_dir) / "config.json")
    if not isinstance(trunk, dict) or not isinstance(trunk.get("identity"), dict):
        raise UserError(f"the branch's trunk {branch_from.trunk_dir} has no readable config.json; run the trunk first")
    if not 0 < branch_from.step < steps:
        raise UserError(f"a branch of {steps} steps cannot leave its trunk at step {branch_from.step}; the branch "
                        "point must lie inside the branch's horizon")
    if branch_from.step > int(trunk.get("steps", 0)):
        raise UserError(f"the branch leaves its trunk at step {branch_from.step}, beyond the trunk's "
                        f"{trunk.get('steps')} steps ({branch_from.trunk_dir}); lengthen the trunk or shorten the branch")
    ident = identity(config, trunk["identity"].get("data.fingerprint"))
    want = {k: v for k, v in ident.items() if k.startswith(("model.", "data.")) or k in BRANCH_SHARED_KEYS}
    diffs = [f"{k}: {trunk['identity'].get(k)!r} in the trunk, {v!r} here" for k, v in sorted(want.items())
             if trunk["identity"].get(k) != v]
    if diffs:
        raise UserError(f"the branch does not continue its trunk {branch_from.trunk_dir}: {'; '.join(diffs[:3])}")


def _bits_per_byte(nats_per_token: float | None, bytes_per_token: float) -> float | None:
    """bits/byte beside a loss; None without a loss or where the text behind the tokens is
    unknown (a corpus that came already tokenized, `ids:V`)."""
    if nats_per_token is None or not math.isfinite(bytes_per_token) or bytes_per_token <= 0:
        return None
    return bits_per_byte(nats_per_token, bytes_per_token)


class Throughput:
    """Training tokens/s between logged rows, counting neither compilation (the first step of
    a process is excluded) nor evaluation time."""

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

    def flush(self, eval_loss: float | None = None) -> bool:
        """Write the pending row (if any); False if its loss is not finite."""
        if self.pending is None:
            return True
        step, dev = self.pending
        self.pending = None
        values = jax.device_get(dev)
        row = self.row(step, float(values["loss"]), float(values["grad_norm"]), eval_loss)
        self.run.append_metrics(row)
        for sink in self.sinks if self.run.writer else ():  # like metrics.jsonl: process 0 only
            sink.log_row(step, row)
        self.last_train_loss = row["loss"]
        return math.isfinite(row["loss"]) and (eval_loss is None or math.isfinite(eval_loss))

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
            row.update(eval_loss=eval_loss, eval_bits_per_byte=_bits_per_byte(eval_loss, self.eval_bytes_per_token))
        return row


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
        "eval_bits_per_byte": _bits_per_byte(final_eval_loss, eval_bytes_per_token),
        "eval_bytes_per_token": eval_bytes_per_token,
        "loss_unit": "nats/token", "wall_time_s": wall_time_s,
        "identity_hash": identity_hash(identity(config, dataset.fingerprint)),
        "entropy_floor_nats_per_token": dataset.entropy_rate_nats_per_token,
        "versions": versions(), "device": device_info(), "host": platform.node(), "pid": os.getpid(),
    }


def _train_loop(config, run: RunDir, dataset, counts, steps: int, show_progress: bool, sinks=(), keep_steps=(),
                branch_from: BranchFrom | None = None) -> dict:

    t, m = config.train, config.model
    tokens_per_step = t.batch_size * m.seq_len
    print(f"model: n_params {counts.n_params:,} (embeddings included), non-embedding "
          f"{counts.n_params_nonembedding:,}; {steps} steps x {tokens_per_step:,} tokens = "
          f"D {steps * tokens_per_step:,}; C = {counts.flops_per_token_6n * steps * tokens_per_step:.3e} FLOPs [6n], "
          f"{counts.flops_per_token_chinchilla * steps * tokens_per_step:.3e} [chinchilla]", file=sys.stderr)
    if steps * tokens_per_step > dataset.n_tokens("train"):
        epochs = steps * tokens_per_step / dataset.n_tokens("train")
        print(f"warning: the run sees the training split {epochs:.2f} times (repeated data)", file=sys.stderr)

    stepper = Stepper(config, make_mesh(config))
    params, opt_state = stepper.init()
    ckpts = Checkpoints(run.checkpoint_dir, t.keep_checkpoints)
    start, wall_before = 0, 0.0
    try:
        restored = ckpts.restore_latest(abstract_like({"params": params, "opt_state": opt_state}))
    except BaseException:
        ckpts.close()
        raise
    if restored:
        start, state, meta = restored
        params, opt_state = state["params"], state["opt_state"]
        wall_before = float(meta.get("wall_time_s", 0.0))
        print(f"resuming from the checkpoint at step {start}", file=sys.stderr)
    elif branch_from is not None:
        trunk_points = Checkpoints(Path(branch_from.trunk_dir) / "branch_points", None, read_only=True)
        try:
            start, state, _ = trunk_points.restore_step(branch_from.step,
                                                        abstract_like({"params": params, "opt_state": opt_state}))
        finally:
            trunk_points.close()
        params, opt_state = state["params"], state["opt_state"]
        print(f"branching from the trunk {branch_from.trunk_dir} at step {start}", file=sys.stderr)
    branch_points = run.path / "branch_points"
    for kept in (s for s in keep_steps if s <= start):  # killed between a save and its kept copy
        if not ckpts.keep_copy(kept, branch_points):
            print(f"warning: the branch point at step {kept} was not kept (its checkpoint is gone); "
                  "branches from it cannot start until this run is trained again", file=sys.stderr)
    run.truncate_metrics(start)

    tracking = open_run_tracking(config.logging, run.path, read_json(run.config_path), start, enabled=run.writer)

    lr_at = learning_rate_schedule(config)
    val_windows = dataset.val_batches(t.batch_size, m.seq_len, t.eval_tokens)
    eval_bytes_per_token = dataset.bytes_per_token_of([w[:, 1:] for w in val_windows])  # the scored targets
    val = [stepper.put_batch(b) for b in val_windows]

    def evaluate(p) -> float:  # dispatch every batch, then one host sync for the mean
        return float(jax.numpy.mean(jax.numpy.stack([stepper.eval_step(p, b) for b in val])))

    bar = Progress(steps, start, enabled=show_progress and run.writer)
    log = MetricsLogger(run, counts, tokens_per_step, lr_at, eval_bytes_per_token, wall_before,
                        sinks=[bar, tracking, *sinks], devices=stepper.mesh.devices.flat)
    status, last_eval = "completed", None

    def save(step: int) -> None:
        ckpts.save(step, {"params": params, "opt_state": opt_state},
                   {"step": step, "tokens": step * tokens_per_step, "wall_time_s": log.wall_time_s()})

    prefetch = Prefetcher(lambda s: dataset.train_batch(s, t.batch_size, m.seq_len, t.seed),
                          stepper.put_batch, start, steps, t.prefetch)
    step = start
    keep = set(keep_steps)
    with StopSignals() as stop:
        for step in range(start + 1, steps + 1):
            params, opt_state, dev_metrics = stepper.train_step(params, opt_state, prefetch.get(step - 1))
            if step == start + 1:  # compiled and run once: throughput counts from here
                jax.block_until_ready(dev_metrics)
                log.throughput.start(step)
            if not log.flush():
                status = "diverged"
                break
            if step % t.log_every == 0 or step % t.eval_every == 0 or step == steps:
                log.hold(step, dev_metrics)
            if step % t.eval_every == 0 or step == steps:
                t_eval = time.perf_counter()
                last_eval = evaluate(params)
                log.throughput.exclude(time.perf_counter() - t_eval)
                if not log.flush(eval_loss=last_eval):
                    status = "diverged"
                    break
            periodic = step % t.checkpoint_every == 0 or step == steps or step in keep
            if periodic:
                save(step)
            if step in keep:
                ckpts.keep_copy(step, branch_points)  # a cooldown branch may start from here now
            if step < steps and (step % t.log_every == 0 or jax.process_count() == 1) and stop.agreed():
                print(f"{signal.Signals(stop.signal).name} received: checkpointing at step {step} and stopping",
                      file=sys.stderr)
                if not periodic:
                    save(step)
                status = "interrupted"
                break
    if not log.flush():
        status = "diverged"
    if status == "completed" and last_eval is None:  # killed after the final checkpoint, before the summary
        last_eval = evaluate(params)
        log.last_train_loss = next((r["loss"] for r in reversed(run.metrics()) if "loss" in r), None)
    ckpts.close()
    bar.close()

    summary = build_summary(config, run, dataset, counts, status=status, steps=steps, steps_done=step,
                            final_train_loss=log.last_train_loss, final_eval_loss=last_eval,
                            eval_bytes_per_token=eval_bytes_per_token, wall_time_s=log.wall_time_s(),
                            stop_signal=stop.signal if status == "interrupted" else None)
    if branch_from is not None:  # its wall time is its own; its N, D and C count the trunk's steps too
        summary["branch_from"] = {"trunk": str(branch_from.trunk_dir), "step": branch_from.step}
    run.write_summary(summary)
    for sink in sinks if run.writer else ():
        if hasattr(sink, "log_summary"):
            sink.log_summary(summary)
    tracking.log_summary(summary)
    tracking.close(ok=status == "completed")
    if status == "completed":
        bpb = summary["eval_bits_per_byte"]
        print(f"done: eval loss {last_eval:.4f} nats/token"
              + (f" ({bpb:.4f} bits/byte)" if bpb is not None else "") + " "
              f"after D = {summary['tokens']:,} tokens, C = {summary['flops_6n']:.3e} FLOPs [6n]; {run.path}",
              file=sys.stderr)
    else:
        print(f"stopped at step {step}: {status}"
              + (f" ({summary['stop_signal']}; checkpointed)" if summary["stop_signal"] else "") + f"; {run.path}",
              file=sys.stderr)
    if status == "interrupted":
        stop.forward()  # a SIGUSR2 under submitit: now that the checkpoint is written, let it requeue the job
    return summary
