"""Running a planned sweep: skip what is done, resume what was interrupted, never run a
trial twice at once, retry failures a bounded number of times, show progress.

Executors
    local  trials as subprocesses (`scaling sweep trial DIR`), `workers` at a time, each
           pinned to its own GPU when there are several; a dying runner takes its
           children down with it (they checkpoint on SIGTERM). By default each trial's
           process is forked from a warm worker that has imported JAX, Flax and orbax
           once (warm.py); `warm=False` starts a fresh interpreter per trial instead.
    slurm  one submitit job array (see slurm.py); preempted jobs requeue and resume.

Two locks per trial, both `ProcessLock`s that the kernel drops when their holder dies:
`.claim` (held by the runner that launched the trial) and `.lock` (held by the
training process). A runner skips any trial whose either lock is held.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from research.errors import UserError
from research.fsutil import ProcessLock, atomic_write_json, read_json
from research.sweep.collect import fmt_seconds
from research.sweep.plan import DEFAULT_FLOPS_PER_S, Plan
from research.sweep.trial import run_trial, write_trial
from research.train.sweep_dir import SweepDir, branch_blocked, steps_done, trial_role, trial_status
from research.sweep.warm import WarmProcess, WarmWorker, popen_python

EXIT_DIVERGED = 3


def prepare_sweep_dir(plan: Plan, sweep_dir: Path) -> list[Path]:
    """Create or check <sweep>/sweep.json, write plan.json and each trial.json.

    Every check runs before the first write: a directory of another sweep (another name, other
    data, another FLOP convention), an unreadable sweep.json, or a non-empty directory that is not a
    sweep directory is refused with one line and left exactly as it was."""
    sweep = plan.sweep
    record = {"name": sweep.name, "source": str(sweep.source), "flops_convention": sweep.design.flops_convention,
              "design": sweep.design.to_dict(), "data_fingerprint": plan.data_fingerprint}
    existing = _existing_sweep_record(sweep_dir)
    if existing is not None and existing.get("flops_convention", record["flops_convention"]) != record["flops_convention"]:
        raise UserError(f"{sweep_dir} holds budgets in the {existing.get('flops_convention')!r} FLOP convention, this "
                        f"sweep file uses {record['flops_convention']!r}; results would mix conventions: use --out "
                        "to choose another directory")
    if existing is not None and existing.get("name") != sweep.name:
        raise UserError(f"{sweep_dir} belongs to sweep {existing.get('name')!r} (from {existing.get('source')}), "
                        f"not {sweep.name!r}; use --out to choose another directory")
    if existing is not None and existing.get("data_fingerprint") != plan.data_fingerprint:
        raise UserError(f"{sweep_dir} was run on different data (fingerprint {existing.get('data_fingerprint')}, "
                        f"now {plan.data_fingerprint}); use --out to choose another directory")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if existing is None:
        record["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    else:
        record["created"] = existing.get("created")
    layout = SweepDir(sweep_dir)
    atomic_write_json(layout.record_path, record)
    atomic_write_json(layout.plan_path, plan.to_dict(measured_flops_per_s(sweep_dir)))
    dirs = []
    for trial in plan.ordered():  # a trunk before its branches
        trial_dir = layout.trial_dir(trial.trial_id)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_trial(trial_dir, trial, sweep.name)
        dirs.append(trial_dir)
    return dirs


def _existing_sweep_record(sweep_dir: Path) -> dict | None:
    """The sweep.json of an existing sweep directory; None for a new or empty directory; UserError otherwise."""
    if not sweep_dir.exists():
        return None
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir} exists and is not a directory; use --out to choose a sweep directory")
    path = SweepDir(sweep_dir).record_path
    if not path.exists():
        # another runner of this sweep may be writing sweep.json right now (its temporary file)
        if any(not p.name.startswith(".sweep.json.") for p in sweep_dir.iterdir()):
            raise UserError(f"{sweep_dir} is not empty and is not a sweep directory (no sweep.json); use --out "
                            "to choose a new or empty directory")
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({type(err).__name__}); it is left as it is: repair it or use --out "
                        "to choose another directory") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is not a sweep record (a JSON object); use --out to choose another directory")
    return record


def measured_flops_per_s(sweep_dir: Path) -> float:
    """Median training throughput (6n FLOPs/s) of completed trials, or the default guess."""
    rates = []
    for summary_path in SweepDir(sweep_dir).trials_dir.glob("*/summary.json"):
        s = read_json(summary_path)
        if isinstance(s, dict) and s.get("status") == "completed" and not s.get("branch_from"):
            # (a branch's FLOPs count its trunk's steps, its wall time only its own; a damaged summary is no measurement)
            flops, wall = s.get("flops_6n"), s.get("wall_time_s")
            if all(isinstance(v, (int, float)) and 0 < v < math.inf for v in (flops, wall)):
                rates.append(flops / wall)
    return sorted(rates)[len(rates) // 2] if rates else DEFAULT_FLOPS_PER_S


def _events(sweep_dir: Path, **event) -> None:
    event = {"time": time.time(), "runner": os.getpid(), **event}
    with open(SweepDir(sweep_dir).events_path, "a") as f:
        f.write(json.dumps(event) + "\n")


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when the runner dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        return 0


@dataclass
class _Running:
    trial_dir: Path
    proc: subprocess.Popen | WarmProcess
    claim: ProcessLock
    slot: int
    attempt: int
    started: float = field(default_factory=time.time)


def trial_progress(name: str, done: int, total: int) -> str:
    """A running trial in the live line: 'ab12cd34 120/309', or 'ab12cd34 compiling 0/309' before its
    first step is logged (starting the process, preparing the data and compiling take seconds)."""
    return f"{name[:8]} {'compiling ' if done == 0 else ''}{done}/{total}"


class LocalRunner:
    def __init__(self, plan: Plan, sweep_dir: Path, workers: int = 1, retries: int = 2,
                 retry_failed: bool = False, live: bool = True, warm: bool = True):
        self.plan, self.sweep_dir = plan, sweep_dir
        self.gpus = _gpu_count()
        self.workers = max(1, workers)
        self.retries, self.retry_failed, self.live = retries, retry_failed, live
        self.attempts: dict[Path, int] = {}
        everything = plan.trials + plan.trunks
        layout = SweepDir(sweep_dir)
        self.flops = {layout.trial_dir(t.trial_id): t.flops_6n * t.own_fraction for t in everything}  # spent
        self.steps = {layout.trial_dir(t.trial_id): (t.branch_step, t.steps) for t in everything}
        self._stop = False
        self.worker = WarmWorker() if warm else None

    def run(self, trial_dirs: list[Path]) -> None:
        todo = []
        for d in trial_dirs:
            status = trial_status(d)
            if status in ("completed", "diverged") or (status == "failed" and not self.retry_failed):
                continue
            if status == "failed":
                (d / "failed.json").unlink(missing_ok=True)
            todo.append(d)
        self.t0, self.flops_at_start = time.time(), self._flops_done()
        running: list[_Running] = []
        waiting_on_others: set[Path] = set()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        last_view = 0.0
        try:
            while (todo or running or waiting_on_others) and not self._stop:
                free = [s for s in range(self.workers) if s not in {r.slot for r in running}]
                while free and todo:
                    trial_dir = self._next_ready(todo)
                    if trial_dir is None:  # every trial left waits for a trunk still training
                        break
                    launched = self._launch(trial_dir, free[0])
                    if launched is None:
                        waiting_on_others.add(trial_dir)
                        continue
                    running.append(launched)
                    free.pop(0)
                for r in list(running):
                    if r.proc.poll() is not None:
                        running.remove(r)
                        self._finished(r, todo)
                for d in list(waiting_on_others):  # another runner has it; watch until it is done
                    if trial_status(d) != "running":
                        waiting_on_others.discard(d)
                        if trial_status(d) == "pending":
                            todo.append(d)
                if self.live and time.time() - last_view > 5:
                    self._view(running)
                    last_view = time.time()
                time.sleep(0.2)
        finally:
            for r in running:  # stopping: children checkpoint on SIGTERM
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in running:
                r.proc.wait()
                r.claim.release()
            if self.worker is not None:
                self.worker.close()
            for s, handler in old.items():
                signal.signal(s, handler)
        if self._stop:
            raise KeyboardInterrupt
        if self.live:
            self._view([])

    def _on_signal(self, *_):
        self._stop = True

    def _next_ready(self, todo: list[Path]) -> Path | None:
        """Take from `todo` the first trial that can start now; a branch whose trunk ended without
        its branch point is recorded as failed (with why) and dropped from `todo`."""
        for trial_dir in list(todo):
            waiting, reason = branch_blocked(trial_dir)
            if reason is not None:
                todo.remove(trial_dir)
                atomic_write_json(trial_dir / "failed.json", {"exit_code": None, "attempts": 0, "error": reason})
                _events(self.sweep_dir, trial=trial_dir.name, event="failed", reason=reason)
                self._say(f"failed    {trial_dir.name}: {reason}")
            elif not waiting:
                todo.remove(trial_dir)
                return trial_dir
        return None

    def _launch(self, trial_dir: Path, slot: int) -> _Running | None:
        claim = ProcessLock(trial_dir / ".claim")
        if not claim.acquire():
            return None
        if ProcessLock(trial_dir / ".lock").is_held() or trial_status(trial_dir) in ("completed", "diverged"):
            claim.release()  # trained elsewhere (a child left by a killed runner) or finished meanwhile;
            return None      # the caller watches it until it is no longer running
        attempt = self.attempts.get(trial_dir, 0) + 1
        self.attempts[trial_dir] = attempt
        env = {"CUDA_VISIBLE_DEVICES": str(slot % self.gpus)} if self.gpus > 1 else {}
        with open(trial_dir / "train.log", "a") as log:
            log.write(f"\n=== attempt {attempt}, runner pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.flush()
            proc = None
            if self.worker is not None:
                try:
                    proc = self.worker.launch(trial_dir, trial_dir / "train.log", env)
                except RuntimeError as err:  # e.g. the worker cannot start: fresh processes instead
                    self._say(f"warning: {err}; starting a fresh process per trial instead")
                    self.worker = None
            if proc is None:
                proc = popen_python([sys.executable, "-m", "research", "sweep", "trial", str(trial_dir)],
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                    preexec_fn=_die_with_parent)
        _events(self.sweep_dir, trial=trial_dir.name, event="start", attempt=attempt, pid=proc.pid)
        return _Running(trial_dir, proc, claim, slot, attempt)

    def _finished(self, r: _Running, todo: list[Path]) -> None:
        code = r.proc.returncode
        name = r.trial_dir.name
        if code == 0:
            _events(self.sweep_dir, trial=name, event="completed", attempt=r.attempt)
            self._say(f"completed {name} in {fmt_seconds(time.time() - r.started)}")
        elif code == EXIT_DIVERGED:
            _events(self.sweep_dir, trial=name, event="diverged", attempt=r.attempt)
            self._say(f"diverged  {name} (recorded; the sweep goes on)")
        elif self._stop or code in (-signal.SIGTERM, 143, 130):  # checkpointed on SIGTERM / Ctrl-C
            _events(self.sweep_dir, trial=name, event="interrupted", attempt=r.attempt)
        elif r.attempt <= self.retries:
            _events(self.sweep_dir, trial=name, event="retry", attempt=r.attempt, exit_code=code)
            self._say(f"failed    {name} (exit {code}); retrying ({r.attempt}/{self.retries})")
            todo.append(r.trial_dir)
        else:
            tail = _tail(r.trial_dir / "train.log")
            error = tail.splitlines()[-1] if tail else f"exit code {code}"
            atomic_write_json(r.trial_dir / "failed.json",
                              {"exit_code": code, "attempts": r.attempt, "error": error, "log_tail": tail})
            _events(self.sweep_dir, trial=name, event="failed", attempt=r.attempt, exit_code=code)
            self._say(f"failed    {name} after {r.attempt} attempts: {error}")
        r.claim.release()

    def _flops_done(self) -> float:
        total = 0.0
        for d, flops in self.flops.items():
            status = trial_status(d)
            if status in ("completed", "diverged", "failed"):
                total += flops
            else:
                start, end = self.steps[d]
                total += flops * min(1.0, max(0, steps_done(d) - start) / max(end - start, 1))
        return total

    def _view(self, running: list[_Running]) -> None:
        statuses = [trial_status(d) for d in self.flops]
        done = sum(s in ("completed", "diverged", "failed") for s in statuses)
        flops_done, flops_total = self._flops_done(), sum(self.flops.values())
        rate = (flops_done - self.flops_at_start) / max(time.time() - self.t0, 1e-9)
        eta = (flops_total - flops_done) / rate if rate > 0 else float("nan")
        per_trial = ", ".join(trial_progress(r.trial_dir.name, steps_done(r.trial_dir), self.steps[r.trial_dir][1])
                              for r in running)
        self._say(f"[{done}/{len(statuses)} done, {statuses.count('failed')} failed, "
                  f"{statuses.count('diverged')} diverged] FLOPs spent {flops_done:.2e}/{flops_total:.2e} [6n] "
                  f"({100 * flops_done / flops_total:.0f}%) ETA {fmt_seconds(eta)}"
                  + (f" | running: {per_trial}" if per_trial else ""))

    @staticmethod
    def _say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="ignore").strip().splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])


def run_slurm(plan: Plan, sweep_dir: Path, trial_dirs: list[Path], options: dict, retries: int,
              retry_failed: bool) -> None:
    from research.sweep.slurm import SlurmOptions  # lazy: submitit (~0.2 s), only for --executor slurm

    todo = []
    for d in trial_dirs:
        status = trial_status(d)
        if status in ("completed", "diverged", "running") or (status == "failed" and not retry_failed):
            continue
        (d / "failed.json").unlink(missing_ok=True)
        todo.append(d)
    opts = SlurmOptions(folder=str(SweepDir(sweep_dir).slurm_dir.absolute()), **options)
    # Trunks (and runs) first; then the branches, whose trunks have kept their branch points by then.
    first = [d for d in todo if trial_role(d) != "branch"]
    for batch in (first, [d for d in todo if trial_role(d) == "branch"]):
        _slurm_batch(batch, opts, retries)


def _slurm_batch(todo: list[Path], opts, retries: int) -> None:
    from research.sweep.slurm import run_on_slurm  # lazy: submitit (~0.2 s), only for --executor slurm

    blocked = [(d, reason) for d in todo for waiting, reason in [branch_blocked(d)] if reason is not None]
    for d, reason in blocked:
        atomic_write_json(d / "failed.json", {"attempts": 0, "error": reason})
        print(f"failed {d.name}: {reason}", file=sys.stderr)
    todo = [d for d in todo if d not in {b for b, _ in blocked}]
    for attempt in range(1, retries + 2):
        if not todo:
            return
        print(f"submitting {len(todo)} trial(s) to Slurm (attempt {attempt})", file=sys.stderr)
        results = run_on_slurm(run_trial, [str(d) for d in todo], opts)
        failed = []
        for d in todo:
            result = results.get(str(d))
            if isinstance(result, BaseException):
                failed.append((d, result))
        todo = [d for d, _ in failed]
        if attempt == retries + 1:
            for d, err in failed:
                atomic_write_json(d / "failed.json", {"attempts": attempt, "error": f"{type(err).__name__}: {err}"[-2000:]})
