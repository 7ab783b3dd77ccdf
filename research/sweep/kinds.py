"""The registry of [design] kinds: each is one module (research/sweep/kind_<name>.py) whose
`research.sweep.kind.Design` subclass registers itself; the import below names each once (in the
order error messages and the reference list them). The parser and the planner look a kind up here by name."""

from __future__ import annotations

from research.sweep import (  # noqa: F401 - importing a kind's module registers it; one line per kind
    kind_isoflop,
    kind_grid,
    kind_branches,
    kind_lr,
)
from research.sweep.kind import Design, registered

KINDS: dict[str, type[Design]] = registered()  # isoflop, grid, branches, lr: the kind's config class


def design_keys(kind: str) -> frozenset[str]:
    """Every [design] key a kind takes."""
    return frozenset(KINDS[kind].keys())
