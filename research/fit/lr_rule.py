"""Learning-rate calibration: the best peak LR per model size, and a power law LR*(N) across sizes.

Input: an lr sweep (`[design] kind = "lr"`, research/sweep/plan.py): each size N trained at several
peak learning rates (multipliers on the recipe's own), one horizon, every seed a row of results.csv.

Per size (rows whose N agree within SAME_N_RTOL = 0.1%; N counts embeddings), a parabola of the final
eval loss (nats/token) against ln LR is fitted by least squares over every completed row; its vertex
is ln LR*(N) and its value there loss*(N). A size is *refused* (recorded with its reason, left out
of the power law) when it has fewer than three distinct learning rates, when its parabola opens
downward (no minimum), or when the vertex lies outside the learning rates it sampled (the optimum
is not bracketed: extend lr_multipliers on that side). Diverged or failed rows are left out of the
parabola and counted.

Across the calibrated sizes, ln LR* = ln lr_ref + exponent * ln(N / n_ref) by ordinary least squares,
with n_ref the geometric mean of the calibrated N (so lr_ref and the exponent are nearly uncorrelated).

Intervals (95% percentile bootstrap, `bootstrap` resamples, seeded): each size keeps its own set of
learning rates (the design is fixed), and its losses are resampled as a residual bootstrap: the
leverage-corrected, centred residuals of that size's parabola, drawn with replacement and added back
to its fitted values. With one seed per point this is the only resampling that keeps the LR set (a
row resample would drop learning rates and move the vertex for that reason alone); with several seeds
the residuals carry the seed-to-seed noise, so it is inside the intervals. Each resample refits every
size's vertex and the power law; a resample in which a size's vertex leaves its sampled range or its
parabola opens downward leaves that size out of that resample's power law (counted as
`n_unbracketed`), and a resample with fewer than two such sizes is skipped (counted).

Here is the maths and the rule file's format; `research.fit.lr_sweep` reads an lr sweep's directory,
fits and writes DIR/lr_rule.json. The rule is JSON (`kind = "lr_rule"`, RULE_FORM below) with the [train] conditions it was
calibrated under; `AspectRatioRecipe(lr_rule = "rule.json")` uses it for every trial's peak LR within
its coverage: n_range widened by LR_RULE_MARGIN each way (research/sweep/recipe.py).

A batch-size rule is not fitted here. It would take the same parabola-and-power-law machinery, but
not the same data: the optimal batch size depends on the token horizon (the critical batch grows with
the loss reached, Kaplan et al. 2020; McCandlish et al. 2018) and interacts with the LR, so it needs
its own design (sizes x batch sizes x horizons, each at its calibrated LR) costing several times this
study, and on 2 CPU cores the small batches that the demo's models want are throughput-limited, not
optimisation-limited. The demo keeps batch_size fixed and states it in the rule's conditions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.config import ModelConfig
from research.errors import UserError
from research.fsutil import loads_json, read_regular_text

RULE_KIND = "lr_rule"
RULE_VERSION = 1
RULE_FORM = "lr = lr_ref * (N / n_ref) ** exponent"
LR_RULE_MARGIN = 2.0  # a rule covers n_range widened by this factor each way (extrapolating an LR law further is a guess)
SAME_N_RTOL = 1e-3  # rows whose N agree within 0.1% are one size
MIN_LRS = 3  # distinct learning rates a parabola needs
DEFAULT_BOOTSTRAP = 1000
LEVEL = 0.95
CONDITION_KEYS = ("schedule", "batch_size", "decay_fraction", "decay_shape", "min_lr_ratio", "weight_decay",
                  "beta1", "beta2", "eps", "grad_clip")
# The rule's `model` record (what it was calibrated on beyond [train]; research/fit/lr_rule_check.py compares
# it with a sweep's): `families` ({family: [calibrated N]}) and `head_dim` (its values) read from the table, and
# these [model] settings, which move the optimal LR, from a trial's config. A rule file without the record
# (written before it) still loads.
MODEL_SETTING_KEYS = ("mlp", "ffw_ratio", "tie_embeddings", "init_std")


# ---------------------------------------------------------------- the rule itself: one formula, one reader


def rule_lr(n_params: float, lr_ref: float, n_ref: float, exponent: float) -> float:
    """lr = lr_ref * (N / n_ref) ** exponent (RULE_FORM); the one place this formula lives."""
    return lr_ref * math.exp(exponent * math.log(n_params / n_ref))


@dataclass(frozen=True)
class LrRule:
    """A fitted learning-rate rule (RULE_FORM), N counting embeddings, with its calibrated n_range."""

    lr_ref: float
    n_ref: float
    exponent: float
    n_range: tuple[float, float]
    source: str = "<rule>"  # the file it came from, for messages
    conditions: dict | None = field(default=None, compare=False)  # the [train]/[data] settings it was calibrated under
    model: dict | None = field(default=None, compare=False)  # families, head_dim and MODEL_SETTING_KEYS; None: not recorded
    extrapolate: bool = field(default=False, compare=False)  # an lr sweep calibrating beyond the coverage

    def coverage(self) -> tuple[float, float]:
        return self.n_range[0] / LR_RULE_MARGIN, self.n_range[1] * LR_RULE_MARGIN

    def lr(self, n_params: float) -> float:
        """Peak LR for a model of n_params; UserError when N is outside the rule's coverage (unless the
        rule is `extrapolating()`: an lr sweep centres new sizes on it, which is how it is extended)."""
        low, high = self.coverage()
        if not self.extrapolate and not low <= n_params <= high:
            raise UserError(
                f"[recipe] lr_rule {self.source} was calibrated for N in [{self.n_range[0]:,.0f}, {self.n_range[1]:,.0f}] "
                f"and covers [{low:,.0f}, {high:,.0f}] ({LR_RULE_MARGIN:g}x each way); a trial has N = {n_params:,.0f}: "
                f"calibrate at that size (add it to the lr sweep and refit with 'scaling lr-rule') or keep the design "
                f"within the covered range")
        return rule_lr(n_params, self.lr_ref, self.n_ref, self.exponent)

    def extrapolating(self) -> "LrRule":
        return dataclasses.replace(self, extrapolate=True)


def _short(value, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a message names a hostile value without carrying all of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_rule(data, source: str) -> LrRule:
    """An LrRule from a rule file's parsed JSON; UserError (one line) for anything that is not one."""
    if not isinstance(data, dict) or data.get("kind") != RULE_KIND:
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{source} is not an lr rule (kind = {_short(kind)}, expected {RULE_KIND!r}); make one with "
                        f"'scaling lr-rule DIR' on an lr sweep")
    if data.get("version") != RULE_VERSION:
        raise UserError(f"{source}: lr rule version {data.get('version')!r} is not supported (expected {RULE_VERSION})")
    values = {}
    for key in ("lr_ref", "n_ref", "exponent"):
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{source}: {key} = {_short(v)} must be a finite number")
        values[key] = float(v)
    n_range = data.get("n_range")
    if (not isinstance(n_range, list) or len(n_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                       for v in n_range) or n_range[0] > n_range[1]):
        raise UserError(f"{source}: n_range = {_short(n_range)} must be [min N, max N], two positive finite numbers")
    if values["lr_ref"] <= 0 or values["n_ref"] <= 0:
        raise UserError(f"{source}: lr_ref and n_ref must be positive (lr_ref = {values['lr_ref']}, n_ref = {values['n_ref']})")
    if not -2 <= values["exponent"] <= 2:
        raise UserError(f"{source}: exponent = {values['exponent']} is outside [-2, 2]; refit the rule")
    for key in ("conditions", "model"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise UserError(f"{source}: {key} = {_short(data[key])} must be an object of settings; refit the rule")
    families = (data.get("model") or {}).get("families")
    if families is not None and not (isinstance(families, dict) and all(
            isinstance(ns, list) and ns and all(isinstance(n, (int, float)) and not isinstance(n, bool)
                                                and math.isfinite(n) and n > 0 for n in ns)
            for ns in families.values())):
        raise UserError(f"{source}: model.families = {_short(families)} must map each family to its calibrated N; "
                        f"refit the rule")
    return LrRule(lr_ref=values["lr_ref"], n_ref=values["n_ref"], exponent=values["exponent"],
                  n_range=(float(n_range[0]), float(n_range[1])), source=source,
                  conditions=data.get("conditions"), model=data.get("model"))


def run_settings(config: dict) -> dict:
    """The settings of one run that a rule records and a sweep is checked on, from its config as a dict
    (RunConfig.to_dict(), or a trial.json's "config"): CONDITION_KEYS of [train], seq_len, corpus,
    tokenizer, head_dim and MODEL_SETTING_KEYS (ffw_ratio = the MLP's hidden width / d_model). A key the
    config lacks is left out."""
    train, model, data = (config.get(k) if isinstance(config.get(k), dict) else {} for k in ("train", "model", "data"))
    out = {k: train[k] for k in CONDITION_KEYS if k in train}
    out.update(seq_len=model.get("seq_len"), corpus=data.get("corpus"), tokenizer=data.get("tokenizer"))
    d_model, heads, ffw = model.get("d_model"), model.get("heads"), model.get("ffw")
    if isinstance(d_model, int) and isinstance(heads, int) and d_model > 0 and heads > 0:
        shape = ModelConfig(d_model=d_model, heads=heads, ffw=ffw if isinstance(ffw, int) else None)
        out.update(head_dim=shape.head_dim, ffw_ratio=shape.d_ffw / shape.d_model)
    out.update({k: model.get(k) for k in MODEL_SETTING_KEYS if k != "ffw_ratio"})
    return {k: v for k, v in out.items() if v is not None}


def load_rule(path) -> LrRule:
    """Read and check a rule JSON file; UserError (one line) when missing, not JSON or not an lr rule."""
    path = Path(path)
    try:
        text = read_regular_text(path, "[recipe] lr_rule:")
    except FileNotFoundError:
        raise UserError(f"[recipe] lr_rule: file not found: {path} (paths are relative to the sweep file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: a path with a NUL byte
        raise UserError(f"[recipe] lr_rule: cannot read {str(path)[:200]!r} ({type(err).__name__})") from None
    try:
        data = loads_json(text, f"[recipe] lr_rule: {path}")
    except json.JSONDecodeError as err:
        raise UserError(f"[recipe] lr_rule: {path} is not JSON (line {err.lineno}: {err.msg})") from None
    return parse_rule(data, str(path))


# ---------------------------------------------------------------- the fit


def size_groups(n_params: np.ndarray) -> np.ndarray:
    """Label per row: rows whose N agree within SAME_N_RTOL share a label (sizes in increasing N)."""
    order = np.argsort(n_params, kind="stable")
    labels = np.empty(len(n_params), int)
    label, anchor = -1, None
    for i in order:
        if anchor is None or abs(n_params[i] / anchor - 1) > SAME_N_RTOL:
            label, anchor = label + 1, n_params[i]
        labels[i] = label
    return labels


def parabola(ln_lr: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (c2, c1, c0) of loss = c2 x^2 + c1 x + c0, x = ln LR."""
    return np.polyfit(ln_lr, loss, 2)


def _exp_text(x: float) -> str:
    """e^x for a message; a nearly flat parabola's vertex can lie beyond any float (e^1000)."""
    return f"{math.exp(x):.3g}" if abs(x) < 700 else f"e^{x:.4g}"


def vertex(coef: np.ndarray, ln_lr: np.ndarray) -> tuple[float | None, str | None]:
    """(ln LR*, None) for a parabola with its minimum inside the sampled range, else (None, reason)."""
    c2, c1, _ = coef
    if not c2 > 0:
        return None, "the parabola in ln LR opens downward or is flat (no minimum): the losses do not bend up on both sides"
    x = -c1 / (2 * c2)
    low, high = float(np.min(ln_lr)), float(np.max(ln_lr))
    if x < low:
        return None, (f"the best LR (vertex at {_exp_text(x)}) lies below the lowest sampled LR {math.exp(low):.3g}: "
                      "add smaller lr_multipliers")
    if x > high:
        return None, (f"the best LR (vertex at {_exp_text(x)}) lies above the highest sampled LR {math.exp(high):.3g}: "
                      "add larger lr_multipliers")
    return float(x), None


def power_law(n_params: np.ndarray, ln_lr_opt: np.ndarray, n_ref: float) -> tuple[float, float]:
    """(ln lr_ref, exponent) of ln LR* = ln lr_ref + exponent * ln(N / n_ref), ordinary least squares."""
    exponent, intercept = np.polyfit(np.log(n_params / n_ref), ln_lr_opt, 1)
    return float(intercept), float(exponent)


@dataclass
class _Size:
    n_params: float
    ln_lr: np.ndarray
    loss: np.ndarray
    n_left_out: int  # diverged / failed rows of this size
    coef: np.ndarray | None = None
    x_opt: float | None = None
    refused: str | None = None


def _sizes(n_params, lr, loss) -> list[_Size]:
    n_params, lr, loss = (np.asarray(v, float) for v in (n_params, lr, loss))
    sizes = []
    labels = size_groups(n_params)
    for label in range(labels.max() + 1 if len(labels) else 0):
        rows = labels == label
        ok = rows & np.isfinite(loss) & np.isfinite(lr) & (lr > 0)
        size = _Size(n_params=float(np.median(n_params[rows])), ln_lr=np.log(lr[ok]), loss=loss[ok],
                     n_left_out=int(rows.sum() - ok.sum()))
        distinct = len(np.unique(np.round(size.ln_lr, 9)))
        if distinct < MIN_LRS:
            size.refused = (f"{distinct} distinct learning rate(s) with a finite loss; a parabola needs {MIN_LRS}"
                            + (f" ({size.n_left_out} run(s) diverged or failed)" if size.n_left_out else ""))
        else:
            size.coef = parabola(size.ln_lr, size.loss)
            size.x_opt, size.refused = vertex(size.coef, size.ln_lr)
        sizes.append(size)
    return sizes


def _residual_resampler(size: _Size):
    """Fitted values and leverage-corrected centred residuals of a size's parabola (Davison & Hinkley 1997, 6.2)."""
    X = np.vander(size.ln_lr, 3)
    fitted = X @ size.coef
    hat = np.einsum("ij,ji->i", X, np.linalg.pinv(X))
    scale = np.sqrt(np.clip(1.0 - hat, 1e-6, None))
    residuals = (size.loss - fitted) / scale
    return fitted, residuals - residuals.mean()


def _percentile(samples, level=LEVEL) -> list[float] | None:
    samples = np.asarray([s for s in samples if s is not None and np.isfinite(s)], float)
    if len(samples) < 2:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))]


def _band(law: np.ndarray, n_ref: float, n_range: list[float], points: int = 25) -> dict | None:
    """Pointwise 95% band of the power law's lr(N) over the rule's coverage, from the bootstrap laws."""
    if len(law) < 2:
        return None
    n = np.geomspace(n_range[0] / LR_RULE_MARGIN, n_range[1] * LR_RULE_MARGIN, points)
    ln_lr = law[:, :1] + law[:, 1:] * np.log(n / n_ref)[None, :]  # resamples x points
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(ln_lr, [tail, 100 - tail], axis=0)
    return {"level": LEVEL, "n": n.tolist(), "lr_low": np.exp(low).tolist(), "lr_high": np.exp(high).tolist()}


def fit_lr_rule(n_params, lr, loss, *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict:
    """Fit per-size optima and the power law (see the module docstring). Returns the rule's fitted fields
    (lr_ref, n_ref, exponent, intervals, n_range, per_size, bootstrap); UserError when fewer than two sizes
    can be calibrated."""
    sizes = _sizes(n_params, lr, loss)
    good = [s for s in sizes if s.refused is None]
    if len(good) < 2:
        why = "; ".join(f"N = {s.n_params:,.0f}: {s.refused}" for s in sizes if s.refused)[:400]
        raise UserError(f"an lr rule needs at least two calibrated sizes, got {len(good)} of {len(sizes)}"
                        + (f" ({why})" if why else ""))
    n_good = np.array([s.n_params for s in good])
    n_ref = float(np.exp(np.mean(np.log(n_good))))
    ln_lr_ref, exponent = power_law(n_good, np.array([s.x_opt for s in good]), n_ref)

    rng = np.random.default_rng(seed)
    resamplers = {id(s): _residual_resampler(s) for s in good}
    exact = [s.n_params for s in good if len(s.loss) <= 3]
    no_interval = (f"no intervals: the parabola of N = {exact[0]:,.0f} passes through its {MIN_LRS} runs exactly (no "
                   "residuals to resample); add learning rates or seeds") if exact and bootstrap else None
    if no_interval:
        bootstrap = 0
    per_size_samples = {id(s): [] for s in good}
    law_samples, unbracketed, skipped = [], 0, 0
    for _ in range(bootstrap):
        ns, xs = [], []
        for s in good:
            fitted, residuals = resamplers[id(s)]
            loss_b = fitted + rng.choice(residuals, size=len(residuals), replace=True)
            x, why = vertex(parabola(s.ln_lr, loss_b), s.ln_lr)
            per_size_samples[id(s)].append(x)
            if why is None:
                ns.append(s.n_params)
                xs.append(x)
            else:
                unbracketed += 1
        if len(ns) < 2:
            skipped += 1
            continue
        law_samples.append(power_law(np.array(ns), np.array(xs), n_ref))
    law = np.array(law_samples) if law_samples else np.empty((0, 2))
    exp_iv = _percentile(law[:, 1]) if len(law) else None
    ln_ref_iv = _percentile(law[:, 0]) if len(law) else None

    per_size = []
    for s in sizes:
        row = {"n_params": s.n_params, "n_runs": int(len(s.loss)), "n_left_out": s.n_left_out,
               "lr_range": [float(np.exp(s.ln_lr.min())), float(np.exp(s.ln_lr.max()))] if len(s.ln_lr) else None,
               "parabola_ln_lr": [float(c) for c in s.coef] if s.coef is not None else None}
        if s.refused is not None:
            row.update(lr_opt=None, interval=None, loss_opt=None, refused=s.refused)
        else:
            iv = _percentile(per_size_samples[id(s)])
            row.update(lr_opt=math.exp(s.x_opt), interval=[math.exp(v) for v in iv] if iv else None,
                       loss_opt=float(np.polyval(s.coef, s.x_opt)), curvature=float(s.coef[0]),
                       bootstrap_unbracketed=sum(x is None for x in per_size_samples[id(s)]))
        per_size.append(row)
    n_range = [float(n_good.min()), float(n_good.max())]
    return {"lr_ref": math.exp(ln_lr_ref), "n_ref": n_ref, "exponent": exponent,
            "intervals": {"level": LEVEL, "exponent": exp_iv,
                          "lr_ref": [math.exp(v) for v in ln_ref_iv] if ln_ref_iv else None},
            "n_range": n_range,
            "band": _band(law, n_ref, n_range),
            "per_size": per_size,
            "bootstrap": {"resamples": bootstrap, "seed": seed, "used": int(len(law)), "skipped": skipped,
                          "size_vertices_unbracketed": unbracketed,
                          "method": "residual bootstrap within each size (its LR set kept), percentile intervals",
                          **({"note": no_interval} if no_interval else {})}}


def rule_document(fitted: dict, conditions: dict, source: dict, model: dict | None = None) -> dict:
    """The rule file's JSON object: fit_lr_rule's fields with the form, coverage, conditions, the model
    record (families, head_dim, MODEL_SETTING_KEYS; left out when None) and source."""
    return {"kind": RULE_KIND, "version": RULE_VERSION, "form": RULE_FORM, **fitted,
            "n_counts": "N counts embeddings", "loss": "final_eval_loss, nats/token",
            "coverage": {"margin": LR_RULE_MARGIN,
                         "n": [fitted["n_range"][0] / LR_RULE_MARGIN, fitted["n_range"][1] * LR_RULE_MARGIN]},
            "conditions": conditions, **({"model": model} if model is not None else {}), "source": source}
