"""Does a sweep train what its learning-rate rule was calibrated on? The lines `scaling sweep plan` and
`scaling sweep run` print (and plan.json keeps, `lr_rule_notes`) when a recipe applies a rule.

A rule (research/fit/lr_rule.py) records its calibration's [train]/[data] `conditions` and a `model`
record: the family of each calibrated size, the head dimensions and the [model] settings that move the
optimal LR (MODEL_SETTING_KEYS). LR* depends on all of them (a 2-layer model takes another LR than a
1-layer one of the same N; so does a SwiGLU MLP, another batch size or optimiser), so a rule applied
outside them sets learning rates it never measured. Each of these is checked against the sweep's planned
trials, and each mismatch is ONE line naming the key, the rule's value, the sweep's value and the fix:

- `warning:` a family the rule never calibrated, or a rule calibrated across several families (its
  exponent mixes the change of architecture with N); any CONDITION_KEYS, seq_len, corpus, tokenizer,
  head_dim or MODEL_SETTING_KEYS value that differs (decay_fraction / decay_shape only when both sides
  run WSD).
- `note:` a horizon more than HORIZON_FACTOR (10x) from the calibration's (LR* falls as the horizon
  grows), a warmup more than WARMUP_FACTOR (2x) from the calibration's (in tokens), sizes outside the
  calibrated n_range but inside the coverage the rule extrapolates to (outside it, planning refuses:
  LrRule.lr), and a rule file without the record (written before it existed), whose model is not checked.

They are warnings, not refusals: a sweep may knowingly apply a rule elsewhere (a comparison that keeps
one rule for both arms), and sweeps planned before this check must still plan the same trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from research.fit.lr_rule import CONDITION_KEYS, MODEL_SETTING_KEYS, LrRule

HORIZON_FACTOR = 10.0  # a note when the sweep's horizons lie further than this from the calibration's
WARMUP_FACTOR = 2.0  # a note when the sweep's warmups (tokens) lie further than this from the calibration's
COMPARED_KEYS = CONDITION_KEYS + ("seq_len", "corpus", "tokenizer")  # conditions compared exactly
WSD_ONLY = ("decay_fraction", "decay_shape")  # settings of a WSD cooldown: compared when both sides run WSD
FIX = "docs/how-to/lr-calibration.md"


@dataclass(frozen=True)
class PlannedRun:
    """One planned trial as the check sees it."""

    n_params: float  # N, embeddings counted
    tokens: float  # its horizon D
    family: str  # its recipe's model family
    warmup_tokens: float | None  # its warmup, in tokens (None: the config's default)
    settings: dict  # run_settings(its config): the keys a rule records


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _values(values, limit: int = 60) -> str:
    """The values, each cut to `limit` characters (a rule file's hostile 200 kB string stays one short line)."""
    values = list(values)
    text = [repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v) for v in values[:8]]
    more = f", ... ({len(values)} values)" if len(values) > 8 else ""
    return ", ".join(t if len(t) <= limit else t[:limit - 3] + "..." for t in text) + more


def _distinct(values) -> list:
    out = []
    for v in values:
        if not any(_same(v, seen) for seen in out):
            out.append(v)
    return out


def _n_span(ns) -> str:
    low, high = min(ns), max(ns)
    return f"N {low:,.0f}" if low == high else f"N {low:,.0f}-{high:,.0f}"


def _recalibrate(what: str) -> str:
    return (f"recalibrate with an lr design ([design] kind = \"lr\") {what}, then 'scaling lr-rule DIR' "
            f"(see {FIX})")


def rule_checks(rule: LrRule, runs: list[PlannedRun]) -> list[str]:
    """The warning and note lines for a sweep of `runs` whose recipe applies `rule` (see the module docstring)."""
    if not runs:
        return []
    name = f"[recipe] lr_rule {Path(rule.source).name}"
    lines = _family_lines(rule, runs, name)
    conditions = rule.conditions or {}
    model = rule.model or {}
    sweep_schedules = {r.settings.get("schedule") for r in runs}
    fix = _recalibrate("under this sweep's settings")
    for key in COMPARED_KEYS + ("head_dim",) + MODEL_SETTING_KEYS:
        recorded = model.get(key) if key == "head_dim" or key in MODEL_SETTING_KEYS else conditions.get(key)
        if recorded is None:
            continue
        if key in WSD_ONLY and (conditions.get("schedule") != "wsd" or sweep_schedules != {"wsd"}):
            continue
        allowed = recorded if isinstance(recorded, list) else [recorded]
        planned = _distinct(r.settings[key] for r in runs if key in r.settings)
        off = [v for v in planned if not any(_same(v, a) for a in allowed)]
        if off:
            lines.append(f"warning: {name}: {key} = {_values(allowed)} in its calibration, {_values(planned)} in this "
                         f"sweep: the optimal LR depends on it; {fix}")
    lines += _horizon_lines(rule, runs, name)
    if rule.model is None:
        lines.append(f"note: {name} does not record the model family or [model] settings it was calibrated on (a rule "
                     f"file from before they were recorded): they are not checked; refit it with 'scaling lr-rule DIR' "
                     f"(see {FIX})")
    else:
        missing = [k for k in ("families", "head_dim") + MODEL_SETTING_KEYS if k not in model]
        if missing:
            lines.append(f"note: {name} does not record {', '.join(missing)} of its calibration: not checked; refit it "
                         f"with 'scaling lr-rule DIR' (--sweep FILE where DIR keeps no trials; see {FIX})")
    return lines


def _family_lines(rule: LrRule, runs: list[PlannedRun], name: str) -> list[str]:
    families = (rule.model or {}).get("families")
    if not families:
        return []
    planned: dict[str, list[float]] = {}
    for r in runs:
        planned.setdefault(r.family, []).append(r.n_params)
    unseen = [f for f in planned if f not in families]
    if len(families) < 2 and not unseen:
        return []
    why = []
    if len(families) > 1:
        why.append(f"a rule fitted across {len(families)} families mixes the change of architecture with N")
    if unseen:
        why.append(f"it never calibrated {', '.join(unseen)}")
    calibrated = ", ".join(f"{f} ({_n_span(ns)})" for f, ns in families.items())
    sweep = ", ".join(f"{f} ({_n_span(ns)})" for f, ns in planned.items())
    return [f"warning: {name}: family = {calibrated} in its calibration, {sweep} in this sweep: {'; '.join(why)}; "
            + _recalibrate(f"on this sweep's family ({', '.join(planned)})")]


def _horizon_lines(rule: LrRule, runs: list[PlannedRun], name: str) -> list[str]:
    conditions = rule.conditions or {}
    lines = []
    horizon = conditions.get("tokens")
    if _positive(horizon):
        low, high = min(r.tokens for r in runs), max(r.tokens for r in runs)
        if high > HORIZON_FACTOR * horizon or low < horizon / HORIZON_FACTOR:
            lines.append(f"note: {name}: tokens (the horizon) = {horizon:,.0f} in its calibration, {low:,.0f}-{high:,.0f} "
                         f"in this sweep (beyond {HORIZON_FACTOR:g}x): LR* falls as the horizon grows, so the longest runs "
                         f"may be over-driven and the shortest under-driven; "
                         + _recalibrate("at a horizon inside this sweep's"))
    fraction = conditions.get("warmup_fraction")
    warmups = [r.warmup_tokens for r in runs if r.warmup_tokens is not None]
    if _positive(horizon) and _positive(fraction) and warmups:
        warmup = fraction * horizon
        low, high = min(warmups), max(warmups)
        if high > WARMUP_FACTOR * warmup or low < warmup / WARMUP_FACTOR:
            lines.append(f"note: {name}: warmup = {warmup:,.0f} tokens in its calibration, {low:,.0f}-{high:,.0f} in this "
                         f"sweep (beyond {WARMUP_FACTOR:g}x): a shorter warmup tolerates a lower peak LR; keep the "
                         f"calibration's ([recipe] warmup_tokens) or " + _recalibrate("with this sweep's warmup"))
    outside = sorted({r.n_params for r in runs if not rule.n_range[0] <= r.n_params <= rule.n_range[1]})
    if outside and rule.extrapolate:  # an lr sweep calibrating new sizes around the rule's guess for them
        lines.append(f"note: {name}: N = {rule.n_range[0]:,.0f}-{rule.n_range[1]:,.0f} in its calibration; this lr sweep "
                     f"samples {', '.join(f'{n:,.0f}' for n in outside)} around the rule extrapolated there: fit the "
                     f"rule from both lr sweeps at once ('scaling lr-rule DIR1 DIR2') to cover them")
    elif outside:
        lines.append(f"note: {name}: N = {rule.n_range[0]:,.0f}-{rule.n_range[1]:,.0f} in its calibration, "
                     f"{', '.join(f'{n:,.0f}' for n in outside)} in this sweep outside it (inside the coverage it "
                     f"extrapolates to): " + _recalibrate("that includes these sizes"))
    return lines
