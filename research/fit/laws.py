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

Published laws (constants copied here so that nothing reads reference files at run time; each
law's `source` names the paper and the table or equation):

* ``chinchilla-approach3`` (alias ``chinchilla``): Hoffmann et al. 2022, "Training Compute-Optimal
  Large Language Models", Approach 3 (§3.3, eq. 10) with the unrounded constants
  E 1.69337, A 406.401, B 410.723, α 0.33917, β 0.28491: 40.4B parameters at 5.76e23 FLOPs,
  the paper's "40B". ``chinchilla-rounded`` keeps the constants as printed in eq. 10
  (E 1.69, A 406.4, B 410.7, α 0.34, β 0.28); the rounding alone moves N_opt at 5.76e23 to 32.2B.
* ``chinchilla-approach1``: Hoffmann et al. 2022 Approach 1 (§3.1) as published: the paper prints
  its Approach-1 allocation only as Table 3 (the exponents a = b = 0.50 are in Table 2; the
  coefficients are not printed), so the law *is* Table 3 (CHINCHILLA_TABLE3): N_opt and D_opt are
  read from its rows and interpolated linearly in log C between them; beyond the first and last
  rows N_opt follows the least-squares line of log N on log C through the nine rows
  (a = 0.4981, k = 0.09916) and D_opt = C/(6·N_opt). Every row comes back as printed, including
  the Gopher-budget row (67B, 1.5T at 5.76e23), whose 6·N·D is 6.03e23, 4.7% above its own C:
  the table is inconsistent there, and `optimal` says so for budgets whose allocation it touches
  (between the 10B and 175B rows). ``chinchilla-approach1-line`` is that least-squares line with
  D = C/(6N) everywhere (67.8B / 1.42T at 5.76e23): smooth, and consistent with C = 6ND.
* ``chinchilla-approach2``: Hoffmann et al. 2022 Approach 2 (§3.2, IsoFLOP profiles) as an
  allocation: a = 0.49 (Table 2); k anchored at the paper's Approach-2 projection for Gopher's
  budget, 63B parameters at 5.76e23 FLOPs (§3.2, Fig. 3 and Fig. 1).
* ``epoch-2024``: Besiroglu et al. 2024 (Epoch AI), "Chinchilla Scaling: A replication attempt":
  refit of the digitised Chinchilla Fig. 4 points with a *summed* Huber loss (their §3):
  E 1.8172, A 482.01, B 2085.43, α 0.3478, β 0.3658.
* ``kaplan-2020``: Kaplan et al. 2020, "Scaling Laws for Neural Language Models": only the
  compute-optimal allocation exponent is published in a form usable here, N_opt ∝ C^0.73 (so
  D_opt = C/(6·N_opt) ∝ C^0.27). The normalisation is ours: the line is anchored to pass
  through the first row of Chinchilla's Table 3 (N = 400M parameters at C = 1.92e19 FLOPs), i.e.
  the two allocation rules agree at that small budget and diverge above it. Kaplan's loss is not
  a function of (N, D) in this form, so its predicted loss is unavailable (None).
* ``muennighoff-2023``: Muennighoff et al. 2023, "Scaling Data-Constrained Language Models":
  the fitted L(N, D) of their data-constrained law (E 1.869, A 520.8, B 1487.7, α = β = 0.353;
  with unique data the D of the law is their effective data D', `research.fit.planning`).
* ``deepseek-2024``: DeepSeek-AI 2024, "DeepSeek LLM: Scaling Open-Source Language Models with
  Longtermism", §3.2 eq. 4: M_opt = 0.1715·C^0.5243, D_opt = 5.8316·C^0.4757, with the model
  scale M in non-embedding FLOPs per token (C = M·D). As parameters N = M/6 (M ≈ 6·N_nonembedding
  once the attention-over-context term 12·n_layer·d·l_seq is dropped), so D_opt = C/(6·N_opt)
  and N counts non-embedding parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.errors import UserError, closest
from research.fsutil import loads_json, read_regular_text
from research.guards import law_flops_per_token
from research.fit.allocation import SIX_N, FlopsPerToken, allocation_params, compute_optimal
from research.fit.law_warnings import fit_warnings
from research.records import as_fit_result
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

# Chinchilla Approach 1 (Table 2 prints a = 0.50): the least-squares line log N = log k + a·log C
# through the nine rows above (tests/test_published_laws.py refits it from the table).
CHINCHILLA_A1_EXPONENT = 0.4980987
CHINCHILLA_A1_K = 0.09915893
# Chinchilla Approach 2: a = 0.49 (Table 2), anchored at its projection for Gopher's budget (§3.2).
CHINCHILLA_A2_EXPONENT = 0.49
CHINCHILLA_A2_ANCHOR_FLOPS = 5.76e23
CHINCHILLA_A2_ANCHOR_N = 63e9
# DeepSeek LLM 2024 §3.2 eq. 4 (M: non-embedding FLOPs per token; N = M/6).
DEEPSEEK_M_BASE, DEEPSEEK_A = 0.1715, 0.5243
DEEPSEEK_D_BASE, DEEPSEEK_B = 5.8316, 0.4757

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
    data_range: dict | None = None  # {"n_params": [lo, hi], "tokens": [lo, hi], "flops": ...} it was fitted on
    warnings: list = field(default_factory=list)  # the warnings of the fit it came from
    fit_block: dict | None = field(default=None, repr=False)  # the fit.json block it was read from

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
        n, d = np.float64(n) if np.isscalar(n) else n, np.float64(d) if np.isscalar(d) else d  # numpy's power:
        with np.errstate(over="ignore", divide="ignore"):  # N**alpha -> inf gives the limit A/inf = 0 (a Python
            return self.E + self.A / n**self.alpha + self.B / d**self.beta  # float would raise OverflowError)

    def n_opt(self, flops):
        return compute_optimal(self.A, self.B, self.alpha, self.beta, flops, self.per_token)[0]

    def d_opt(self, flops):
        return compute_optimal(self.A, self.B, self.alpha, self.beta, flops, self.per_token)[1]

    def loss_opt(self, flops):
        return self.loss(self.n_opt(flops), self.d_opt(flops))

    def notes_at(self, flops) -> list:
        """The notes `optimal` prints beside this law's answer at `flops` (none: it predicts loss)."""
        return []

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
    data_range: dict | None = None
    warnings: list = field(default_factory=list)
    fit_block: dict | None = field(default=None, repr=False)

    def n_opt(self, flops):
        return self.k_N * flops**self.a

    def d_opt(self, flops):
        return self.k_D * flops**self.b

    def loss_opt(self, flops):
        return None

    def notes_at(self, flops) -> list:
        """The notes `optimal` prints beside this law's answer at `flops`."""
        return list(self.notes)

    def params(self) -> dict:
        return {"k_N": self.k_N, "a": self.a, "k_D": self.k_D, "b": self.b}

    def describe(self) -> str:
        return f"N_opt = {self.k_N:.4g}·C^{self.a:.4g}, D_opt = {self.k_D:.4g}·C^{self.b:.4g}"


@dataclass
class TableAllocationLaw(AllocationLaw):
    """A published allocation table as the law: N_opt and D_opt log-linearly interpolated in C
    between the rows (C, N, D); beyond the first and last rows N_opt = N_row·(C/C_row)^a (the
    law's own least-squares exponent a) and D_opt = C/(6·N_opt). `k_N`, `a` describe that line."""

    rows: tuple = ()  # ((C, N, D), ...) sorted by C
    row_notes: tuple = ()  # ((C_lo, C_hi, note), ...): a note for budgets whose interpolation touches a flawed row

    def _log_interp(self, flops, column):
        c = np.log(np.asarray([r[0] for r in self.rows], float))
        y = np.log(np.asarray([r[column] for r in self.rows], float))
        x = np.log(np.asarray(flops, float))
        return np.exp(np.interp(x, c, y))

    def _inside(self, flops):
        return (np.asarray(flops) >= self.rows[0][0]) & (np.asarray(flops) <= self.rows[-1][0])

    def _edge_n(self, flops):
        flops = np.asarray(flops, float)
        lo, hi = self.rows[0], self.rows[-1]
        edge = np.where(flops < lo[0], lo[1] * (flops / lo[0]) ** self.a, hi[1] * (flops / hi[0]) ** self.a)
        return edge

    def n_opt(self, flops):
        out = np.where(self._inside(flops), self._log_interp(flops, 1), self._edge_n(flops))
        return out if np.ndim(out) else float(out)

    def d_opt(self, flops):
        out = np.where(self._inside(flops), self._log_interp(flops, 2),
                       np.asarray(flops, float) / (FLOPS_PER_PARAM_TOKEN * self._edge_n(flops)))
        return out if np.ndim(out) else float(out)

    def notes_at(self, flops) -> list:
        return [*self.notes, *(note for lo, hi, note in self.row_notes if lo < flops < hi)]

    def describe(self) -> str:
        lo, hi = self.rows[0], self.rows[-1]
        return (f"table of {len(self.rows)} rows, C {lo[0]:.3g}..{hi[0]:.3g}, log-interpolated "
                f"(N_opt ≈ {self.k_N:.4g}·C^{self.a:.4g} across it; outside, that exponent and D = C/(6N))")


def six_n_allocation(k_n: float, a: float, name: str, source: str, notes=()) -> AllocationLaw:
    """N_opt = k_n·C^a and D_opt = C/(6·N_opt) (6n convention): the published allocations' form."""
    return AllocationLaw(k_N=k_n, a=a, k_D=1.0 / (FLOPS_PER_PARAM_TOKEN * k_n), b=1.0 - a, name=name,
                         source=source, notes=["loss unavailable: " + name + " publishes only the allocation",
                                               *notes])


def kaplan_2020() -> AllocationLaw:
    return six_n_allocation(
        KAPLAN_ANCHOR_N / KAPLAN_ANCHOR_FLOPS**KAPLAN_EXPONENT, KAPLAN_EXPONENT, "kaplan-2020",
        "Kaplan et al. 2020: N_opt ∝ C^0.73; normalisation anchored at N=400M, "
        "C=1.92e19 (Chinchilla Table 3 row 1); D = C/(6N)")


# The range of (N, D) behind each published law, for extrapolation warnings (from the papers'
# abstracts; None where the paper states none we hold).
CHINCHILLA_RANGE = {"n_params": [70e6, 16e9], "tokens": [5e9, 500e9]}  # "70M to over 16B ... 5 to 500B tokens"
KAPLAN_RANGE = {"n_params": [768, 1.5e9], "tokens": [22e6, 23e9]}  # non-embedding N


def _chinchilla(E, A, B, alpha, beta, name, source, data_range=CHINCHILLA_RANGE):
    return lambda: ChinchillaLaw(E, A, B, alpha, beta, name=name, source=source, data_range=data_range)


def _alloc(k_n, a, name, source, data_range=CHINCHILLA_RANGE, notes=()):
    def make():
        law = six_n_allocation(k_n, a, name, source, notes)
        law.data_range = data_range
        return law
    return make


GOPHER_ROW_NOTE = (
    "Table 3's Gopher-budget row (67B, 1.5T at 5.76e23 FLOPs) is inconsistent as printed: 6*N*D = 6.03e23, 4.7% "
    "above its C, and 67B is 1.2% off the line through the other rows; this answer is interpolated through it "
    "as published (chinchilla-approach1-line gives the smooth C = 6ND allocation)")


def chinchilla_approach1_table() -> TableAllocationLaw:
    rows = tuple((c, n, d) for n, c, d in CHINCHILLA_TABLE3)
    gopher = [i for i, (n, c, d) in enumerate(CHINCHILLA_TABLE3) if c == 5.76e23][0]
    return TableAllocationLaw(
        k_N=CHINCHILLA_A1_K, a=CHINCHILLA_A1_EXPONENT, k_D=1.0 / (FLOPS_PER_PARAM_TOKEN * CHINCHILLA_A1_K),
        b=1.0 - CHINCHILLA_A1_EXPONENT, name="chinchilla-approach1",
        source="Hoffmann et al. 2022, Approach 1 (§3.1), Table 3 as printed: N_opt and D_opt interpolated "
               "log-linearly in C between its nine rows; beyond them N_opt ∝ C^0.4981 (the least-squares line "
               "through the rows) and D = C/(6N)",
        notes=["loss unavailable: chinchilla-approach1 publishes only the allocation"],
        data_range=CHINCHILLA_RANGE, rows=rows,
        row_notes=((rows[gopher - 1][0], rows[gopher + 1][0], GOPHER_ROW_NOTE),))


PUBLISHED = {
    "chinchilla": _chinchilla(
        1.69337, 406.401, 410.723, 0.33917, 0.28491, "chinchilla",
        "Hoffmann et al. 2022, Approach 3 (§3.3, eq. 10), unrounded constants (= chinchilla-approach3)"),
    "chinchilla-approach3": _chinchilla(
        1.69337, 406.401, 410.723, 0.33917, 0.28491, "chinchilla-approach3",
        "Hoffmann et al. 2022, Approach 3 (§3.3, eq. 10), unrounded constants"),
    "chinchilla-rounded": _chinchilla(
        1.69, 406.4, 410.7, 0.34, 0.28, "chinchilla-rounded",
        "Hoffmann et al. 2022, Approach 3 (§3.3, eq. 10) as printed (rounded; 32B at 5.76e23, not 40B)"),
    "chinchilla-approach1": chinchilla_approach1_table,
    "chinchilla-approach1-line": _alloc(
        CHINCHILLA_A1_K, CHINCHILLA_A1_EXPONENT, "chinchilla-approach1-line",
        "Hoffmann et al. 2022, Approach 1 (§3.1; Table 2 a = 0.50): N_opt = k*C^a, the least-squares line through "
        f"Table 3's rows (a = {CHINCHILLA_A1_EXPONENT}, k = {CHINCHILLA_A1_K}); D = C/(6N)"),
    "chinchilla-approach2": _alloc(
        CHINCHILLA_A2_ANCHOR_N / CHINCHILLA_A2_ANCHOR_FLOPS**CHINCHILLA_A2_EXPONENT, CHINCHILLA_A2_EXPONENT,
        "chinchilla-approach2",
        "Hoffmann et al. 2022, Approach 2 (§3.2; Table 2 a = 0.49): N_opt = k*C^0.49 anchored at the paper's "
        "projection of 63B parameters for Gopher's 5.76e23 FLOPs; D = C/(6N)"),
    "epoch-2024": _chinchilla(
        1.8172, 482.01, 2085.43, 0.3478, 0.3658, "epoch-2024",
        "Besiroglu et al. 2024 (Epoch AI), summed-Huber refit of Chinchilla data (§3)"),
    "kaplan-2020": lambda: _with_range(kaplan_2020(), KAPLAN_RANGE),
    "muennighoff-2023": _chinchilla(
        1.869, 520.8, 1487.7, 0.353, 0.353, "muennighoff-2023",
        "Muennighoff et al. 2023, data-constrained scaling law's fitted L(N, D) (R_D* 15.4, R_N* 5.3)",
        data_range=None),
    "deepseek-2024": _alloc(
        DEEPSEEK_M_BASE / FLOPS_PER_PARAM_TOKEN, DEEPSEEK_A, "deepseek-2024",
        f"DeepSeek-AI 2024, DeepSeek LLM §3.2 eq. 4: M_opt = {DEEPSEEK_M_BASE}*C^{DEEPSEEK_A}, "
        f"D_opt = {DEEPSEEK_D_BASE}*C^{DEEPSEEK_B} (M: non-embedding FLOPs/token); N = M/6", data_range=None,
        notes=["N counts non-embedding parameters (DeepSeek's M = 6N without the attention-context term)"]),
}


def _with_range(law, data_range):
    law.data_range = data_range
    return law


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


def fitted_range(fit: dict, block: dict) -> dict | None:
    """The (N, D, C) range of the runs behind a fit: the block's own `data_range`, else that of any
    approach in the same file (every approach is fitted on the same table)."""
    if isinstance(block.get("data_range"), dict):
        return block["data_range"]
    for key in APPROACH_ORDER:
        other = fit.get(key)
        if isinstance(other, dict) and isinstance(other.get("data_range"), dict):
            return other["data_range"]
    return None


def law_from_fit(fit: dict, approach: str | None = None, name: str = "fit"):
    """A law from a fit.json dict (or one approach's block), carrying the fit's warnings
    (research.fit.law_warnings.fit_warnings), its data range and the block it came from."""
    law = _law_from_fit(fit, approach, name)
    block = law.fit_block if law.fit_block is not None else fit
    law.warnings = fit_warnings(fit, block if block is not fit else None)
    law.data_range = fitted_range(fit, block)
    return law


def _law_from_fit(fit: dict, approach: str | None = None, name: str = "fit"):
    if not isinstance(fit, dict):
        raise UserError(f"{name} holds a JSON {type(fit).__name__}, not a fit object; run `scaling fit` to make one")
    if "E" in fit and "alpha" in fit:
        return ChinchillaLaw(*_law_numbers(fit, CHINCHILLA_KEYS, name), name=name, source="Approach 3 fit",
                             per_token=FlopsPerToken.from_dict(law_flops_per_token(fit.get("flops_per_token"), name)),
                             fit_block=fit)
    if "k_N" in fit and "a" in fit:
        k_n, a, k_d, b = _law_numbers(fit, ALLOCATION_KEYS, name)
        return AllocationLaw(k_n, a, k_d, b, name=name, source=f"{fit.get('method', 'power-law')} fit",
                             notes=["loss unavailable: an IsoFLOP/envelope fit gives only N_opt, D_opt"],
                             convention=str(fit.get("flops_convention", "6n")), fit_block=fit)
    rec = as_fit_result(fit, f"fit file {name}")
    choices = [approach] if approach else [k for k in APPROACH_ORDER if rec.fitted(k) is not None]
    for key in choices:
        block = rec.method(key)
        if block is None or block.skipped:
            raise UserError(f"{name} has no usable {key!r} result"
                            + (f" ({block.reason})" if block is not None else "")
                            + "; run `scaling fit DIR --method " + key + "` first or pick another --approach")
        return _law_from_fit(block.to_json(), name=f"{name}:{key}")
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
            data = loads_json(read_regular_text(path, "law file"), f"law file {path}")
        except json.JSONDecodeError as err:
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
