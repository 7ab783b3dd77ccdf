"""What compares the approaches with each other, after the fits: "agreement" (the exponent a of
every allocation law, and the largest pairwise difference), the overall warnings, and
`annotate`, which runs every fitted method's own checks (research/fit/diagnostics.py) and these.

  AGREEMENT_MAX   largest pairwise |difference| in a between the allocation approaches before they are
                  said to disagree
  NOISE_Z         the pair's |difference| in standard errors beyond which noise alone is unlikely to
                  explain it (two-sided 5%)

The yardstick for the largest difference: each approach's standard error of a from its bootstrap
interval (width / (2 z), z the normal quantile of the interval's level), combined as if the two were
independent. They are fitted to the same runs, so their errors are positively correlated and the
combined error overstates the noise in their difference: a pair within it may still differ for a
reason, a pair beyond it differs beyond noise. On the study's design, simulated with its own law
exactly true (benchmarks/design_power.py --approaches 1,2,3), noise alone put the approaches more
than 0.05 apart in 72% of tables.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from research.fit.diagnostics import EXTRAPOLATION_DECADES_C, distinct_warnings, interval_width_warnings
from research.fit.methods import METHODS, allocation_methods
from research.records import Agreement, AgreementEntry, FitResult, NoiseModel, as_fit_result

AGREEMENT_MAX = 0.05
NOISE_Z = 1.96


def disagreement_warnings(result: FitResult) -> list[str]:
    """Pairs of approaches whose bootstrap intervals on a do not overlap."""
    have = []
    for k in allocation_methods():
        rec = result.fitted(k)
        iv = rec.bootstrap.interval("a") if rec is not None and rec.bootstrap is not None else None
        if iv:
            have.append((k, rec.a, iv))
    out = []
    for i in range(len(have)):
        for j in range(i + 1, len(have)):
            (k1, a1, iv1), (k2, a2, iv2) = have[i], have[j]
            if iv1[1] < iv2[0] or iv2[1] < iv1[0]:
                out.append(f"{k1} (a={a1:.3f} [{iv1[0]:.3f}, {iv1[1]:.3f}]) and {k2} (a={a2:.3f} "
                           f"[{iv2[0]:.3f}, {iv2[1]:.3f}]) disagree beyond their intervals: at least one "
                           "approach's assumptions fail on these data")
    return out


def agreement(result: FitResult | dict) -> Agreement:
    """fit.json's "agreement": a and b of every fitted allocation approach (with its bootstrap interval
    when there is one) and the largest pairwise |difference| in a, with the pair."""
    result = as_fit_result(result)
    per = {}
    for k in allocation_methods():
        rec = result.fitted(k)
        if rec is None or rec.a is None:
            continue
        bs = rec.bootstrap
        iv = (bs.intervals if bs is not None else None) or {}
        per[k] = AgreementEntry.of(a=float(rec.a), b=float(rec.b),
                                   a_interval=_whole(iv.get("a")), b_interval=_whole(iv.get("b")),
                                   level=bs.level if iv else None)
    out = Agreement.of(approaches=per, threshold=AGREEMENT_MAX, max_abs_diff_a=None, pair=None)
    names = list(per)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            d = abs(per[names[i]].a - per[names[j]].a)
            if out.max_abs_diff_a is None or d > out.max_abs_diff_a:
                out.max_abs_diff_a, out.pair = d, [names[i], names[j]]
    if out.max_abs_diff_a is None:
        out.extra["note"] = f"{len(per)} allocation approach(es) fitted; agreement needs two"
    else:
        se = [_se(per[k]) for k in out.pair]
        if None not in se and math.hypot(*se) > 0:
            out.diff_over_se = out.max_abs_diff_a / math.hypot(*se)
    return out


def _se(entry: AgreementEntry) -> float | None:
    """The standard error of a implied by the entry's bootstrap interval, or None without one."""
    iv, level = entry.a_interval, entry.level
    if not iv or level is None:
        return None
    return (iv[1] - iv[0]) / (2 * NormalDist().inv_cdf((1 + level) / 2))


def _whole(iv: list | None) -> list | None:
    """An interval with both ends known, else None."""
    return iv if iv and None not in iv else None


def agreement_warnings(block: Agreement | None) -> list[str]:
    if block is None or block.max_abs_diff_a is None or not block.max_abs_diff_a > AGREEMENT_MAX:
        return []
    k1, k2 = block.pair
    a1, a2 = block.approaches[k1].a, block.approaches[k2].a
    noise = ""
    if block.diff_over_se is not None:
        beyond = block.diff_over_se > NOISE_Z
        noise = (f"; that is {block.diff_over_se:.1f} standard errors of the difference (from the two "
                 f"intervals, taken as independent): {'beyond' if beyond else 'within'} what the runs' noise gives")
    return [f"the approaches disagree on a: {k1} gives {a1:.3f}, {k2} {a2:.3f} (|difference| "
            f"{block.max_abs_diff_a:.3f} > {AGREEMENT_MAX}{noise}); the compute-optimal exponent is not settled by "
            "these data: check each approach's warnings, add sizes, token counts or seeds"]


def agreement_line(fit: FitResult | dict) -> str | None:
    """One printed line: each approach's a [interval] and the largest pairwise difference."""
    block = as_fit_result(fit).agreement
    if block is None or not block.approaches:
        return None
    parts = []
    for k, v in block.approaches.items():
        iv = v.a_interval
        parts.append(f"{k} a={v.a:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else ""))
    if block.max_abs_diff_a is not None:
        z = f", {block.diff_over_se:.1f} standard errors" if block.diff_over_se is not None else ""
        parts.append(f"largest |difference| {block.max_abs_diff_a:.3f} ({' vs '.join(block.pair)}; "
                     f"goal <= {block.threshold}{z})")
    return "agreement: " + ", ".join(parts)


def noise_line(fit: FitResult | dict) -> str | None:
    """One printed line: the pooled seed-to-seed noise, or that there are no replicates."""
    noise = as_fit_result(fit).noise
    if noise is None:
        return None
    if not noise.replicates:
        return "seed noise: unmeasured (no (N, D) point has >= 2 seeds)"
    p = noise.pooled
    line = (f"seed noise: pooled std {p.std:.4f} nats/token ({p.rel_std:.2%} of the loss, {p.dof} dof) "
            f"from {noise.replicates} runs at {noise.n_points} (N, D) points")
    model = noise.model or NoiseModel()
    if model.offset_share is not None:
        line += (f"; {model.offset_share:.0%} of it is one offset per trunk (size and seed), so "
                 f"{model.dof_independent} independent dof")
    if model.trend:
        t = model.trend
        line += f"; it scales as (D/N)^{t['exponent']:.2f} over D/N {t['range'][0]:.3g}-{t['range'][1]:.3g}"
    return line


def comparison_warnings(result: FitResult) -> list[str]:
    """The overall warnings that compare approaches (intervals that do not overlap, a beyond
    AGREEMENT_MAX): those a fit merged into a file with other approaches must recompute."""
    return disagreement_warnings(result) + agreement_warnings(result.agreement)


def overall_warnings(result: FitResult | dict, df) -> list[str]:
    result = as_fit_result(result)
    out = distinct_warnings(df, "data")
    fitted = [result.fitted(k) for k in allocation_methods() if result.fitted(k) is not None]
    if fitted and not any(rec.intervals() for rec in fitted):
        out.append("no bootstrap: exponents and optima are reported without intervals, so nothing here says how "
                   "well the data determine them; re-run `scaling fit DIR --bootstrap 200`")
    out += comparison_warnings(result)
    cmax = float(df["C"].max())
    far = [c for c in result.budgets_for_intervals or [] if math.log10(c / cmax) > EXTRAPOLATION_DECADES_C]
    if far and fitted:
        out.append(f"N_opt/D_opt are reported up to C={max(far):.3g}, {math.log10(max(far) / cmax):.1f} decades "
                   f"beyond the largest budget fitted ({cmax:.3g}); there they assume the law holds unchanged")
    return out


def annotate(result: FitResult, df, kaplan_df=None) -> FitResult:
    """Every fitted method's own warnings (and, for a law of L(N, D), its noise and data range), the
    interval-width checks of the allocation laws, "agreement" and the overall warnings; in place."""
    for name, m in METHODS.items():
        rec = result.fitted(name)
        if rec is not None:
            rec.add_warnings(m.annotate(rec, df, kaplan_df))
    for k in allocation_methods():
        rec = result.fitted(k)
        if rec is not None:
            rec.add_warnings(interval_width_warnings(rec))
    result.agreement = agreement(result)
    result.warnings = overall_warnings(result, df)
    return result


def all_warnings(fit: FitResult | dict, keys=None) -> list[str]:
    """Overall warnings then each approach's, prefixed by its name (for printing and plots)."""
    fit = as_fit_result(fit)
    out = list(fit.warnings or [])
    for k in keys or METHODS:
        rec = fit.fitted(k)
        if rec is not None:
            out += [f"{k}: {w}" for w in rec.warnings]
    return out
