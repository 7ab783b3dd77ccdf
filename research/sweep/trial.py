"""One trial of a sweep: its directory and the function every executor calls to run it.

    <sweep>/trials/<trial id>/trial.json    design coordinates + the resolved run config
    <sweep>/trials/<trial id>/...           a normal run directory (config.json, metrics.jsonl, summary.json)
    <sweep>/trials/<trial id>/failed.json   written when the trial failed every attempt
    <sweep>/trials/<trial id>/train.log     the trial's stdout and stderr (local executor)
    <sweep>/trials/<trunk id>/branch_points/<step>   a trunk's checkpoints its cooldown branches start from
    <sweep>/jax_cache/                      JAX's persistent compilation cache, shared by the trials

The trials of one shape differ only in their horizon, which the train step takes as an
argument (research/train/step.py), so the first trial of a shape compiles and the others
read the compiled programs from the cache (init, train step, eval step). Entries are keyed
by the program, the device kind and the jax/jaxlib versions; deleting the folder is safe.
SCALING_COMPILATION_CACHE=off turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

from research.config import run_config_from_dict
from research.fsutil import ProcessLock, atomic_write_json, read_json

CACHE_ENV = "SCALING_COMPILATION_CACHE"  # "off" disables the sweep's persistent compilation cache
FAULT_ENV = "SCALING_FAIL_TRIALS"  # comma-separated trial ids that raise on purpose (fault injection for tests)


def spent_fraction(steps: int, branch_step: int) -> float:
    """The share of a run's steps its own trial computes: all of them for a run or trunk, the
    cooldown for a branch that leaves its trunk at `branch_step` (FLOPs spent = this x represented)."""
    return (steps - branch_step) / steps


def write_trial(trial_dir: Path, trial, sweep_name: str) -> None:
    record = {"trial": trial.trial_id, "sweep": sweep_name, "coords": trial.coords, "config": trial.config.to_dict(),
              "planned": {"n_params": trial.n_params, "n_params_nonembedding": trial.n_params_nonembedding,
                          "tokens": trial.tokens, "steps": trial.steps, "flops_6n": trial.flops_6n,
                          "flops_chinchilla": trial.flops_chinchilla}}
    if trial.role == "trunk":
        record.update(role="trunk", keep_steps=list(trial.keep_steps))
    elif trial.role == "branch":
        record.update(role="branch", branch={"trunk": trial.trunk_id, "step": trial.branch_step})
    if read_json(trial_dir / "trial.json") != record:
        atomic_write_json(trial_dir / "trial.json", record)


def use_compilation_cache(directory: Path) -> bool:
    """Point JAX's persistent compilation cache at `directory`, caching every program
    however small or quick to compile; False (nothing changed) when SCALING_COMPILATION_CACHE=off."""
    if os.environ.get(CACHE_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path(directory).absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def run_trial(trial_dir: str) -> dict:
    """Run, resume or recognise as finished the trial in `trial_dir`; return its summary.

    Top-level and picklable: the local executor calls it in a subprocess, Slurm through submitit.
    """
    from research.train.loop import train

    trial_dir = Path(trial_dir)
    record = read_json(trial_dir / "trial.json")
    if record is None:
        raise FileNotFoundError(f"{trial_dir}/trial.json is missing; re-plan the sweep")
    if record["trial"] in os.environ.get(FAULT_ENV, "").split(","):
        raise RuntimeError(f"fault injected into trial {record['trial']} by {FAULT_ENV}")
    config = run_config_from_dict(record["config"])
    use_compilation_cache(trial_dir.parent.parent / "jax_cache")  # <sweep>/trials/<id> -> <sweep>/jax_cache
    if record.get("role") == "branch":
        from research.train.loop import BranchFrom

        branch = record["branch"]
        return train(config, trial_dir, progress=False,
                     branch_from=BranchFrom(trial_dir.parent / branch["trunk"], int(branch["step"])))
    return train(config, trial_dir, progress=False, keep_steps=record.get("keep_steps", ()))


def trial_role(trial_dir: Path) -> str:
    record = read_json(Path(trial_dir) / "trial.json")
    return record.get("role", "run") if isinstance(record, dict) else "run"


def branch_blocked(trial_dir: Path) -> tuple[bool, str | None]:
    """(waiting, reason) for a trial that may depend on a trunk: (False, None) when it can run now
    (a run or trunk, or a branch whose branch point is kept); (True, None) while its trunk is still
    to train or training; (True, reason) when the trunk ended without the branch point."""
    record = read_json(Path(trial_dir) / "trial.json")
    branch = record.get("branch") if isinstance(record, dict) and record.get("role") == "branch" else None
    if not isinstance(branch, dict):
        return False, None
    trunk_dir = Path(trial_dir).parent / str(branch.get("trunk"))
    if (trunk_dir / "branch_points" / str(branch.get("step"))).is_dir():
        return False, None
    status = trial_status(trunk_dir)
    if status in ("pending", "running"):
        return True, None
    return True, (f"its trunk {trunk_dir.name} is {status} without the branch point at step {branch.get('step')}"
                  + ("; delete the trunk's directory to train it again" if status == "completed" else
                     "; retry the trunk (--retry-failed)"))


def trial_status(trial_dir: Path) -> str:
    """completed / diverged / failed / running / pending (pending includes partly trained)."""
    summary = read_json(trial_dir / "summary.json")
    if isinstance(summary, dict) and summary.get("status") in ("completed", "diverged"):
        return summary["status"]
    if ProcessLock(trial_dir / ".lock").is_held() or ProcessLock(trial_dir / ".claim").is_held():
        return "running"
    if (trial_dir / "failed.json").exists():
        return "failed"
    return "pending"


def steps_done(trial_dir: Path) -> int:
    """Last logged step, read cheaply from the end of metrics.jsonl."""
    path = trial_dir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="ignore").strip().splitlines()
    except FileNotFoundError:
        return 0
    import json

    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0
