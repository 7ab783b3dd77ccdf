"""Coverage study: how often the bootstrap intervals on a of Approaches 1 and 2 hold the true a.

Not a test. One command per setting writes results/bench/fit_coverage_<tag>.json:

    python benchmarks/fit_coverage.py --seeds 3 --sigma 0.005 --tables 20 --resamples 100

Each of `--tables` synthetic tables is a design given as sizes x token counts (16 sizes log-spaced
over 1e4-1e7 parameters, 8 tokens-per-parameter ratios over 2-200; C = 6ND, no shared budgets) with
`--seeds` replicates per point whose loss is the known law (research.fit.synthetic.demo_truth,
a = beta/(alpha+beta)) plus Normal(0, sigma) nats. Approach 1 (end-point envelope) and Approach 2
(interpolated IsoFLOP slices) are fitted with the cluster bootstrap; the JSON records, per approach,
the fraction of tables whose 95% interval holds the true a, the mean and standard deviation of the
estimates over tables (bias and real spread) and the mean interval width (the spread the bootstrap
claims: about 3.92 standard deviations). Statistics only; no timing.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from research.fit.allocation import SIX_N
from research.fit.endpoint_envelope import fit_approach1_endpoints
from research.fit.isoflop import fit_approach2
from research.fit.synthetic import demo_truth


def table(law, seeds, sigma, rng):
    rows = []
    for n in np.geomspace(1e4, 1e7, 16):
        for tpp in np.geomspace(2.0, 200.0, 8):
            d = n * tpp
            for s in range(seeds):
                rows.append({"N": n, "D": d, "F": 6 * n * d, "C": 6 * n * d, "seed": str(s),
                             "L": float(law.loss(n, d)) + rng.normal(0.0, sigma)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sigma", type=float, default=0.005, help="seed noise, nats/token")
    ap.add_argument("--tables", type=int, default=20)
    ap.add_argument("--resamples", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    law = demo_truth()
    true_a = law.beta / (law.alpha + law.beta)
    est = {"approach1": [], "approach2": []}
    hit = {k: 0 for k in est}
    width = {k: [] for k in est}
    for t in range(args.tables):
        df = table(law, args.seeds, args.sigma, np.random.default_rng(1000 + t))
        fits = {"approach1": fit_approach1_endpoints(df, SIX_N, bootstrap=args.resamples, seed=t),
                "approach2": fit_approach2(df, design_budgets=False, per_token=SIX_N, bootstrap=args.resamples,
                                           seed=t)}
        for k, r in fits.items():
            lo, hi = r["bootstrap"]["intervals"]["a"]
            hit[k] += int(lo <= true_a <= hi)
            est[k].append(r["a"])
            width[k].append(hi - lo)
    out = {"what": "95% bootstrap interval coverage of the true a (cluster bootstrap over seeds)",
           "design": "16 sizes 1e4-1e7 x 8 tokens/param 2-200, C = 6ND, no shared budgets",
           "law": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta},
           "true_a": true_a, "seeds": args.seeds, "sigma_nats": args.sigma, "tables": args.tables,
           "resamples": args.resamples,
           **{k: {"coverage": hit[k] / args.tables, "mean_a": float(np.mean(est[k])),
                  "bias": float(np.mean(est[k]) - true_a), "sd_a_over_tables": float(np.std(est[k], ddof=1)),
                  "mean_interval_width": float(np.mean(width[k])),
                  "sd_implied_by_intervals": float(np.mean(width[k]) / 3.92)} for k in est}}
    path = Path(args.out or f"results/bench/fit_coverage_k{args.seeds}_sigma{args.sigma:g}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
