"""One trial of a sweep: its directory and the function every executor calls to run it.

    <sweep>/trials/<trial id>/trial.json    design coordinates + the resolved run config
    <sweep>/trials/<trial id>/...           a normal run directory (config.json, metrics.jsonl, summary.json)
    <sweep>/trials/<trial id>/failed.json   written when the trial failed every attempt
    <sweep>/trials/<trial id>/train.log     the trial's stdout and stderr (local executor)
    <sweep>/trials/<trunk id>/branch_points/<step>   a trunk's checkpoints its cooldown branches start from
    <sweep>/jax_cache/                      JAX's persistent compilation cache, shared by the trials

(The whole sweep directory's layout: research/train/sweep_dir.py, `SweepDir`.)

The trials of one shape differ only in their horizon, which the train step takes as an
argument (research/train/step.py), so the first trial of a shape compiles and the others
read the compiled programs from the cache (init, train step, eval step). Entries are keyed
by the program, the device kind and the jax/jaxlib versions; deleting the folder is safe.
SCALING_COMPILATION_CACHE=off turns it off; SCALING_COMPILATION_CACHE=/an/absolute/dir makes
every sweep use that one directory instead (the test suite shares one cache across its sweeps).
"""

from __future__ import annotations

import os
from pathlib import Path

from research.config import run_config_from_dict
from research.fsutil import atomic_write_json, read_json
from research.train.sweep_dir import SweepDir

CACHE_ENV = "SCALING_COMPILATION_CACHE"  # "off" disables the sweep's persistent compilation cache; a path replaces it
FAULT_ENV = "SCALING_FAIL_TRIALS"  # comma-separated trial ids that raise on purpose (fault injection for tests)


def write_trial(trial_dir: Path, trial, sweep_name: str) -> None:
    record = {"trial": trial.trial_id, "sweep": sweep_name, "coords": trial.coords, "config": trial.config.to_dict(),
              "planned": {**trial.size.to_dict(), "steps": trial.steps}}
    if trial.role == "trunk":
        record.update(role="trunk", keep_steps=list(trial.keep_steps))
    elif trial.role == "branch":
        record.update(role="branch", branch={"trunk": trial.trunk_id, "step": trial.branch_step})
    if read_json(trial_dir / "trial.json") != record:
        atomic_write_json(trial_dir / "trial.json", record)


def use_compilation_cache(directory: Path) -> bool:
    """Point JAX's persistent compilation cache at `directory`, caching every program
    however small or quick to compile; False (nothing changed) when SCALING_COMPILATION_CACHE=off.
    SCALING_COMPILATION_CACHE set to an absolute path points it there instead of at `directory`."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return False
    if os.path.isabs(setting):
        directory = Path(setting)
    import jax  # lazy: the runner imports this module without jax

    jax.config.update("jax_compilation_cache_dir", str(Path(directory).absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def run_trial(trial_dir: str) -> dict:
    """Run, resume or recognise as finished the trial in `trial_dir`; return its summary.

    Top-level and picklable: the local executor calls it in a subprocess, Slurm through submitit.
    """
    from research.train.loop import BranchFrom, train  # lazy: jax; the runner imports this module without it

    trial_dir = Path(trial_dir)
    record = read_json(trial_dir / "trial.json")
    if record is None:
        raise FileNotFoundError(f"{trial_dir}/trial.json is missing; re-plan the sweep")
    if record["trial"] in os.environ.get(FAULT_ENV, "").split(","):
        raise RuntimeError(f"fault injected into trial {record['trial']} by {FAULT_ENV}")
    config = run_config_from_dict(record["config"])
    use_compilation_cache(SweepDir.of_trial(trial_dir).jax_cache_dir)
    if record.get("role") == "branch":
        branch = record["branch"]
        return train(config, trial_dir, progress=False,
                     branch_from=BranchFrom(trial_dir.parent / branch["trunk"], int(branch["step"])))
    return train(config, trial_dir, progress=False, keep_steps=record.get("keep_steps", ()))


