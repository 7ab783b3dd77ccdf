"""Compute-optimal allocation: the one formula for N_opt(C), D_opt(C), in the convention of C.

Training compute is C = f(N)·D, with f(N) the training FLOPs per token of a model with N
parameters, written f(N) = k·N^p:

    "6n"          k = 6, p = 1 exactly: C = 6·N·D (Hoffmann et al. 2022 §3.3, Kaplan et al. 2020).
    "chinchilla"  the exact count of App. F (embeddings, attention over the sequence, logits) is
                  not a power of N; over the models a sweep trained it is fitted as k·N^p by
                  least squares in log-log on the runs' own FLOPs per token (F/D). Approach 2
                  converts its N_opt to D_opt with the same kind of fit, so the approaches agree.

Minimising L(N, D) = E + A/N^α + B/D^β subject to C = k·N^p·D (set dL/dlnN = 0 along the
constraint D = C/(k·N^p)):

    N_opt = G·(C/k)^a,   a = β/(α + p·β),   G = (α·A / (p·β·B))^(1/(α + p·β))
    D_opt = C / (k·N_opt^p) = G^-p·(C/k)^b,   b = 1 − p·a

With k = 6, p = 1 these are Hoffmann et al.'s N_opt = G·(C/6)^a, D_opt = (C/6)^b / G,
a = β/(α+β), b = α/(α+β). Every optimum the package reports (fit.json, `scaling optimal`, the
figures) comes from `compute_optimal` and carries its convention (`optimal_row`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FlopsPerToken:
    """Training FLOPs per token f(N) = k·N^p, in a named FLOP convention."""

    k: float = 6.0
    p: float = 1.0
    convention: str = "6n"

    def __call__(self, n):
        return self.k * np.asarray(n, float) ** self.p

    def describe(self) -> str:
        if self.convention == "6n" and self.k == 6.0 and self.p == 1.0:
            return "6n: C = 6*N*D"
        return f"{self.convention}: C = {self.k:.4g}*N^{self.p:.4f}*D (FLOPs per token fitted on the runs)"

    def to_dict(self) -> dict:
        return {"k": self.k, "p": self.p, "convention": self.convention, "form": "C = k*N^p*D"}

    @classmethod
    def from_dict(cls, d: dict | None) -> "FlopsPerToken":
        if not isinstance(d, dict):
            return SIX_N
        return cls(float(d.get("k", 6.0)), float(d.get("p", 1.0)), str(d.get("convention", "6n")))


SIX_N = FlopsPerToken()


def fit_flops_per_token(N, F, D, convention: str) -> FlopsPerToken:
    """f(N) = k·N^p for runs with parameters N, training FLOPs F (in `convention`) and tokens D.
    Exactly 6·N under "6n"; otherwise a log-log least-squares line through F/D against N."""
    if convention == "6n":
        return SIX_N
    lx = np.log(np.asarray(N, float))
    ly = np.log(np.asarray(F, float) / np.asarray(D, float))
    ok = np.isfinite(lx) & np.isfinite(ly)
    lx, ly = lx[ok], ly[ok]
    if len(lx) == 0:
        raise ValueError("no runs with finite N, F and D to fit FLOPs per token on")
    if len(np.unique(np.round(lx, 9))) < 2:  # one size: keep p = 1 and match its FLOPs per token
        return FlopsPerToken(float(np.exp(np.mean(ly - lx))), 1.0, convention)
    p, logk = np.polyfit(lx, ly, 1)
    return FlopsPerToken(float(np.exp(logk)), float(p), convention)


def allocation_params(A, B, alpha, beta, per_token: FlopsPerToken = SIX_N) -> dict:
    """The exponents a, b and the constant G of the compute-optimal frontier (numpy-broadcast)."""
    A, B, alpha, beta = (np.asarray(v, float) for v in (A, B, alpha, beta))
    p = per_token.p
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = alpha + p * beta
        a = beta / s
        G = (alpha * A / (p * beta * B)) ** (1.0 / s)
    return {"a": a, "b": 1.0 - p * a, "G": G}


def compute_optimal(A, B, alpha, beta, flops, per_token: FlopsPerToken = SIX_N):
    """(N_opt, D_opt) at training compute `flops` (in per_token's convention) for the law
    E + A/N^α + B/D^β; arrays broadcast (e.g. bootstrap samples [:, None] against budgets)."""
    q = allocation_params(A, B, alpha, beta, per_token)
    flops = np.asarray(flops, float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_opt = q["G"] * (flops / per_token.k) ** q["a"]
        d_opt = flops / per_token(n_opt)
    return n_opt, d_opt


def optimal_row(flops, n_opt, d_opt, convention: str) -> dict:
    """The one record of a compute-optimal point (a value or an interval for N and D)."""
    conv = lambda v: [float(x) if x is not None else None for x in v] if isinstance(v, (list, tuple)) \
        else float(v)  # noqa: E731
    return {"flops": float(flops), "flops_convention": convention, "n_opt": conv(n_opt), "d_opt": conv(d_opt)}
