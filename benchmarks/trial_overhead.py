"""What a sweep trial spends outside its training loop, and what the sweep executors save.

    python benchmarks/trial_overhead.py                       # cut-down demo sweep, ~3 min on 2 cores
    python benchmarks/trial_overhead.py --sweep sweeps/demo.toml --skip-stages   # the whole demo, ~20 min

Two measurements, both recorded in one JSON file (default results/bench/trial_overhead_cpu2.json):

stages     For a few trials of the sweep, a fresh process (as the local executor starts one) runs the
           stages of `research.train.loop.train` one by one with the real components, timing each:
           interpreter start, imports (jax, flax, optax, orbax, research), data open (cached shards),
           model + optimiser init, compiling the train step, compiling the eval step, the first
           checkpoint (saved and waited for), and the steady step time. Done three times per trial: with
           an empty JAX compilation cache; again with the cache the first run filled (which is what
           another trial of the same shape finds: the horizon is an argument of the compiled step); and
           forked from a process that has preloaded what the warm worker preloads, with that cache
           ("interpreter start" is then the fork).
sweeps     The sweep run end to end (`scaling sweep run --no-fit`) under each variant of VARIANTS (fresh
           process per trial without the compilation cache, as before; with it; trials forked from the
           warm worker with the cache, the default), each in its own sweep directory: wall time,
           the sum of the trials' training loops, and the overhead per trial = (wall - loops) / trials.
           A trial's training loop is its steps at its steady rate (steps x tokens per step / the
           median logged tokens_per_s, first logged interval excluded because it holds the compile),
           evaluations included, so the overhead is everything else: process start, imports, data
           open, compile, checkpoints, the final summary, the runner's polling.

Timings depend on the machine's load: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "bench" / "trial_overhead_cpu2.json"

# A cut-down copy of sweeps/demo.toml: its smallest two budgets, three sizes each (6 trials, 4 shapes).
SMALL_SWEEP = """name = "overhead-bench"

[data]
corpus = "shakespeare"
tokenizer = "bytes"

[model]
seq_len = 128

[train]
batch_size = 16
schedule = "cosine"
eval_every = 250
eval_tokens = 65536
log_every = 10
checkpoint_every = 250

[design]
kind = "isoflop"
budgets = [1e11, 1.8e11]
flops_convention = "6n"
tokens_per_param = [10, 500]
sizes = 3

[recipe]
class = "research.sweep.recipe:AspectRatioRecipe"
aspect_ratio = 32
head_dim = 8
"""


# ---------------------------------------------------------------- the child: one trial's stages

def stages_child(trial_dir: str, parent_t0: float, cache_dir: str) -> dict:
    """Run the stages of `train` on a trial, timing each; the training loop itself is not run."""
    start = time.time()
    out = {"interpreter_start_s": start - parent_t0}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        out[name] = now - t
        t = now

    import jax  # noqa: F401

    from research.config import run_config_from_dict
    from research.fsutil import read_json
    from research.train.checkpoint import Checkpoints
    from research.train.loop import resolve
    from research.train.step import Stepper, make_mesh
    from research.sweep.trial import use_compilation_cache
    lap("imports_s")

    use_compilation_cache(Path(cache_dir))

    from research.data import get_dataset

    record = read_json(Path(trial_dir) / "trial.json")
    config = run_config_from_dict(record["config"])
    d, m, tr = config.data, config.model, config.train
    dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
    config = resolve(config, dataset)
    lap("data_open_s")

    stepper = Stepper(config, make_mesh(config))
    params, opt_state = stepper.init()
    batch = stepper.put_batch(dataset.train_batch(0, tr.batch_size, config.model.seq_len, tr.seed))
    jax.block_until_ready((params, opt_state, batch))
    lap("init_s")

    train_exe = stepper.train_step.lower(params, opt_state, batch).compile()
    lap("compile_train_step_s")
    eval_exe = stepper.eval_step.lower(params, batch).compile()
    lap("compile_eval_step_s")

    scratch = Path(tempfile.mkdtemp(prefix="ckpt-", dir=Path(trial_dir).parent.parent))
    try:
        ckpts = Checkpoints(scratch / "checkpoints", 2)
        ckpts.save(1, {"params": params, "opt_state": opt_state}, {"step": 1})
        ckpts.close()
        lap("first_checkpoint_s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    for _ in range(3):
        params, opt_state, metrics = train_exe(params, opt_state, batch, stepper.train_step.schedule_S)
    jax.block_until_ready(metrics)
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        params, opt_state, metrics = train_exe(params, opt_state, batch, stepper.train_step.schedule_S)
    jax.block_until_ready(metrics)
    out["step_s"] = (time.perf_counter() - t0) / n
    float(eval_exe(params, batch))
    out["steps"] = record["planned"]["steps"]
    out["shape"] = f"L{m.layers} d{m.d_model}"
    return out


# ---------------------------------------------------------------- the parent

# executor variants timed end to end: name -> (extra `sweep run` arguments, environment changes)
VARIANTS = {
    "fresh-process-no-cache": (["--fresh-processes"], {"SCALING_COMPILATION_CACHE": "off"}),  # as before
    "fresh-process-cache": (["--fresh-processes"], {}),
    "warm-worker-cache": ([], {}),  # the default now
}


def _env(changes: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("SCALING_COMPILATION_CACHE", None)
    env.update(changes or {})
    return env


def forked_child(trial_dir: str, cache_dir: str) -> dict:
    """As the warm worker runs a trial: preload (not timed), then fork; the child times its stages."""
    import importlib

    from research.sweep.warm import PRELOAD

    for name in PRELOAD:
        importlib.import_module(name)
    read, write = os.pipe()
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.write(write, json.dumps(stages_child(trial_dir, t0, cache_dir)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    out["process_wall_s"] = time.time() - t0
    return out


def measure_stages(trial_dir: Path, cache_dir: Path | None, forked: bool = False) -> dict:
    t0 = time.time()
    mode = "--forked-child" if forked else "--child"
    args = [str(trial_dir), str(cache_dir)] if forked else [str(trial_dir), str(t0), str(cache_dir)]
    proc = subprocess.run([sys.executable, __file__, mode, *args], capture_output=True, text=True, env=_env())
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.setdefault("process_wall_s", wall)
    out["outside_loop_s"] = sum(out[k] for k in STAGES)
    return out


STAGES = ("interpreter_start_s", "imports_s", "data_open_s", "init_s", "compile_train_step_s",
          "compile_eval_step_s", "first_checkpoint_s")


def loop_seconds(trial_dir: Path) -> float:
    """steps x tokens per step / steady tokens_per_s (first logged interval excluded)."""
    rows = [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["tokens_per_s"] for r in rows[1:] if r.get("tokens_per_s")]
    summary = json.loads((trial_dir / "summary.json").read_text())
    tokens = summary["tokens"]
    return tokens / statistics.median(rates)


def run_sweep(sweep_file: Path, out_dir: Path, variant: str) -> dict:
    extra, changes = VARIANTS[variant]
    cmd = [sys.executable, "-m", "research", "sweep", "run", str(sweep_file), "--out", str(out_dir),
           "--no-fit", "--quiet", *extra]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(changes))
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweep run failed: {proc.stderr.strip()[-2000:]}")
    trials = sorted((out_dir / "trials").iterdir())
    loops = {d.name: loop_seconds(d) for d in trials}
    total = sum(loops.values())
    return {"variant": variant, "trials": len(trials), "wall_s": wall, "sum_training_loops_s": total,
            "overhead_s": wall - total, "overhead_per_trial_s": (wall - total) / len(trials),
            "loops_s": loops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", default=None, help="sweep file (default: a cut-down copy of the demo)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result file")
    ap.add_argument("--stage-trials", type=int, default=3, help="trials whose stages are timed")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated executor variants to time")
    ap.add_argument("--skip-stages", action="store_true")
    ap.add_argument("--skip-sweeps", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--forked-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(stages_child(args.child[0], float(args.child[1]), args.child[2])))
        return
    if args.forked_child:
        print(json.dumps(forked_child(*args.forked_child)))
        return

    work = Path(tempfile.mkdtemp(prefix="trial-overhead-"))
    sweep_file = Path(args.sweep).absolute() if args.sweep else work / "overhead-bench.toml"
    if not args.sweep:
        sweep_file.write_text(SMALL_SWEEP)
    result: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "host": platform.node(), "cpus": os.cpu_count(), "load_before": os.getloadavg(),
                    "sweep_file": str(args.sweep or "cut-down demo (SMALL_SWEEP in this script)"),
                    "command": " ".join([Path(sys.executable).name, *sys.argv])}
    try:
        if not args.skip_stages:
            plan_dir = work / "plan"
            subprocess.run([sys.executable, "-m", "research", "sweep", "plan", str(sweep_file), "--out",
                            str(plan_dir)], check=True, capture_output=True, env=_env())
            from research.sweep.plan import load_sweep, plan
            from research.sweep.runner import prepare_sweep_dir

            dirs = prepare_sweep_dir(plan(load_sweep(str(sweep_file), [])), plan_dir)
            rows = []
            for d in dirs[: args.stage_trials]:
                cache = work / f"jax-cache-{d.name}"  # empty for the cold run, filled by it for the warm one
                cold = measure_stages(d, cache)
                warm = measure_stages(d, cache)
                forked = measure_stages(d, cache, forked=True)
                rows.append({"trial": d.name, "cold_cache": cold, "warm_cache": warm, "warm_worker_warm_cache": forked})
                print(f"{d.name} {cold['shape']}: outside the loop {cold['outside_loop_s']:.2f} s fresh process, cold "
                      f"cache; {warm['outside_loop_s']:.2f} s warm cache; {forked['outside_loop_s']:.2f} s forked from "
                      "the warm worker, warm cache; " + ", ".join(
                          f"{k[:-2]} {cold[k]:.2f}/{warm[k]:.2f}/{forked[k]:.2f}" for k in STAGES), file=sys.stderr)
            result["stages"] = rows
            for case in ("cold_cache", "warm_cache", "warm_worker_warm_cache"):
                result[f"stages_mean_{case}"] = {k: statistics.mean(r[case][k] for r in rows)
                                                 for k in (*STAGES, "outside_loop_s")}
        if not args.skip_sweeps:
            result["sweeps"] = []
            for variant in args.variants.split(","):
                r = run_sweep(sweep_file, work / f"sweep-{variant}", variant)
                print(f"{variant}: wall {r['wall_s']:.1f} s, training loops {r['sum_training_loops_s']:.1f} s, "
                      f"overhead {r['overhead_per_trial_s']:.2f} s/trial over {r['trials']} trials", file=sys.stderr)
                result["sweeps"].append(r)
    finally:
        result["load_after"] = os.getloadavg()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
