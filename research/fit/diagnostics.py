"""Warnings a careful reviewer would raise about one approach's fit, and the noise/range notes
predictions need.

Each fitting method's `annotate` (research/fit/method_*.py) calls the checks here for its own
block; `research.fit.agreement.annotate` runs them all after the fits, adds the warnings that
compare approaches, and gives every law that predicts L(N, D) (Approach 3, Kaplan's joint law)
a `noise` block (`research.fit.noise`) and the `data_range` it was fitted on, so `scaling
predict` can give honest intervals later.

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
  AGREEMENT_MAX          (research/fit/agreement.py) largest pairwise |difference| in a before approaches disagree
"""

from __future__ import annotations

import math

import numpy as np

from research.fit.data import group_budgets
from research.fit.families import family_loss
from research.fit.isoflop import SLICE_CHECK_LEVEL
from research.fit.law_warnings import E_FLOOR_FRACTION, WIDTH_MAX  # noqa: F401 (listed above; defined there)
from research.fit.noise import estimate_noise
from research.records import (Approach1Result, Approach2Result, Approach3Result, DataRange, MethodResult, Record)

MIN_DISTINCT = 3
TERM_SPREAD_MIN = 0.01
E_FLOOR_SHARE = 0.05
LACK_OF_FIT_RATIO = 2.0
EXTRAPOLATION_DECADES_C = 2.0
EXTRAPOLATION_DECADES_ND = 1.0
MIN_CROSSING_PAIRS = 3  # Approach 1: fewer size pairs crossing, a line with no residual
ENVELOPE_EDGE_FRACTION = 0.5


def usable(rec: Record | None) -> bool:
    """A record that was computed (neither absent nor Skipped)."""
    return rec is not None and not rec.skipped


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

def interval_width_warnings(rec: MethodResult) -> list[str]:
    iv = rec.intervals()
    level = rec.bootstrap.level if rec.bootstrap is not None and rec.bootstrap.level is not None else 0.95
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


def approach2_warnings(rec: Approach2Result, df) -> list[str]:
    out = []
    for b in rec.budgets:
        sizes = np.sort(b.slice["n_params"]) if b.slice is not None else _budget_sizes(df, b.flops)
        if len(sizes) < 3:
            continue
        if b.n_opt <= sizes[1] or b.n_opt >= sizes[-2]:
            side = "smallest" if b.n_opt <= sizes[1] else "largest"
            out.append(f"IsoFLOP minimum at C={b.flops:.3g} (N_opt={b.n_opt:.3g}) lies at the edge of its "
                       f"sampled sizes [{sizes[0]:.3g}, {sizes[-1]:.3g}] (beyond the second-{side}): one size "
                       f"on that side fixes it; add {'smaller' if side == 'smallest' else 'larger'} models")
    checks = [(b.flops, b.fit_check) for b in rec.budgets if b.fit_check is not None]
    tested = [chk for _, chk in checks if chk.tested]
    family_wise = SLICE_CHECK_LEVEL / max(1, len(tested))  # Bonferroni: one miss in many slices can be chance
    chance = []
    for c, chk in checks:
        if chk.tested and not chk.within_noise and chk.decisive_p_value >= family_wise:
            chance.append((c, chk.decisive_p_value))
        elif chk.tested and not chk.within_noise:
            noise = chk.replicate_noise_of_means if chk.by_replicates else chk.noise_of_means
            out.append(f"IsoFLOP slice at C={c:.3g}: its parabola misses the seed means beyond their noise "
                       f"({chk.test_text()}; rms residual {chk.rms_residual:.3g} against {noise:.3g} nats): the loss "
                       "is not one parabola in ln N there (two minima, or a size off its family or learning rate); "
                       "see the IsoFLOP figure")
        elif chk.tested and chk.by_replicates and chk.p_value is not None and chk.p_value < SLICE_CHECK_LEVEL:
            out.append(f"IsoFLOP slice at C={c:.3g}: its parabola fits within its own seeds' scatter "
                       f"({chk.replicate_noise_of_means:.3g} nats for the means; F test p = "
                       f"{chk.lack_of_fit['p_value']:.2g}) but not within the noise model's {chk.noise_of_means:.3g} "
                       f"(chi2 p = {chk.p_value:.2g}): the noise model, a trend in D/N, understates the noise of "
                       "these runs (short runs still leaving the early plateau scatter more)")
    if chance:
        head = (f"{len(chance)} of {len(tested)} tested IsoFLOP slices miss their parabola at p < {SLICE_CHECK_LEVEL:g} "
                f"({', '.join(f'C={c:.3g}: p = {pv:.2g}' for c, pv in chance)}), none at p < {family_wise:.2g} "
                f"({SLICE_CHECK_LEVEL:g} / {len(tested)} slices)")
        if len(chance) == 1:
            out.append(f"{head}: about what chance alone gives among {len(tested)} slices, so not evidence that the "
                       "loss is off a parabola there; see the IsoFLOP figure")
        else:  # no single slice stands out, but several misses together may
            from scipy.stats import binom  # lazy, as in research/fit/isoflop.py

            together = float(binom.sf(len(chance) - 1, len(tested), SLICE_CHECK_LEVEL))
            out.append(f"{head}: no single slice stands out among {len(tested)}, but {len(chance)} misses at "
                       f"p < {SLICE_CHECK_LEVEL:g} happen by chance with probability {together:.2g}; see the IsoFLOP figure")
    untested = [c for c, chk in checks if not chk.tested]
    if untested:
        out.append(f"{len(untested)} of {len(checks)} IsoFLOP slices have only 3 sizes (C = "
                   f"{', '.join(f'{c:.3g}' for c in untested)}): each parabola passes through every mean, so its "
                   "shape is assumed, not tested; a fourth size per budget tests it")
    if rec.n_budgets < MIN_DISTINCT:
        out.append(f"only {rec.n_budgets} budgets with an interior IsoFLOP minimum (need >= "
                   f"{MIN_DISTINCT} to check the power law N_opt ~ C^a rather than draw it through points)")
    return out


def approach1_warnings(rec: Approach1Result) -> list[str]:
    out = []
    kept, dropped = rec.n_envelope_points, rec.n_edge_points_dropped
    if kept + dropped and dropped / (kept + dropped) > ENVELOPE_EDGE_FRACTION:
        out.append(f"{dropped / (kept + dropped):.0%} of the envelope's FLOP grid is won by the smallest or largest "
                   "model (left out as edge points): the sizes trained do not bracket the optimum over most budgets")
    pairs = {(c["n_left"], c["n_right"]) for c in rec.crossings or []}
    if rec.estimator == "crossings" and len(pairs) < MIN_CROSSING_PAIRS:
        out.append(f"a rests on crossings of only {len(pairs)} size pairs: the line through {len(pairs)} "
                   "points has no residual to judge it by; more sizes or a wider token range per size give more")
    return out


def approach3_warnings(rec: Approach3Result, df) -> list[str]:
    out = []
    L_med = float(np.median(df["L"]))
    p = rec.params()
    for k, coef, col, var in (("alpha", "A", "N", "N"), ("beta", "B", "D", "D")):
        with np.errstate(all="ignore"):
            term = p[coef] / df[col].to_numpy(float) ** p[k]
        spread = float(np.max(term) - np.min(term)) / L_med if np.all(np.isfinite(term)) else float("nan")
        if not spread >= TERM_SPREAD_MIN:
            out.append(f"the {var} term {coef}/{var}^{k} changes the loss by {spread:.2%} across the data "
                       f"(< {TERM_SPREAD_MIN:.0%}; {k} = {p[k]:.3g}): the loss barely depends on {var} here, "
                       f"so {k}, a and b are set by noise")
    floor = E_FLOOR_FRACTION * float(df["L"].min())
    if rec.E < floor:
        out.append(f"E = {rec.E:.3g} is below {E_FLOOR_FRACTION:.0%} of the lowest measured loss: the fit put the "
                   f"irreducible loss at zero and lets A/N^alpha (alpha = {rec.alpha:.3g}) stand in for it, so E "
                   "and the N term are not separately identified; a follows from that choice and its bootstrap "
                   "interval (whose resamples make the same choice) understates the uncertainty; add smaller and "
                   "larger models")
    else:
        E_boot = np.asarray(((rec.bootstrap.samples if rec.bootstrap is not None else None) or {}).get("E", []),
                            float)
        share = float(np.mean(E_boot < floor)) if len(E_boot) else 0.0
        if share > E_FLOOR_SHARE:
            out.append(f"{share:.0%} of the bootstrap resamples put E at zero (below {E_FLOOR_FRACTION:.0%} of the "
                       f"lowest loss) where the fit has E = {rec.E:.3g}: E and the N term are not separately "
                       "identified, and the interval on a mixes the two solutions")
    if rec.E >= float(df["L"].min()):
        out.append(f"E = {rec.E:.3g} is above the lowest measured loss ({float(df['L'].min()):.3g}): "
                   "the fit's irreducible loss contradicts the data")
    out += distinct_warnings(df, "Approach 3")
    out += lack_of_fit_warnings(rec.noise)
    return out


def lack_of_fit_warnings(noise: dict | None) -> list[str]:
    if not noise or not noise.get("replicates") or noise["replicates"]["dof"] < 1:
        return []
    rep, res = noise["replicates"]["sigma_log"], noise["residuals"]["sigma_log"]
    if rep > 0 and res > LACK_OF_FIT_RATIO * rep:
        return [f"residual scatter (sigma of ln L {res:.3g}) is {res / rep:.1f}x the replicate run-to-run spread "
                f"({rep:.3g}): the functional form misses the data beyond noise"]
    return []


def distinct_warnings(df, who: str) -> list[str]:
    out = []
    n_budgets = len(np.unique(group_budgets(df["C"].to_numpy(float))))
    n_sizes = len(np.unique(group_budgets(df["N"].to_numpy(float), rel_tol=0.01)))
    if n_budgets < MIN_DISTINCT:
        out.append(f"{who}: only {n_budgets} FLOP budget(s) in the data (need >= {MIN_DISTINCT} for a trend)")
    if n_sizes < MIN_DISTINCT:
        out.append(f"{who}: only {n_sizes} model size(s) in the data (need >= {MIN_DISTINCT} for a trend)")
    return out


def noise_and_range(rec, family: str, df, n_fitted: int) -> list[str]:
    """Store the law's noise estimate and fitted data range in its record (an Approach3Result or KaplanLND);
    warnings if it cannot."""
    rec.data_range = DataRange.from_json(data_range(df), "the fitted data range")
    rec.noise = None
    with np.errstate(all="ignore"):
        pred = np.asarray(family_loss(family, rec.params(), df["N"].to_numpy(float), df["D"].to_numpy(float)), float)
    if not np.all(np.isfinite(pred) & (pred > 0)):
        return ["the fitted law gives non-finite or non-positive losses at some fitted points; no noise estimate"]
    rec.noise = estimate_noise(df, pred, n_fitted)
    return []
