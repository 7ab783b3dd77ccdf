"""Sweep files and planning: from a [design] to trials with their real counted N and D.

A sweep file is a run file ([data], [model], [train] shared by every trial) plus:

    name = "demo"            # results go to results/<name> unless --out says otherwise
    [design]                 # which (budget, N, D) candidates to train
    kind = "isoflop"         #   budgets x model sizes, D = C / FLOPs-per-token
    budgets = [2e11, 6e11]   #   training FLOPs, under flops_convention ("6n" or "chinchilla")
    tokens_per_param = [4, 150]   # the range of D/N each budget spans ...
    sizes = 5                #   ... with this many log-spaced model sizes
    # kind = "grid": d_model = [16, 32] (or n_params = [...]) x tokens = [...] (or tokens_per_param = [...])
    # kind = "branches": the sizes of a grid, each trained once as a constant-LR trunk, with a
    #   cooldown branch (warmup-stable-decay) ending at each horizon: tokens = [...],
    #   tokens_per_param = [...], or budgets = [...] (each size's D = C / FLOPs-per-token, kept
    #   where D/N lies in tokens_per_param = [low, high]); cooldown_fraction = 0.2,
    #   cooldown_shape = "1-sqrt"; trunk_tokens_per_param caps the trunk (default: just long enough)
    seeds = 1                # replicates of every point: [train] seed, seed + 1, ...
    # kind = "lr": sizes as in grid x lr_multipliers = [0.25, 0.5, 1, 2, 4] at one horizon tokens = [T]
    allow_repeat = false     # refuse trials needing more tokens than the training split holds
    [recipe]                 # architecture and hyperparameter rules (see recipe.py)
    [slurm]                  # options for --executor slurm (see runner.py)

Every trial keeps its design coordinates (budget, requested_n, requested_tokens_per_param) next to its
real counted n_params and tokens; its id is the hash of its resolved config.

Cooldown branches (Hägele et al. 2024; the OLMo and Marin ladders): a branch's config is exactly
that of a straight WSD run to its horizon D (same id), but it is trained from its trunk's
checkpoint at step `steps - cooldown_steps(steps, f)`, where the straight run's cooldown would
begin. Its row means what a run from scratch means: N, D and C count its whole history, trunk
included (FLOPs *represented*); what the sweep actually computes (FLOPs *spent*) counts each trunk
once plus each branch's cooldown.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from research.config import FLOP_CONVENTIONS, RunConfig, apply_overrides, read_toml, run_config_from_dict, validate
from research.data import get_dataset
from research.errors import UserError
from research.fit.lr_rule import run_settings
from research.fit.lr_rule_check import PlannedRun, rule_checks
from research.model.accounting import RunSize, count_model
from research.sweep.design import check_name, parse_design, parse_slurm, refuse_recipe_overrides
from research.sweep.kind import Design
from research.sweep.recipe import family_of, load_recipe
from research.sweep.validate_config import ValidateConfig, parse_validate
from research.train.run_dir import identity, identity_hash
from research.train.sweep_dir import spent_fraction

SWEEP_SECTIONS = ("design", "recipe", "slurm", "validate")
DEFAULT_FLOPS_PER_S = 1.5e10  # tiny models on 2 CPU cores (6n FLOPs/s; the demo measures 1.4-2e10); until trials measure it
STARTUP_S = 6.0  # process start + compile per trial, on CPU


@dataclass
class Sweep:
    name: str
    source: Path
    base: RunConfig  # shared sections; the horizon is filled per trial
    design: Design  # its kind's own config class (research/sweep/kind_<name>.py)
    recipe: object
    slurm: dict  # the [slurm] keys given (checked against SlurmOptions)
    raw: dict = field(repr=False)
    validate: ValidateConfig | None = None  # [validate]: a validation rung after the fit (research/sweep/validate.py)


ROLES = ("run", "trunk", "branch")


@dataclass
class Trial:
    trial_id: str  # hash of the resolved config: the trial's directory name and its row's "trial"
    config: RunConfig
    coords: dict  # design coordinates: budget, requested_n, requested_tokens_per_param
    n_params: int
    n_params_nonembedding: int
    tokens: int
    steps: int
    flops_6n: float  # the run's training FLOPs, whole history (a branch: its trunk's steps too)
    flops_chinchilla: float
    memory_bytes: float
    role: str = "run"  # "run" (from scratch), "trunk" (constant LR, feeds branches), "branch" (a cooldown)
    trunk_id: str | None = None  # a branch's trunk
    branch_step: int = 0  # a branch: the step it leaves its trunk (0 for a run)
    keep_steps: list[int] = field(default_factory=list)  # a trunk: the steps its branches start from

    @property
    def size(self) -> RunSize:
        return RunSize(self.n_params, self.n_params_nonembedding, self.tokens, self.flops_6n, self.flops_chinchilla)

    @property
    def own_fraction(self) -> float:
        """The share of the run's steps this trial computes itself (a branch: its cooldown)."""
        return spent_fraction(self.steps, self.branch_step)

    def row(self) -> dict:
        m, t = self.config.model, self.config.train
        return {"trial": self.trial_id, **self.coords, "kind": self.role, "seed": t.seed, "trunk": self.trunk_id,
                "branch_step": self.branch_step if self.role == "branch" else None,
                "layers": m.layers, "d_model": m.d_model, "heads": m.heads,
                "n_params": self.n_params, "n_params_nonembedding": self.n_params_nonembedding,
                "tokens": self.tokens, "tokens_per_param": self.tokens / self.n_params, "steps": self.steps,
                "batch_size": t.batch_size, "lr": t.lr, "schedule": t.schedule, "flops_6n": self.flops_6n,
                "flops_chinchilla": self.flops_chinchilla, "flops_spent_6n": self.flops_6n * self.own_fraction,
                "memory_bytes_fp32": self.memory_bytes}


@dataclass
class Plan:
    sweep: Sweep
    trials: list[Trial]
    rejected: list[dict]
    data_fingerprint: str
    train_tokens_available: int
    dropped: list[dict] = field(default_factory=list)  # design points without a trial of their own, with why
    trunks: list[Trial] = field(default_factory=list)  # branch designs: one per size and seed
    lr_rule_notes: list[str] = field(default_factory=list)  # the recipe's lr_rule against the trials (lr_rule_check.py)

    def ordered(self) -> list[Trial]:
        """Every trial to run, each trunk just before its branches (the order a single worker runs them)."""
        by_trunk: dict[str, list[Trial]] = {}
        for t in self.trials:
            by_trunk.setdefault(t.trunk_id or "", []).append(t)
        out = list(by_trunk.pop("", []))
        for trunk in self.trunks:
            out += [trunk] + by_trunk.pop(trunk.trial_id, [])
        return out

    def families(self) -> list[dict]:
        """The model families the trials' sizes belong to, smallest first: family, layers, d_model, n_params."""
        out: dict[str, dict] = {}
        for t in sorted(self.trials, key=lambda t: t.n_params):
            f = out.setdefault(t.coords["family"], {"family": t.coords["family"], "layers": [], "d_model": [],
                                                    "n_params": []})
            for key, value in (("layers", t.config.model.layers), ("d_model", t.config.model.d_model),
                               ("n_params", t.n_params)):
                if value not in f[key]:
                    f[key].append(value)
        return list(out.values())

    def family_changes(self) -> list[str]:
        """Where the size axis (sizes by N) passes from one family to another, in words."""
        sizes = sorted({(t.n_params, t.config.model.layers, t.config.model.d_model, t.coords["family"])
                        for t in self.trials})
        return [f"between d_model {a[2]} ({a[3]}, N {a[0]:,}) and d_model {b[2]} ({b[3]}, N {b[0]:,})"
                for a, b in zip(sizes, sizes[1:]) if a[3] != b[3]]

    def to_dict(self, flops_per_s: float = DEFAULT_FLOPS_PER_S) -> dict:
        rows, trunks = [], []
        for t in self.trials:
            rows.append(dict(t.row(), est_time_s=estimate_seconds(t, flops_per_s)))
        for t in self.trunks:
            trunks.append(dict(t.row(), est_time_s=estimate_seconds(t, flops_per_s), branch_steps=t.keep_steps))
        represented = {c: sum(getattr(t, f"flops_{c}") for t in self.trials) for c in FLOP_CONVENTIONS}
        spent = {c: sum(getattr(t, f"flops_{c}") * t.own_fraction for t in self.trials + self.trunks)
                 for c in FLOP_CONVENTIONS}
        return {"sweep": self.sweep.name, "design_kind": self.sweep.design.kind, "trials": rows, "trunks": trunks,
                "rejected": self.rejected, "dropped": self.dropped,
                "total_flops_6n": represented["6n"], "total_flops_chinchilla": represented["chinchilla"],
                "total_flops_spent_6n": spent["6n"], "total_flops_spent_chinchilla": spent["chinchilla"],
                "flops_spent_over_represented": spent["6n"] / represented["6n"],
                "total_tokens": sum(t.tokens for t in self.trials),
                "est_time_s": sum(r["est_time_s"] for r in rows + trunks),
                "flops_convention": self.sweep.design.flops_convention,
                "seeds": self.sweep.design.seeds,
                "families": self.families(), "family_changes": self.family_changes(),
                "lr_rule_notes": self.lr_rule_notes, "throughput_flops_per_s": flops_per_s}


def estimate_seconds(trial: Trial, flops_per_s: float) -> float:
    """Time to compute the trial's own steps (a branch: its cooldown) plus a process start."""
    return STARTUP_S + trial.flops_6n * trial.own_fraction / flops_per_s


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    path = Path(path)
    raw = apply_overrides(read_toml(path), list(overrides))
    name = check_name(raw.pop("name", path.stem), path)
    if "design" not in raw and isinstance(raw.get("train"), dict) and {"steps", "tokens"} & set(raw["train"]):
        raise UserError(f"{path} is a run file (a [train] horizon and no [design] section), not a sweep file: "
                        f"train it with `scaling train {path}`")
    if not raw.get("design"):
        raise UserError(f"{path} has no [design] section (or it is empty); add kind = \"isoflop\" or \"grid\"")
    design = parse_design(raw["design"])
    shared = {k: v for k, v in raw.items() if k not in SWEEP_SECTIONS}
    train = shared.get("train", {})
    if not isinstance(train, dict):
        raise UserError(f"[train] must be a table of keys, got {train!r}"[:200])
    for key in ("steps", "tokens"):
        if key in train:
            raise UserError(f"[train] {key}: a sweep's horizons come from its [design]; remove it")
    design.check_train(train)
    shared["train"] = dict(train, steps=1)  # placeholder horizon, replaced per trial
    base = run_config_from_dict(shared, extra_sections=SWEEP_SECTIONS)
    recipe = load_recipe(raw.get("recipe", {}), path.parent)
    refuse_recipe_overrides(raw, recipe)
    return Sweep(name=name, source=path.absolute(), base=base, design=design, recipe=recipe,
                 slurm=parse_slurm(raw.get("slurm")), raw=raw, validate=parse_validate(raw.get("validate"), design))


def plan(sweep: Sweep, dataset=None) -> Plan:
    if dataset is None:
        d = sweep.base.data
        dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
    base = sweep.base.replace(model=dataclasses.replace(sweep.base.model, vocab_size=dataset.vocab_size))
    tokens_per_step = base.train.batch_size * base.model.seq_len
    ladder = []
    for shape in sweep.recipe.ladder():
        model = dataclasses.replace(base.model, **shape)
        try:
            validate(base.replace(model=model))
        except UserError as err:
            raise UserError(f"[recipe] shape {shape} is invalid: {err}") from None
        ladder.append((model, count_model(model)))

    available = dataset.n_tokens("train")
    planner = Planner(sweep, base, ladder, dataset, tokens_per_step, available)
    own = sweep.design.plan(planner)  # a kind that lays out its trials itself (branches)
    if own is not None:
        return _checked(own)
    dropped = planner.dropped
    candidates = sweep.design.candidates(planner)
    trials, rejected, seen = [], [], {}
    recipe = sweep.recipe
    if sweep.design.kind == "lr":  # each size sampled around the recipe's own lr, its rule extrapolated past its sizes
        recipe = getattr(recipe, "calibrating", lambda: recipe)()
    for model, counts, coords, tokens_wanted in candidates:
        steps = round(tokens_wanted / tokens_per_step)
        where = {**coords, "layers": model.layers, "d_model": model.d_model, "n_params": counts.n_params}
        if steps < 1:
            rejected.append({**where, "reason": f"needs {tokens_wanted:.3g} tokens, less than one step "
                                                f"({tokens_per_step:,} tokens)"})
            continue
        tokens = steps * tokens_per_step
        if tokens > available and not sweep.design.allow_repeat:
            rejected.append({**where, "reason": f"needs {tokens:,} tokens but the training split holds "
                                                f"{available:,} (set allow_repeat = true to repeat data)"})
            continue
        hyper = recipe.hyperparameters(counts.n_params, tokens, steps)
        if "lr_multiplier" in coords:  # an lr design: the recipe's own lr for this N, times the multiplier
            hyper = dict(hyper, lr=hyper["lr"] * coords["lr_multiplier"])
        train = dataclasses.replace(base.train, steps=steps, **hyper)
        duplicate = False
        for config in seeded(base.replace(model=model, train=train), sweep.design.seeds):
            checked(config, counts)
            trial_id = identity_hash(identity(config, dataset.fingerprint))
            if trial_id in seen:
                duplicate = True
                continue
            seen[trial_id] = coords
            trials.append(_trial(trial_id, config, coords, counts, tokens, steps, recipe=sweep.recipe))
        if duplicate:
            dropped.append({**where, "reason": f"the same trial (shape and horizon) as the point at "
                                               f"{_where(seen[trial_id])}"})
    if not trials:
        reasons = "; ".join(sorted({r["reason"] for r in rejected}))[:300]
        raise UserError(f"the design yields no trial that can run: {reasons}")
    return _checked(Plan(sweep=sweep, trials=trials, rejected=rejected, data_fingerprint=dataset.fingerprint,
                         train_tokens_available=available, dropped=dropped))


def _checked(p: Plan) -> Plan:
    """The plan with its family refused or allowed, and its recipe's lr_rule (if any) checked against its trials."""
    p = _one_family(p)
    rule = getattr(p.sweep.recipe, "_rule", None)
    if rule is not None:
        if p.sweep.design.kind == "lr":
            rule = rule.extrapolating()  # as the lr sweep's trials were planned (recipe.calibrating())
        p.lr_rule_notes = rule_checks(rule, [_planned_run(t) for t in p.trials])
    return p


def _planned_run(t: Trial) -> PlannedRun:
    train, model = t.config.train, t.config.model
    return PlannedRun(n_params=t.n_params, tokens=t.tokens, family=t.coords["family"],
                      warmup_tokens=train.warmup_steps * train.batch_size * model.seq_len if train.warmup_steps else None,
                      settings=run_settings(t.config.to_dict()))


def _one_family(p: Plan) -> Plan:
    """Refuse a plan whose sizes span several model families, unless the design allows it."""
    families = p.families()
    if len(families) > 1 and not p.sweep.design.allow_mixed_families:
        spans = "; ".join(f"{f['family']}: d_model {_span(f['d_model'])}, N {_span(f['n_params'], ',')}"
                          for f in families)
        raise UserError(f"[design] the sizes span {len(families)} model families of the recipe ({spans}): a law fitted "
                        "across them confounds the change of architecture with N; keep one family (e.g. [recipe] "
                        "class = \"research.sweep.recipe:FixedDepthRecipe\") or set [design] allow_mixed_families = true")
    return p


def _span(values: list, spec: str = "") -> str:
    return format(values[0], spec) if len(values) == 1 else f"{values[0]:{spec}}-{values[-1]:{spec}}"


@dataclass
class Planner:
    """What a design kind plans with (research/sweep/kind.py): the base config, the recipe's ladder of
    (model, counts), the data, and the helpers that turn a point into a trial."""

    sweep: Sweep
    base: RunConfig
    ladder: list
    dataset: object
    tokens_per_step: int
    available: int  # training tokens in the data's train split
    dropped: list = field(default_factory=list)  # design points without a trial of their own, with why

    @property
    def convention(self) -> str:
        return self.sweep.design.flops_convention

    def pick_sizes(self, design) -> list[tuple[tuple, float]]:
        return _pick_sizes(design, self.ladder)

    def trial_id(self, config: RunConfig) -> str:
        return identity_hash(identity(config, self.dataset.fingerprint))

    def make_plan(self, trials, rejected, dropped, trunks=()) -> Plan:
        return Plan(sweep=self.sweep, trials=trials, rejected=rejected, data_fingerprint=self.dataset.fingerprint,
                    train_tokens_available=self.available, dropped=dropped, trunks=list(trunks))

    def where(self, coords: dict) -> str:
        return _where(coords)

    def seeded(self, config: RunConfig, seeds: int) -> list[RunConfig]:
        return seeded(config, seeds)

    def checked(self, config: RunConfig, counts) -> RunConfig:
        return checked(config, counts)

    def trial(self, trial_id, config, coords, counts, tokens, steps, **kw) -> Trial:
        return _trial(trial_id, config, coords, counts, tokens, steps, recipe=self.sweep.recipe, **kw)


def seeded(config: RunConfig, seeds: int) -> list[RunConfig]:
    """`seeds` replicates of a trial: [train] seed, seed + 1, ... (initialisation and data order)."""
    return [config.replace(train=dataclasses.replace(config.train, seed=config.train.seed + k)) for k in range(seeds)]


def checked(config: RunConfig, counts) -> RunConfig:
    try:
        validate(config)
    except UserError as err:
        raise UserError(f"[recipe] gives the trial with N = {counts.n_params:,} an invalid setting: {err}") from None
    return config


def _trial(trial_id, config, coords, counts, tokens, steps, *, recipe, **kw) -> Trial:
    m = config.model
    coords = {**coords, "family": family_of(recipe, {"layers": m.layers, "d_model": m.d_model, "heads": m.heads})}
    return Trial(trial_id=trial_id, config=config, coords=coords, **RunSize.of(counts, tokens).to_dict(), steps=steps,
                 memory_bytes=counts.memory_bytes()["fp32"], **kw)


def _where(coords: dict) -> str:
    budget = f"budget {coords['budget']:.3g}, " if coords.get("budget") else ""
    return f"{budget}tokens_per_param {coords['requested_tokens_per_param']:.3g}"


def _pick_sizes(design, ladder) -> list[tuple[tuple, float]]:
    """((model, counts), requested size) for each size a grid or branch design names."""
    if design.d_model is not None:
        by_width = {model.d_model: (model, counts) for model, counts in ladder}
        picked = []
        for w in design.d_model:
            if w not in by_width:
                raise UserError(f"[design] d_model = {w} is not a shape of the recipe; widths are ratios of "
                                f"its head_dim up to its max_width: {sorted(by_width)[:6]}...")
            picked.append((by_width[w], float(by_width[w][1].n_params)))
    else:
        picked = [(min(ladder, key=lambda mc: abs(math.log(mc[1].n_params / n))), n) for n in design.n_params]
    return picked


