"""What a [design] kind is: one class with its own typed config, checks and candidates, looked up by `kind`.

A kind is one module (research/sweep/kind_<name>.py) holding one frozen dataclass, a subclass of
`Design` registered with `@register`:

    its fields        the kind's own [design] keys, with their types, defaults and the comment the
                      reference (docs/reference/sweep-file.md) shows; `Design`'s fields are the keys
                      every kind takes
    check()           the checks of its own keys (run on construction); returns its point count
    candidates(p)     (model, counts, coords, tokens wanted) per design point, or
    plan(p)           a whole Plan, for a kind that lays out its trials itself (branches)

research/sweep/kinds.py imports the kind modules, one line each; the parser
(research/sweep/design.py: `[design] kind = "..."` picks the class, and a key the class lacks is
refused naming the key, the kind and the keys it takes) and the planner (research/sweep/plan.py)
find a kind there. sweep.json's "design" block is `to_dict()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Iterator

from research.config import FLOP_CONVENTIONS, FlopConvention
from research.errors import UserError, closest

MAX_SEEDS = 64
MAX_POINTS = 10_000  # design points in one sweep
MAX_VALUE = 1e30  # budgets, tokens, parameter counts: beyond any trainable model


@dataclass(frozen=True, kw_only=True)
class Design:
    """The keys every kind takes; a kind's class adds its own (and `kind = "..."` names the class)."""

    kind: ClassVar[str] = ""  # the registered name, `[design] kind = "..."`
    fits_a_law: ClassVar[bool] = True  # False: the sweep calibrates something else (lr), no [validate] rung
    huge_keys: ClassVar[tuple[str, ...]] = ()  # its keys in FLOPs, tokens or parameters: at most MAX_VALUE

    flops_convention: FlopConvention = "6n"  # "6n" or "chinchilla" (see research/model/accounting.py)
    allow_repeat: bool = False  # allow trials needing more tokens than the training split holds
    seeds: int = 1  # replicates of every point, [train] seed, seed + 1, ... (init and data order)
    allow_mixed_families: bool = False  # allow sizes from several model families of the recipe (e.g. depths)

    def __post_init__(self):
        if self.flops_convention not in FLOP_CONVENTIONS:
            raise UserError(f"[design] flops_convention = {self.flops_convention!r}: expected one of "
                            f"{FLOP_CONVENTIONS}" + closest(self.flops_convention, FLOP_CONVENTIONS))
        for f in dataclasses.fields(self):  # every list key: non-empty, every value positive
            values = getattr(self, f.name)
            if not isinstance(values, list):
                continue
            if not values:
                raise UserError(f"[design] {f.name} must not be an empty list")
            if any(v <= 0 for v in values):
                raise UserError(f"[design] {f.name}: every value must be greater than 0")
        if not isinstance(self.seeds, int) or not 1 <= self.seeds <= MAX_SEEDS:
            raise UserError(f"[design] seeds = {self.seeds!r} must be an integer from 1 to {MAX_SEEDS} "
                            "(replicates of every point)")
        points = self.check()
        if points * self.seeds > MAX_POINTS:
            raise UserError(f"[design] asks for {points * self.seeds:,} design points; at most {MAX_POINTS:,} per "
                            "sweep (split the study into several sweeps)")
        for key in self.huge_keys:
            if any(v > MAX_VALUE for v in getattr(self, key) or ()):
                raise UserError(f"[design] {key}: values above {MAX_VALUE:g} are beyond any trainable model; "
                                "check the exponent")

    @classmethod
    def own_keys(cls) -> tuple[str, ...]:
        """The kind's own [design] keys, in the order its class declares them."""
        common = {f.name for f in dataclasses.fields(Design)}
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in common)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every [design] key the kind takes: kind, its own, the common ones."""
        return ("kind", *cls.own_keys(), *(f.name for f in dataclasses.fields(Design)))

    def to_dict(self) -> dict:
        """The design as sweep.json records it: kind and every key that is set."""
        return {"kind": self.kind, **{k: v for k, v in dataclasses.asdict(self).items() if v is not None}}

    def check(self) -> int:
        """UserError (one line) for values of its own keys this kind cannot plan; else its point count before seeds."""
        raise NotImplementedError

    def candidates(self, planner) -> Iterator[tuple]:
        """(model, counts, coords, tokens wanted) per design point (research.sweep.plan.Planner gives the
        sweep, the recipe's ladder, the tokens per step and the helpers); points that get no shape of their
        own go to planner.dropped with their reason."""
        raise NotImplementedError

    def plan(self, planner):
        """A Plan, for a kind that lays out its trials itself (branches: trunks and their cooldowns);
        None to plan from `candidates` (one run from scratch per point and seed)."""
        return None

    def check_train(self, train: dict) -> None:
        """UserError for a [train] key this kind sets per trial itself (none by default)."""

    def straight_train(self, train):
        """The [train] settings of the run from scratch that a trial of this design stands for (a
        validation rung trains those): the trial's own by default."""
        return train


_REGISTRY: dict[str, type[Design]] = {}  # filled by the kind modules; read it through research.sweep.kinds.KINDS


def register(cls: type[Design]) -> type[Design]:
    """Class decorator: make `cls` the [design] kind named `cls.kind`."""
    if not cls.kind or cls.kind in _REGISTRY:
        raise ValueError(f"design kind {cls.kind!r} is unnamed or registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def registered() -> dict[str, type[Design]]:
    return dict(_REGISTRY)
