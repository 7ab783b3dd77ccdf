"""Warnings a careful reviewer would raise about a fit, and the noise/range notes predictions need.

`annotate(result, df)` runs after the fits (`research.fit.core.run_fits`). It
appends to each approach's `warnings` list, writes the overall ones to
`result["warnings"]`, and gives every law that predicts L(N, D) (Approach 3,
Kaplan's joint law) a `noise` block (`research.fit.noise`) and the `data_range`
it was fitted on, so `scaling predict` can give honest intervals later.

Thresholds (one place, named):
  WIDTH_MAX              interval on a or b wider than this (absolute): the data do not pin the exponent
  MIN_DISTINCT           fewer budgets or sizes than this cannot show curvature or a trend
  TERM_SPREAD_MIN        Approach-3 A/N^alpha (or B/D^beta) varying less than this fraction of the loss
                         across the data: the loss barely depends on N (or D), the exponent is unidentified
  E_FLOOR_FRACTION       Approach-3 E below this fraction of the lowest measured loss: the fit (or a bootstrap
                         resample) put the irreducible loss at zero and let A/N^alpha stand in for it
  E_FLOOR_SHARE          share of bootstrap resamples at such an E before the interval is said to mix two solutions
  LACK_OF_FIT_RATIO      residual scatter this many times the replicate spread: the form misses the data
  EXTRAPOLATION_DECADES_C  decades beyond the largest budget before N_opt/D_opt are flagged
  EXTRAPOLATION_DECADES_ND decades beyond the sampled N (or D) range before a prediction is flagged
  ENVELOPE_EDGE_FRACTION Approach-1 FLOP grid fraction won by the smallest/largest model
  AGREEMENT_MAX          largest pairwise |difference| in a between Approaches 1-3 before they are said to disagree
"""

from __future__ import annotations

import math

import numpy as np

from research.fit.data import group_budgets
from research.fit.families import family_loss
from research.fit.noise import estimate_noise

WIDTH_MAX = 0.1
MIN_DISTINCT = 3
TERM_SPREAD_MIN = 0.01
E_FLOOR_FRACTION = 0.05
E_FLOOR_SHARE = 0.05
LACK_OF_FIT_RATIO = 2.0
EXTRAPOLATION_DECADES_C = 2.0
EXTRAPOLATION_DECADES_ND = 1.0
ENVELOPE_EDGE_FRACTION = 0.5
AGREEMENT_MAX = 0.05
ALLOCATION_APPROACHES = ("approach1", "approach2", "approach3")


def _ok(block) -> bool:
    return isinstance(block, dict) and "skipped" not in block


def _add(block: dict, messages) -> None:
    have = block.setdefault("warnings", [])
    for m in messages:
        if m not in have:
            have.append(m)


def decades_outside(x, lo, hi) -> np.ndarray:
    """How many decades each x lies outside [lo, hi] (0 inside)."""
    x = np.asarray(x, float)
    return np.maximum(0.0, np.maximum(np.log10(x / hi), np.log10(lo / x)))


def data_range(df) -> dict:
    return {"n_params": [float(df["N"].min()), float(df["N"].max())],
            "tokens": [float(df["D"].min()), float(df["D"].max())],
            "flops": [float(df["C"].min()), float(df["C"].max())] if "C" in df else None}


def extrapolation_warnings(N, D, rng: dict | None) -> list[str]:
    """One line per prediction more than EXTRAPOLATION_DECADES_ND outside the fitted N or D range."""
    if not rng:
        return ["the law's data range is unknown: cannot say how far these predictions extrapolate"]
    out = []
    for what, x, key in (("N", N, "n_params"), ("D", D, "tokens")):
        lo, hi = rng[key]
        dec = decades_outside(x, lo, hi)
        for i in np.flatnonzero(dec > EXTRAPOLATION_DECADES_ND):
            out.append(f"pair {i + 1}: {what}={x[i]:.3g} is {dec[i]:.1f} decades outside the fitted data's "
                       f"{what} range [{lo:.3g}, {hi:.3g}]; the law is untested there")
    return out


# ----------------------------------------------------------------------------- per approach

def interval_width_warnings(block: dict) -> list[str]:
    iv = (block.get("bootstrap") or {}).get("intervals") or {}
    level = (block.get("bootstrap") or {}).get("level", 0.95)
    out = []
    for k in ("a", "b"):
        lo, hi = (iv.get(k) or [None, None])[:2]
        if lo is None or hi is None:
            continue
        if hi - lo > WIDTH_MAX:
            out.append(f"{level:.0%} interval on {k} is [{lo:.3g}, {hi:.3g}] (width {hi - lo:.2g} > {WIDTH_MAX}): "
                       f"the data do not determine the exponent {k}; add budgets, sizes or replicate runs")
    return out


def _budget_sizes(df, flops):
    m = np.abs(np.log(df["C"].to_numpy(float) / flops)) < math.log(1.1)
    return np.unique(df["N"].to_numpy(float)[m])


def approach2_warnings(block: dict, df) -> list[str]:
    out = []
    for b in block.get("budgets", []):
        sizes = np.sort(b["slice"]["n_params"]) if "slice" in b else _budget_sizes(df, b["flops"])
        if len(sizes) < 3:
            continue
        if b["n_opt"] <= sizes[1] or b["n_opt"] >= sizes[-2]:
            side = "smallest" if b["n_opt"] <= sizes[1] else "largest"
            out.append(f"IsoFLOP minimum at C={b['flops']:.3g} (N_opt={b['n_opt']:.3g}) lies at the edge of its "
                       f"sampled sizes [{sizes[0]:.3g}, {sizes[-1]:.3g}] (beyond the second-{side}): one size "
                       f"on that side fixes it; add {'smaller' if side == 'smallest' else 'larger'} models")
    if block.get("n_budgets", 0) < MIN_DISTINCT:
        out.append(f"only {block.get('n_budgets')} budgets with an interior IsoFLOP minimum (need >= "
                   f"{MIN_DISTINCT} to check the power law N_opt ~ C^a rather than draw it through points)")
    return out


def approach1_warnings(block: dict) -> list[str]:
    kept, dropped = block.get("n_envelope_points", 0), block.get("n_edge_points_dropped", 0)
    if kept + dropped and dropped / (kept + dropped) > ENVELOPE_EDGE_FRACTION:
        return [f"{dropped / (kept + dropped):.0%} of the envelope's FLOP grid is won by the smallest or largest "
                "model (left out as edge points): the sizes trained do not bracket the optimum over most budgets"]
    return []


def approach3_warnings(block: dict, df) -> list[str]:
    out = []
    L_med = float(np.median(df["L"]))
    for k, coef, col, var in (("alpha", "A", "N", "N"), ("beta", "B", "D", "D")):
        with np.errstate(all="ignore"):
            term = block[coef] / df[col].to_numpy(float) ** block[k]
        spread = float(np.max(term) - np.min(term)) / L_med if np.all(np.isfinite(term)) else float("nan")
        if not spread >= TERM_SPREAD_MIN:
            out.append(f"the {var} term {coef}/{var}^{k} changes the loss by {spread:.2%} across the data "
                       f"(< {TERM_SPREAD_MIN:.0%}; {k} = {block[k]:.3g}): the loss barely depends on {var} here, "
                       f"so {k}, a and b are set by noise")
    floor = E_FLOOR_FRACTION * float(df["L"].min())
    if block["E"] < floor:
        out.append(f"E = {block['E']:.3g} is below {E_FLOOR_FRACTION:.0%} of the lowest measured loss: the fit put the "
                   f"irreducible loss at zero and lets A/N^alpha (alpha = {block['alpha']:.3g}) stand in for it, so E "
                   "and the N term are not separately identified; a follows from that choice and its bootstrap "
                   "interval (whose resamples make the same choice) understates the uncertainty; add smaller and "
                   "larger models")
    else:
        E_boot = np.asarray(((block.get("bootstrap") or {}).get("samples") or {}).get("E", []), float)
        share = float(np.mean(E_boot < floor)) if len(E_boot) else 0.0
        if share > E_FLOOR_SHARE:
            out.append(f"{share:.0%} of the bootstrap resamples put E at zero (below {E_FLOOR_FRACTION:.0%} of the "
                       f"lowest loss) where the fit has E = {block['E']:.3g}: E and the N term are not separately "
                       "identified, and the interval on a mixes the two solutions")
    if block["E"] >= float(df["L"].min()):
        out.append(f"E = {block['E']:.3g} is above the lowest measured loss ({float(df['L'].min()):.3g}): "
                   "the fit's irreducible loss contradicts the data")
    out += _distinct_warnings(df, "Approach 3")
    out += lack_of_fit_warnings(block.get("noise"))
    return out


def lack_of_fit_warnings(noise: dict | None) -> list[str]:
    if not noise or not noise.get("replicates") or noise["replicates"]["dof"] < 1:
        return []
    rep, res = noise["replicates"]["sigma_log"], noise["residuals"]["sigma_log"]
    if rep > 0 and res > LACK_OF_FIT_RATIO * rep:
        return [f"residual scatter (sigma of ln L {res:.3g}) is {res / rep:.1f}x the replicate run-to-run spread "
                f"({rep:.3g}): the functional form misses the data beyond noise"]
    return []


def _distinct_warnings(df, who: str) -> list[str]:
    out = []
    n_budgets = len(np.unique(group_budgets(df["C"].to_numpy(float))))
    n_sizes = len(np.unique(group_budgets(df["N"].to_numpy(float), rel_tol=0.01)))
    if n_budgets < MIN_DISTINCT:
        out.append(f"{who}: only {n_budgets} FLOP budget(s) in the data (need >= {MIN_DISTINCT} for a trend)")
    if n_sizes < MIN_DISTINCT:
        out.append(f"{who}: only {n_sizes} model size(s) in the data (need >= {MIN_DISTINCT} for a trend)")
    return out


# ----------------------------------------------------------------------------- overall

def disagreement_warnings(result: dict) -> list[str]:
    """Pairs of approaches whose bootstrap intervals on a do not overlap."""
    have = []
    for k in ALLOCATION_APPROACHES:
        blk = result.get(k)
        iv = ((blk or {}).get("bootstrap") or {}).get("intervals", {}).get("a") if _ok(blk) else None
        if iv and None not in iv[:2]:
            have.append((k, blk["a"], iv))
    out = []
    for i in range(len(have)):
        for j in range(i + 1, len(have)):
            (k1, a1, iv1), (k2, a2, iv2) = have[i], have[j]
            if iv1[1] < iv2[0] or iv2[1] < iv1[0]:
                out.append(f"{k1} (a={a1:.3f} [{iv1[0]:.3f}, {iv1[1]:.3f}]) and {k2} (a={a2:.3f} "
                           f"[{iv2[0]:.3f}, {iv2[1]:.3f}]) disagree beyond their intervals: at least one "
                           "approach's assumptions fail on these data")
    return out


def agreement(result: dict) -> dict:
    """fit.json's "agreement": a and b of every fitted allocation approach (with its bootstrap interval
    when there is one) and the largest pairwise |difference| in a, with the pair."""
    per = {}
    for k in ALLOCATION_APPROACHES:
        blk = result.get(k)
        if not _ok(blk) or blk.get("a") is None:
            continue
        bs = blk.get("bootstrap") or {}
        iv = bs.get("intervals") or {}
        per[k] = {"a": float(blk["a"]), "b": float(blk["b"]),
                  "a_interval": (iv.get("a") if iv.get("a") and None not in iv["a"] else None),
                  "b_interval": (iv.get("b") if iv.get("b") and None not in iv["b"] else None),
                  "level": bs.get("level") if iv else None}
    out = {"approaches": per, "threshold": AGREEMENT_MAX, "max_abs_diff_a": None, "pair": None}
    names = list(per)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            d = abs(per[names[i]]["a"] - per[names[j]]["a"])
            if out["max_abs_diff_a"] is None or d > out["max_abs_diff_a"]:
                out.update(max_abs_diff_a=d, pair=[names[i], names[j]])
    if out["max_abs_diff_a"] is None:
        out["note"] = f"{len(per)} allocation approach(es) fitted; agreement needs two"
    return out


def agreement_warnings(block: dict | None) -> list[str]:
    if not block or block.get("max_abs_diff_a") is None or not block["max_abs_diff_a"] > AGREEMENT_MAX:
        return []
    k1, k2 = block["pair"]
    a1, a2 = block["approaches"][k1]["a"], block["approaches"][k2]["a"]
    return [f"the approaches disagree on a: {k1} gives {a1:.3f}, {k2} {a2:.3f} (|difference| "
            f"{block['max_abs_diff_a']:.3f} > {AGREEMENT_MAX}); the compute-optimal exponent is not settled by "
            "these data: check each approach's warnings, add sizes, token counts or seeds"]


def agreement_line(fit: dict) -> str | None:
    """One printed line: each approach's a [interval] and the largest pairwise difference."""
    block = fit.get("agreement") or {}
    per = block.get("approaches") or {}
    if not per:
        return None
    parts = []
    for k, v in per.items():
        iv = v.get("a_interval")
        parts.append(f"{k} a={v['a']:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
    if block.get("max_abs_diff_a") is not None:
        parts.append(f"largest |difference| {block['max_abs_diff_a']:.3f} ({' vs '.join(block['pair'])}; "
                     f"goal <= {block['threshold']})")
    return "agreement: " + ", ".join(parts)


def noise_line(fit: dict) -> str | None:
    """One printed line: the pooled seed-to-seed noise, or that there are no replicates."""
    noise = fit.get("noise")
    if not isinstance(noise, dict):
        return None
    if not noise.get("replicates"):
        return "seed noise: unmeasured (no (N, D) point has >= 2 seeds)"
    p = noise["pooled"]
    return (f"seed noise: pooled std {p['std']:.4f} nats/token ({p['rel_std']:.2%} of the loss, {p['dof']} dof) "
            f"from {noise['replicates']} runs at {noise['n_points']} (N, D) points")


def overall_warnings(result: dict, df) -> list[str]:
    out = _distinct_warnings(df, "data")
    fitted = [k for k in ALLOCATION_APPROACHES if _ok(result.get(k))]
    if fitted and not any((result[k].get("bootstrap") or {}).get("intervals") for k in fitted):
        out.append("no bootstrap: exponents and optima are reported without intervals, so nothing here says how "
                   "well the data determine them; re-run `scaling fit DIR --bootstrap 200`")
    out += disagreement_warnings(result)
    out += agreement_warnings(result.get("agreement"))
    cmax = float(df["C"].max())
    far = [c for c in result.get("budgets_for_intervals", []) if math.log10(c / cmax) > EXTRAPOLATION_DECADES_C]
    if far and fitted:
        out.append(f"N_opt/D_opt are reported up to C={max(far):.3g}, {math.log10(max(far) / cmax):.1f} decades "
                   f"beyond the largest budget fitted ({cmax:.3g}); there they assume the law holds unchanged")
    return out


def _noise_and_range(block: dict, family: str, df, n_fitted: int) -> list[str]:
    """Store the law's noise estimate and fitted data range in `block`; warnings if it cannot."""
    block["data_range"] = data_range(df)
    block["noise"] = None
    with np.errstate(all="ignore"):
        pred = np.asarray(family_loss(family, block, df["N"].to_numpy(float), df["D"].to_numpy(float)), float)
    if not np.all(np.isfinite(pred) & (pred > 0)):
        return ["the fitted law gives non-finite or non-positive losses at some fitted points; no noise estimate"]
    block["noise"] = estimate_noise(df, pred, n_fitted)
    return []


def annotate(result: dict, df, kaplan_df=None) -> dict:
    """Add noise/data_range to the L(N, D) laws and every warning, in place; returns result."""
    a3 = result.get("approach3")
    if _ok(a3):
        _add(a3, _noise_and_range(a3, "chinchilla", df, 5))
        _add(a3, approach3_warnings(a3, df))
    kap = result.get("kaplan")
    if _ok(kap) and _ok(kap.get("L_ND")):
        kdf = df if kaplan_df is None else kaplan_df
        _add(kap, _noise_and_range(kap["L_ND"], "kaplan", kdf, 4))
        _add(kap, lack_of_fit_warnings(kap["L_ND"]["noise"]))
    if _ok(result.get("approach2")):
        _add(result["approach2"], approach2_warnings(result["approach2"], df))
    if _ok(result.get("approach1")):
        _add(result["approach1"], approach1_warnings(result["approach1"]))
    for k in ALLOCATION_APPROACHES:
        if _ok(result.get(k)):
            _add(result[k], interval_width_warnings(result[k]))
    result["agreement"] = agreement(result)
    result["warnings"] = overall_warnings(result, df)
    return result


def all_warnings(fit: dict, keys=None) -> list[str]:
    """Overall warnings then each approach's, prefixed by its name (for printing and plots)."""
    out = list(fit.get("warnings") or [])
    for k in keys or ("approach1", "approach2", "approach3", "kaplan"):
        blk = fit.get(k)
        if _ok(blk):
            out += [f"{k}: {w}" for w in blk.get("warnings", [])]
    return out
