"""kind "branches": the sizes of a grid, each trained once as a constant-LR trunk, with a WSD
cooldown branch ending at each horizon (Hägele et al. 2024; research/sweep/plan.py explains)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from research.config import DECAY_SHAPES, DecayShape, cooldown_steps
from research.errors import UserError, closest
from research.sweep.kind import Design, register

COOLDOWN_SHAPES = DECAY_SHAPES


@register
@dataclass(frozen=True, kw_only=True)
class BranchesDesign(Design):
    """kind "branches": the sizes of a grid, each trained once as a constant-LR trunk, with a WSD cooldown
    branch ending at each horizon."""

    kind = "branches"
    huge_keys = ("n_params", "budgets", "tokens")

    d_model: list[int] | None = None  # widths of the recipe's shapes ...
    n_params: list[float] | None = None  # ... or target parameter counts (the nearest shape's)
    budgets: list[float] | None = None  # the horizons as IsoFLOP budgets (each size's D = C / FLOPs-per-token) ...
    tokens: list[float] | None = None  # ... or in tokens ...
    tokens_per_param: list[float] | None = None  # ... or as D/N; with budgets: [low, high], the D/N range a size joins at
    cooldown_fraction: float = 0.2  # share of each branch's steps in its cooldown
    cooldown_shape: DecayShape = "1-sqrt"  # "1-sqrt" (Hägele et al. 2024) or "linear"
    trunk_tokens_per_param: float | None = None  # trunk length as D/N (default: the longest branch's)

    def check(self) -> int:
        """The checks of its own keys. Returns the point count (before seeds)."""
        if not 0 < self.cooldown_fraction < 1:
            raise UserError(f"[design] cooldown_fraction = {self.cooldown_fraction} must lie strictly between 0 and 1 "
                            "(the share of each branch's steps spent cooling down; 0.2 is the usual choice)")
        if self.cooldown_shape not in COOLDOWN_SHAPES:
            raise UserError(f"[design] cooldown_shape = {self.cooldown_shape!r}: expected one of {COOLDOWN_SHAPES}"
                            + closest(self.cooldown_shape, COOLDOWN_SHAPES))
        if (self.d_model is None) == (self.n_params is None):
            raise UserError("[design] branches needs exactly one of d_model = [...] or n_params = [...] (the sizes)")
        horizons = [k for k in ("budgets", "tokens") if getattr(self, k) is not None]
        if self.budgets is None and self.tokens_per_param is not None:
            horizons.append("tokens_per_param")
        if len(horizons) != 1:
            raise UserError("[design] branches needs exactly one of budgets = [...] (IsoFLOP budgets; tokens_per_param "
                            "= [low, high] bounds them), tokens = [...] or tokens_per_param = [...] (the branch horizons)")
        if self.budgets is not None and self.tokens_per_param is not None and (
                len(self.tokens_per_param) != 2 or self.tokens_per_param[0] >= self.tokens_per_param[1]):
            raise UserError("[design] with budgets, tokens_per_param must be [low, high] with low < high")
        if self.trunk_tokens_per_param is not None and not self.trunk_tokens_per_param > 0:
            raise UserError(f"[design] trunk_tokens_per_param = {self.trunk_tokens_per_param} must be positive")
        return len(self.d_model or self.n_params) * len(self.budgets or self.tokens or self.tokens_per_param)

    def check_train(self, train: dict) -> None:
        for key, instead in (("decay_fraction", "cooldown_fraction"), ("decay_shape", "cooldown_shape"),
                             ("schedule", "kind = \"branches\"")):
            if key in train and not (key == "schedule" and train[key] == "wsd"):
                raise UserError(f"[train] {key} = {train[key]!r}"[:80] + f": a branch design trains constant-LR trunks "
                                f"and WSD cooldown branches; remove it (set [design] {instead})")

    def straight_train(self, train):
        """A branch stands for the straight WSD run to its horizon."""
        return dataclasses.replace(train, schedule="wsd", decay_fraction=self.cooldown_fraction,
                                   decay_shape=self.cooldown_shape)

    def plan(self, planner):
        """One constant-LR trunk per size (and seed), one WSD cooldown branch per horizon.

        A branch to `steps` leaves its trunk at `steps - cooldown_steps(steps, f)`; the trunk runs to
        the latest such step (or `trunk_tokens_per_param`). Every branch of a size shares the trunk's
        peak LR and warmup, which the recipe must fix per size (horizon_free_hyperparameters), so each
        branch is exactly the straight WSD run to its horizon, whatever else the sweep holds."""
        design, sweep, base = self, planner.sweep, planner.base
        tokens_per_step, available = planner.tokens_per_step, planner.available
        convention = design.flops_convention
        f = design.cooldown_fraction
        trials, trunks, rejected, dropped = [], [], [], []
        for (model, counts), requested in planner.pick_sizes(design):
            size = {"layers": model.layers, "d_model": model.d_model, "n_params": counts.n_params}
            horizons = {}  # steps -> coords of the first point asking for it
            for coords, tokens_wanted in branch_horizons(design, counts, convention, requested):
                where = {**coords, **size}
                steps = round(tokens_wanted / tokens_per_step)
                if coords.get("outside"):  # a budget this size does not join (like a shape an isoflop budget skips)
                    continue
                if steps < 2:
                    rejected.append({**where, "reason": f"needs {tokens_wanted:.3g} tokens, less than two steps "
                                                        f"({tokens_per_step:,} tokens each): no room for a cooldown"})
                elif steps in horizons:
                    dropped.append({**where, "reason": f"the same branch (shape and horizon) as the point at "
                                                       f"{planner.where(horizons[steps])}"})
                else:
                    horizons[steps] = coords
            if not horizons:
                continue
            starts = {steps: steps - cooldown_steps(steps, f) for steps in horizons}
            shortest = min(horizons)
            hyper = horizon_free_hyperparameters(sweep.recipe, counts.n_params, tokens_per_step)
            warmup = min(hyper.get("warmup_steps") or 1, shortest)
            for steps in sorted(horizons):
                if starts[steps] <= warmup:
                    rejected.append({**horizons.pop(steps), **size, "reason": f"its cooldown would start at step "
                                     f"{starts[steps]}, inside the trunk's warmup of {warmup} steps; lengthen it"})
            if not horizons:
                continue
            trunk_steps = max(starts[s] for s in horizons)
            if design.trunk_tokens_per_param is not None:
                cap = round(design.trunk_tokens_per_param * counts.n_params / tokens_per_step)
                beyond = [s for s in horizons if starts[s] > cap]
                if beyond:
                    s = min(beyond)
                    raise UserError(f"[design] the branch to D = {s * tokens_per_step:,} tokens for N = {counts.n_params:,} "
                                    f"leaves its trunk at step {starts[s]:,}, beyond the trunk's {cap:,} steps "
                                    f"(trunk_tokens_per_param = {design.trunk_tokens_per_param:g}); raise it to at least "
                                    f"{starts[max(beyond)] * tokens_per_step / counts.n_params:.4g} or drop that horizon")
                trunk_steps = cap
            if trunk_steps * tokens_per_step > available and not design.allow_repeat:
                rejected += [{**horizons[s], **size, "reason": f"its trunk needs {trunk_steps * tokens_per_step:,} tokens "
                              f"but the training split holds {available:,} (set allow_repeat = true to repeat data)"}
                             for s in horizons]
                continue
            shared = dict(hyper, warmup_steps=warmup)
            for trunk_config in planner.seeded(base.replace(model=model, train=dataclasses.replace(
                    base.train, steps=trunk_steps, schedule="constant", decay_fraction=f,
                    decay_shape=design.cooldown_shape, **shared)), design.seeds):
                planner.checked(trunk_config, counts)
                trunk_id = planner.trial_id(trunk_config)
                trunks.append(planner.trial(trunk_id, trunk_config, {"budget": None, "requested_n": requested,
                                                              "requested_tokens_per_param": None},
                                     counts, trunk_steps * tokens_per_step, trunk_steps, role="trunk",
                                     keep_steps=sorted({starts[s] for s in horizons})))
                for steps, coords in sorted(horizons.items()):
                    config = planner.checked(trunk_config.replace(train=dataclasses.replace(
                        trunk_config.train, steps=steps, schedule="wsd")), counts)
                    trial_id = planner.trial_id(config)
                    trials.append(planner.trial(trial_id, config, coords, counts, steps * tokens_per_step, steps,
                                         role="branch", trunk_id=trunk_id, branch_step=starts[steps]))
        if not trials:
            reasons = "; ".join(sorted({r["reason"] for r in rejected}))[:300]
            raise UserError(f"the design yields no branch that can run: {reasons or 'no size has a budget whose D/N lies in tokens_per_param'}")
        return planner.make_plan(trials, rejected, dropped, trunks)


PROBE_STEPS = (1_000, 100_000)  # two horizons at which a branch design's hyperparameters must agree


def horizon_free_hyperparameters(recipe, n_params: int, tokens_per_step: int) -> dict:
    """The recipe's [train] values for a size, which a branch design shares between the size's trunk
    and all its branches. They must not depend on the horizon: a branch has to equal the straight
    WSD run to its own D, whichever other horizons share the sweep (else a run would depend on its
    sweep's budget list). Asked at two fixed horizons, never at the design's."""
    probes = [recipe.hyperparameters(n_params, steps * tokens_per_step, steps) for steps in PROBE_STEPS]
    if probes[0] != probes[1]:
        keys = ", ".join(sorted(k for k in probes[0] if probes[0][k] != probes[1].get(k)))
        raise UserError(f"[recipe] gives N = {n_params:,} a {keys} that depends on the training horizon; a branch design "
                        f"shares one trunk among a size's horizons, so it needs one fixed per size: set [recipe] "
                        f"warmup_tokens = ... (e.g. 1e5) instead of warmup_fraction")
    return probes[0]


def branch_horizons(design, counts, convention: str, requested: float):
    """(coords, tokens wanted) per horizon of one size; a budget whose D/N falls outside
    tokens_per_param = [low, high] comes marked "outside" (the size does not join that budget)."""
    if design.budgets is None:
        for value in design.tokens or design.tokens_per_param:
            wanted = value if design.tokens else value * counts.n_params
            yield {"budget": None, "requested_n": requested,
                   "requested_tokens_per_param": wanted / counts.n_params}, wanted
        return
    low, high = design.tokens_per_param or (0.0, math.inf)
    for budget in design.budgets:
        wanted = budget / counts.flops_per_token(convention)
        coords = {"budget": budget, "requested_n": requested, "requested_tokens_per_param": wanted / counts.n_params}
        if not low <= wanted / counts.n_params <= high:
            coords["outside"] = True
        yield coords, wanted
