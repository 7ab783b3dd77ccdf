"""Predicted loss L(N, D) with prediction intervals, from a published law or a `fit.json`.

Only two of the fitted forms give the loss of an arbitrary (N, D):

* Approach 3 (Hoffmann et al. 2022 §3.3): L(N, D) = E + A/N^α + B/D^β
  (`research.fit.laws.ChinchillaLaw.loss`);
* Kaplan et al. 2020's joint law: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D
  (`research.fit.kaplan.kaplan_joint`; N as the fit counted it, non-embedding by default).

Approaches 1 and 2 (the training-curve envelope and IsoFLOP profiles) give only
the compute-optimal allocation N_opt(C), D_opt(C): they say nothing about the
loss of a model off that frontier, so they cannot predict L(N, D).

The prediction interval is for a *new run's measured loss* at (N, D), at `level`:
parameter uncertainty (one law per bootstrap resample of the fit) combined with
run-to-run noise (σ of ln L, from replicate runs or the fit's residual scatter,
see `research.fit.noise`), by Monte Carlo: ln L = ln L_s(N, D) + σ·z over resamples
s and standard normal z. Published laws carry no published uncertainty here, so
they give point predictions only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from research.errors import UserError, closest
from research.fit.families import CHINCHILLA_KEYS, FAMILY_FORMS, FAMILY_KEYS, KAPLAN_KEYS, family_loss  # noqa: F401
from research.fit.kaplan import PUBLISHED as KAPLAN_PUBLISHED
from research.fit.law_warnings import fit_warnings, law_own_warnings, range_warnings
from research.fit.laws import PUBLISHED, ChinchillaLaw, published
from research.fit.methods import METHODS, loss_methods
from research.fit.noise import noise_sigma
from research.fsutil import loads_json, read_regular_text
from research.guards import law_bootstrap, law_data_range, law_noise
from research.records import FitResult, as_fit_result
from research.train.sweep_dir import SweepDir

MC_DRAWS = 4000  # Monte Carlo draws per (N, D) for the interval

NO_LOSS_APPROACHES = tuple(name for name, m in METHODS.items() if m.law is None)  # allocation only
NO_LOSS_MESSAGE = ("{which} gives only the compute-optimal allocation N_opt(C), D_opt(C), not the loss of an "
                   "arbitrary (N, D); predict with --approach approach3 (E + A/N^alpha + B/D^beta) or kaplan "
                   "(Kaplan's joint L(N, D)), fitted by `scaling fit DIR --method approach3|kaplan`")


@dataclass
class Predictor:
    """A law that gives L(N, D), with optional bootstrap samples and a noise σ of ln L."""

    name: str
    family: str  # "chinchilla" | "kaplan"
    params: dict
    source: str = ""
    samples: dict | None = None  # family keys -> arrays (S,), one law per bootstrap resample
    samples_drawn: int | None = None  # resamples the fit drew, usable or not (samples keeps the usable ones)
    noise: dict | None = None  # research.fit.noise.estimate_noise output
    n_kind: str = "total"
    data_range: dict | None = None
    notes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)  # the fit's own (research.fit.law_warnings.fit_warnings)
    fit_block: dict | None = field(default=None, repr=False)

    @property
    def form(self) -> str:
        return FAMILY_FORMS[self.family]

    def loss(self, N, D):
        return family_loss(self.family, self.params, N, D)

    def loss_samples(self, N, D):
        """(S, P) losses of every bootstrap law at the P pairs, or None without a bootstrap."""
        if not self.samples:
            return None
        p = {k: np.asarray(v, float)[:, None] for k, v in self.samples.items()}
        return family_loss(self.family, p, np.asarray(N, float)[None, :], np.asarray(D, float)[None, :])


# ----------------------------------------------------------------------------- loading

def _check_params(params: dict, keys, where: str) -> dict:
    missing = [k for k in keys if k not in params]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)} (needs {', '.join(keys)}); "
                        "re-run `scaling fit` or complete the law file")
    out = {}
    for k in keys:
        v = params[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{where}: parameter {k} must be a finite number, got {v!r}")
        out[k] = float(v)
    bad = [k for k in keys if k != "E" and not out[k] > 0] + (["E"] if out.get("E", 0) < 0 else [])
    if bad:
        raise UserError(f"{where}: parameter(s) {', '.join(bad)} must be positive "
                        f"({', '.join(f'{k}={out[k]:g}' for k in bad)})")
    return out


def _samples(block: dict, keys) -> dict | None:
    law_bootstrap(block, "law file")
    s = (block.get("bootstrap") or {}).get("samples")
    if not isinstance(s, dict) or not all(k in s for k in keys):
        return None
    arr = {k: np.asarray([np.nan if v is None else v for v in s[k]], float) for k in keys}
    ok = np.all([np.isfinite(v) for v in arr.values()], axis=0)
    ok &= np.all([arr[k] > 0 for k in keys if k != "E"], axis=0)
    if ok.sum() < 2:
        return None
    return {k: v[ok] for k, v in arr.items()}


def _drawn(block: dict) -> int | None:
    """How many bootstrap resamples the fit recorded (before `_samples` drops the unusable ones)."""
    s = (block.get("bootstrap") or {}).get("samples")
    first = next(iter(s.values()), None) if isinstance(s, dict) else None
    return len(first) if isinstance(first, list) else None


def usable_laws_text(pred: Predictor) -> str:
    """'183 of 200 bootstrap laws (17 dropped: ...)', or 'N bootstrap laws' when none was dropped."""
    kept = len(next(iter(pred.samples.values())))
    drawn = pred.samples_drawn or kept
    if drawn <= kept:
        return f"{kept} bootstrap laws"
    return (f"{kept} of {drawn} bootstrap laws; {drawn - kept} resamples were dropped because a parameter "
            "came out non-finite, or A, B or an exponent not positive (a resample the law's form cannot use)")


def predictor_from_fit(fit: FitResult | dict, approach: str | None = None, name: str = "fit") -> Predictor:
    """A Predictor from a fit.json dict: its approach3 or kaplan block, or a bare law file holding
    E, A, B, alpha, beta (or N_c, D_c, alpha_N, alpha_D) at the top level."""
    if not isinstance(fit, (dict, FitResult)):
        raise UserError(f"{name} does not hold a JSON object; pass a fit.json written by `scaling fit`")
    if approach in NO_LOSS_APPROACHES:
        raise UserError(NO_LOSS_MESSAGE.format(which=f"{approach} (Chinchilla Approach {approach[-1]})"))
    for family, keys in FAMILY_KEYS.items():
        if approach is None and isinstance(fit, dict) and any(k in fit for k in keys) \
                and not any(k in fit for k in APPROACH_KEYS):
            params = _check_params(fit, keys, f"law file {name}")
            return Predictor(name, family, params, source=f"law file {name}", samples=_samples(fit, keys),
                             samples_drawn=_drawn(fit),
                             noise=law_noise(fit.get("noise"), name), n_kind=fit.get("n_kind", "total"),
                             data_range=law_data_range(fit.get("data_range"), name), warnings=fit_warnings(fit, None),
                             fit_block=fit)
    rec = as_fit_result(fit, f"fit file {name}")
    if approach is None:
        approach = next((m for m in loss_methods() if rec.fitted(m) is not None and _has_law(rec.fitted(m), m)), None)
        if approach is None:
            have = [k for k in NO_LOSS_APPROACHES if rec.fitted(k) is not None]
            if have:
                raise UserError(NO_LOSS_MESSAGE.format(which=f"{name} holds only {' and '.join(have)}, which"))
            raise UserError(f"{name} holds no Approach 3 or Kaplan L(N, D) result; run "
                            "`scaling fit DIR --method approach3` first, or pass a published law "
                            f"({', '.join(PUBLISHED)})")
    block = rec.method(approach)
    if block is None or block.skipped:
        why = f" ({block.reason})" if block is not None else ""
        raise UserError(f"{name} has no usable {approach!r} result{why}; run "
                        f"`scaling fit DIR --method {approach}` first or pick another --approach")
    if approach not in METHODS or METHODS[approach].law is None:
        raise UserError(f"unknown approach {approach!r}; use {' or '.join(loss_methods())}")
    try:
        law = METHODS[approach].law(block)
    except UserError as err:
        raise UserError(f"{name}'s {err}") from None
    keys = FAMILY_KEYS[law.family]
    where = f"{name} {approach}" + ("" if law.block is block else " L_ND")
    # the law's record as JSON: the checks below also serve bare law files (the branch above)
    law_json, block_json = law.block.to_json(), block.to_json()
    params = _check_params(law_json, keys, where)
    rng = law.block.data_range
    return Predictor(f"{name}:{approach}", law.family, params, source=law.source, samples=_samples(law_json, keys),
                     samples_drawn=_drawn(law_json), noise=law_noise(law.block.noise, name), n_kind=law.n_kind,
                     data_range=law_data_range(None if rng is None else rng.to_json(), name), notes=list(law.notes),
                     warnings=fit_warnings(rec.to_json(), block_json),
                     fit_block=block_json if law.block is block else None)


def _has_law(block, approach: str) -> bool:
    try:
        METHODS[approach].law(block)
    except UserError:
        return False
    return True


APPROACH_KEYS = tuple(METHODS)


def published_predictor(name: str) -> Predictor:
    law = published(name)
    if name == "kaplan-2020":
        return Predictor("kaplan-2020", "kaplan", dict(KAPLAN_PUBLISHED["L_ND"]),
                         source="Kaplan et al. 2020 joint law (alpha_N 0.076, alpha_D 0.103, N_c 6.4e13, "
                                "D_c 1.8e13)", n_kind="nonembedding",
                         data_range=law.data_range,
                         notes=["N is non-embedding parameters and the loss is Kaplan's (WebText2, their "
                                "tokenizer), as published",
                                "no published uncertainty: point prediction only"])
    if not isinstance(law, ChinchillaLaw):
        raise UserError(f"{name} is an allocation N_opt(C), D_opt(C) only ({law.source}); it gives no L(N, D) "
                        "to predict with: use a law with a loss, e.g. chinchilla-approach3 or epoch-2024")
    return Predictor(name, "chinchilla", {k: getattr(law, k) for k in CHINCHILLA_KEYS}, source=law.source,
                     data_range=law.data_range,
                     notes=["no published uncertainty: point prediction only"])


def load_predictor(spec: str, approach: str | None = None) -> Predictor:
    """A published law name (chinchilla, epoch-2024, kaplan-2020) or a fit.json / sweep dir / law file."""
    import json
    from pathlib import Path

    if spec in PUBLISHED:
        if approach is not None:
            raise UserError(f"--approach applies to a fit.json, not to the published law {spec!r}")
        return published_predictor(spec)
    path = Path(spec)
    if path.is_dir():
        path = SweepDir(path).fit_path
    if not path.exists():
        raise UserError(f"unknown law {spec!r}{closest(spec, PUBLISHED)}: not a published law "
                        f"({', '.join(PUBLISHED)}) and no such file; run `scaling fit` first")
    try:
        data = loads_json(read_regular_text(path, "law file"), f"law file {path}")
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); pass a fit.json written by `scaling fit`") from None
    return predictor_from_fit(data, approach, name=str(path))


# ----------------------------------------------------------------------------- predicting

def check_pairs(N, D) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) float arrays of equal length, every value positive and finite; or one UserError line."""
    N = np.atleast_1d(np.asarray(N, dtype=float))
    D = np.atleast_1d(np.asarray(D, dtype=float))
    if len(N) == 1 and len(D) > 1:
        N = np.full(len(D), N[0])
    elif len(D) == 1 and len(N) > 1:
        D = np.full(len(N), D[0])
    if len(N) != len(D):
        raise UserError(f"got {len(N)} --n-params values and {len(D)} --tokens values; give one of each per "
                        "pair (or a single value to pair with every value of the other)")
    if len(N) == 0:
        raise UserError("no (N, D) pairs to predict; pass --n-params and --tokens, or --csv FILE")
    for arr, what in ((N, "n_params"), (D, "tokens")):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{what} must be a positive finite number, got {arr[i]:g} (pair {i + 1}); "
                            "e.g. --n-params 1e9 --tokens 2e10")
    return N, D


def interval_description(pred: Predictor, level: float) -> dict:
    params = "bootstrap" if pred.samples else None
    noise = pred.noise.get("kind") if pred.noise else None
    sigma = (pred.noise or {}).get("sigma_log")
    said = (pred.noise or {}).get("description") or (f"{noise} noise, sigma of ln L {sigma:.3g}" if sigma is not None
                                                      else f"{noise} noise")
    if params and noise:
        text = (f"{level:.0%} prediction interval for a new run: parameter uncertainty "
                f"({usable_laws_text(pred)}) plus run-to-run noise: "
                f"{said}")
    elif noise:
        fix = ("the Kaplan fit has no bootstrap" if pred.family == "kaplan"
               else "the fit has no bootstrap (re-run `scaling fit --bootstrap 200`)")
        text = (f"{level:.0%} interval from run-to-run noise only ({said}); parameter "
                f"uncertainty NOT included: {fix}")
    elif params:
        text = (f"{level:.0%} interval from parameter uncertainty only; run-to-run noise NOT included "
                "(the fit records no noise estimate: re-run `scaling fit`)")
    else:
        text = "no interval: the law carries no uncertainty (point prediction)"
    return {"level": level, "parameter_uncertainty": params, "noise": noise,
            "sigma_log": pred.noise.get("sigma_log") if pred.noise else None, "description": text}


def predict(pred: Predictor, N, D, level: float = 0.95, seed: int = 0) -> dict:
    """{"rows": [{n_params, tokens, loss, loss_low, loss_high, ...}], "interval": {...}, "warnings": [...]}."""
    if not 0 < level < 1:
        raise UserError(f"--level must be between 0 and 1, got {level}")
    N, D = check_pairs(N, D)
    point = np.asarray(pred.loss(N, D), float)
    lo = hi = p_lo = p_hi = None
    q = [(1 - level) / 2, (1 + level) / 2]
    sigma = noise_sigma(pred.noise, N, D)  # per point: the seed noise at its own D/N where it was modelled
    samples = pred.loss_samples(N, D)
    if samples is not None:
        ln_s = np.log(samples)  # (S, P)
        p_lo, p_hi = np.exp(np.nanquantile(ln_s, q, axis=0))
        if sigma is not None:
            reps = max(1, -(-MC_DRAWS // len(ln_s)))
            z = np.random.default_rng(seed).standard_normal((len(ln_s) * reps, 1))
            draws = np.repeat(ln_s, reps, axis=0) + sigma * z
            lo, hi = np.exp(np.nanquantile(draws, q, axis=0))
        else:
            lo, hi = p_lo, p_hi
    elif sigma is not None:
        from statistics import NormalDist

        k = NormalDist().inv_cdf(q[1])
        lo, hi = point * np.exp(-k * sigma), point * np.exp(k * sigma)
    rows = []
    for i in range(len(N)):
        row = {"n_params": float(N[i]), "tokens": float(D[i]), "tokens_per_param": float(D[i] / N[i]),
               "flops_6nd": 6.0 * float(N[i]) * float(D[i]), "loss": float(point[i]),
               "loss_low": None if lo is None else float(lo[i]),
               "loss_high": None if hi is None else float(hi[i])}
        if p_lo is not None:
            row["loss_low_params_only"] = float(p_lo[i])
            row["loss_high_params_only"] = float(p_hi[i])
        rows.append(row)
    warns = list(pred.warnings) + law_own_warnings(pred.params.get("E"), pred.loss, pred.data_range,
                                                   pred.fit_block, pred.warnings)
    for i in range(len(N)):
        for w in range_warnings(pred.data_range, n=N[i], d=D[i], label=f"pair {i + 1}: " if len(N) > 1 else ""):
            if w not in warns:
                warns.append(w)
    return {"law": pred.name, "form": pred.form, "params": pred.params, "source": pred.source,
            "n_kind": pred.n_kind, "interval": interval_description(pred, level), "notes": list(pred.notes),
            "warnings": warns, "rows": rows}
