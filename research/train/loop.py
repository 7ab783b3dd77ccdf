"""The training loop: resolve, resume, step, log, evaluate, checkpoint, summarise.

Resuming is a seek: the batch at step s is a pure function of (seed, s), and the
restored checkpoint holds parameters, optimiser state and the step, so a run that
is killed and restarted produces the same losses as one that never stopped.
Metrics are fetched from the device one logged step behind, so logging never
stalls the device; the only host syncs are evaluations and checkpoints.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import jax

from research.config import RunConfig, total_steps, warmup_steps
from research.data import get_dataset
from research.errors import UserError
from research.fsutil import read_json
from research.model.accounting import count_model
from research.train.checkpoint import Checkpoints, abstract_like
from research.train.metrics import MetricsLogger, build_summary, versions  # noqa: F401 (versions: bench reads it here)
from research.train.optim import learning_rate_schedule
from research.train.progress import Progress
from research.train.run_dir import RunDir, identity, identity_hash
from research.train.signals import EXIT_DIVERGED, EXIT_INTERRUPTED, StopSignals, exit_code  # noqa: F401 (CLIs)
from research.train.step import Stepper, check_memory, make_mesh
from research.train.tracking import open_run_tracking


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


def _announce(dataset, counts, steps: int, tokens_per_step: int) -> None:
    """N, D and C of the run (conventions named), and a warning when it repeats its data."""
    tokens = steps * tokens_per_step
    print(f"model: n_params {counts.n_params:,} (embeddings included), non-embedding "
          f"{counts.n_params_nonembedding:,}; {steps} steps x {tokens_per_step:,} tokens = "
          f"D {tokens:,}; C = {counts.flops_per_token_6n * tokens:.3e} FLOPs [6n], "
          f"{counts.flops_per_token_chinchilla * tokens:.3e} [chinchilla]", file=sys.stderr)
    if tokens > dataset.n_tokens("train"):
        print(f"warning: the run sees the training split {tokens / dataset.n_tokens('train'):.2f} times "
              "(repeated data)", file=sys.stderr)


def _initial_state(stepper, ckpts: Checkpoints, branch_from: BranchFrom | None):
    """(start step, {params, opt_state}, wall time before): from the run's newest checkpoint, else a
    trunk's branch point, else initialisation."""
    params, opt_state = stepper.init()
    like = abstract_like({"params": params, "opt_state": opt_state})
    try:
        restored = ckpts.restore_latest(like)
    except BaseException:
        ckpts.close()
        raise
    if restored:
        start, state, meta = restored
        print(f"resuming from the checkpoint at step {start}", file=sys.stderr)
        return start, state, float(meta.get("wall_time_s", 0.0))
    if branch_from is None:
        return 0, {"params": params, "opt_state": opt_state}, 0.0
    trunk_points = Checkpoints(Path(branch_from.trunk_dir) / "branch_points", None, read_only=True)
    try:
        start, state, _ = trunk_points.restore_step(branch_from.step, like)
    finally:
        trunk_points.close()
    print(f"branching from the trunk {branch_from.trunk_dir} at step {start}", file=sys.stderr)
    return start, state, 0.0


def _keep_missed_branch_points(ckpts: Checkpoints, keep_steps, start: int, branch_points: Path) -> None:
    for kept in (s for s in keep_steps if s <= start):  # killed between a save and its kept copy
        if not ckpts.keep_copy(kept, branch_points):
            print(f"warning: the branch point at step {kept} was not kept (its checkpoint is gone); "
                  "branches from it cannot start until this run is trained again", file=sys.stderr)


class Evaluator:
    """The held-out loss: the same validation windows every time, put on the device once.

    With `dense_tokens` (`[train] dense_eval_tokens`), the evaluations before the last use only
    the first batches of the same windows (a fixed prefix), so that frequent evaluation stays
    cheap; the last one uses them all and reports the prefix's loss beside the full set's."""

    def __init__(self, stepper, dataset, batch_size: int, seq_len: int, eval_tokens: int,
                 dense_tokens: int | None = None):
        windows = dataset.val_batches(batch_size, seq_len, eval_tokens)
        self.bytes_per_token = dataset.bytes_per_token_of([w[:, 1:] for w in windows])  # the scored targets
        self.stepper, self.batches = stepper, [stepper.put_batch(b) for b in windows]
        self.n_dense = None
        if dense_tokens is not None:  # the same first windows: val_batches always starts at window 0
            self.n_dense = min(len(self.batches), len(dataset.val_batches(batch_size, seq_len, dense_tokens)))

    def _mean(self, params, n: int):  # dispatch every batch, then one host sync for the mean
        return jax.numpy.mean(jax.numpy.stack([self.stepper.eval_step(params, b) for b in self.batches[:n]]))

    def __call__(self, params) -> float:
        return float(self._mean(params, len(self.batches)))

    def timed(self, params, final: bool = True) -> tuple[dict, float]:
        """({"eval_loss": full set} or, with a dense prefix, {"dense_eval_loss": prefix} before the last
        evaluation and both at the last; seconds the evaluation itself took). The train steps still
        queued on the device finish first, so their time is not counted as evaluation (and left out
        of the throughput)."""
        jax.block_until_ready(params)
        t0 = time.perf_counter()
        if self.n_dense is None:
            out = {"eval_loss": float(self._mean(params, len(self.batches)))}
        elif not final:
            out = {"dense_eval_loss": float(self._mean(params, self.n_dense))}
        else:  # one pass: the full set's mean exactly as without a prefix, and the prefix's beside it
            loss_B = jax.numpy.stack([self.stepper.eval_step(params, b) for b in self.batches])
            full, dense = jax.device_get((jax.numpy.mean(loss_B), jax.numpy.mean(loss_B[:self.n_dense])))
            out = {"eval_loss": float(full), "dense_eval_loss": float(dense)}
        return out, time.perf_counter() - t0


class Steps:
    """Steps `start + 1 .. steps`: train, log, evaluate, checkpoint, keep branch points, stop on a
    signal. Holds the parameters and optimiser state between steps."""

    def __init__(self, config: RunConfig, stepper, ckpts: Checkpoints, log: MetricsLogger, evaluate: Evaluator,
                 prefetch: Prefetcher, state: dict, keep_steps, branch_points: Path, steps: int):
        self.t, self.stepper, self.ckpts, self.log, self.evaluate = config.train, stepper, ckpts, log, evaluate
        self.prefetch, self.keep, self.branch_points, self.steps = prefetch, set(keep_steps), branch_points, steps
        self.tokens_per_step = config.train.batch_size * config.model.seq_len
        self.params, self.opt_state = state["params"], state["opt_state"]

    def save(self, step: int) -> None:
        try:
            self.ckpts.save(step, {"params": self.params, "opt_state": self.opt_state},
                            {"step": step, "tokens": step * self.tokens_per_step, "wall_time_s": self.log.wall_time_s()})
        except OSError:  # a refused save ends the run: this step's held row is written first, not lost
            self.log.flush()
            raise

    def run(self, start: int, stop: StopSignals) -> tuple[str, int, float | None]:
        """(status, last step, last evaluation loss)."""
        t, log, steps, step, last_eval = self.t, self.log, self.steps, start, None
        for step in range(start + 1, steps + 1):
            self.params, self.opt_state, dev_metrics = self.stepper.train_step(
                self.params, self.opt_state, self.prefetch.get(step - 1))
            if step == start + 1:  # compiled and run once: throughput counts from here
                jax.block_until_ready(dev_metrics)
                log.throughput.start(step)
            if not log.flush():
                return "diverged", step, last_eval
            if step % t.log_every == 0 or step % t.eval_every == 0 or step == steps:
                log.hold(step, dev_metrics)
            if step % t.eval_every == 0 or step == steps:
                evals, eval_s = self.evaluate.timed(self.params, final=step == steps)
                last_eval = evals.get("eval_loss", last_eval)
                log.throughput.exclude(eval_s)
                if not log.flush(**evals):
                    return "diverged", step, last_eval
            periodic = step % t.checkpoint_every == 0 or step == steps or step in self.keep
            if periodic:
                self.save(step)
            if step in self.keep:
                self.ckpts.keep_copy(step, self.branch_points)  # a cooldown branch may start from here now
            stop.step = step
            if step < steps and (step % t.log_every == 0 or jax.process_count() == 1) and stop.agreed():
                print(f"{signal.Signals(stop.signal).name} received: checkpointing at step {step} and stopping",
                      file=sys.stderr)
                if not periodic:
                    self.save(step)
                return "interrupted", step, last_eval
        return "completed", step, last_eval


def _report_end(summary: dict, run: RunDir, sinks, tracking, stop: StopSignals) -> None:
    """Hand the summary to the sinks and trackers, say how the run ended, and pass a caught
    SIGUSR2 on to submitit now that the checkpoint is written."""
    status = summary["status"]
    for sink in sinks if run.writer else ():
        if hasattr(sink, "log_summary"):
            sink.log_summary(summary)
    tracking.log_summary(summary)
    tracking.close(ok=status == "completed")
    if status == "completed":
        bpb = summary["eval_bits_per_byte"]
        print(f"done: eval loss {summary['final_eval_loss']:.4f} nats/token"
              + (f" ({bpb:.4f} bits/byte)" if bpb is not None else "") + " "
              f"after D = {summary['tokens']:,} tokens, C = {summary['flops_6n']:.3e} FLOPs [6n]; {run.path}",
              file=sys.stderr)
    else:
        print(f"stopped at step {summary['steps_done']}: {status}"
              + (f" ({summary['stop_signal']}; checkpointed)" if summary["stop_signal"] else "") + f"; {run.path}",
              file=sys.stderr)
    if status == "interrupted":
        stop.forward()


def _train_loop(config, run: RunDir, dataset, counts, steps: int, show_progress: bool, sinks=(), keep_steps=(),
                branch_from: BranchFrom | None = None) -> dict:
    t, m = config.train, config.model
    tokens_per_step = t.batch_size * m.seq_len
    _announce(dataset, counts, steps, tokens_per_step)
    stepper = Stepper(config, make_mesh(config))
    ckpts = Checkpoints(run.checkpoint_dir, t.keep_checkpoints)
    start, state, wall_before = _initial_state(stepper, ckpts, branch_from)
    branch_points = run.path / "branch_points"
    _keep_missed_branch_points(ckpts, keep_steps, start, branch_points)
    run.truncate_metrics(start)
    # W&B / TensorBoard copies of the rows ([logging])
    tracking = open_run_tracking(config.logging, run.path, read_json(run.config_path), start, enabled=run.writer)
    lr_at = learning_rate_schedule(config)
    evaluate = Evaluator(stepper, dataset, t.batch_size, m.seq_len, t.eval_tokens, t.dense_eval_tokens)
    bar = Progress(steps, start, enabled=show_progress and run.writer)
    log = MetricsLogger(run, counts, tokens_per_step, lr_at, evaluate.bytes_per_token, wall_before,
                        sinks=[bar, tracking, *sinks], devices=stepper.mesh.devices.flat)
    prefetch = Prefetcher(lambda s: dataset.train_batch(s, t.batch_size, m.seq_len, t.seed),
                          stepper.put_batch, start, steps, t.prefetch)
    loop = Steps(config, stepper, ckpts, log, evaluate, prefetch, state, keep_steps, branch_points, steps)
    # The handlers stay until the last checkpoint is written and the summary recorded: a signal
    # meanwhile is acknowledged (see StopSignals), never a KeyboardInterrupt inside orbax's save.
    with StopSignals() as stop:
        status, step, last_eval = loop.run(start, stop)
        if not log.flush():
            status = "diverged"
        if status == "completed" and last_eval is None:  # killed after the final checkpoint, before the summary
            last_eval = evaluate(loop.params)
            log.last_train_loss = next((r["loss"] for r in reversed(run.metrics()) if "loss" in r), None)
        ckpts.close()
        bar.close()
        summary = build_summary(config, run, dataset, counts, status=status, steps=steps, steps_done=step,
                                final_train_loss=log.last_train_loss, final_eval_loss=last_eval,
                                eval_bytes_per_token=evaluate.bytes_per_token, wall_time_s=log.wall_time_s(),
                                stop_signal=stop.signal if status == "interrupted" else None)
        if branch_from is not None:  # its wall time is its own; its N, D and C count the trunk's steps too
            summary["branch_from"] = {"trunk": str(branch_from.trunk_dir), "step": branch_from.step}
        run.write_summary(summary)
    _report_end(summary, run, sinks, tracking, stop)
    return summary
