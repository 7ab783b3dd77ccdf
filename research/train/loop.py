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

from research.config import RunConfig, total_steps, warmup_steps
from research.errors import UserError
from research.model.accounting import count_model
from research.train.progress import Progress
from research.train.run_dir import RunDir, identity, identity_hash

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


class _StopFlag:
    """Set by SIGTERM (cluster preemption, `kill`): finish the step, checkpoint, exit."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, *_):
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def train(config: RunConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train (or resume, or recognise as finished) the run in `out_dir`; return its summary."""
    from research.data import get_dataset
    from research.train.step import check_memory, make_mesh

    # Everything the config and the data can refuse is refused before the run directory is touched.
    d = config.data
    dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
    config = resolve(config, dataset)
    counts = count_model(config.model)
    check_memory(config, counts.n_params, make_mesh(config))
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
        done = run.summary()
        if done and done.get("status") in ("completed", "diverged"):
            print(f"{run.path}: already finished ({done['status']} at step {done.get('steps_done')}); "
                  "nothing to do", file=sys.stderr)
            return done
        return _train_loop(config, run, dataset, counts, steps, progress)
    finally:
        run.release()


def _train_loop(config, run: RunDir, dataset, counts, steps: int, show_progress: bool) -> dict:
    from research.train.checkpoint import Checkpoints, abstract_like
    from research.train.optim import learning_rate_schedule
    from research.train.step import Stepper, make_mesh

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
    restored = ckpts.restore_latest(abstract_like({"params": params, "opt_state": opt_state}))
    if restored:
        start, state, meta = restored
        params, opt_state = state["params"], state["opt_state"]
        wall_before = float(meta.get("wall_time_s", 0.0))
        print(f"resuming from the checkpoint at step {start}", file=sys.stderr)
    run.truncate_metrics(start)

    lr_at = learning_rate_schedule(config)
    val = [stepper.put_batch(b) for b in dataset.val_batches(t.batch_size, m.seq_len, t.eval_tokens)]
    bytes_per_token = dataset.bytes_per_token("val")

    def evaluate(p) -> float:  # dispatch every batch, then one host sync for the mean
        return float(jax.numpy.mean(jax.numpy.stack([stepper.eval_step(p, b) for b in val])))

    def row_for(step: int) -> dict:
        tokens = step * tokens_per_step
        return {"step": step, "tokens": tokens, "flops_6n": counts.flops_per_token_6n * tokens,
                "flops_chinchilla": counts.flops_per_token_chinchilla * tokens, "lr": float(lr_at(step - 1))}

    bar = Progress(steps, start, enabled=show_progress and run.writer)
    status, last_train_loss, last_eval = "completed", None, None
    pending = None  # (step, device metrics) of the last logged step, fetched one step later
    t_mark, step_mark = time.perf_counter(), start
    t_start = time.perf_counter()

    def flush(eval_loss: float | None = None) -> bool:
        """Write the pending row; False if the loss is not finite."""
        nonlocal pending, t_mark, step_mark, last_train_loss
        step, dev = pending
        pending = None
        now = time.perf_counter()
        values = jax.device_get(dev)
        row = row_for(step)
        row.update(loss=float(values["loss"]), grad_norm=float(values["grad_norm"]),
                   tokens_per_s=(step - step_mark) * tokens_per_step / max(now - t_mark, 1e-9),
                   wall_time_s=wall_before + now - t_start)
        if eval_loss is not None:
            row.update(eval_loss=eval_loss, eval_bits_per_byte=eval_loss / math.log(2) / bytes_per_token)
        t_mark, step_mark = now, step
        run.append_metrics(row)
        bar.update(step, row)
        last_train_loss = row["loss"]
        return math.isfinite(row["loss"]) and (eval_loss is None or math.isfinite(eval_loss))

    def meta(step: int) -> dict:
        return {"step": step, "tokens": step * tokens_per_step, "wall_time_s": wall_before + time.perf_counter() - t_start}

    prefetch = Prefetcher(lambda s: dataset.train_batch(s, t.batch_size, m.seq_len, t.seed),
                          stepper.put_batch, start, steps, t.prefetch)
    step = start
    with _StopFlag() as stop:
        for step in range(start + 1, steps + 1):
            params, opt_state, dev_metrics = stepper.train_step(params, opt_state, prefetch.get(step - 1))
            if pending is not None and not flush():
                status = "diverged"
                break
            if step % t.log_every == 0 or step % t.eval_every == 0 or step == steps:
                pending = (step, dev_metrics)
            if step % t.eval_every == 0 or step == steps:
                last_eval = evaluate(params)
                if not flush(eval_loss=last_eval):
                    status = "diverged"
                    break
            if step % t.checkpoint_every == 0 or step == steps:
                ckpts.save(step, {"params": params, "opt_state": opt_state}, meta(step))
            if stop.set and step < steps:
                ckpts.save(step, {"params": params, "opt_state": opt_state}, meta(step))
                status = "interrupted"
                break
    if pending is not None and not flush():
        status = "diverged"
    if status == "completed" and last_eval is None:  # killed after the final checkpoint, before the summary
        last_eval = evaluate(params)
        last_train_loss = next((r["loss"] for r in reversed(run.metrics()) if "loss" in r), None)
    ckpts.close()
    bar.close()

    steps_done = step
    tokens = steps_done * tokens_per_step
    summary = {
        "status": status, "steps": steps, "steps_done": steps_done,
        "layers": m.layers, "d_model": m.d_model, "heads": m.heads, "ffw": m.d_ffw,
        "seq_len": m.seq_len, "vocab_size": m.vocab_size, "batch_size": t.batch_size,
        "n_params": counts.n_params, "n_params_nonembedding": counts.n_params_nonembedding,
        "tokens": tokens, "flops_6n": counts.flops_per_token_6n * tokens,
        "flops_chinchilla": counts.flops_per_token_chinchilla * tokens,
        "final_train_loss": last_train_loss, "final_eval_loss": last_eval,
        "eval_bits_per_byte": None if last_eval is None else last_eval / math.log(2) / bytes_per_token,
        "loss_unit": "nats/token", "wall_time_s": wall_before + time.perf_counter() - t_start,
        "identity_hash": identity_hash(identity(config, dataset.fingerprint)),
        "entropy_floor_nats_per_token": dataset.entropy_rate_nats_per_token,
        "versions": versions(), "device": device_info(), "host": platform.node(), "pid": os.getpid(),
    }
    run.write_summary(summary)
    if status == "completed":
        print(f"done: eval loss {last_eval:.4f} nats/token ({summary['eval_bits_per_byte']:.4f} bits/byte) "
              f"after D = {tokens:,} tokens, C = {summary['flops_6n']:.3e} FLOPs [6n]; {run.path}", file=sys.stderr)
    else:
        print(f"stopped at step {steps_done}: {status}; {run.path}", file=sys.stderr)
    return summary
