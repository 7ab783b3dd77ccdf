"""What the default solver change does to the committed references' Approach-3 numbers.

Not a test. Refits each results/reference/*/ table's Approach 3 with the variable-projection solver and
the committed fit's bootstrap settings (resamples, seed, two-stage resampling), and writes beside the
committed (multi-start L-BFGS) values: results/bench/varpro_references.json. The references themselves
are not rewritten.

    python benchmarks/varpro_references.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("objective", "E", "A", "B", "alpha", "beta", "a")


def main():
    from research.fit.core import flops_per_token, run_approach3
    from research.fit.data import load_table

    out = {}
    for ref in sorted((ROOT / "results/reference").iterdir()):
        fit_path = ref / "fit.json"
        if not fit_path.exists() or "approach3" not in json.loads(fit_path.read_text()):
            continue
        old = json.loads(fit_path.read_text())["approach3"]
        bs = old.get("bootstrap") or {}
        table = load_table(ref, quiet=True)
        new = run_approach3(table.df, bootstrap=int(bs.get("n_resamples", 0)), seed=int(bs.get("seed", 0)),
                            reduction=old.get("reduction", "sum"), per_token=flops_per_token(table),
                            budgets=[], solver="varpro")
        row = {"committed_lbfgs": {k: old.get(k) for k in KEYS}, "varpro": {k: new.get(k) for k in KEYS}}
        if bs:
            row["committed_lbfgs"]["intervals"] = {k: bs["intervals"].get(k) for k in ("a", "E", "alpha", "beta")}
            row["varpro"]["intervals"] = {k: new["bootstrap"]["intervals"].get(k) for k in ("a", "E", "alpha", "beta")}
            row["bootstrap"] = {"n_resamples": bs.get("n_resamples"), "seed": bs.get("seed"),
                                "resampling": new["bootstrap"]["resampling"]}
        row["varpro"]["profile_a_range"] = new["profile"]["a_range"]
        out[ref.name] = row
        print(ref.name, json.dumps(row)[:600], flush=True)
    path = ROOT / "results/bench/varpro_references.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
