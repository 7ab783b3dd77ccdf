"""Bounds on the numbers and environment a user hands the harness, each refused in one line
(`UserError`) before any work starts. Shared by every command, so one rule holds everywhere."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys

from research.errors import UserError

MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds are 32-bit words
MAX_BOOTSTRAP = 100_000  # resamples: 200-2000 is the useful range; more only costs time
MAX_STEPS = 10**9
MAX_FLOPS = 1e40  # far beyond any budget ever spent (the largest runs are ~1e26)
MIN_FLOPS = 1.0
BOOTSTRAP_BYTES_PER_DRAW = 8 * 64  # a resample's row of fitted values and its index vector, at least


def check_seed(seed: int, flag: str = "--seed") -> int:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} must be between 0 and {MAX_SEED} (a 32-bit seed), got {seed}")
    return seed


def check_bootstrap(n: int, rows: int = 1, flag: str = "--bootstrap") -> int:
    """0..MAX_BOOTSTRAP resamples, and no more than the memory they would need allows."""
    if n < 0:
        raise UserError(f"{flag} must be >= 0 (0 = no intervals), got {n}")
    if n > MAX_BOOTSTRAP:
        need = n * max(rows, 1) * BOOTSTRAP_BYTES_PER_DRAW
        raise UserError(f"{flag} {n:,} is more than {MAX_BOOTSTRAP:,} resamples (it would need at least "
                        f"{need / 2**30:,.1f} GiB); 200-2000 give intervals as good as the data allow")
    return n


def check_steps(steps: int, flag: str = "--steps") -> int:
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"{flag} must be between 1 and {MAX_STEPS:,}, got {steps}")
    return steps


def check_flops(c: float, flag: str = "--flops") -> float:
    if not (math.isfinite(c) and MIN_FLOPS <= c <= MAX_FLOPS):
        raise UserError(f"{flag} {c:g} is outside [{MIN_FLOPS:g}, {MAX_FLOPS:g}] FLOPs; a training budget is "
                        "a positive count of operations (e.g. 1e21)")
    return c


# ---------------------------------------------------------------- environment

_PLATFORMS = {"cpu", "cuda", "gpu", "rocm", "tpu", "metal", ""}


def check_environment(env=os.environ) -> None:
    """Variables read by the harness or by JAX's start-up, checked before JAX reads them."""
    for name in ("SLURM_NTASKS", "SLURM_NPROCS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_PROCID"):
        value = env.get(name)
        if value is not None and not re.fullmatch(r"\d+", value.strip()):
            raise UserError(f"environment variable {name}={value!r} is not a whole number; unset it, or set "
                            "it to a count (Slurm's '4(x2)' form is for SLURM_TASKS_PER_NODE, not this one)")
    ntasks = env.get("SLURM_NTASKS")
    if ntasks and int(ntasks) > 1 and not env.get("SLURM_JOB_ID"):
        raise UserError(f"SLURM_NTASKS={ntasks} is set but this is not inside a Slurm allocation (no "
                        "SLURM_JOB_ID); unset SLURM_NTASKS, or run under srun/sbatch")
    platforms = env.get("JAX_PLATFORMS")
    if platforms is not None:
        unknown = [p for p in platforms.lower().split(",") if p.strip() not in _PLATFORMS]
        if unknown:
            raise UserError(f"JAX_PLATFORMS={platforms!r} names {unknown[0]!r}, not a JAX platform "
                            f"(cpu, cuda, rocm, tpu); unset it to let JAX choose")


JAX_START_CHECKED = "SCALING_JAX_START_CHECKED"  # a digest of the JAX_PLATFORMS and XLA_FLAGS a probe started


def _jax_settings_digest(env) -> str:
    settings = f"{env.get('JAX_PLATFORMS', '')}\n{env.get('XLA_FLAGS', '')}"
    return hashlib.sha256(settings.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def check_jax_start(env=os.environ) -> None:
    """When JAX_PLATFORMS asks for an accelerator or XLA_FLAGS is set, start JAX once in a child
    process: a platform this machine lacks (JAX_PLATFORMS=cuda on a CPU) fails with an assertion,
    and a bad XLA flag aborts the process with XLA's fatal log; either becomes one line here.
    Settings that started JAX are recorded in the environment (JAX_START_CHECKED), so the processes
    this one starts with them (a sweep's runner and trials) skip the probe (about 1.5 s of CPU each)."""
    platforms = env.get("JAX_PLATFORMS", "").strip().lower()
    if not env.get("XLA_FLAGS") and platforms in ("", "cpu"):
        return
    digest = _jax_settings_digest(env)
    if env.get(JAX_START_CHECKED) == digest:
        return
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True, text=True,
                           timeout=300, env=dict(env))
    if probe.returncode == 0:
        env[JAX_START_CHECKED] = digest
        return
    lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if "Unknown flag" in line or "flag" in line.lower()), None) \
        or next((line for line in reversed(lines) if not line.startswith(("File ", "^", "Traceback"))), "no message")
    raise UserError(f"JAX cannot start with JAX_PLATFORMS={env.get('JAX_PLATFORMS', '(unset)')!r} and "
                    f"XLA_FLAGS={env.get('XLA_FLAGS', '(unset)')!r} ({said[:200]}); fix or unset them")


# ---------------------------------------------------------------- parsed arguments

MAX_EXPRESSION_CHARS = 2_000  # a --holdout rule: a few comparisons


def check_args(args) -> None:
    """The numbers every command shares, checked once after parsing (cli.main), by their names."""
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not isinstance(seed, bool):
        check_seed(seed)
    bootstrap = getattr(args, "bootstrap", None)
    if isinstance(bootstrap, int) and not isinstance(bootstrap, bool):
        check_bootstrap(bootstrap)
    if getattr(args, "command", None) == "bench":
        check_steps(args.steps)
        if not 0 <= args.warmup <= MAX_STEPS:
            raise UserError(f"--warmup must be between 0 and {MAX_STEPS:,}, got {args.warmup}")
    for c in getattr(args, "flops", None) or ():
        if isinstance(c, float):
            check_flops(c)
    gpu = getattr(args, "gpu", None)
    if gpu is not None and not str(gpu).strip():
        raise UserError("--gpu is empty; name a device (h100, a100, ...) or leave --gpu out")
    holdout = getattr(args, "holdout", None)
    if isinstance(holdout, str) and len(holdout) > MAX_EXPRESSION_CHARS:
        raise UserError(f"--holdout is {len(holdout):,} characters; a rule is at most {MAX_EXPRESSION_CHARS:,}")


# ---------------------------------------------------------------- nested parts of law files

def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def law_noise(noise, where: str) -> dict | None:
    """A law file's `noise` block: None, or a dict whose sigma_log is a finite number >= 0."""
    if noise is None:
        return None
    if not isinstance(noise, dict):
        raise UserError(f"{where}: 'noise' is {type(noise).__name__}, not an object; re-run `scaling fit`")
    sigma = noise.get("sigma_log")
    if sigma is not None and not (_finite(sigma) and sigma >= 0):
        raise UserError(f"{where}: noise sigma_log = {sigma!r} is not a finite number >= 0; re-run `scaling fit`")
    for key in ("kind", "description"):
        if key in noise and not isinstance(noise[key], (str, type(None))):
            raise UserError(f"{where}: noise {key} = {noise[key]!r} is not text; re-run `scaling fit`")
    for key in ("replicates", "residuals"):
        part = noise.get(key)
        if part is not None and not (isinstance(part, dict) and all(
                part.get(k) is None or (_finite(part[k]) and part[k] >= 0) for k in ("sigma_log", "dof"))):
            raise UserError(f"{where}: noise {key} = {str(part)[:80]} is not an object with sigma_log and dof "
                            ">= 0; re-run `scaling fit`")
    trend = noise.get("by_tokens_per_param")
    if trend is not None and not (isinstance(trend, dict) and _finite(trend.get("c0")) and _finite(trend.get("c1"))
                                  and _pair(trend.get("range"))):
        raise UserError(f"{where}: noise by_tokens_per_param = {str(trend)[:80]} is not {{c0, c1: numbers, "
                        "range: [low, high] with 0 < low <= high}}; re-run `scaling fit`")
    return noise


def _pair(pair) -> bool:
    """[low, high] of finite numbers with 0 < low <= high."""
    return (isinstance(pair, list) and len(pair) == 2 and all(_finite(v) and v > 0 for v in pair)
            and pair[0] <= pair[1])


def law_data_range(rng, where: str) -> dict | None:
    """A law file's `data_range`: None, or {n_params: [lo, hi], tokens: [lo, hi]} with 0 < lo <= hi finite."""
    if rng is None:
        return None
    if not isinstance(rng, dict):
        raise UserError(f"{where}: 'data_range' is {type(rng).__name__}, not an object; re-run `scaling fit`")
    for key in ("n_params", "tokens", "flops"):
        pair = rng.get(key)
        if key == "flops" and pair is None:
            continue
        if not _pair(pair):
            raise UserError(f"{where}: data_range {key} = {pair!r} is not [low, high] with 0 < low <= high; "
                            "re-run `scaling fit`")
    return rng


def law_bootstrap(block, where: str) -> None:
    """A law file's `bootstrap.samples`: lists of numbers (or null) per parameter, of one length."""
    boot = block.get("bootstrap")
    if boot is None:
        return
    if not isinstance(boot, dict):
        raise UserError(f"{where}: 'bootstrap' is {type(boot).__name__}, not an object; re-run `scaling fit`")
    samples = boot.get("samples")
    if samples is None:
        return
    if not isinstance(samples, dict):
        raise UserError(f"{where}: bootstrap samples are {type(samples).__name__}, not an object of lists")
    lengths = set()
    for key, values in samples.items():
        if not isinstance(values, list) or not all(v is None or _finite(v) for v in values):
            raise UserError(f"{where}: bootstrap samples of {key!r} are not a list of numbers; re-run `scaling fit`")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise UserError(f"{where}: bootstrap samples have different lengths {sorted(lengths)}; re-run `scaling fit`")


def law_flops_per_token(d, where: str):
    """A law file's `flops_per_token`: None, or {k > 0, p > 0 finite, convention text}."""
    if d is None:
        return None
    if not isinstance(d, dict) or not all(_finite(d.get(k, 1.0)) and d.get(k, 1.0) > 0 for k in ("k", "p")) \
            or not isinstance(d.get("convention", "6n"), str):
        raise UserError(f"{where}: flops_per_token = {str(d)[:80]} is not {{k > 0, p > 0, convention}}; "
                        "re-run `scaling fit`")
    return d
