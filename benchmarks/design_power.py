"""Design power: how wide will the 95% intervals on a be for a sweep file, and how far apart will the approaches land?

Not a test. One command per sweep file writes results/bench/design_power_<name>.json:

    python benchmarks/design_power.py sweeps/study-cpu.toml --law results/reference/study-cpu2/fit.json
    python benchmarks/design_power.py sweeps/study-cpu.toml --law ... --set design.seeds=8 --out ...

The sweep is planned as `scaling sweep plan` plans it (every run's counted N, D, seed and trunk). Each of
`--tables` synthetic tables gives every run the loss of a known law L(N, D) (by default Approach 3 of
the `--law` fit.json) times exp(trunk + run): a Normal(0, --trunk-sigma) offset shared by all the
runs of one trunk (one size and seed; each run its own trunk when the design has none) and an
independent Normal(0, --sigma) per run. The defaults are the seed noise measured on the
study-cpu2 reference (pairs of seeds differ by a per-size mean of about 0.012 in ln L, and by
about 0.006 around it). Each table is fitted as the sweep's fit stage fits it (multi-start Huber,
the cluster bootstrap over seeds) and the JSON records the interval widths and how often the
interval holds the true a. With `--approaches 1,2,3` Approaches 1 (end-point envelope, crossings) and 2
(IsoFLOP parabolas on the design's budgets) are fitted to the same tables, and the JSON adds each one's
estimates, widths and coverage and the largest pairwise difference in a per table: what noise alone
does to the approaches' agreement when every approach targets the same true a. Statistics only; no
timing.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import UserError
from research.fit.allocation import SIX_N
from research.fit.core import run_approach3
from research.fit.endpoint_envelope import fit_approach1_endpoints
from research.fit.isoflop import fit_approach2
from research.fit.laws import ChinchillaLaw
from research.sweep.plan import load_sweep, plan


def planned_runs(sweep_file: str, overrides=()) -> pd.DataFrame:
    """One row per planned run (trunks excluded): counted N (embeddings included), D, seed, trunk."""
    p = plan(load_sweep(sweep_file, list(overrides)))
    return pd.DataFrame([{"N": float(t.n_params), "D": float(t.tokens), "seed": str(t.config.train.seed),
                          "trunk": t.trunk_id or t.trial_id, "budget": t.coords.get("budget")} for t in p.trials])


def law_from_fit(path: str) -> ChinchillaLaw:
    """The law in a fit.json's approach3 block, or the "law" block of an earlier design_power result."""
    data = json.loads(Path(path).read_text())
    p = data["approach3"] if "approach3" in data else data["law"]
    return ChinchillaLaw(p["E"], p["A"], p["B"], p["alpha"], p["beta"], name="fit", source=str(path))


def noisy_table(runs: pd.DataFrame, law: ChinchillaLaw, sigma: float, trunk_sigma: float, rng) -> pd.DataFrame:
    offset = {k: rng.normal(0.0, trunk_sigma) for k in runs["trunk"].unique()}
    eps = rng.normal(0.0, sigma, len(runs)) + runs["trunk"].map(offset).to_numpy()
    out = runs.copy()
    out["L"] = law.loss(out["N"].to_numpy(), out["D"].to_numpy()) * np.exp(eps)
    out["F"] = SIX_N(out["N"].to_numpy()) * out["D"].to_numpy()  # the fits' own 6N convention, one formula
    out["C"] = out["budget"].astype(float).fillna(out["F"]) if "budget" in out else out["F"]
    return out


def allocation_fit(name: str, df: pd.DataFrame, resamples: int, seed: int) -> dict | None:
    """Approach 1 or 2 fitted as the sweep's fit stage fits it, or None where the table refuses it."""
    try:
        if name == "approach1":
            return fit_approach1_endpoints(df, SIX_N, bootstrap=resamples, seed=seed)
        return fit_approach2(df, bootstrap=resamples, seed=seed, per_token=SIX_N)
    except UserError:
        return None


def summary(widths, estimates, hits, n) -> dict:
    return {"a_interval_width": {"mean": float(np.mean(widths)), "median": float(np.median(widths)),
                                 "min": float(np.min(widths)), "max": float(np.max(widths)),
                                 "share_at_most_0.1": float(np.mean(np.array(widths) <= 0.1)),
                                 "each": [round(w, 4) for w in widths]},
            "a_estimate": {"mean": float(np.mean(estimates)), "std": float(np.std(estimates, ddof=1)),
                           "each": [round(a, 4) for a in estimates]},
            "coverage": hits / len(estimates), "fitted": len(estimates), "refused": n - len(estimates)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep TOML file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a sweep-file key, as `scaling sweep plan --set` does (e.g. design.seeds=8)")
    ap.add_argument("--law", required=True, help="a fit.json whose approach3 law generates the losses (or an earlier "
                                                 "result of this benchmark: its law again)")
    ap.add_argument("--sigma", type=float, default=0.006, help="independent noise per run, in ln L (default 0.006)")
    ap.add_argument("--trunk-sigma", type=float, default=0.0085,
                    help="noise shared by a trunk's runs, in ln L (default 0.0085)")
    ap.add_argument("--tables", type=int, default=8)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--per-point-seeds", action="store_true",
                    help="bootstrap each point's seeds on their own (the older two-stage scheme) instead of per size")
    ap.add_argument("--approaches", default="3", help="which approaches to fit per table: 3 (default) or 1,2,3")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    names = [f"approach{k.strip()}" for k in args.approaches.split(",")]
    warnings.simplefilter("ignore", RuntimeWarning)
    runs = planned_runs(args.sweep, args.set)
    law = law_from_fit(args.law)
    per = {m: {"widths": [], "estimates": [], "hits": 0} for m in names}
    spread = []
    for t in range(args.tables):
        table = noisy_table(runs, law, args.sigma, args.trunk_sigma, np.random.default_rng(1000 + t))
        a_here = {}
        for m in names:
            if m == "approach3":
                fit = run_approach3(table, bootstrap=args.resamples, seed=t, shared_seeds=not args.per_point_seeds)
            else:
                fit = allocation_fit(m, table, args.resamples, t)
            if fit is None or "bootstrap" not in fit:
                continue
            lo, hi = fit["bootstrap"]["intervals"]["a"]
            per[m]["widths"].append(hi - lo)
            per[m]["estimates"].append(fit["a"])
            per[m]["hits"] += int(lo <= law.a <= hi)
            a_here[m] = fit["a"]
        if len(a_here) == len(names) > 1:
            spread.append(max(a_here.values()) - min(a_here.values()))
        print(f"table {t}: " + ", ".join(f"{m} {a:.3f}" for m, a in a_here.items()), flush=True)
    widths, estimates, hits = (per["approach3"][k] for k in ("widths", "estimates", "hits")) \
        if "approach3" in names else (per[names[0]][k] for k in ("widths", "estimates", "hits"))
    name = Path(args.sweep).stem
    result = {
        "sweep": str(args.sweep), "overrides": args.set, "runs": len(runs), "trunks": int(runs["trunk"].nunique()),
        "N_range": [float(runs["N"].min()), float(runs["N"].max())],
        "law": {"source": args.law, "E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
                "a": law.a},
        "noise_ln_loss": {"per_run": args.sigma, "per_trunk": args.trunk_sigma},
        "resampling": "per point" if args.per_point_seeds else "seeds shared by size",
        "tables": args.tables, "resamples": args.resamples,
        "a_interval_width": {"mean": float(np.mean(widths)), "median": float(np.median(widths)),
                             "min": float(np.min(widths)), "max": float(np.max(widths)),
                             "share_at_most_0.1": float(np.mean(np.array(widths) <= 0.1)),
                             "each": [round(w, 4) for w in widths]},
        "a_estimate": {"mean": float(np.mean(estimates)), "std": float(np.std(estimates, ddof=1)),
                       "each": [round(a, 4) for a in estimates]},
        "coverage": hits / max(len(estimates), 1),
    }
    if names != ["approach3"]:
        result["approaches"] = {m: summary(v["widths"], v["estimates"], v["hits"], args.tables)
                                for m, v in per.items() if v["estimates"]}
    if spread:
        result["largest_difference_in_a"] = {
            "approaches": names, "tables": len(spread), "median": float(np.median(spread)),
            "mean": float(np.mean(spread)), "share_at_most_0.05": float(np.mean(np.array(spread) <= 0.05)),
            "each": [round(x, 4) for x in spread]}
    out = Path(args.out or f"results/bench/design_power_{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    w = result["a_interval_width"]
    print(f"{name}: {len(runs)} runs, {result['trunks']} trunks; a interval width mean {w['mean']:.3f} "
          f"(median {w['median']:.3f}, {w['min']:.3f}-{w['max']:.3f}, <= 0.1 in {w['share_at_most_0.1']:.0%}); "
          f"estimate sd {result['a_estimate']['std']:.3f}; coverage {result['coverage']:.0%} -> {out}")
    for m, r in result.get("approaches", {}).items():
        print(f"  {m}: estimate {r['a_estimate']['mean']:.3f} sd {r['a_estimate']['std']:.3f}, width mean "
              f"{r['a_interval_width']['mean']:.3f}, coverage {r['coverage']:.0%} ({r['refused']} refused)")
    if spread:
        d = result["largest_difference_in_a"]
        print(f"  largest difference in a across {', '.join(names)}: median {d['median']:.3f}, "
              f"<= 0.05 in {d['share_at_most_0.05']:.0%} of {d['tables']} tables")


if __name__ == "__main__":
    main()
