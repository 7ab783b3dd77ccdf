"""The recipe: how a model grows from one size knob, and hyperparameters as functions of size.

A sweep's *candidates* (budget, N, D) are planned in `plan.py`; the *recipe* here turns a
candidate into an architecture and hyperparameters. Override it in a sweep file:

    [recipe]
    class = "research.sweep.recipe:AspectRatioRecipe"   # or "my_recipes.py:MyRecipe" beside the sweep file
    aspect_ratio = 32                                    # any constructor argument of that class
    lr_rule = "lr-rule-cpu.json"                         # a fitted LR rule, relative to the sweep file

A custom recipe subclasses `AspectRatioRecipe` (or implements the same methods). Built in:
`AspectRatioRecipe` (depth = round(d_model / aspect_ratio): its depth steps make several model
families), `FixedDepthRecipe` (one depth, width the knob: one family) and `ProportionalRecipe`
(layers and d_model scaled together on one aspect ratio: one family).

Model families. `family(shape)` names the rule a shape is on (default: its depth). A sweep whose
sizes span several families is refused when planned unless `[design] allow_mixed_families = true`:
a law fitted across a change of architecture confounds the change with N.

Peak learning rate. Without `lr_rule`, lr = lr_base * (N / lr_ref_params) ** lr_exponent, a guessed
power of N. With `lr_rule` (a JSON file written by `scaling lr-rule` from an lr sweep,
research/fit/lr_rule.py), lr = the rule's lr(N) = lr_ref * (N / n_ref) ** exponent, which replaces
lr_base, lr_ref_params and lr_exponent; lr_max still caps it. A rule covers the sizes it was
calibrated on widened by LR_RULE_MARGIN (2x) each way; a trial outside that is refused when the
sweep is planned, before anything trains. N counts embeddings throughout.

Warmup. By default 5% of each run's own steps (`warmup_fraction`), a function of the run's own
horizon. A branch design shares one trunk (and its warmup) among every horizon of a size, so it
needs a warmup that does not depend on the horizon: `warmup_tokens` (the same number of tokens for
every trial). Then a trial's schedule is a function of its own shape, D, seed and recipe alone,
never of which other budgets share its sweep (planning refuses a branch design otherwise).
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
from research.model.family import depth_family

DEFAULT_RECIPE = "research.sweep.recipe:AspectRatioRecipe"
DEFAULT_WARMUP_FRACTION = 0.05  # of a run's own steps, when the recipe sets neither warmup key
MAX_SHAPES = 4096  # shapes in one recipe's ladder (each is counted when a sweep is planned)


@dataclass(frozen=True)
class AspectRatioRecipe:
    """Width is the size knob, one head at a time; depth follows at a fixed aspect ratio.

    d_model = head_dim * k, heads = k, layers = max(1, round(d_model / aspect_ratio)),
    ffw = 4 * d_model (set [model] ffw to change). Steps of one head keep neighbouring
    sizes within about 2x in N, fine enough for IsoFLOP parabolas.
    """

    aspect_ratio: int = 32  # d_model / layers
    head_dim: int = 16  # width of one head; d_model grows one head at a time
    max_width: int = 2048  # widest d_model the ladder of shapes goes to
    lr_base: float = 1e-2  # peak LR at n_params = lr_ref_params ...
    lr_ref_params: float = 1e5  # N at which the peak LR is lr_base
    lr_exponent: float = -0.25  # ... scaled as (N / lr_ref_params) ** lr_exponent
    lr_max: float = 3e-2  # cap on any trial's peak LR (also with lr_rule)
    warmup_fraction: float | None = None  # warmup as a share of the run's own steps (default 0.05): from-scratch designs
    warmup_tokens: float | None = None  # a warmup of this many tokens for every size and horizon (branch designs need it)
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
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction <= 1:
            raise UserError(f"[recipe] warmup_fraction = {self.warmup_fraction} must lie in [0, 1]")
        if self.warmup_tokens is not None and not self.warmup_tokens > 0:
            raise UserError(f"[recipe] warmup_tokens = {self.warmup_tokens} must be positive")
        if self.warmup_fraction is not None and self.warmup_tokens is not None:
            raise UserError("[recipe] set one of warmup_fraction (a share of each run's steps) or warmup_tokens "
                            "(a fixed warmup), not both")
        if self.lr_rule is not None:
            object.__setattr__(self, "_rule", load_rule(self.lr_rule))  # parsed once, checked before planning

    def calibrating(self) -> "AspectRatioRecipe":
        """This recipe for an lr sweep ([design] kind = "lr"): its lr_rule, if any, extrapolated past the
        sizes it covers, so that new sizes are sampled around the rule's own guess for them."""
        rule = getattr(self, "_rule", None)
        if rule is None:
            return self
        recipe = dataclasses.replace(self, lr_rule=None)
        object.__setattr__(recipe, "_rule", rule.extrapolating())
        return recipe

    @property
    def reference_n_params(self) -> float:
        """An N this recipe gives hyperparameters for (the rule's n_ref when it has one): for probing its keys."""
        rule = getattr(self, "_rule", None)
        return rule.n_ref if rule is not None else self.lr_ref_params

    def shape(self, knob: int) -> dict:
        d_model = self.head_dim * knob
        return {"layers": max(1, math.floor(d_model / self.aspect_ratio + 0.5)), "d_model": d_model, "heads": knob}

    def ladder(self) -> list[dict]:
        """Every shape of the recipe, smallest first (each with its depth: `layers`)."""
        return [self.shape(k) for k in range(1, self.max_width // self.head_dim + 1)]

    def family(self, shape: dict) -> str:
        """The model family a shape belongs to: shapes on one rule, whose losses a law may compare.
        Here depth is a rounded d_model / aspect_ratio, so each depth is its own family."""
        return depth_family(shape["layers"])

    def hyperparameters(self, n_params: int, tokens: int, steps: int) -> dict:
        """[train] values for a model of n_params trained for `steps` steps (on `tokens` tokens)."""
        rule = getattr(self, "_rule", None)
        if rule is not None:
            lr = min(self.lr_max, rule.lr(n_params))  # UserError when N is outside the rule's coverage
        else:
            log_scale = self.lr_exponent * math.log(n_params / self.lr_ref_params)
            lr = min(self.lr_max, self.lr_base * math.exp(min(log_scale, 700.0)))  # min(): no overflow, lr_max caps it
        if self.warmup_tokens is not None:  # fixed: the same for every horizon (a branch shares its trunk's)
            warmup = max(1, round(self.warmup_tokens / (tokens / steps)))
        else:
            fraction = DEFAULT_WARMUP_FRACTION if self.warmup_fraction is None else self.warmup_fraction
            warmup = max(1, round(fraction * steps))
        return {"lr": lr, "warmup_steps": warmup}


@dataclass(frozen=True)
class FixedDepthRecipe(AspectRatioRecipe):
    """A fixed-depth ladder: every shape has `layers` layers; width (one head at a time) is the
    size knob. One family over any range of N (ffw = 4 d_model, head_dim fixed)."""

    layers: int = 1
    aspect_ratio: int = 32  # unused: depth is fixed

    def __post_init__(self):
        if not isinstance(self.layers, int) or not 1 <= self.layers <= 1024:
            raise UserError(f"[recipe] layers = {self.layers!r} must be an integer from 1 to 1024")
        super().__post_init__()

    def shape(self, knob: int) -> dict:
        return {"layers": self.layers, "d_model": self.head_dim * knob, "heads": knob}


@dataclass(frozen=True)
class ProportionalRecipe(AspectRatioRecipe):
    """Depth and width scaled together on one rule: layers = k, d_model = aspect_ratio * k exactly
    (heads = d_model / head_dim). One family: every shape has the same aspect ratio. Coarse steps
    in N (about 2.5x between neighbours at small k), so best for grids and branch designs."""

    def __post_init__(self):
        super().__post_init__()
        if self.aspect_ratio % self.head_dim:
            raise UserError(f"[recipe] aspect_ratio = {self.aspect_ratio} must be a multiple of head_dim = "
                            f"{self.head_dim} (d_model = aspect_ratio x layers splits into whole heads)")

    def shape(self, knob: int) -> dict:
        d_model = self.aspect_ratio * knob
        return {"layers": knob, "d_model": d_model, "heads": d_model // self.head_dim}

    def ladder(self) -> list[dict]:
        return [self.shape(k) for k in range(1, self.max_width // self.aspect_ratio + 1)]

    def family(self, shape: dict) -> str:
        return f"d_model = {self.aspect_ratio} x layers"


def family_of(recipe, shape: dict) -> str:
    """The family of a shape under a recipe: its `family(shape)` when it has one, else its depth."""
    family = getattr(recipe, "family", None)
    return str(family(shape)) if callable(family) else depth_family(shape["layers"])


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
