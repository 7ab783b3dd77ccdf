"""Benchmark both issue-#5 shapes and the speed switches, each in a fresh process; keep JSON.

    python -m research.bench.suite                       # on the GPU machine, from the repo root
    python -m research.bench.suite --variants default,xla-attention --steps 30

For every config x variant it runs `scaling bench CONFIG --json` in a subprocess (XLA
flags only take effect in a new process), writes each result to
results/bench/<date>-<device>-<config>-<variant>.json, a summary with every row to
results/bench/suite-<date>-<device>.json, and prints the README table in Markdown.
A variant that fails (an XLA flag this jaxlib does not know, out of memory) is recorded
with its error and the rest go on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

CONFIGS = ("sweeps/bench-gpt2-small.toml", "sweeps/bench-sweep-size.toml")

# Flags commonly reported to help single-GPU transformer training; the suite measures them.
GPU_XLA_FLAGS = "--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false"

# name: (--set overrides, environment changes)
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "default": ([], {}),
    "xla-attention": (["model.attention=xla"], {}),
    "loss-chunk-8192": ([], {"SCALING_LOSS_CHUNK": "8192"}),
    "remat": (["model.remat=true"], {}),
    "xla-flags": ([], {"XLA_FLAGS": GPU_XLA_FLAGS}),
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def run_one(config: str, variant: str, steps: int, warmup: int, out: Path, extra_sets: list[str],
            timeout: float) -> dict:
    sets, env_changes = VARIANTS[variant]
    env = dict(os.environ)
    for key, value in env_changes.items():
        env[key] = (env.get(key, "") + " " + value).strip() if key == "XLA_FLAGS" else value
    cmd = [sys.executable, "-m", "research", "bench", config, "--json", "--steps", str(steps),
           "--warmup", str(warmup), "--out", str(out)]
    for s in sets + extra_sets:
        cmd += ["--set", s]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config_file": config, "variant": variant, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"config_file": config, "variant": variant, "error": " | ".join(tail)}
    result = json.loads(proc.stdout)
    result["variant"] = variant
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def markdown(rows: list[dict]) -> str:
    lines = ["| config | variant | device | tokens/s | MFU | (6N) | (Chinchilla) | peak memory | compile | date |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {Path(r['config_file']).stem} | {r['variant']} | failed: {r['error'][:80]} |"
                         " | | | | | | |")
            continue
        mfu = {k: "unknown" if v is None else f"{100 * v:.1f}%" for k, v in r["mfu"].items()}
        peak = r["memory"]["peak_bytes_in_use"]
        mem = "unknown" if peak is None else f"{peak / 2**30:.1f} GiB"
        lines.append(f"| {Path(r['config_file']).stem} | {r['variant']} | {r['device']['count']} x "
                     f"{r['device']['kind']} | {r['tokens_per_s']:,.0f} | {mfu['model']} | {mfu['6n']} | {mfu['chinchilla']} | "
                     f"{mem} | {r['compile_s']:.0f} s | {r['date'][:10]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.bench.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated run files")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--set", dest="sets", action="append", default=[], help="passed to every run")
    p.add_argument("--out-dir", default="results/bench")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")

    import jax  # only for the device name in file names; each run is its own process

    device = slug(jax.devices()[0].device_kind)
    date = datetime.date.today().isoformat()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        for variant in variants:
            out = out_dir / f"{date}-{device}-{Path(config).stem}-{variant}.json"
            print(f"bench {config} [{variant}] ...", file=sys.stderr, flush=True)
            row = run_one(config, variant, args.steps, args.warmup, out, args.sets, args.timeout)
            if "error" in row:
                print(f"  failed: {row['error']}", file=sys.stderr)
            else:
                print(f"  {row['tokens_per_s']:,.0f} tokens/s, MFU {row['mfu']['model']}", file=sys.stderr)
            rows.append(row)
    summary = {"date": date, "device": device, "rows": rows}
    (out_dir / f"suite-{date}-{device}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
