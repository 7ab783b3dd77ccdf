"""Scaling laws as objects: the published ones and ones read from a `fit.json`.

Compute-optimal allocation comes from `research.fit.allocation` and is stated in the FLOP
convention of the law's inputs. The published laws are in the 6n convention, C = 6·N·D, as in
Hoffmann et al. 2022 (Chinchilla) §3.3 / App. D.2:

    G     = (α·A / (β·B)) ** (1 / (α + β))
    a     = β / (α + β),          b = α / (α + β)
    N_opt = G · (C/6) ** a,       D_opt = G**-1 · (C/6) ** b

A law fitted on a `chinchilla`-convention sweep keeps that sweep's FLOPs per token k·N^p
(fit.json "flops_per_token"), so its budgets are chinchilla FLOPs and its optimum solves
C = k·N^p·D; an Approach 1/2 power law keeps the convention of the runs it was fitted on.

Published constants (copied here so that nothing reads reference files at run
time):

* ``chinchilla``: Hoffmann et al. 2022, "Training Compute-Optimal Large
  Language Models", Approach 3 (§3.3, eq. 10):
  E 1.69, A 406.4, B 410.7, α 0.34, β 0.28.
* ``epoch-2024``: Besiroglu et al. 2024 (Epoch AI), "Chinchilla Scaling: A
  replication attempt": refit of the digitised Chinchilla Fig. 4 points with
  a *summed* Huber loss: E 1.8172, A 482.01, B 2085.43, α 0.3478, β 0.3658.
* ``kaplan-2020``: Kaplan et al. 2020, "Scaling Laws for Neural Language
  Models": only the compute-optimal allocation exponent is published in a form
  usable here, N_opt ∝ C^0.73 (so D_opt = C/(6·N_opt) ∝ C^0.27). The
  normalisation is ours: the line is anchored to pass through the first row of
  Chinchilla's Table 3 (N = 400M parameters at C = 1.92e19 FLOPs), i.e. the two
  allocation rules agree at that small budget and diverge above it. Kaplan's
  loss is not a function of (N, D) in this form, so its predicted loss is
  unavailable (None).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.errors import UserError, closest
from research.fit.allocation import SIX_N, FlopsPerToken, allocation_params, compute_optimal
from research.train.sweep_dir import SweepDir

FLOPS_PER_PARAM_TOKEN = SIX_N.k  # C = 6·N·D, the "6n" convention (Kaplan's anchor below)

# Chinchilla Table 3 (Approach 1): FLOP budgets, parameters, tokens.
CHINCHILLA_TABLE3 = [
    # (N, FLOPs, D)
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]

# Kaplan 2020 allocation exponent, and our anchor (Chinchilla Table 3, row 1).
KAPLAN_EXPONENT = 0.73
KAPLAN_ANCHOR_FLOPS = 1.92e19
KAPLAN_ANCHOR_N = 400e6


@dataclass
class ChinchillaLaw:
    """L(N, D) = E + A/N^α + B/D^β."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "fit"
    source: str = ""
    per_token: FlopsPerToken = SIX_N  # C = k·N^p·D: the FLOP convention budgets are given in

    @property
    def convention(self) -> str:
        return self.per_token.convention

    def _frontier(self) -> dict:
        return allocation_params(self.A, self.B, self.alpha, self.beta, self.per_token)

    @property
    def a(self) -> float:
        return float(self._frontier()["a"])

    @property
    def b(self) -> float:
        return float(self._frontier()["b"])

    @property
    def G(self) -> float:
        return float(self._frontier()["G"])

    def loss(self, n, d):
        with np.errstate(over="ignore", divide="ignore"):  # N**alpha -> inf gives the limit A/inf = 0
            return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def n_opt(self, flops):
        return compute_optimal(self.A, self.B, self.alpha, self.beta, flops, self.per_token)[0]

    def d_opt(self, flops):
        return compute_optimal(self.A, self.B, self.alpha, self.beta, flops, self.per_token)[1]

    def loss_opt(self, flops):
        return self.loss(self.n_opt(flops), self.d_opt(flops))

    def params(self) -> dict:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
                "a": self.a, "b": self.b, "G": self.G}

    def describe(self) -> str:
        return (f"L(N, D) = {self.E:.4g} + {self.A:.4g}/N^{self.alpha:.4g} + "
                f"{self.B:.4g}/D^{self.beta:.4g}")


@dataclass
class AllocationLaw:
    """N_opt = k_N·C^a, D_opt = k_D·C^b; no loss prediction unless given."""

    k_N: float
    a: float
    k_D: float
    b: float
    name: str = "fit"
    source: str = ""
    notes: list = field(default_factory=list)
    convention: str = "6n"  # the FLOP convention of the C it was fitted on

    def n_opt(self, flops):
        return self.k_N * flops**self.a

    def d_opt(self, flops):
        return self.k_D * flops**self.b

    def loss_opt(self, flops):
        return None

    def params(self) -> dict:
        return {"k_N": self.k_N, "a": self.a, "k_D": self.k_D, "b": self.b}

    def describe(self) -> str:
        return f"N_opt = {self.k_N:.4g}·C^{self.a:.4g}, D_opt = {self.k_D:.4g}·C^{self.b:.4g}"


def kaplan_2020() -> AllocationLaw:
    k_n = KAPLAN_ANCHOR_N / KAPLAN_ANCHOR_FLOPS**KAPLAN_EXPONENT
    return AllocationLaw(
        k_N=k_n, a=KAPLAN_EXPONENT, k_D=1.0 / (FLOPS_PER_PARAM_TOKEN * k_n), b=1.0 - KAPLAN_EXPONENT,
        name="kaplan-2020",
        source="Kaplan et al. 2020: N_opt ∝ C^0.73; normalisation anchored at N=400M, "
               "C=1.92e19 (Chinchilla Table 3 row 1); D = C/(6N)",
        notes=["loss unavailable: kaplan-2020 publishes only the allocation exponent in this form"],
    )


PUBLISHED = {
    "chinchilla": lambda: ChinchillaLaw(
        1.69, 406.4, 410.7, 0.34, 0.28, name="chinchilla",
        source="Hoffmann et al. 2022, Approach 3 (§3.3)"),
    "epoch-2024": lambda: ChinchillaLaw(
        1.8172, 482.01, 2085.43, 0.3478, 0.3658, name="epoch-2024",
        source="Besiroglu et al. 2024 (Epoch AI), summed-Huber refit of Chinchilla data"),
    "kaplan-2020": kaplan_2020,
}


def published(name: str):
    if name not in PUBLISHED:
        raise UserError(f"unknown law {name!r}{closest(name, PUBLISHED)}; "
                        f"use one of {', '.join(PUBLISHED)} or a path to a fit.json")
    return PUBLISHED[name]()


APPROACH_ORDER = ("approach3", "approach2", "approach1")


# Law parameters read from a file: name -> smallest allowed value (exclusive, except E which may be 0).
CHINCHILLA_KEYS = {"E": 0.0, "A": 0.0, "B": 0.0, "alpha": 0.0, "beta": 0.0}
ALLOCATION_KEYS = {"k_N": 0.0, "a": 0.0, "k_D": 0.0, "b": 0.0}


def _law_numbers(block: dict, keys: dict, name: str) -> list[float]:
    """The values of `keys` in a fit block as floats; a missing, non-numeric, non-finite or
    out-of-range value raises UserError naming the key."""
    out = []
    for key, low in keys.items():
        if key not in block:
            raise UserError(f"{name}: the law has no {key!r} (has {', '.join(map(str, block)) or 'nothing'}); "
                            "re-run `scaling fit`")
        v = block[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{name}: {key} = {v!r} is not a finite number; re-run `scaling fit`")
        if v < low or (v == low and key != "E"):
            raise UserError(f"{name}: {key} = {v!r} must be {'>=' if key == 'E' else '>'} {low:g}")
        out.append(float(v))
    return out


def law_from_fit(fit: dict, approach: str | None = None, name: str = "fit"):
    """A law from a fit.json dict (or one approach's block)."""
    if not isinstance(fit, dict):
        raise UserError(f"{name} holds a JSON {type(fit).__name__}, not a fit object; run `scaling fit` to make one")
    if "E" in fit and "alpha" in fit:
        return ChinchillaLaw(*_law_numbers(fit, CHINCHILLA_KEYS, name), name=name, source="Approach 3 fit",
                             per_token=FlopsPerToken.from_dict(fit.get("flops_per_token")))
    if "k_N" in fit and "a" in fit:
        k_n, a, k_d, b = _law_numbers(fit, ALLOCATION_KEYS, name)
        return AllocationLaw(k_n, a, k_d, b, name=name, source=f"{fit.get('method', 'power-law')} fit",
                             notes=["loss unavailable: an IsoFLOP/envelope fit gives only N_opt, D_opt"],
                             convention=str(fit.get("flops_convention", "6n")))
    choices = [approach] if approach else [k for k in APPROACH_ORDER if isinstance(fit.get(k), dict)
                                           and "skipped" not in fit[k]]
    for key in choices:
        block = fit.get(key)
        if not isinstance(block, dict) or "skipped" in block:
            raise UserError(f"fit has no usable {key!r} result"
                            + (f" ({block['skipped']})" if isinstance(block, dict) else "")
                            + "; run `scaling fit DIR --method " + key + "` first or pick another --approach")
        return law_from_fit(block, name=f"{name}:{key}")
    raise UserError(f"{name} holds no Approach 1/2/3 result; run `scaling fit` on the sweep first")


def load_law(spec: str, approach: str | None = None):
    """A published law name, or a path to a fit.json (or a sweep dir holding one)."""
    if spec in PUBLISHED:
        return published(spec)
    path = Path(spec)
    if path.is_dir():
        path = SweepDir(path).fit_path
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise UserError(f"fit file {path} does not exist; run `scaling fit` first or use a "
                            f"published law ({', '.join(PUBLISHED)})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not valid JSON ({err}); re-run `scaling fit`") from None
        except OSError as err:
            raise UserError(f"cannot read {path}: {err.strerror}") from None
        return law_from_fit(data, approach, name=str(path))
    return published(spec)


def optimum(law, flops: float) -> dict:
    """Compute-optimal N, D, tokens/param and loss at `flops` under `law`, in the law's FLOP convention
    (`flops` is read in that convention, and the row says which)."""
    if not (flops > 0 and math.isfinite(flops)):
        raise UserError(f"--flops must be a positive finite number, got {flops}")
    try:
        n = float(law.n_opt(flops))
        d = float(law.d_opt(flops))
        loss = law.loss_opt(flops)
    except (OverflowError, ZeroDivisionError):
        n = d = loss = math.inf
    if not all(math.isfinite(v) and v > 0 for v in (n, d)) or (loss is not None and not math.isfinite(loss)):
        raise UserError(f"law {law.name} ({law.describe()}) gives no finite optimum at C = {flops:.4g} "
                        "(N, D or loss overflow); check the law's parameters or the budget")
    per_token = getattr(law, "per_token", SIX_N)
    return {
        "law": law.name,
        "flops": float(flops),
        "convention": law.convention,
        "convention_form": per_token.describe() if isinstance(law, ChinchillaLaw) else f"{law.convention} FLOPs",
        "n_params": n,
        "tokens": d,
        "tokens_per_param": d / n,
        "loss": None if loss is None else float(loss),
        "implied_flops_6nd": 6.0 * n * d,
    }
