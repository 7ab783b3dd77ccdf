"""`scaling train CONFIG.toml [--out DIR] [--set section.key=value ...]`."""

from __future__ import annotations

import json
from pathlib import Path

from research.config import load_run_config
from research.train.tracking import add_flags as add_tracking_flags, apply_flags


def register(sub) -> None:
    p = sub.add_parser("train", help="train one model from a run file (resumes if --out holds its checkpoint)",
                       description="Train one decoder-only transformer. Re-running the same command on the same "
                                   "--out resumes from the last checkpoint; a finished run is left as it is; an "
                                   "--out holding a different config is refused.")
    p.add_argument("config", help="run file (TOML with [data], [model], [train])")
    p.add_argument("--out", default=None, help="run directory (default results/runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON at the end")
    add_tracking_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    config = load_run_config(args.config, args.overrides)  # a bad run file fails before jax is imported

    from research.train.loop import exit_code, train  # lazy: jax, after the run file is checked
    from research.train.step import initialize_distributed  # lazy: jax

    config = config.replace(logging=apply_flags(config.logging, args))
    initialize_distributed()  # multi-process launches (Slurm, JAX_* variables); before any device use
    out = Path(args.out) if args.out else Path("results/runs") / Path(args.config).stem
    summary = train(config, out, progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    return exit_code(summary)
