"""Run sweep trials on a Slurm cluster as one job array, through submitit.

    results = run_on_slurm(run_trial, trial_dirs, SlurmOptions(folder="/shared/sweep/slurm"))

`fn(trial_dir)` must be a top-level (picklable) function that runs one trial,
resuming from the trial's own checkpoints, and returns a summary dict; calling
it again on a finished trial must return the existing summary. That is what
makes requeueing safe: when Slurm preempts a job, or its time limit is near
(submitit's USR2 pre-timeout signal, `signal_delay_s` before the limit), the
job requeues itself and, when it runs again, simply calls `fn(trial_dir)` again.

Only the standard library and submitit are used here.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit
from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmInfoWatcher

from research.errors import UserError

# Slurm checks time limits (and sends --signal warnings) about every 30 s, so a
# USR2 asked for `d` seconds before the limit arrives between d and d+30 s early.
_SLURM_TIMER_S = 30
# States submitit treats as not finished.
_UNFINISHED_STATES = ("READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED")
# Time a job needs after it starts before it can handle USR2 (python + submitit import).
_STARTUP_MARGIN_S = 5


@dataclass
class SlurmOptions:
    """How to submit the trials. `folder` holds submitit's pickles and logs.

    folder             absolute path readable from the compute nodes; use a fresh one
                       per cluster (job ids may repeat across clusters).
    partition          Slurm partition (None: the cluster's default).
    time_min           time limit of each job, minutes.
    gpus_per_node      GPUs per job (0: none requested).
    cpus_per_task      CPUs per job (None: Slurm's default).
    mem_gb             memory per job (None: Slurm's default).
    max_requeues       how many times a job may requeue itself on its time limit
                       (submitit's max_num_timeout); preemptions are not counted.
    array_parallelism  at most this many jobs of the array run at once.
    signal_delay_s     USR2 (checkpoint + requeue) this long before the time limit;
                       None: min(120, 20 * time_min).
    poll_s             seconds between state polls (one sacct call each).
    job_name           Slurm job name.
    extra              more sbatch options, e.g. {"account": "lab", "qos": "high"}
                       (submitit's slurm_additional_parameters).
    """

    folder: str
    partition: str | None = None
    time_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    max_requeues: int = 3
    array_parallelism: int = 64
    signal_delay_s: int | None = None
    poll_s: float = 5.0
    job_name: str = "sweep"
    extra: dict = field(default_factory=dict)

    def effective_signal_delay_s(self) -> int:
        if self.signal_delay_s is not None:
            return int(self.signal_delay_s)
        return min(120, 20 * int(self.time_min))


def slurm_available() -> bool:
    """Whether Slurm's client commands are installed (sbatch on PATH)."""
    return shutil.which("sbatch") is not None


class TrialJob(Checkpointable):
    """What each array task runs: fn(trial_dir), requeued on USR2.

    submitit calls `checkpoint(trial_dir)` when USR2 arrives; the inherited
    implementation resubmits this same object with the same argument, so the
    requeued job calls fn(trial_dir) again and the trial resumes from its own
    checkpoints. An exception from fn is also pickled next to submitit's result
    so the caller gets the real exception object back, not only its traceback.
    """

    def __init__(self, fn: Callable[[str], dict]):
        self.fn = fn

    def __call__(self, trial_dir: str) -> dict:
        try:
            return self.fn(trial_dir)
        except Exception as exc:  # not SystemExit: that is submitit requeueing us
            try:
                path = _exception_path(submitit.JobEnvironment().paths.result_pickle)
                data = pickle.dumps(exc)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(path)
            except Exception:
                pass  # the caller still gets submitit's FailedJobError with the traceback
            raise


def _exception_path(result_pickle: Path) -> Path:
    return Path(str(result_pickle).replace("_result.pkl", "_exception.pkl"))


def _check_reachable() -> None:
    if not slurm_available():
        raise UserError("Slurm is not available: sbatch is not on PATH; run the sweep "
                        "without --slurm or from a Slurm login node")
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"Slurm is not reachable: sinfo failed ({e}); check SLURM_CONF and slurmctld") from None
    if res.returncode != 0:
        lines = (res.stderr or res.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {res.returncode}"
        raise UserError(f"Slurm is not reachable: sinfo says: {detail}; check SLURM_CONF and slurmctld")


def _validate(options: SlurmOptions) -> None:
    if not Path(options.folder).is_absolute():
        raise UserError(f"SlurmOptions.folder must be an absolute path, got {options.folder!r}")
    if options.time_min < 1:
        raise UserError(f"SlurmOptions.time_min must be at least 1 minute, got {options.time_min}")
    delay = options.effective_signal_delay_s()
    earliest = options.time_min * 60 - delay - _SLURM_TIMER_S
    if delay < 1 or earliest < _STARTUP_MARGIN_S:
        raise UserError(
            f"SlurmOptions.signal_delay_s={delay} leaves no time to work in a {options.time_min}-minute job "
            f"(Slurm may send it up to {_SLURM_TIMER_S}s earlier); use at most "
            f"{options.time_min * 60 - _SLURM_TIMER_S - _STARTUP_MARGIN_S}s or a longer time_min")
    if options.array_parallelism < 1:
        raise UserError(f"SlurmOptions.array_parallelism must be >= 1, got {options.array_parallelism}")


def _executor(options: SlurmOptions) -> submitit.SlurmExecutor:
    Path(options.folder).mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=options.folder, max_num_timeout=options.max_requeues)
    params: dict = {
        "job_name": options.job_name,
        "time": int(options.time_min),
        "signal_delay_s": options.effective_signal_delay_s(),
        "array_parallelism": int(options.array_parallelism),
    }
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_node:
        params["gpus_per_node"] = int(options.gpus_per_node)
    if options.cpus_per_task is not None:
        params["cpus_per_task"] = int(options.cpus_per_task)
    if options.mem_gb is not None:
        params["mem"] = f"{max(1, round(options.mem_gb * 1024))}M"
    if options.extra:
        params["additional_parameters"] = dict(options.extra)
    executor.update_parameters(**params)
    return executor


def _outcome(job) -> dict | BaseException:
    """The trial's summary, or the exception it raised (or why it never finished)."""
    try:
        return job.result()
    except Exception as err:  # FailedJobError (fn raised) or UncompletedJobError (killed, cancelled...)
        path = _exception_path(job.paths.result_pickle)
        try:
            original = pickle.loads(path.read_bytes())
        except Exception:
            return err
        if isinstance(original, BaseException):
            original.add_note(f"(raised in Slurm job {job.job_id}; logs: {job.paths.stderr})")
            return original
        return err


def run_on_slurm(
    fn: Callable[[str], dict],
    trial_dirs: list[str],
    options: SlurmOptions,
    on_update: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, dict | BaseException]:
    """Run fn(trial_dir) for every trial as one Slurm job array; wait for all of them.

    Returns {trial_dir: summary dict, or the exception the trial raised}; a failed
    or killed job never stops the others. `on_update(states)` is called every
    `options.poll_s` seconds with {trial_dir: Slurm state}, e.g. "PENDING",
    "RUNNING", "REQUEUED", "COMPLETED", "FAILED" (a final call has every trial
    finished). If waiting is interrupted (Ctrl-C or any error), the jobs are
    cancelled so no two runs of one trial can overlap.

    Raises UserError if Slurm isn't reachable or the options can't work.
    """
    trial_dirs = [str(d) for d in trial_dirs]
    if len(set(trial_dirs)) != len(trial_dirs):
        raise UserError("run_on_slurm: the same trial directory is listed twice")
    if not trial_dirs:
        return {}
    _validate(options)
    _check_reachable()
    executor = _executor(options)
    try:
        jobs = executor.map_array(TrialJob(fn), trial_dirs)
    except submitit.core.utils.FailedJobError as e:  # sbatch exited non-zero; message is its stderr
        lines = str(e).strip().splitlines()
        raise UserError(f"sbatch refused the job array: {lines[-1] if lines else 'no message'}") from None
    # A private watcher: submitit's shared one caches finished states by job id,
    # and job ids repeat across clusters (a fresh test cluster starts at 1).
    watcher = SlurmInfoWatcher(delay_s=max(1, int(options.poll_s)))
    for job in jobs:
        job.watcher = watcher
        watcher.register_job(job.job_id)
    by_dir = dict(zip(trial_dirs, jobs))
    results: dict[str, dict | BaseException] = {}
    try:
        while True:
            watcher.update()  # one sacct call for the whole array
            states = {}
            for trial_dir, job in by_dir.items():
                if trial_dir not in results and job.done():
                    results[trial_dir] = _outcome(job)
                states[trial_dir] = watcher.get_state(job.job_id, mode="cache")
                if trial_dir in results and states[trial_dir] in _UNFINISHED_STATES:
                    # The result file can appear before sacct catches up.
                    states[trial_dir] = "FAILED" if isinstance(results[trial_dir], BaseException) else "COMPLETED"
            if on_update is not None:
                on_update(states)
            if len(results) == len(by_dir):
                break
            time.sleep(options.poll_s)
    except BaseException:
        _cancel(jobs)
        raise
    return {d: results[d] for d in trial_dirs}


def _cancel(jobs) -> None:
    array_ids = sorted({job.job_id.split("_")[0] for job in jobs})
    try:
        subprocess.run(["scancel", *array_ids], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass
