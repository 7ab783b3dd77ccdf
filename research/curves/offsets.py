"""Per-trunk offsets from a curve fit, and a results table corrected by them.

In a branch design the seeds of one size differ mostly by one offset per trunk: a trunk that
leaves the early plateau late stays behind in every branch cut from it. End points alone
cannot separate that from the effect of N; the whole curves can. For each size (n_params) of
a sweep, one curve law is fitted to every logged step of its trunks and branches (all seeds
together). A lineage is a trunk with its branches, or a run on its own. Its offset is the
median of log(measured / predicted) over its logged steps after warmup, centred so that the
offsets of a size average to zero. The corrected final loss of a row is
final_eval_loss * exp(-offset of its lineage).

`scaling curves offsets SWEEP --out corrected.csv` writes results.csv with final_eval_loss
corrected and the raw value kept as final_eval_loss_raw, beside lineage and trunk_offset
columns. `scaling fit corrected.csv` then fits the (N, D) law to the corrected points, and its
bootstrap interval reflects them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.curves.fitting import Curve
from research.curves.record import fit_curve_law
from research.curves.table import load_curves
from research.errors import UserError
from research.fit.data import read_frame


@dataclass
class SizeOffsets:
    n_params: float
    law: dict  # fitted parameters
    offsets: dict  # lineage -> offset (natural log of the loss ratio)
    n_points: dict  # lineage -> logged steps used
    curve_law: object = None  # the fitted CurveLaw


def lineage_of(row) -> str:
    trunk = str(row.get("trunk") or "")
    return trunk if trunk and trunk != "nan" else str(row["trial"])


def size_offsets(n_params: float, curves: dict[str, Curve], lineages: dict[str, str], law: str,
                 from_step: int | None = None) -> SizeOffsets:
    """Fit one law to the curves of one size; the centred median log residual of each lineage.
    `from_step`: both from this step on (default: each run's steps after its warmup)."""
    usable = [c for c in curves.values() if c.step_M.size]
    if not any(c.decays for c in usable):
        raise UserError(f"the runs of N = {n_params:,.0f} have no decaying LR; a curve law needs one")
    fitted = fit_curve_law(law, usable, from_step=from_step)
    by_lineage: dict[str, list] = {}
    for c in usable:
        part = c.fitted_part(from_step)
        if not part.step_M.size:
            continue
        pred = fitted.loss(part.sums, part.step_M)
        by_lineage.setdefault(lineages[c.run], []).append(np.log(part.loss_M / pred))
    raw = {k: float(np.median(np.concatenate(v))) for k, v in by_lineage.items()}
    centre = float(np.mean(list(raw.values()))) if raw else 0.0
    return SizeOffsets(n_params, fitted.params, {k: v - centre for k, v in raw.items()},
                       {k: int(sum(x.size for x in v)) for k, v in by_lineage.items()}, fitted)


def eval_log_gap(curve_law, eval_curves: list[Curve], shift: dict[str, float] | None = None,
                 from_step: int | None = None) -> float:
    """The median, over the eval losses of `eval_curves` measured after `from_step` (default: each
    run's warmup), of log(eval loss / the law's loss) - shift[run]. It moves a law fitted to the
    training loss (single batches, not the eval set) onto the eval set: prediction x exp(gap).
    `shift`: a log offset per run already known (its trunk's), left out of the gap. 0.0 when no
    eval loss was measured there."""
    gaps = []
    for c in eval_curves:
        part = c.fitted_part(from_step)
        if part.step_M.size:
            gaps.append(np.log(part.loss_M / curve_law.loss(part.sums, part.step_M)) - (shift or {}).get(c.run, 0.0))
    return float(np.median(np.concatenate(gaps))) if gaps else 0.0


def corrected_results(sweep_dir, law: str = "multipower", loss_col: str | None = None):
    """(results frame with corrected final_eval_loss, [SizeOffsets]) of a sweep directory."""
    import pandas as pd  # not at import: `scaling --help` loads this module (pandas ~1 s)

    sweep_dir = Path(sweep_dir)
    results = sweep_dir / "results.csv"
    if not (sweep_dir / "trials").is_dir() or not results.is_file():
        raise UserError(f"{sweep_dir} is not a sweep directory with results.csv and trials/; "
                        "run `scaling sweep collect DIR` first")
    frame = read_frame(results)
    for col in ("trial", "n_params", "final_eval_loss"):
        if col not in frame.columns:
            raise UserError(f"{results} has no {col!r} column; rebuild it with `scaling sweep collect`")
    table = load_curves(sweep_dir, loss_col=loss_col)
    lineage = {str(r["trial"]): lineage_of(r) for r in frame.to_dict("records")}
    size_of_lineage: dict[str, float] = {}
    n_params = pd.to_numeric(frame["n_params"], errors="coerce")  # a text cell gives no size; the lineage's
    for r, n in zip(frame.to_dict("records"), n_params):  # other rows do
        if math.isfinite(n):
            size_of_lineage.setdefault(lineage[str(r["trial"])], float(n))
    for run in table.curves:  # trunks are not rows of results.csv: they are their own lineage
        lineage.setdefault(run, run)
    sizes = []
    for n in sorted({v for v in size_of_lineage.values() if math.isfinite(v)}):
        members = {run: c for run, c in table.curves.items() if size_of_lineage.get(lineage[run]) == n}
        if not members:
            continue
        sizes.append(size_offsets(n, members, lineage, law))
        print(f"N = {n:,.0f}: offsets " + ", ".join(f"{k[:8]} {100 * v:+.2f}%" for k, v in sizes[-1].offsets.items()),
              file=sys.stderr)
    offset = {k: v for s in sizes for k, v in s.offsets.items()}
    out = frame.copy()
    out["lineage"] = [lineage[str(t)] for t in out["trial"]]
    out["trunk_offset"] = [offset.get(k, float("nan")) for k in out["lineage"]]
    out["final_eval_loss_raw"] = out["final_eval_loss"]
    shift = np.exp(-out["trunk_offset"].fillna(0.0).to_numpy(float))
    # a cell that is not a number stays unusable (NaN), as `scaling fit` counts and drops such rows
    out["final_eval_loss"] = pd.to_numeric(out["final_eval_loss_raw"], errors="coerce").to_numpy(float) * shift
    if "eval_bits_per_byte" in out.columns:  # proportional to the loss
        out["eval_bits_per_byte"] = pd.to_numeric(out["eval_bits_per_byte"], errors="coerce").to_numpy(float) * shift
    return out, sizes
