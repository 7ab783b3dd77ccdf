"""What a [design] kind is: the keys it takes, its checks, and the trials it plans.

A kind is one module (research/sweep/kind_<name>.py) that registers an instance of a
`DesignKind` subclass; research/sweep/kinds.py imports those modules, one line each, and is
where the parser (research/sweep/design.py) and the planner (research/sweep/plan.py) look a
kind up by its `kind = "..."` name.

Every kind reads the one typed [design] record (`DesignConfig`, the TOML table's shape); its
`keys` say which of its fields the kind takes (beside COMMON_KEYS), so any other key is refused.
"""

from __future__ import annotations

from typing import Iterator

COMMON_KEYS = frozenset({"kind", "flops_convention", "allow_repeat", "seeds", "allow_mixed_families"})


class DesignKind:
    name: str = ""
    keys: frozenset[str] = frozenset()  # its own [design] keys, beside COMMON_KEYS

    def check(self, design) -> int:
        """UserError (one line) for a design this kind cannot plan; else its point count before seeds."""
        raise NotImplementedError

    def candidates(self, sweep, planner) -> Iterator[tuple]:
        """(model, counts, coords, tokens wanted) per design point (research.sweep.plan.Planner gives the
        recipe's ladder, the tokens per step and the helpers); points that get no shape of their own go to
        planner.dropped with their reason."""
        raise NotImplementedError

    def plan(self, sweep, planner):
        """A Plan, for a kind that lays out its trials itself (branches: trunks and their cooldowns);
        None to plan from `candidates` (one run from scratch per point and seed)."""
        return None

    def check_train(self, train: dict) -> None:
        """UserError for a [train] key this kind sets per trial itself (none by default)."""


_REGISTRY: dict[str, DesignKind] = {}  # filled by the kind modules; read it through research.sweep.kinds.KINDS


def register(kind: DesignKind) -> DesignKind:
    if kind.name in _REGISTRY:
        raise ValueError(f"design kind {kind.name!r} is registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def registered() -> dict[str, DesignKind]:
    return dict(_REGISTRY)
