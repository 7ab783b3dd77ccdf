"""The recipe: how a model grows from one size knob, and hyperparameters as functions of size.

A sweep's *candidates* (budget, N, D) are planned in `plan.py`; the *recipe* here turns a
candidate into an architecture and hyperparameters. Override it in a sweep file:

    [recipe]
    class = "research.sweep.recipe:AspectRatioRecipe"   # or "my_recipes.py:MyRecipe" beside the sweep file
    aspect_ratio = 32                                    # any constructor argument of that class
    lr_rule = "lr-rule-cpu.json"                         # a fitted LR rule, relative to the sweep file

A custom recipe subclasses `AspectRatioRecipe` (or implements the same three methods).

Peak learning rate. Without `lr_rule`, lr = lr_base * (N / lr_ref_params) ** lr_exponent, a guessed
power of N. With `lr_rule` (a JSON file written by `scaling lr-rule` from an lr sweep,
research/fit/lr_rule.py), lr = the rule's lr(N) = lr_ref * (N / n_ref) ** exponent, which replaces
lr_base, lr_ref_params and lr_exponent; lr_max still caps it. A rule covers the sizes it was
calibrated on widened by LR_RULE_MARGIN (2x) each way; a trial outside that is refused when the
sweep is planned, before anything trains. N counts embeddings throughout.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

from research.config import section_from_dict
from research.errors import UserError
from research.fit.lr_rule import load_rule

DEFAULT_RECIPE = "research.sweep.recipe:AspectRatioRecipe"
MAX_SHAPES = 4096  # shapes in one recipe's ladder (each is counted when a sweep is planned)


@dataclass(frozen=True)
class AspectRatioRecipe:
    """Width is the size knob, one head at a time; depth follows at a fixed aspect ratio.

    d_model = head_dim * k, heads = k, layers = max(1, round(d_model / aspect_ratio)),
    ffw = 4 * d_model (set [model] ffw to change). Steps of one head keep neighbouring
    sizes within about 2x in N, fine enough for IsoFLOP parabolas.
    """

    aspect_ratio: int = 32  # d_model / layers
    head_dim: int = 16
    max_width: int = 2048
    lr_base: float = 1e-2  # peak LR at n_params = lr_ref_params ...
    lr_ref_params: float = 1e5
    lr_exponent: float = -0.25  # ... scaled as (N / lr_ref_params) ** lr_exponent
    lr_max: float = 3e-2
    warmup_fraction: float = 0.05
    lr_rule: str | None = None  # a fitted LR rule file (see the module docstring); replaces lr_base/lr_exponent

    def __post_init__(self):
        for name in ("aspect_ratio", "head_dim", "max_width", "lr_base", "lr_ref_params", "lr_max"):
            if not getattr(self, name) > 0:
                raise UserError(f"[recipe] {name} = {getattr(self, name)!r} must be positive")
        if self.head_dim % 2:
            raise UserError(f"[recipe] head_dim = {self.head_dim} must be even (rotary positions rotate pairs)")
        if self.max_width < self.head_dim:
            raise UserError(f"[recipe] max_width = {self.max_width} is below head_dim = {self.head_dim}: no shapes")
        if self.max_width // self.head_dim > MAX_SHAPES:
            raise UserError(f"[recipe] max_width / head_dim = {self.max_width // self.head_dim:,} shapes; at most "
                            f"{MAX_SHAPES:,} (raise head_dim or lower max_width)")
        if not -2 <= self.lr_exponent <= 2:
            raise UserError(f"[recipe] lr_exponent = {self.lr_exponent} is outside [-2, 2] (published LR rules "
                            "scale as N^-0.5 .. N^0)")
        if not self.lr_max < 1:
            raise UserError(f"[recipe] lr_max = {self.lr_max} must be below 1")
        if not 0 <= self.warmup_fraction <= 1:
            raise UserError(f"[recipe] warmup_fraction = {self.warmup_fraction} must lie in [0, 1]")
        if self.lr_rule is not None:
            object.__setattr__(self, "_rule", load_rule(self.lr_rule))  # parsed once, checked before planning

    @property
    def reference_n_params(self) -> float:
        """An N this recipe gives hyperparameters for (the rule's n_ref when it has one): for probing its keys."""
        rule = getattr(self, "_rule", None)
        return rule.n_ref if rule is not None else self.lr_ref_params

    def shape(self, knob: int) -> dict:
        d_model = self.head_dim * knob
        return {"layers": max(1, math.floor(d_model / self.aspect_ratio + 0.5)), "d_model": d_model, "heads": knob}

    def ladder(self) -> list[dict]:
        """Every shape of the family, smallest first."""
        return [self.shape(k) for k in range(1, self.max_width // self.head_dim + 1)]

    def hyperparameters(self, n_params: int, tokens: int, steps: int) -> dict:
        """[train] values for a model of n_params trained for `steps` steps (on `tokens` tokens)."""
        rule = getattr(self, "_rule", None)
        if rule is not None:
            lr = min(self.lr_max, rule.lr(n_params))  # UserError when N is outside the rule's coverage
        else:
            log_scale = self.lr_exponent * math.log(n_params / self.lr_ref_params)
            lr = min(self.lr_max, self.lr_base * math.exp(min(log_scale, 700.0)))  # min(): no overflow, lr_max caps it
        return {"lr": lr, "warmup_steps": max(1, round(self.warmup_fraction * steps))}


def load_recipe(spec: dict, base_dir: Path):
    """Build the recipe named by a sweep file's [recipe] table (typed like every other section
    when the class is a dataclass)."""
    if not isinstance(spec, dict):
        raise UserError(f"[recipe] must be a table of keys, got {spec!r}"[:200])
    spec = dict(spec)
    if isinstance(spec.get("lr_rule"), str):  # a rule file named relative to the sweep file
        spec["lr_rule"] = str((base_dir / spec["lr_rule"]).absolute())
    target = spec.pop("class", DEFAULT_RECIPE)
    if not isinstance(target, str) or ":" not in target:
        raise UserError(f"[recipe] class = {target!r}: expected 'module:Class' or 'file.py:Class'"[:200])
    where, name = target.rsplit(":", 1)
    if where.endswith(".py"):
        path = (base_dir / where).resolve()
        if not path.is_file():
            raise UserError(f"[recipe] class: file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except (ModuleNotFoundError, ValueError):
            raise UserError(f"[recipe] class: no module named {where!r}") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise UserError(f"[recipe] class: {where} has no class {name!r}")
    if dataclasses.is_dataclass(cls):
        return section_from_dict("recipe", cls, spec)
    try:
        return cls(**spec)
    except TypeError as err:
        raise UserError(f"[recipe] {err}") from None
