"""What a fitting method is: one record of everything the package does with it.

A method (Chinchilla Approach 1, 2, 3, Kaplan's forms) is one module that builds a `Method`
and registers it (`METHOD = register(Method(...))`); `research.fit.methods` imports those
modules on one line and is where everything reads the registry (`METHODS`). Everything else looks it up by name:
`run_fits` (its fit, with its bootstrap), the reviewer warnings (`annotate`), predictions
(`law`: the L(N, D) law it fitted, if any), `scaling fit`'s choices and printout (`describe`),
the held-out check (`min_train`) and the figures drawn for it (`figures`, names in
`research.plots.figures.FIGURES`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from research.fit.allocation import SIX_N, FlopsPerToken, fit_flops_per_token
from research.records import AllocationResult, MethodResult, register_method_record

Approach1Source = Literal["endpoints", "curves"]
Reduction = Literal["sum", "mean"]
Backend = Literal["jax", "scipy"]
Grid = Literal["full", "small"]
Tolerances = Literal["tight", "scipy"]
Solver = Literal["varpro", "lbfgs"]  # Approach 3: research/fit/varpro.py or the L-BFGS grid of approach3.py


@dataclass(frozen=True)
class FitOptions:
    """How to run the fits (every method reads the settings it uses)."""

    bootstrap: int = 0  # resamples for intervals (0: none)
    seed: int = 0
    grid: Grid = "full"  # Approach 3 start grid
    reduction: Reduction = "sum"  # Approach 3 Huber reduction over runs
    backend: Backend = "jax"  # Approach 3 solver
    tol: Tolerances = "tight"  # Approach 3 L-BFGS stopping rules
    level: float = 0.95  # interval level
    budgets: tuple[float, ...] | None = None  # where N_opt/D_opt intervals are reported (default: the data's decades)
    strict: bool = False  # a method the data cannot support raises instead of being recorded as skipped
    kaplan_n: str = "nonembedding"  # what N the Kaplan fits count (recorded in the result)
    smooth: int = 5  # Approach 1 from curves: smoothing window
    approach1_source: Approach1Source = "endpoints"
    solver: Solver | None = None  # Approach 3 solver (None: method_approach3.resolve_solver picks)
    sensitivity: bool = True  # add the sensitivity block (research/fit/sensitivity.py) after an Approach-3 fit

    def for_refit(self, bootstrap: int) -> FitOptions:
        """A held-out refit's options: this fit's solver settings, seed and level, its own bootstrap."""
        return FitOptions(bootstrap=bootstrap, seed=self.seed, grid=self.grid, reduction=self.reduction,
                          backend=self.backend, tol=self.tol, level=self.level, solver=self.solver)


@dataclass(frozen=True)
class FitInput:
    """What a method's fit gets: the table, the options, and what run_fits worked out once."""

    table: Any  # research.fit.data.Table
    options: FitOptions
    budgets: list[float]  # resolved budgets for intervals
    kaplan_table: Any = None  # the table with N = non-embedding parameters, when there is one

    @functools.cached_property
    def per_token(self) -> FlopsPerToken:
        """The table's FLOPs-per-token relation, fitted once for the methods that use it."""
        return flops_per_token(self.table)


def flops_per_token(table) -> FlopsPerToken:
    """The table's FLOPs-per-token relation f(N) = k·N^p in its convention (see allocation.py)."""
    if table.columns.get("flops") == "6*N*D":  # no real FLOPs column: the table only knows 6·N·D
        return SIX_N
    return fit_flops_per_token(table.df["N"], table.df["F"], table.df["D"], table.convention)


@dataclass(frozen=True)
class Law:
    """The L(N, D) law a method fitted: its family (research.fit.families), the record holding its
    parameters (and bootstrap samples, noise, data range; research.records), and how to describe it."""

    family: str
    block: Any  # research.records.Approach3Result or KaplanLND
    source: str
    n_kind: str = "total"
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Method:
    name: str
    title: str  # e.g. "Chinchilla Approach 2 (IsoFLOP profiles)"
    fit: Callable[[FitInput], MethodResult]  # its typed record (research.records), with its bootstrap when asked
    annotate: Callable[[Any, Any, Any], list[str]] = lambda rec, df, kaplan_df: []  # warnings (may add noise)
    describe: Callable[[Any], list[str]] = lambda rec: []  # `scaling fit`'s lines for a fitted record
    allocation: bool = False  # gives N_opt = k_N C^a: compared in "agreement"
    law: Callable[[Any], Law] | None = None  # the L(N, D) it predicts (None: allocation only)
    min_train: int | None = None  # runs the held-out check needs to refit it
    figures: tuple[str, ...] = field(default=())  # research.plots.figures.FIGURES drawn when it is fitted
    record: type | None = None  # its fit.json block's record class (research.records), when not a built-in one


def param_lines(rec: MethodResult, keys) -> list[str]:
    """`scaling fit`'s lines for a record's parameters, each with its bootstrap interval when there is one."""
    iv = rec.intervals()
    lines = []
    for k in keys:
        v = getattr(rec, k)
        text = "n/a" if v is None else f"{v:.4g}"
        if k in iv and iv[k][0] is not None:
            text += f" [{iv[k][0]:.4g}, {iv[k][1]:.4g}]"
        lines.append(f"  {k:6s} {text}")
    return lines


def allocation_lines(name: str, rec: AllocationResult) -> list[str]:
    """The header and a, b, k_N, k_D of an allocation law N_opt = k_N*C^a, D_opt = k_D*C^b."""
    return [f"{name}: N_opt = k_N*C^a, D_opt = k_D*C^b", *param_lines(rec, ("a", "b", "k_N", "k_D"))]


_REGISTRY: dict[str, Method] = {}  # filled by the method modules; read it through research.fit.methods.METHODS


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"fitting method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    if method.record is not None:
        register_method_record(method.name, method.record)
    return method


def registered() -> dict[str, Method]:
    """Every registered method, by name in sorted order (approach1, approach2, approach3, kaplan, ...),
    so listings, choices and warnings do not depend on which module a process happened to import first."""
    return dict(sorted(_REGISTRY.items()))
