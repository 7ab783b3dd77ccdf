"""The registry of fitting methods: each is one module (research/fit/method_<name>.py) that
registers a `research.fit.method.Method`; the import below names each once. Everything that
runs, checks, predicts with, prints or draws a method looks it up here by name."""

from __future__ import annotations

from research.errors import UserError, closest
from research.fit import (  # noqa: F401 - importing a method's module registers it; one line per method
    method_approach1,
    method_approach2,
    method_approach3,
    method_kaplan,
)
from research.fit.method import Method, registered

METHODS: dict[str, Method] = registered()  # sorted by name: approach1, approach2, approach3, kaplan


def method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}{closest(name, METHODS)}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def allocation_methods() -> list[str]:
    """Methods that give N_opt = k_N C^a (compared with each other in "agreement")."""
    return [name for name, m in METHODS.items() if m.allocation]


def loss_methods() -> list[str]:
    """Methods that fit an L(N, D) law (predictions, the held-out check)."""
    return [name for name, m in METHODS.items() if m.law is not None]
