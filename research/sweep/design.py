"""The typed sections a sweep file adds to a run file: [design], [recipe] ownership, [slurm].

Every section goes through the same typed path as [data]/[model]/[train]
(`research.config.section_from_dict`): unknown keys get a did-you-mean line, wrong types and
non-finite numbers a one-line error, and the value checks below run before anything is planned.

    [design]   which (budget, N, D) points to train: `kind` picks the kind's own config class
               (research/sweep/kind_<name>.py, research/sweep/kind.py says what a kind is)
    [recipe]   a recipe class and its constructor arguments (research/sweep/recipe.py)
    [slurm]    research.sweep.slurm.SlurmOptions, less `folder` (the sweep's own slurm/ directory)

The recipe owns the keys it sets for every trial (AspectRatioRecipe: [model] layers, d_model,
heads and [train] lr, warmup_steps). A sweep file that also sets one of them is refused with
one line saying which recipe key to change instead: a value silently overridden is a trap.
"""

from __future__ import annotations

import dataclasses
import re

from research.config import section_from_dict
from research.errors import UserError, closest
from research.sweep.kind import Design
from research.sweep.kinds import KINDS

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Keys the one flat [design] record of earlier versions wrote to sweep.json for every kind, at these
# defaults, whether the kind took them or not: reading an old sweep.json drops them where they do not apply.
LEGACY_RECORD_DEFAULTS = {"sizes": 5, "cooldown_fraction": 0.2, "cooldown_shape": "1-sqrt"}


def check_name(name, source) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UserError(f"{source}: name = {name!r}"[:160] + " must be 1-100 letters, digits, '.', '_' or '-' "
                        "(it names the results directory results/<name>)")
    return name


def parse_design(raw) -> Design:
    """[design] as its kind's typed config: `kind` picks the class (research.sweep.kinds.KINDS), whose own
    checks run on construction; a key the kind does not take is refused naming the kind and its keys."""
    if not isinstance(raw, dict):
        raise UserError(f"[design] must be a table of keys, got {raw!r}"[:200])
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        names = [repr(k) for k in KINDS]
        raise UserError(f"[design] kind = {kind!r}: expected {', '.join(names[:-1])} or {names[-1]}"[:200]
                        + closest(str(kind), KINDS))
    cls = KINDS[kind]
    for key in raw:
        if key not in cls.keys():
            raise UserError(_unknown_key(key, kind))
    return section_from_dict("design", cls, {k: v for k, v in raw.items() if k != "kind"})


def _unknown_key(key: str, kind: str) -> str:
    """One line: the key, the kind, the closest key it takes (or the kinds the key belongs to), and its keys."""
    keys = KINDS[kind].keys()
    hint = closest(key, keys)
    if not hint:
        owners = [repr(name) for name, cls in KINDS.items() if key in cls.keys()]
        hint = f" (a key of kind {' and '.join(owners)})" if owners else ""
    return (f"unknown key [design] {key}"[:120] + f" for kind {kind!r}{hint}; kind {kind!r} takes "
            + ", ".join(keys[1:]))


def design_from_record(record) -> Design:
    """The typed design of a sweep.json "design" block, this version's or an earlier one's (whose flat record
    also held LEGACY_RECORD_DEFAULTS for kinds that never took them)."""
    if isinstance(record, dict) and record.get("kind") in KINDS:
        keys = KINDS[record["kind"]].keys()
        record = {k: v for k, v in record.items()
                  if k in keys or k not in LEGACY_RECORD_DEFAULTS or v != LEGACY_RECORD_DEFAULTS[k]}
    return parse_design(record)


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
