"""`scaling bench CONFIG.toml [--steps N] [--json] [--set section.key=value ...]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from research.config import load_run_config
from research.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "bench", help="time the training step: tokens/s, TFLOP/s, MFU, peak memory, compile time",
        description="Compile the training step of a run file (the same step `scaling train` runs), warm it "
                    "up, and time N steps with the device synchronised. Reports step time, tokens/s, "
                    "TFLOP/s and MFU as PaLM and nanoGPT count it (6 x matmul parameters, no input-embedding "
                    "lookup, + 12 L T d attention, no causal halving) against the device's dense bf16 peak "
                    "(MFU unknown for unknown devices, e.g. CPUs), the '6n' and 'chinchilla' training-FLOP "
                    "conventions beside it, peak device memory and compile time. Batches are uniform random tokens unless "
                    "--data real.")
    p.add_argument("config", help="run file (TOML with [data], [model], [train]); [train] steps is ignored")
    p.add_argument("--steps", type=int, default=20, help="timed steps per window (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling (default 3)")
    p.add_argument("--data", choices=("random", "real"), default="random",
                   help="random tokens (default; needs no dataset when [model] vocab_size is set) or the "
                        "run's real training batches")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set model.attention=xla (repeatable)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout (report to stderr)")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from research.train.step import initialize_distributed  # lazy: jax; --help and bad input stay fast

    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be at least 1 and --warmup at least 0")
    config = load_run_config(args.config, args.overrides)
    initialize_distributed()

    from research.bench.run import benchmark, format_report  # lazy: jax

    result = benchmark(config, steps=args.steps, warmup=args.warmup, data=args.data)
    result["config_file"] = str(args.config)
    result["overrides"] = list(args.overrides)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(format_report(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(text)
    return 0
