"""`scaling lr-rule DIR`: fit the best peak LR per size and its power law in N from an lr sweep."""

from __future__ import annotations

import dataclasses
import json
import sys

from research.config import read_toml
from research.errors import UserError
from research.fit.lr_rule import DEFAULT_BOOTSTRAP, LR_RULE_MARGIN
from research.fit.lr_sweep import CalibrationSweep, fit_lr_sweep_dir, summary_lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lr-rule", help="fit a learning-rate rule lr(N) from an lr sweep ([design] kind = \"lr\")",
        description="Per model size, a parabola of final eval loss (nats/token) in ln LR gives the best peak LR "
                    "(sizes whose optimum is not bracketed by the sampled LRs are refused and listed); across sizes, "
                    "lr = lr_ref * (N / n_ref) ** exponent (N counts embeddings), with 95% bootstrap intervals. "
                    f"A recipe uses the file with [recipe] lr_rule = \"FILE\" for N within its calibrated range "
                    f"widened {LR_RULE_MARGIN:g}x each way.")
    p.add_argument("dir", nargs="+",
                   help="sweep directory of an lr sweep (made by 'scaling sweep run'); several (new sizes calibrated "
                        "under the same settings) are fitted as one rule, written to --out")
    p.add_argument("--out", default=None, help="rule file to write (default DIR/lr_rule.json; required with several DIRs)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap resamples for the intervals (default {DEFAULT_BOOTSTRAP}; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--sweep", default=None, metavar="FILE",
                   help="the sweep file DIR was run from: where DIR keeps no trials (a reference result), the rule "
                        "records its [model] settings (mlp, ffw, ...) from this file")
    p.add_argument("--json", action="store_true", help="print the rule as one JSON object")
    p.set_defaults(func=handler)


def calibration_sweep(path: str) -> CalibrationSweep:
    """The sweep file's name and the resolved config of its recipe's first shape (what its trials share)."""
    from research.sweep.plan import load_sweep  # lazy: --help builds every parser; the planner ~0.1 s

    design = read_toml(path).get("design")
    if not isinstance(design, dict) or not design:  # the planner would suggest the kinds a law sweep takes
        raise UserError(f"--sweep {path}: no [design] section; name the lr sweep file ([design] kind = \"lr\") "
                        "the calibration in DIR was run from")
    sweep = load_sweep(path)
    model = dataclasses.replace(sweep.base.model, **sweep.recipe.ladder()[0])
    return CalibrationSweep(path=path, name=sweep.name, config=sweep.base.replace(model=model).to_dict())


def handler(args) -> int:
    sweep_file = calibration_sweep(args.sweep) if args.sweep else None
    rule = fit_lr_sweep_dir(args.dir[0], more_dirs=args.dir[1:], out=args.out, bootstrap=args.bootstrap, seed=args.seed, sweep_file=sweep_file)
    if args.json:
        print(json.dumps(rule, indent=1))
        return 0
    for line in summary_lines(rule):
        print(line)
    print(f"wrote {rule['path']}", file=sys.stderr)
    return 0
