"""Approach 1's estimators compared on simulated tables of a sweep's design, where the true a is known.

Not a test. One command per setting writes results/bench/approach1_estimators_<name>[_<tag>].json:

    python benchmarks/approach1_estimators.py sweeps/study-cpu.toml --law results/reference/study-cpu2/fit.json
    python benchmarks/approach1_estimators.py sweeps/study-cpu.toml --law ... --trunk-sigma 0 --tag independent

Each of `--tables` tables gives every planned run the loss of the `--law` fit.json's Approach 3 law with
the noise of `benchmarks/design_power.py` (a per-trunk and a per-run Normal offset in ln L). On each
table's end-point envelope (`research.fit.endpoint_envelope`) the exponent a is estimated three ways:
the crossings with N_opt regressed on C (what Approach 1 reports), the crossings with C regressed on
N_opt and inverted, and the least-squares line through the envelope's winners (the staircase, which
Approach 1 reported before). The JSON records each one's mean, median, standard deviation and root
mean square error against the true a. Statistics only; no timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from design_power import law_from_fit, noisy_table, planned_runs  # noqa: E402

from research.fit.allocation import SIX_N  # noqa: E402
from research.fit.crossings import fit_crossings  # noqa: E402
from research.fit.endpoint_envelope import envelope_points  # noqa: E402
from research.fit.envelope import N_GRID, staircase  # noqa: E402
from research.fit.powerlaw import fit_powerlaw  # noqa: E402
from research.fit.profiles import mean_points  # noqa: E402


def estimates(df) -> dict | None:
    _, points = mean_points(df)
    grid = np.geomspace(points["F"].min(), points["F"].max(), N_GRID)
    env, _, x = envelope_points(points, SIX_N, grid)
    fwd, stair = fit_crossings(x, SIX_N), staircase(env)
    if fwd is None or stair is None:
        return None
    slope = fit_powerlaw(x["n_opt"], x["flops"])[1]
    return {"crossings": fwd["a"], "crossings_inverse": 1.0 / slope if slope > 0 else np.nan,
            "staircase": stair["a"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep TOML file")
    ap.add_argument("--law", required=True, help="a fit.json whose approach3 law generates the losses")
    ap.add_argument("--sigma", type=float, default=0.006, help="independent noise per run, in ln L (default 0.006)")
    ap.add_argument("--trunk-sigma", type=float, default=0.0085, help="noise shared by a trunk's runs (default 0.0085)")
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--tag", default="", help="suffix of the output name")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    runs, law = planned_runs(args.sweep), law_from_fit(args.law)
    got = [estimates(noisy_table(runs, law, args.sigma, args.trunk_sigma, np.random.default_rng(1000 + t)))
           for t in range(args.tables)]
    got = [g for g in got if g is not None]
    out = {"sweep": args.sweep, "law": {"source": args.law, "a": law.a},
           "noise_ln_loss": {"per_run": args.sigma, "per_trunk": args.trunk_sigma},
           "tables": args.tables, "estimated": len(got), "estimators": {}}
    for name in ("crossings", "crossings_inverse", "staircase"):
        v = np.array([g[name] for g in got], float)
        v = v[np.isfinite(v)]
        out["estimators"][name] = {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std(ddof=1)),
                                   "rmse": float(np.sqrt(np.mean((v - law.a) ** 2))), "n": int(len(v))}
        r = out["estimators"][name]
        print(f"{name:18s} mean {r['mean']:.3f} median {r['median']:.3f} sd {r['std']:.3f} rmse {r['rmse']:.3f} "
              f"(true a {law.a:.3f}, {r['n']} tables)")
    path = Path(f"results/bench/approach1_estimators_{Path(args.sweep).stem}{'_' + args.tag if args.tag else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
