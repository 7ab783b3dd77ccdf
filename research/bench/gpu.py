"""The one GPU command: prove the harness on an accelerator in one call, and keep the evidence.

    bash benchmarks/gpu_check.sh OUT_DIR                  # on the GPU machine: install, then this
    python -m research.bench.gpu --out OUT_DIR            # the same, already installed
    python -m research.bench.gpu --out OUT_DIR --scale cpu  # tiny sizes; what the test suite runs

Four stages, each in its own process with its own time limit, in this order:
  1. env    : JAX, flax, optax and orbax versions, the devices, the dense bf16 peak used for MFU,
              and which optional packages are missing;
  2. tests  : the accelerator checks (tests/test_accelerator.py: bf16 against float32, cuDNN
              attention against XLA, a mesh over the devices present), the model's golden tests,
              and checkpoint save, kill and restore (tests/test_train.py), as JUnit XML;
  3. bench  : `scaling bench` at the GPT-2-small shape (12 layers, d_model 768, 12 heads, T 1024,
              vocab 50,304) and at 6 layers d_model 384: step time, tokens/s, memory, and MFU by
              the PaLM count (6 x matmul parameters + 12 L T d attention) against the device's peak;
  4. sweep  : `scaling sweep run sweeps/gpu-check.toml` end to end, fitted.
Everything goes under OUT_DIR: gpu_check.json (the summary), log.txt (every stage's output),
tests.xml, bench-<shape>.json and sweep/ (the sweep directory; its results.csv and fit.json).
A stage that fails or runs out of time is recorded with its error and the next one still runs;
the exit status is 1 when any stage failed.

`--scale cpu` shrinks the benchmark shapes and the sweep to seconds on a laptop CPU, so the
command itself is tested in CI; `--scale gpu` (the default on a GPU or TPU) uses the real sizes.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from research.train.devices import peak_for_kind

SHAPES = {"gpt2-small": "sweeps/bench-gpt2-small.toml", "6L-d384": "sweeps/bench-sweep-size.toml"}
SWEEP = "sweeps/gpu-check.toml"
TEST_FILES = ("tests/test_accelerator.py", "tests/test_model.py", "tests/test_loss_chunk.py",
              "tests/test_train.py::test_killed_run_resumes_to_the_same_losses")
# --scale cpu: the same stages at sizes a 2-core CPU runs in seconds.
CPU_BENCH_SETS = ["model.layers=2", "model.d_model=64", "model.heads=4", "model.seq_len=64",
                  "model.vocab_size=512", "train.batch_size=4"]
CPU_SWEEP_SETS = ["design.budgets=[3e8, 1e9, 3e9]", "design.tokens_per_param=[1, 100]", "model.seq_len=32",
                  "train.batch_size=8", "recipe.head_dim=8", "recipe.max_width=24", "recipe.layers=1",
                  "train.eval_tokens=4096", "train.log_every=5"]  # 8 runs over 3 sizes: enough for Approach 3
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "pandas", "tokenizers")
OPTIONAL = ("submitit", "zstandard", "pytest")  # Slurm; .zst corpora; the test stage


@dataclass
class Stage:
    name: str
    ok: bool = False
    seconds: float = 0.0
    error: str | None = None
    result: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Seconds per stage; the defaults add up to under 8 minutes (the GPU goal)."""
    tests: float = 150.0
    bench: float = 110.0  # per shape
    sweep: float = 150.0


def environment() -> dict:
    import jax

    devices = jax.devices()
    kind = devices[0].device_kind
    peak = peak_for_kind(kind)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "backend": jax.default_backend(),
        "device_kind": kind,
        "device_count": len(devices),
        "peak_bf16_flops": peak.bf16_flops if peak else None,
        "peak_name": peak.name if peak else None,
        "versions": versions,
        "python": sys.version.split()[0],
        "missing_optional": [m for m in OPTIONAL if importlib.util.find_spec(m) is None],
    }


def _run(cmd: list[str], log, timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """Run one stage's command, appending its output to the log; (exit status or None on timeout, output)."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        log.write(out + f"\n[timed out after {timeout:.0f} s]\n")
        return None, out
    log.write(proc.stdout + proc.stderr)
    log.flush()
    return proc.returncode, proc.stdout + proc.stderr


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def stage_tests(out: Path, log, limits: Limits, tests: list[str]) -> Stage:
    stage = Stage("tests")
    xml = out / "tests.xml"
    # Serially (-n 0: one GPU, and pyproject's addopts ask xdist for a worker per core).
    serial = ["-n", "0"] if importlib.util.find_spec("xdist") else ["-o", "addopts=-ra"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *serial, f"--junitxml={xml}", *tests]
    code, text = _run(cmd, log, limits.tests)
    counts = {}
    for line in reversed(text.splitlines()):
        if " passed" in line or " failed" in line or " error" in line:
            for part in line.strip("= ").split(","):
                words = part.split()
                if len(words) >= 2 and words[0].isdigit():
                    counts[words[1]] = int(words[0])
            break
    stage.result = {"files": tests, "counts": counts, "junit": xml.name}
    stage.ok = code == 0
    if not stage.ok:
        stage.error = f"timed out after {limits.tests:.0f} s" if code is None else _tail(text)
    return stage


def stage_bench(out: Path, log, limits: Limits, scale: str, steps: int, warmup: int) -> Stage:
    stage = Stage("bench")
    errors = []
    for shape, config in SHAPES.items():
        path = out / f"bench-{shape}.json"
        cmd = [sys.executable, "-m", "research", "bench", config, "--json", "--steps", str(steps),
               "--warmup", str(warmup), "--out", str(path)]
        for s in CPU_BENCH_SETS if scale == "cpu" else []:
            cmd += ["--set", s]
        code, text = _run(cmd, log, limits.bench)
        if code != 0 or not path.is_file():
            errors.append(f"{shape}: " + (f"timed out after {limits.bench:.0f} s" if code is None else _tail(text)))
            continue
        row = json.loads(path.read_text())
        stage.result[shape] = {
            "tokens_per_s": row["tokens_per_s"],
            "step_time_s": row["step_time_s"],
            "attention": row["attention"], "compute_dtype": row["compute_dtype"],
            "mfu_palm": row["mfu"]["model"],
            "mfu_6n": row["mfu"]["6n"],
            "peak_bytes_in_use": row["memory"]["peak_bytes_in_use"],
            "compile_s": row["compile_s"],
            "file": path.name,
        }
    stage.ok = not errors
    stage.error = "; ".join(errors) or None
    return stage


def stage_sweep(out: Path, log, limits: Limits, scale: str) -> Stage:
    stage = Stage("sweep")
    sweep_dir = out / "sweep"
    cmd = [sys.executable, "-m", "research", "sweep", "run", SWEEP, "--out", str(sweep_dir), "--quiet"]
    for s in CPU_SWEEP_SETS if scale == "cpu" else []:
        cmd += ["--set", s]
    code, text = _run(cmd, log, limits.sweep)
    fit_path = sweep_dir / "fit.json"
    results = sweep_dir / "results.csv"
    stage.result = {"dir": "sweep", "runs": max(0, len(results.read_text().splitlines()) - 1) if results.is_file() else 0}
    fit = json.loads(fit_path.read_text()) if fit_path.is_file() else {}
    stage.result["fitted"] = sorted(k for k, v in fit.items() if isinstance(v, dict) and "a" in v)
    stage.ok = code == 0 and bool(stage.result["fitted"])
    if code is None:
        stage.error = f"timed out after {limits.sweep:.0f} s"
    elif not stage.ok:  # the sweep's fit stage records a failure in fit.json rather than exiting non-zero
        stage.error = fit.get("skipped") or _tail(text) or "no fit.json"
    return stage


def run_check(out: Path, scale: str, stages: list[str], limits: Limits, steps: int, warmup: int,
              tests: list[str] = list(TEST_FILES)) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "scale": scale, "environment": environment(), "stages": {}}
    with open(out / "log.txt", "a") as log:
        for name in stages:
            t0 = time.perf_counter()
            print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
            if name == "tests":
                stage = stage_tests(out, log, limits, tests)
            elif name == "bench":
                stage = stage_bench(out, log, limits, scale, steps, warmup)
            else:
                stage = stage_sweep(out, log, limits, scale)
            stage.seconds = round(time.perf_counter() - t0, 1)
            summary["stages"][name] = {"ok": stage.ok, "seconds": stage.seconds, "error": stage.error, **stage.result}
            print(f"gpu-check: {name} {'ok' if stage.ok else 'FAILED: ' + str(stage.error)} ({stage.seconds:.0f} s)",
                  file=sys.stderr, flush=True)
            (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")  # saved as it goes
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["ok"] = all(s["ok"] for s in summary["stages"].values())
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(summary: dict) -> str:
    env = summary["environment"]
    lines = [f"device: {env['device_count']} x {env['device_kind']} (peak {env['peak_name'] or 'unknown'}); "
             f"jax {env['versions']['jax']}, flax {env['versions']['flax']}; {summary['seconds']:.0f} s in all"]
    for name, stage in summary["stages"].items():
        lines.append(f"  {name:6s} {'ok' if stage['ok'] else 'FAILED'} {stage['seconds']:6.0f} s  {stage['error'] or ''}")
    for shape, row in summary["stages"].get("bench", {}).items():
        if isinstance(row, dict) and "tokens_per_s" in row:
            mfu = "unknown" if row["mfu_palm"] is None else f"{100 * row['mfu_palm']:.1f}%"
            lines.append(f"  bench {shape}: {row['tokens_per_s']:,.0f} tokens/s, MFU (PaLM) {mfu}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (created; gpu_check.json, log.txt, ...)")
    p.add_argument("--scale", choices=("auto", "cpu", "gpu"), default="auto",
                   help="sizes: cpu = tiny (seconds), gpu = real; auto = gpu on an accelerator, else cpu")
    p.add_argument("--stages", default="tests,bench,sweep", help="comma-separated subset of tests,bench,sweep")
    p.add_argument("--tests", default=",".join(TEST_FILES),
                   help="comma-separated pytest files or node ids for the tests stage")
    p.add_argument("--steps", type=int, default=None, help="timed bench steps (default 20 on gpu, 3 on cpu)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ("tests", "bench", "sweep")]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; known: tests, bench, sweep")
    out = Path(args.out).absolute()
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} exists and is not a directory")
    scale = args.scale
    if scale == "auto":
        import jax

        scale = "gpu" if jax.default_backend() in ("gpu", "tpu") else "cpu"
    steps = args.steps or (20 if scale == "gpu" else 3)
    limits = Limits() if scale == "gpu" else Limits(tests=900.0, bench=600.0, sweep=900.0)  # no time goal on a CPU
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    summary = run_check(out, scale, stages, limits, steps, warmup=3 if scale == "gpu" else 1, tests=tests)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
