"""A trunks-only design evaluated on a finished branch sweep: its FLOPs and its exponent a.

For each variant (cooldowns kept per trunk; the loss the curve law is fitted to; where the fit
starts) this runs `scaling curves trunks-only` on the sweep (read only: the table goes to a
temporary directory), fits Approach 3 to the table it writes (`scaling fit --method approach3
--bootstrap 200`, as the sweep's own fit.json), and records:

    spent / represented   FLOPs (6N) of the trunks plus the kept cooldowns, over the whole-history
                          FLOPs of every IsoFLOP point the table stands for
    floor                 the same ratio for the trunks alone (no cooldown at all): no trunks-only
                          design on these horizons spends less
    a, its interval       beside the branch design's (the sweep's fit.json)
    predicted points      their error against the branches that were trained

    python benchmarks/trunks_only_sweep.py SWEEP [--out results/bench/trunks_only_demo_cpu2.json] [--variants ...]

(--variants: the named ones only; an existing --out file of the same sweep keeps its other variants)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from research.curves.trunks_only import trunks_only
from research.fit.data import read_frame
from research.fsutil import read_json

# name: (keep, loss_col, from_step, budgets_per_doubling)
VARIANTS = {
    "keep 2, eval loss": (2, "eval_loss", None, None),
    "keep 1, eval loss": (1, "eval_loss", None, None),
    "keep 2, training loss from the plateau": (2, "loss", "plateau", None),
    "keep 1, training loss from the plateau": (1, "loss", "plateau", None),
    "keep 2, eval loss, budgets 2^(1/4) apart": (2, "eval_loss", None, 4),
    "keep 1, eval loss, budgets 2^(1/4) apart": (1, "eval_loss", None, 4),
    "keep 2, training loss from the plateau, budgets 2^(1/4) apart": (2, "loss", "plateau", 4),
    # anchored: each lineage's level from its own trunk's logged curve, the law only for the drop (--anchor)
    "keep 2, anchored to the training loss": (2, "anchor:loss", None, None),
    "keep 2, anchored to the training loss, budgets 2^(1/4) apart": (2, "anchor:loss", None, 4),
    "keep 2, anchored to the dense eval loss": (2, "anchor:dense_eval_loss", None, None),
    "keep 2, anchored to the dense eval loss, budgets 2^(1/4) apart": (2, "anchor:dense_eval_loss", None, 4),
}


def approach3(table: Path, out: Path) -> dict:
    """Approach 3 (200 resamples, as the sweep's own fit.json) and Approach 2's point estimate. Where the
    table holds predicted rows the intervals count them as measured (too narrow; `scaling fit` warns)."""
    subprocess.run([sys.executable, "-m", "research", "fit", str(table), "--method", "approach3", "--bootstrap", "200",
                    "--out", str(out)], check=True, capture_output=True)
    fit = read_json(out)["approach3"]
    a2 = subprocess.run([sys.executable, "-m", "research", "fit", str(table), "--method", "approach2", "--bootstrap",
                         "0", "--no-write", "--json"], check=True, capture_output=True, text=True)
    return {"a": fit["a"], "a_interval": fit["bootstrap"]["intervals"]["a"], "level": fit["bootstrap"]["level"],
            "E": fit["E"], "alpha": fit["alpha"], "beta": fit["beta"], "warnings": fit.get("warnings", []),
            "approach2_a": json.loads(a2.stdout)["a"]}


def trunks_floor(sweep: Path) -> dict:
    """Per size and overall: the trunks' FLOPs over the represented FLOPs (every branch's 6ND)."""
    frame = read_frame(sweep / "results.csv")
    frame = frame[frame["kind"].astype(str) == "branch"]
    per_size, trunk_total, represented_total = {}, 0.0, 0.0
    for n, size in frame.groupby("n_params"):
        trunk = sum(float((g.flops_6n / g.steps).mean()) * int(g.branch_step.max()) for _, g in size.groupby("trunk"))
        represented = float(size.flops_6n.sum())
        horizons = sorted(size.groupby("trunk").get_group(size.trunk.iloc[0]).steps)
        per_size[str(int(n))] = {"horizons": [int(h) for h in horizons], "trunks_over_represented": trunk / represented,
                                 "sum_of_horizons_over_longest": sum(horizons) / horizons[-1]}
        trunk_total, represented_total = trunk_total + trunk, represented_total + represented
    return {"trunks_over_represented": trunk_total / represented_total, "per_size": per_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="results/bench/trunks_only_demo_cpu2.json")
    args = ap.parse_args()
    sweep = Path(args.sweep)
    branch_fit = read_json(sweep / "fit.json")["approach3"]
    branch_a2 = read_json(sweep / "fit.json")["approach2"]
    record = {"benchmark": "trunks_only_sweep", "sweep": str(sweep), "machine": platform.machine(),
              "branch_design": {"a": branch_fit["a"], "a_interval": branch_fit["bootstrap"]["intervals"]["a"],
                                "level": branch_fit["bootstrap"]["level"], "approach2_a": branch_a2["a"],
                                "approach2_a_interval": branch_a2["bootstrap"]["intervals"]["a"]},
              "floor": trunks_floor(sweep), "variants": {}}
    print(f"branch design: a = {branch_fit['a']:.3f} {branch_fit['bootstrap']['intervals']['a']}; trunks alone "
          f"{record['floor']['trunks_over_represented']:.3f} of the represented FLOPs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            keep, loss_col, from_step, per_doubling = VARIANTS[name]
            t0 = time.process_time()
            anchor = loss_col.split(":", 1)[1] if loss_col.startswith("anchor:") else None
            table, summary = trunks_only(sweep, keep, "multipower", "eval_loss" if anchor else loss_col, from_step,
                                         per_doubling, anchor)
            path = Path(tmp) / "table.csv"
            table.to_csv(path, index=False)
            fit = approach3(path, Path(tmp) / "fit.json")
            pred = table[(table.source == "predicted") & table.final_eval_loss_measured.notna()]  # trained branches
            err = (pred.final_eval_loss - pred.final_eval_loss_measured).to_numpy(float)
            lo, hi = record["branch_design"]["a_interval"]
            lo2, hi2 = record["branch_design"]["approach2_a_interval"]
            record["variants"][name] = {
                **summary, **fit, "a_within_branch_interval": bool(lo <= fit["a"] <= hi),
                "approach2_a_within_branch_interval": bool(lo2 <= fit["approach2_a"] <= hi2),
                "predicted_mean_abs_rel_err": float(np.mean(np.abs(err) / pred.final_eval_loss_measured)),
                "predicted_bias_nats": float(err.mean()), "predicted_rms_nats": float(np.sqrt(np.mean(err ** 2))),
                "cpu_s_curves": time.process_time() - t0}
            v = record["variants"][name]
            print(f"{name:40s}: spent/represented {v['spent_over_represented']:.3f}; a = {v['a']:.3f} "
                  f"[{v['a_interval'][0]:.3f}, {v['a_interval'][1]:.3f}] ({'inside' if v['a_within_branch_interval'] else 'outside'} "
                  f"the branch design's; Approach 2 {v['approach2_a']:.3f}); predicted points {100 * v['predicted_mean_abs_rel_err']:.2f}% off "
                  f"(bias {v['predicted_bias_nats']:+.4f} nats)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    earlier = read_json(Path(args.out)) if Path(args.out).is_file() else None
    if isinstance(earlier, dict) and earlier.get("sweep") == record["sweep"]:  # other variants of the same sweep kept
        record["variants"] = {**earlier.get("variants", {}), **record["variants"]}
        record = {**earlier, **record}  # and its other keys (notes, earlier code's results)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
