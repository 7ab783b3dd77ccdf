"""The typed sections a sweep file adds to a run file: [design], [recipe] ownership, [slurm].

Every section goes through the same typed path as [data]/[model]/[train]
(`research.config.section_from_dict`): unknown keys get a did-you-mean line, wrong types and
non-finite numbers a one-line error, and the value checks below run before anything is planned.

    [design]   DesignConfig: which (budget, N, D) points to train
    [recipe]   a recipe class and its constructor arguments (research/sweep/recipe.py)
    [slurm]    research.sweep.slurm.SlurmOptions, less `folder` (the sweep's own slurm/ directory)

The recipe owns the keys it sets for every trial (AspectRatioRecipe: [model] layers, d_model,
heads and [train] lr, warmup_steps). A sweep file that also sets one of them is refused with
one line saying which recipe key to change instead: a value silently overridden is a trap.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from research.config import FLOP_CONVENTIONS, DecayShape, FlopConvention, section_from_dict
from research.errors import UserError, closest
from research.sweep.kinds import KINDS, design_keys

MAX_SEEDS = 64
MAX_POINTS = 10_000  # design points in one sweep
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class DesignConfig:
    """[design]: kind "isoflop" (budgets x sizes), "grid" (sizes x horizons), "branches" (sizes x
    horizons, trained as one constant-LR trunk per size with a cooldown branch per horizon) or "lr"
    (sizes x peak-LR multipliers at one horizon, for research/fit/lr_rule.py). See plan.py.

    The one typed record of the TOML table; each kind (research/sweep/kind_<name>.py, looked up in
    research.sweep.kinds.KINDS) takes its own subset of these fields, checks them and plans from them."""

    kind: str  # "isoflop", "grid", "branches" or "lr": which keys below apply
    budgets: list[float] | None = None  # isoflop: training FLOPs under flops_convention
    tokens_per_param: list[float] | None = None  # isoflop: [low, high]; grid: the horizons as D/N
    sizes: int = 5  # isoflop: model sizes per budget
    flops_convention: FlopConvention = "6n"  # "6n" or "chinchilla" (see research/model/accounting.py)
    allow_repeat: bool = False  # allow trials needing more tokens than the training split holds
    d_model: list[int] | None = None  # grid: widths of the recipe's shapes ...
    n_params: list[float] | None = None  # ... or target parameter counts
    tokens: list[float] | None = None  # grid: horizons in tokens
    seeds: int = 1  # replicates of every point, [train] seed, seed + 1, ... (init and data order)
    cooldown_fraction: float = 0.2  # branches: share of each branch's steps in its cooldown
    cooldown_shape: DecayShape = "1-sqrt"  # branches: "1-sqrt" (Hägele et al. 2024) or "linear"
    trunk_tokens_per_param: float | None = None  # branches: trunk length as D/N (default: the longest branch's)
    lr_multipliers: list[float] | None = None  # lr: factors on the recipe's own peak lr for each size
    allow_mixed_families: bool = False  # allow sizes from several model families of the recipe (e.g. depths)

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def check_name(name, source) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"{source}: name = {name!r}"[:160] + " must be 1-100 letters, digits, '.', '_' or '-' "
                        "(it names the results directory results/<name>)")
    return name


def parse_design(raw) -> DesignConfig:
    if not isinstance(raw, dict):
        raise UserError(f"[design] must be a table of keys, got {raw!r}"[:200])
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        names = [repr(k) for k in KINDS]
        raise UserError(f"[design] kind = {kind!r}: expected {', '.join(names[:-1])} or {names[-1]}"[:200]
                        + closest(str(kind), KINDS))
    for key in raw:
        if key not in design_keys(kind):
            raise UserError(f"unknown key [design] {key} for kind {kind!r}{closest(key, design_keys(kind))}")
    design = section_from_dict("design", DesignConfig, raw)
    if design.flops_convention not in FLOP_CONVENTIONS:
        raise UserError(f"[design] flops_convention = {design.flops_convention!r}: expected one of {FLOP_CONVENTIONS}"
                        + closest(design.flops_convention, FLOP_CONVENTIONS))
    for key in ("budgets", "tokens_per_param", "n_params", "tokens", "d_model", "lr_multipliers"):
        values = getattr(design, key)
        if values is None:
            continue
        if not values:
            raise UserError(f"[design] {key} must not be an empty list")
        if any(v <= 0 for v in values):
            raise UserError(f"[design] {key}: every value must be greater than 0")
    if not isinstance(design.seeds, int) or not 1 <= design.seeds <= MAX_SEEDS:
        raise UserError(f"[design] seeds = {design.seeds!r} must be an integer from 1 to {MAX_SEEDS} "
                        "(replicates of every point)")
    points = KINDS[kind].check(design)
    if points * design.seeds > MAX_POINTS:
        raise UserError(f"[design] asks for {points * design.seeds:,} design points; at most {MAX_POINTS:,} per sweep "
                        "(split the study into several sweeps)")
    for key in ("budgets", "tokens", "n_params"):
        if any(v > 1e30 for v in getattr(design, key) or ()):
            raise UserError(f"[design] {key}: values above 1e30 are beyond any trainable model; check the exponent")
    return design


def recipe_owned_keys(recipe) -> dict[str, set[str]]:
    """{"model": keys its shapes set, "train": keys its hyperparameters set}, asked of the recipe itself."""
    ladder = recipe.ladder()
    model_keys = set(ladder[0]) if ladder else set()
    probe_n = getattr(recipe, "reference_n_params", 100_000)  # an N inside a fitted LR rule's coverage
    train_keys = set(recipe.hyperparameters(probe_n, 2_000_000, 100))
    return {"model": model_keys, "train": train_keys}


def refuse_recipe_overrides(raw: dict, recipe) -> None:
    """A key the recipe sets for every trial, also set in the sweep file, is refused (never silently lost)."""
    recipe_class = f"{type(recipe).__module__}:{type(recipe).__qualname__}"
    for section, keys in recipe_owned_keys(recipe).items():
        table = raw.get(section)
        if not isinstance(table, dict):
            continue
        for key in sorted(keys & set(table)):
            raise UserError(f"[{section}] {key} = {table[key]!r}"[:120] + f" is set per trial by the recipe "
                            f"({recipe_class}); remove it, and change the recipe's own keys in [recipe] instead "
                            f"({_recipe_hint(section, recipe)})")


def _recipe_hint(section: str, recipe) -> str:
    fields = [f.name for f in dataclasses.fields(recipe)] if dataclasses.is_dataclass(recipe) else []
    wanted = [f for f in fields if (f.startswith("lr_") or "warmup" in f)] if section == "train" \
        else [f for f in fields if f in ("aspect_ratio", "head_dim", "max_width")]
    return ", ".join(wanted) if wanted else "see its class"


def parse_slurm(raw) -> dict:
    """[slurm] checked against SlurmOptions (every field but `folder`); returns the keys given."""
    if raw is None:
        return {}
    from research.sweep.slurm import SlurmOptions  # lazy: submitit (~0.2 s), for --help and sweeps without Slurm

    if isinstance(raw, dict) and "folder" in raw:
        raise UserError("[slurm] folder: submitit's files always go to <sweep dir>/slurm; remove the key")
    options = section_from_dict("slurm", SlurmOptions, dict(raw, folder="/") if isinstance(raw, dict) else raw)
    given = {k: getattr(options, k) for k in raw}
    at_least = {"time_min": 1, "array_parallelism": 1, "gpus_per_node": 0, "max_requeues": 0}
    for key, low in at_least.items():
        if key in given and given[key] < low:
            raise UserError(f"[slurm] {key} = {given[key]!r} must be at least {low}")
    for key in ("poll_s", "cpus_per_task", "mem_gb", "signal_delay_s"):
        if given.get(key) is not None and given[key] <= 0:
            raise UserError(f"[slurm] {key} = {given[key]!r} must be positive")
    if given.get("time_min", 0) > 366 * 24 * 60:
        raise UserError(f"[slurm] time_min = {given['time_min']} minutes is longer than a year")
    return given
