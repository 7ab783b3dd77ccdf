"""Typed fit results: what `scaling fit` writes to fit.json, as records.

Every block of fit.json is one record (a dataclass): `FitResult` holds the whole file, one record
per fitting method (`Approach1Result`, `Approach2Result`, `Approach3Result`, `KaplanResult`) and the
blocks beside them. A method the data could not support is the record `Skipped(reason)` (written as
{"skipped": reason}); every record answers `.skipped` (False, or True for `Skipped`), so readers test
`result.skipped` / `isinstance(r, Skipped)` rather than look for a key.

Serialised once, here: `Record.from_json(data, where)` checks the keys and types a record declares
(a missing key or a wrong type is one `UserError` naming the file and the key path) and keeps every
key it does not declare in `extra`, in the file's order, so `from_json(d).to_json() == d` for every
fit.json: a record adds types, never changes what is written. Values are kept as they are (an int
stays an int), so the file's bytes do not change either. A field set after reading (`rec.seconds =
...`) is written after the keys read.

The module sits at the lowest layer (it imports only research.errors and research.guards) so that every stage that reads
fit.json (train's tracking, bench, fit, plots, sweep) may use it. A new fitting method adds its
record class here and a field for it on `FitResult` (see docs/explanation/structure.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from research.errors import UserError
from research.guards import law_data_range, law_noise


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


@dataclass(kw_only=True)
class Record:
    """A block of fit.json: declared fields (typed, checked on read) and `extra`, the keys it does not
    declare, kept verbatim. `to_json` writes the keys in the order they were read (then those set later)."""

    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        # keys in writing order: a record built in code writes the fields given (those not at their default)
        # in declaration order; one read keeps the file's order (from_json); a field set later goes last
        order = [_key(f) for f in _fields(type(self)) if _given(getattr(self, f.name), _default(f))] + list(self.extra)
        object.__setattr__(self, "_order", order)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        order = self.__dict__.get("_order")
        keys = _keys(type(self))
        if order is not None and name in keys and keys[name] not in order:
            order.append(keys[name])

    @classmethod
    def of(cls, **kw):
        """The record with exactly these keys written, in this order (a None given is written as null;
        `extra`'s keys where it stands among them)."""
        rec = cls(**kw)
        keys = _keys(cls)
        order = []
        for k in kw:
            order += list(rec.extra) if k == "extra" else [keys[k]]
        object.__setattr__(rec, "_order", order)
        return rec

    @property
    def skipped(self) -> bool:
        return False

    @classmethod
    def from_json(cls, data, where: str = "fit.json", path: str = ""):
        """The record `data` (a JSON object) holds; a wrong type or a missing key is a UserError naming
        `where` (the file) and the key's path."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: {path or 'the file'} holds a JSON {_kind(data)}, not an object; "
                            "re-run `scaling fit` to rewrite it")
        hints = _hints(cls)
        kwargs, declared = {}, set()
        for f in _fields(cls):
            key = _key(f)
            declared.add(key)
            sub = f"{path}.{key}" if path else key
            if key in data:
                kwargs[f.name] = _convert(data[key], hints[f.name], where, sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{where}: {path or 'the file'} lacks {key} (key {sub!r}); re-run `scaling fit` "
                                "to rewrite the file")
        rec = cls(**kwargs, extra={k: v for k, v in data.items() if k not in declared})
        object.__setattr__(rec, "_order", list(data))
        rec.check(where, path)
        return rec

    def check(self, where: str, path: str) -> None:
        """What the types cannot say (lengths, signs, order), checked once on read: a UserError naming
        `where` and the key path. Records with such rules override it."""

    @classmethod
    def read(cls, data, where: str = "fit.json", path: str = ""):
        """`cls.from_json`, or `Skipped` when the block says {"skipped": reason}."""
        if isinstance(data, dict) and "skipped" in data:
            return Skipped.from_json(data, where, path)
        return cls.from_json(data, where, path)

    def to_json(self) -> dict:
        """The JSON object of this record (nested records as objects); the inverse of from_json."""
        names = {_key(f): f.name for f in _fields(type(self))}
        out = {}
        for key in self._order:
            if key in names:
                out[key] = _dump(getattr(self, names[key]))
            elif key in self.extra:
                out[key] = _dump(self.extra[key])
        out.update({k: _dump(v) for k, v in self.extra.items() if k not in out})
        return out


@dataclass(kw_only=True)
class Skipped(Record):
    """A block that could not be computed, and why: written {"skipped": reason} (with any other keys
    the writer gave, e.g. the held-out check's spec)."""

    reason: str = field(metadata={"key": "skipped"})

    @property
    def skipped(self) -> bool:
        return True


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def _given(value, default) -> bool:
    """Whether a field's value differs from its default (never comparing inside arrays)."""
    if default is dataclasses.MISSING:
        return True
    if default is None:
        return value is not None
    if isinstance(default, (list, dict)):
        return not (isinstance(value, (list, dict)) and len(value) == 0)
    return value is not default and value != default


def _fields(cls) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name != "extra")


@functools.cache
def _keys(cls) -> dict[str, str]:
    return {f.name: _key(f) for f in _fields(cls)}


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _same_lengths(lists: dict, where: str, key: str) -> None:
    """Lists that run in parallel (one entry per resample or grid point) must be of one length; those
    that are None are absent and not compared."""
    lengths = {k: len(v) for k, v in lists.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise UserError(f"{where}: key {key!r} holds lists of different lengths "
                        f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}); re-run `scaling fit` "
                        "to rewrite the file")


def _real(v) -> bool:
    """A JSON number (not a boolean)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _kind(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, numbers.Number) else type(v).__name__)


def _convert(value, tp, where: str, path: str):
    """`value` checked against the annotation `tp` (records parsed; numbers, strings and lists kept as they are)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if Skipped in args and isinstance(value, dict) and "skipped" in value:
            return Skipped.from_json(value, where, path)
        real = [a for a in args if a not in (type(None), Skipped)]
        if len(real) == 1:
            return _convert(value, real[0], where, path)
        for a in real:  # several plain types: the first that fits
            try:
                return _convert(value, a, where, path)
            except UserError:
                continue
        raise UserError(f"{where}: key {path!r} holds a JSON {_kind(value)}, which is not one of its types")
    if isinstance(tp, type) and issubclass(tp, Record):
        return value if isinstance(value, tp) else tp.read(value, where, path)
    base = origin or tp
    ok = {float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)),
          dict: lambda v: isinstance(v, dict)}[base]
    if not ok(value):
        want = {float: "a number", int: "an integer", bool: "true or false", str: "a string", list: "an array",
                dict: "an object"}[base]
        raise UserError(f"{where}: key {path!r} holds a JSON {_kind(value)}, not {want}; "
                        "re-run `scaling fit` to rewrite the file")
    args = typing.get_args(tp)
    if base is list and args:
        return [_convert(v, args[0], where, f"{path}[{i}]") for i, v in enumerate(value)]
    if base is dict and len(args) == 2:
        return {k: _convert(v, args[1], where, f"{path}.{k}") for k, v in value.items()}
    return value


def _dump(v):
    if isinstance(v, Record):
        return v.to_json()
    if isinstance(v, list):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


# ----------------------------------------------------------------------------- shared parts

Number = Union[float, None]  # a number, or null (fit.json writes NaN and inf as null)


@dataclass(kw_only=True)
class Bootstrap(Record):
    """A method's bootstrap: intervals [low, high] per parameter at `level`, and the resampled values."""

    level: float | None = None
    n_resamples: int | None = None
    intervals: dict[str, list[Number]] | None = None
    se: dict | None = None
    optimal: list | None = None
    samples: dict[str, list[Number]] | None = None
    n_failed: int | None = None
    seed: int | None = None
    resampling: str | None = None

    def check(self, where: str, path: str) -> None:
        if self.level is not None and not 0 < self.level < 1:
            raise UserError(f"{where}: key '{path}.level' is {self.level!r}, not a level between 0 and 1; "
                            "re-run `scaling fit` to rewrite the file")
        for key, iv in (self.intervals or {}).items():
            lo_hi = [v for v in iv[:2] if v is not None and math.isfinite(v)]
            if len(iv) < 2 or (len(lo_hi) == 2 and lo_hi[0] > lo_hi[1]):
                raise UserError(f"{where}: key '{path}.intervals.{key}' is {str(iv)[:60]}, not [low, high] "
                                "with low <= high; re-run `scaling fit` to rewrite the file")
        _same_lengths(self.samples or {}, where, f"{path}.samples")

    def interval(self, key: str) -> list | None:
        """[low, high] (and anything after) for `key` when both ends are known, else None."""
        iv = (self.intervals or {}).get(key)
        return iv if iv and None not in iv[:2] else None


@dataclass(kw_only=True)
class MethodResult(Record):
    """What every fitting method's record has: its warnings, bootstrap and time taken."""

    method: str | None = None
    warnings: list[str] = field(default_factory=list)
    bootstrap: Bootstrap | None = None
    seconds: float | None = None

    def add_warnings(self, messages) -> None:
        """Append the messages not already there (in place)."""
        if "warnings" not in self._order:
            self._order.append("warnings")
        self.warnings.extend(m for m in messages if m not in self.warnings)

    def intervals(self) -> dict[str, list]:
        return (self.bootstrap.intervals or {}) if self.bootstrap is not None else {}


@dataclass(kw_only=True)
class AllocationResult(MethodResult):
    """An allocation law N_opt = k_N*C^a, D_opt = k_D*C^b (Approaches 1 and 2)."""

    a: Number
    b: Number
    k_N: Number
    k_D: Number
    form: str | None = None
    flops_convention: str | None = None
    flops_per_token: dict | None = None
    n_points: int | None = None


@dataclass(kw_only=True)
class Approach1Result(AllocationResult):
    """Chinchilla Approach 1: the envelope of the loss over compute (research/fit/method_approach1.py)."""

    source: str | None = None  # "endpoints" (absent: training curves)
    estimator: str | None = None  # "crossings" (absent: a line through the envelope's winners, before crossings)
    n_crossings: int | None = None
    crossings: list[dict] | None = None  # flops, n_left, n_right, n_opt (research/fit/crossings.py)
    staircase: dict | None = None  # {"a", "b"} of the line through the winners, for comparison
    n_envelope_points: int = 0
    n_edge_points_dropped: int = 0
    n_curves: int | None = None
    n_sizes: int | None = None


@dataclass(kw_only=True)
class SliceFitCheck(Record):
    """How well a design budget's parabola fits its points' seed means against their noise
    (research/fit/isoflop.py `parabola_check`): the noise model's chi2 and, with replicates, the slice's
    own lack-of-fit F test (`lack_of_fit`: F, dof [lack of fit, pure error], p_value), which then decides
    `within_noise` (`judged_by`); chi2, p_value and within_noise absent with 3 sizes."""

    n_points: int
    dof: int
    rms_residual: float
    noise_of_means: float
    replicate_noise_of_means: float | None = None
    chi2: float | None = None
    p_value: float | None = None
    lack_of_fit: dict | None = None
    judged_by: str | None = None
    within_noise: bool | None = None
    note: str | None = None

    @property
    def tested(self) -> bool:
        return self.within_noise is not None

    @property
    def by_replicates(self) -> bool:
        """Whether the slice's own lack-of-fit F test decided `within_noise` (else the noise model's chi2)."""
        return self.judged_by == "replicates" and self.lack_of_fit is not None

    @property
    def decisive_p_value(self) -> float | None:
        """The p-value that decided `within_noise`."""
        return self.lack_of_fit["p_value"] if self.by_replicates else self.p_value

    def test_text(self) -> str:
        """The deciding test in words, for a printed line or a warning."""
        if self.by_replicates:
            return (f"lack-of-fit F {self.lack_of_fit['F']:.3g} on {self.lack_of_fit['dof']} dof against its own "
                    f"seeds, p = {self.lack_of_fit['p_value']:.2g}")
        return f"chi2 {self.chi2:.3g} on {self.dof} dof, p = {self.p_value:.2g}"


@dataclass(kw_only=True)
class IsoflopBudget(Record):
    """One IsoFLOP slice's parabola minimum."""

    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    n_points: int
    slice: dict | None = None
    fit_check: SliceFitCheck | None = None


@dataclass(kw_only=True)
class RejectedBudget(Record):
    flops: float
    n_points: int | None = None
    reason: str


@dataclass(kw_only=True)
class Approach2Result(AllocationResult):
    """Chinchilla Approach 2: IsoFLOP profiles (research/fit/method_approach2.py)."""

    slices: str | None = None
    budgets: list[IsoflopBudget] = field(default_factory=list)
    rejected_budgets: list[RejectedBudget] = field(default_factory=list)
    n_budgets: int = 0


@dataclass(kw_only=True)
class DataRange(Record):
    """The N, D (and C) range a law was fitted on: [low, high] each."""

    n_params: list[float]
    tokens: list[float]
    flops: list[float] | None = None

    def check(self, where: str, path: str) -> None:
        law_data_range(self.to_json(), f"{where}: key {path!r}")


@dataclass(kw_only=True)
class LawResult(MethodResult):
    """A law of L(N, D): with its noise estimate and fitted data range once annotated."""

    data_range: DataRange | None = None
    noise: dict | None = None

    def check(self, where: str, path: str) -> None:
        law_noise(self.noise, f"{where}: key {path!r}")


@dataclass(kw_only=True)
class ProfileGrid(Record):
    """The objective's minimum over (E, A, B) at each (alpha, beta): rows alpha, columns beta."""

    alpha: list[float]
    beta: list[float]
    objective: list[list[Number]]
    fine: dict | None = None
    description: str | None = None

    def check(self, where: str, path: str) -> None:
        if len(self.alpha) < 2 or len(self.beta) < 2 or len(self.objective) != len(self.alpha) \
                or any(len(row) != len(self.beta) for row in self.objective):
            raise UserError(f"{where}: key {path!r} is not a grid (objective: {len(self.alpha)} rows of "
                            f"{len(self.beta)}: one per alpha and beta, at least 2 of each); re-run `scaling fit` to rewrite the file")


@dataclass(kw_only=True)
class ProfileE(Record):
    """The objective's minimum over (A, B, alpha, beta) at each fixed E, with the a of each optimum."""

    E: list[float]
    objective: list[Number]
    a: list[Number]
    alpha: list[Number] | None = None
    beta: list[Number] | None = None
    description: str | None = None

    def check(self, where: str, path: str) -> None:
        _same_lengths({"E": self.E, "objective": self.objective, "a": self.a, "alpha": self.alpha,
                       "beta": self.beta}, where, path)


@dataclass(kw_only=True)
class ARange(Record):
    """The profile-likelihood range [low, high] of a = beta/(alpha+beta) at `level`, and its threshold."""

    low: Number = None
    high: Number = None
    threshold: str | None = None
    level: float | None = None
    grid_resolution: dict | None = None
    cells: int | None = None

    def check(self, where: str, path: str) -> None:
        if (self.low is None) != (self.high is None) or (self.low is not None and not self.low <= self.high) \
                or (self.low is not None and not (self.level is not None and 0 < self.level < 1)):
            raise UserError(f"{where}: key {path!r} is not a range (low {self.low!r} <= high {self.high!r}, "
                            f"level {self.level!r} in (0, 1)); re-run `scaling fit` to rewrite the file")

    def factor(self) -> float | None:
        """The threshold's factor over the best objective ("... = f_min * 1.039 ..."), None when not stated."""
        head, sep, tail = (self.threshold or "").rpartition("f_min * ")
        try:
            value = float(tail.split()[0]) if sep and tail.split() else None
        except ValueError:
            return None
        return value if value is not None and math.isfinite(value) and value > 0 else None


@dataclass(kw_only=True)
class Approach3Profile(Record):
    """Approach 3's objective profiled over (alpha, beta) and over E, and the range of a it gives
    (research/fit/varpro.py)."""

    alpha_beta: ProfileGrid | None = None
    a_range: ARange | None = None
    E: ProfileE | None = None
    seconds: float | None = None


@dataclass(kw_only=True)
class Approach3Result(LawResult):
    """Chinchilla Approach 3: L(N, D) = E + A/N^alpha + B/D^beta (research/fit/method_approach3.py)."""

    E: Number
    A: Number
    B: Number
    alpha: Number
    beta: Number
    a: Number = None
    b: Number = None
    G: Number = None
    form: str | None = None
    objective: float | None = None
    reduction: str | None = None
    delta: float | None = None
    n_points: int | None = None
    solver: str | None = None
    n_starts: int | None = None  # the L-BFGS grid's
    grid_cells: int | None = None  # variable projection's
    log_params: dict[str, float] | None = None  # ln A, ln B, ln E as a, b, e (research.fit.approach3.THETA)
    profile: Approach3Profile | None = None
    local_optima: list | None = None
    flops_convention: str | None = None
    flops_per_token: dict | None = None
    optimal: list | None = None

    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


@dataclass(kw_only=True)
class KaplanLN(Record):
    N_c: Number
    alpha_N: Number
    n_sizes: int | None = None


@dataclass(kw_only=True)
class KaplanLD(Record):
    D_c: Number
    alpha_D: Number
    n_token_counts: int | None = None


@dataclass(kw_only=True)
class KaplanLND(Record):
    """Kaplan's joint law [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D, with its noise and range once annotated."""

    N_c: Number
    D_c: Number
    alpha_N: Number
    alpha_D: Number
    rms_log_residual: float | None = None
    data_range: DataRange | None = None
    noise: dict | None = None

    def check(self, where: str, path: str) -> None:
        law_noise(self.noise, f"{where}: key {path!r}")

    def check(self, where: str, path: str) -> None:
        law_noise(self.noise, f"{where}: key {path!r}")

    def params(self) -> dict[str, float]:
        return {"N_c": self.N_c, "D_c": self.D_c, "alpha_N": self.alpha_N, "alpha_D": self.alpha_D}


@dataclass(kw_only=True)
class KaplanResult(MethodResult):
    """Kaplan et al. 2020's L(N), L(D) and joint L(N, D) (research/fit/method_kaplan.py); each may be skipped."""

    n_kind: str = "total"
    n_points: int | None = None
    published: dict | None = None
    L_N: KaplanLN | Skipped | None = None
    L_D: KaplanLD | Skipped | None = None
    L_ND: KaplanLND | Skipped | None = None  # None only in a hand-written file; a fit always has all three
    form: dict[str, str] = field(default_factory=dict)

    def forms(self) -> list[tuple[str, str, Record]]:
        """(key, form, its record) for L_N, L_D, L_ND in the order `form` lists them."""
        return [(k, f, getattr(self, k)) for k, f in self.form.items()]

    def joint(self) -> KaplanLND | None:
        """The joint law L(N, D) when it was fitted, else None."""
        return self.L_ND if isinstance(self.L_ND, KaplanLND) else None


@dataclass(kw_only=True)
class AgreementEntry(Record):
    """One allocation approach in "agreement": its a and b, with their intervals when it has a bootstrap."""

    a: float
    b: float
    a_interval: list | None = None
    b_interval: list | None = None
    level: float | None = None


@dataclass(kw_only=True)
class Agreement(Record):
    """"agreement": a and b of every fitted allocation approach and the largest pairwise |difference| in a."""

    approaches: dict[str, AgreementEntry] = field(default_factory=dict)
    threshold: float | None = None
    max_abs_diff_a: float | None = None
    pair: list[str] | None = None
    diff_over_se: float | None = None  # the pair's |difference| over sqrt(se1^2 + se2^2), se from each interval


@dataclass(kw_only=True)
class SensitivityChoice(Record):
    """One analysis choice's refit: a from Approach 3 (and 2); `reason` (key "skipped") when too few runs."""

    group: str
    choice: str
    n_points: int | None = None
    approach3: float | None = None
    alpha: float | None = None
    beta: float | None = None
    E: float | None = None
    objective: float | None = None
    approach2: float | None = None
    reason: str | None = field(default=None, metadata={"key": "skipped"})

    @property
    def skipped(self) -> bool:
        return self.reason is not None


@dataclass(kw_only=True)
class SensitivityRange(Record):
    """The range of a across the choices: Approach 3's, Approach 2's, and with E profiled."""

    approach3: list[float]
    width: float | None = None
    approach2: list[float] | None = None
    with_E_profile: list[float] | None = None

    def widest(self) -> list[float]:
        """With E profiled when there is that range, else Approach 3's."""
        return self.with_E_profile if self.with_E_profile is not None else self.approach3


@dataclass(kw_only=True)
class Sensitivity(Record):
    """"sensitivity": a refitted under other analysis choices (research/fit/sensitivity.py)."""

    quantity: str | None = None
    choices: list[SensitivityChoice] = field(default_factory=list)
    E_profile: dict | None = None
    range: SensitivityRange | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float | None = None

    def check(self, where: str, path: str) -> None:
        """E_profile (research/fit/sensitivity.py profile_E), where there is one: lists E, objective_rel, alpha
        and a of one length, the threshold and fitted E as numbers, the ranges within the threshold as [low, high]."""
        p = self.E_profile
        lists = ("E", "objective_rel", "alpha", "a")
        ok = p is None or isinstance(p, dict) and all(isinstance(p.get(k), list) and all(
            v is None or _real(v) for v in p[k]) for k in lists) and len({len(p[k]) for k in lists}) == 1 \
            and all(_real(p.get(k)) and math.isfinite(p[k]) for k in ("threshold", "E_fitted")) \
            and all(k not in p or (isinstance(p[k], list) and len(p[k]) == 2 and all(_real(v) for v in p[k])
                                   and p[k][0] <= p[k][1]) for k in ("a_within_threshold", "E_within_threshold"))
        if not ok:
            raise UserError(f"{where}: key '{path}.E_profile' is not E's profile (lists E, objective_rel, alpha, a "
                            "of one length; threshold and E_fitted numbers; [low, high] ranges); re-run `scaling fit` "
                            "to rewrite the file")


@dataclass(kw_only=True)
class PooledNoise(Record):
    std: float | None = None
    rel_std: float | None = None
    dof: int | None = None


@dataclass(kw_only=True)
class NoiseModel(Record):
    """How the seed noise splits: one offset per trunk (size and seed) and the rest, and its trend with D/N."""

    offset_share: float | None = None
    dof_independent: int | None = None
    trend: dict | None = None


@dataclass(kw_only=True)
class SeedNoise(Record):
    """The top-level "noise": seed-to-seed spread of the loss (research/fit/noise.py seed_noise)."""

    replicates: int = 0
    n_points: int | None = None
    points: list | None = None
    model: NoiseModel | None = None
    pooled: PooledNoise | None = None


@dataclass(kw_only=True)
class HeldoutSummary(Record):
    """How well predictions matched the held-out runs (research/fit/holdout.py `_summary`)."""

    n: int
    level: float | None = None
    mean_abs_rel_error: float | None = None
    mean_rel_error: float | None = None
    bias: float | None = None
    std_rel_error: float | None = None
    max_abs_rel_error: float | None = None
    coverage: float | None = None
    n_inside: int | None = None


@dataclass(kw_only=True)
class HeldoutPoint(Record):
    """One run's prediction: measured and predicted loss, the interval (null without one), inside or not."""

    n_params: float
    tokens: float
    measured: float
    predicted: float
    rel_error: float | None = None
    flops: float | None = None
    loss_low: float | None = None
    loss_high: float | None = None
    inside: bool | None = None

    def check(self, where: str, path: str) -> None:
        ends = [v for v in (self.loss_low, self.loss_high) if v is not None and math.isfinite(v)]
        if ends != sorted(ends) or math.isinf(self.predicted) or any(
                not (v > 0 and math.isfinite(v)) for v in (self.n_params, self.tokens, self.measured) if v is not None):
            raise UserError(f"{where}: key {path!r} is not a prediction (N, D and the measured loss positive, the "
                            "predicted loss not infinite; "
                            f"loss_low {self.loss_low!r} <= loss_high {self.loss_high!r}); re-run `scaling fit` "
                            "to rewrite the file")


@dataclass(kw_only=True)
class HeldoutLaw(Record):
    """A law refitted without the held-out runs and its predictions at them (and at the runs it was fitted on)."""

    law: str
    params: dict[str, float]
    interval: dict
    summary: HeldoutSummary
    points: list[HeldoutPoint]
    train_points: list[HeldoutPoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fit_warnings: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Baseline(Record):
    """A prediction of the held-out runs without the law (per size, or Kaplan's joint form)."""

    what: str | None = None
    summary: HeldoutSummary | None = None
    law_on_same_runs: HeldoutSummary | None = None  # Approach 3 on the runs this baseline reached, where fewer than all


@dataclass(kw_only=True)
class HeldoutAllocation(Record):
    """Approach 2's N_opt = k_N*C^a from the other budgets against each held-out budget's IsoFLOP minimum."""

    a: Number
    b: Number = None
    k_N: Number = None
    k_D: Number = None
    budgets: list[dict] = field(default_factory=list)
    fit_warnings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Extrapolation(Record):
    """"extrapolation": the held-out check (research/fit/holdout.py); per law a block of its predictions."""

    holdout: str
    n_train: int
    n_heldout: int
    level: float | None = None
    extrapolation_decades: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    approach3: HeldoutLaw | None = None
    kaplan: HeldoutLaw | None = None
    baselines: dict[str, Baseline | Skipped] | None = None
    heldout_noise: dict | None = None
    approach2: HeldoutAllocation | Skipped | None = None

    def laws(self) -> list[tuple[str, HeldoutLaw]]:
        """(name, block) of each law checked, Approach 3 first."""
        return [(m, getattr(self, m)) for m in ("approach3", "kaplan") if getattr(self, m) is not None]


@dataclass(kw_only=True)
class Validation(Record):
    """"validate": the rung trained at the law's N_opt beyond the fitted budgets (research/sweep/validate.py)."""

    level: float
    flops_convention: str | None = None
    targets: list[dict]
    summary: dict
    warnings: list[str] = field(default_factory=list)


METHOD_KEYS = ("approach1", "approach2", "approach3", "kaplan")  # FitResult's typed per-method fields
METHOD_RECORDS: dict[str, type] = {}  # any other registered method: its name -> the record class its block reads as


def register_method_record(name: str, record: type) -> None:
    """Make fit.json's block `name` read as `record` (research.fit.method.register does this for a method
    beyond METHOD_KEYS, so a new method is its own module and one registration line, nothing here)."""
    if name not in METHOD_KEYS:
        METHOD_RECORDS[name] = record


@dataclass(kw_only=True)
class FitResult(Record):
    """A whole fit.json: the data fitted, one record per method (Skipped where the data cannot support
    it; None where it was not run) and the blocks computed from them."""

    version: int | None = None
    data: dict | None = None
    budgets_for_intervals: list[float] | None = None
    approach1: Approach1Result | Skipped | None = None
    approach2: Approach2Result | Skipped | None = None
    approach3: Approach3Result | Skipped | None = None
    kaplan: KaplanResult | Skipped | None = None
    sensitivity: Sensitivity | Skipped | None = None
    noise: SeedNoise | None = None
    agreement: Agreement | None = None
    warnings: list[str] | None = None
    extrapolation: Extrapolation | Skipped | None = None
    validate: Validation | Skipped | None = None
    plots: Skipped | dict | None = None

    def method(self, name: str) -> MethodResult | Skipped | None:
        """The record of fitting method `name` (None when it was not run). A method beyond METHOD_KEYS keeps
        its block among `extra`, read as its registered record class on first use."""
        if name in METHOD_KEYS:
            return getattr(self, name)
        block = self.extra.get(name)
        if isinstance(block, dict) and name in METHOD_RECORDS:
            block = self.extra[name] = METHOD_RECORDS[name].read(block, "fit.json", name)
        return block if isinstance(block, Record) else None

    def set_method(self, name: str, rec: MethodResult | Skipped) -> None:
        """Record method `name`'s result (a typed field, or a registered method's block among `extra`)."""
        if name in METHOD_KEYS:
            setattr(self, name, rec)
        else:
            self.extra[name] = rec

    def fitted(self, name: str):
        """The block `name` (a method's record, "sensitivity", "extrapolation", ...) when it was computed
        (neither Skipped nor absent), else None."""
        rec = getattr(self, name) if name in _keys(FitResult) else self.method(name)
        return rec if rec is not None and not (isinstance(rec, Record) and rec.skipped) else None


def read_fit_result(data, where: str = "fit.json"):
    """A fit.json's parsed JSON as a FitResult, or Skipped when the whole fit failed ({"skipped": reason})."""
    return FitResult.read(data, where)


def as_fit_result(fit, where: str = "fit") -> FitResult:
    """`fit` as a FitResult: a FitResult as it is, a fit.json's JSON object parsed (a wholly skipped fit, or
    None, reads as a FitResult with nothing fitted)."""
    if isinstance(fit, FitResult):
        return fit
    rec = FitResult.read(fit if fit is not None else {}, where)
    return rec if isinstance(rec, FitResult) else FitResult()
