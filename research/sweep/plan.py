"""Sweep files and planning: from a [design] to trials with their real counted N and D.

A sweep file is a run file ([data], [model], [train] shared by every trial) plus:

    name = "demo"            # results go to results/<name> unless --out says otherwise
    [design]                 # which (budget, N, D) candidates to train
    kind = "isoflop"         #   budgets x model sizes, D = C / FLOPs-per-token
    budgets = [2e11, 6e11]   #   training FLOPs, under flops_convention ("6n" or "chinchilla")
    tokens_per_param = [4, 150]   # the range of D/N each budget spans ...
    sizes = 5                #   ... with this many log-spaced model sizes
    # kind = "grid": layers = [1, 2, 3] (or n_params = [...]) x tokens = [...] (or tokens_per_param = [...])
    allow_repeat = false     # refuse trials needing more tokens than the training split holds
    [recipe]                 # architecture and hyperparameter rules (see recipe.py)
    [slurm]                  # options for --executor slurm (see runner.py)

Every trial keeps its design coordinates (budget, requested_n, multiple) next to its
real counted n_params and tokens; its id is the hash of its resolved config.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from research.config import RunConfig, apply_overrides, read_toml, run_config_from_dict, validate
from research.errors import UserError, closest
from research.model.accounting import FLOP_CONVENTIONS, count_model
from research.sweep.recipe import load_recipe
from research.train.run_dir import identity, identity_hash

SWEEP_SECTIONS = ("design", "recipe", "slurm")
DESIGN_KEYS = {
    "isoflop": {"kind", "budgets", "tokens_per_param", "sizes", "flops_convention", "allow_repeat"},
    "grid": {"kind", "d_model", "n_params", "tokens", "tokens_per_param", "flops_convention", "allow_repeat"},
}
DEFAULT_FLOPS_PER_S = 1e10  # tiny models on 2 CPU cores (6n FLOPs/s; the demo measured ~1e10); until trials measure it
STARTUP_S = 6.0  # process start + compile per trial, on CPU


@dataclass
class Sweep:
    name: str
    source: Path
    base: RunConfig  # shared sections; the horizon is filled per trial
    design: dict
    recipe: object
    slurm: dict
    raw: dict = field(repr=False)


@dataclass
class Trial:
    trial: str
    config: RunConfig
    coords: dict  # design coordinates: budget, requested_n, multiple
    n_params: int
    n_params_nonembedding: int
    tokens: int
    steps: int
    flops_6n: float
    flops_chinchilla: float
    memory_bytes: float

    def row(self) -> dict:
        m, t = self.config.model, self.config.train
        return {"trial": self.trial, **self.coords, "layers": m.layers, "d_model": m.d_model, "heads": m.heads,
                "n_params": self.n_params, "n_params_nonembedding": self.n_params_nonembedding,
                "tokens": self.tokens, "tokens_per_param": self.tokens / self.n_params, "steps": self.steps,
                "batch_size": t.batch_size, "lr": t.lr, "flops_6n": self.flops_6n,
                "flops_chinchilla": self.flops_chinchilla, "memory_bytes_fp32": self.memory_bytes}


@dataclass
class Plan:
    sweep: Sweep
    trials: list[Trial]
    rejected: list[dict]
    data_fingerprint: str
    train_tokens_available: int

    def to_dict(self, flops_per_s: float = DEFAULT_FLOPS_PER_S) -> dict:
        rows = []
        for t in self.trials:
            row = t.row()
            row["est_time_s"] = estimate_seconds(t, flops_per_s)
            rows.append(row)
        return {"sweep": self.sweep.name, "trials": rows, "rejected": self.rejected,
                "total_flops_6n": sum(t.flops_6n for t in self.trials),
                "total_flops_chinchilla": sum(t.flops_chinchilla for t in self.trials),
                "total_tokens": sum(t.tokens for t in self.trials),
                "est_time_s": sum(r["est_time_s"] for r in rows),
                "flops_convention": self.sweep.design.get("flops_convention", "6n"),
                "throughput_flops_per_s": flops_per_s}


def estimate_seconds(trial: Trial, flops_per_s: float) -> float:
    return STARTUP_S + trial.flops_6n / flops_per_s


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    path = Path(path)
    raw = apply_overrides(read_toml(path), list(overrides))
    name = raw.pop("name", path.stem)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: name must be a non-empty string")
    design = dict(raw.get("design") or {})
    if not design:
        raise UserError(f"{path} has no [design] section (or it is empty); add kind = \"isoflop\" or \"grid\"")
    kind = design.get("kind")
    if kind not in DESIGN_KEYS:
        raise UserError(f"[design] kind = {kind!r}: expected 'isoflop' or 'grid'{closest(str(kind), DESIGN_KEYS)}")
    for key in design:
        if key not in DESIGN_KEYS[kind]:
            raise UserError(f"unknown key [design] {key} for kind {kind!r}{closest(key, DESIGN_KEYS[kind])}")
    if design.setdefault("flops_convention", "6n") not in FLOP_CONVENTIONS:
        raise UserError(f"[design] flops_convention = {design['flops_convention']!r}: expected one of {FLOP_CONVENTIONS}")
    shared = {k: v for k, v in raw.items() if k not in SWEEP_SECTIONS}
    train = dict(shared.get("train", {}))
    for key in ("steps", "tokens"):
        if key in train:
            raise UserError(f"[train] {key}: a sweep's horizons come from its [design]; remove it")
    shared["train"] = dict(train, steps=1)  # placeholder horizon, replaced per trial
    base = run_config_from_dict(shared, extra_sections=SWEEP_SECTIONS)
    recipe = load_recipe(raw.get("recipe", {}), path.parent)
    return Sweep(name=name, source=path.absolute(), base=base, design=design, recipe=recipe,
                 slurm=dict(raw.get("slurm", {})), raw=raw)


def _number_list(design: dict, key: str, minimum: float = 0) -> list[float]:
    values = design.get(key)
    if values is None:
        return []
    if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
        raise UserError(f"[design] {key} must be a non-empty list of numbers, got {values!r}")
    if any(v <= minimum for v in values):
        raise UserError(f"[design] {key}: every value must be greater than {minimum}")
    return [float(v) for v in values]


def plan(sweep: Sweep, dataset=None) -> Plan:
    if dataset is None:
        from research.data import get_dataset

        d = sweep.base.data
        dataset = get_dataset(d.corpus, d.tokenizer, val_fraction=d.val_fraction, seed=d.seed)
    base = sweep.base.replace(model=dataclasses.replace(sweep.base.model, vocab_size=dataset.vocab_size))
    tokens_per_step = base.train.batch_size * base.model.seq_len
    convention = sweep.design["flops_convention"]
    ladder = []
    for shape in sweep.recipe.ladder():
        model = dataclasses.replace(base.model, **shape)
        try:
            validate(base.replace(model=model))
        except UserError as err:
            raise UserError(f"[recipe] shape {shape} is invalid: {err}") from None
        ladder.append((model, count_model(model)))

    candidates = _isoflop_candidates(sweep, ladder, convention, tokens_per_step) if sweep.design["kind"] == "isoflop" \
        else _grid_candidates(sweep, ladder)
    trials, rejected, seen = [], [], set()
    available = dataset.n_tokens("train")
    for model, counts, coords, tokens_wanted in candidates:
        steps = round(tokens_wanted / tokens_per_step)
        where = {**coords, "layers": model.layers, "d_model": model.d_model, "n_params": counts.n_params}
        if steps < 1:
            rejected.append({**where, "reason": f"needs {tokens_wanted:.3g} tokens, less than one step "
                                                f"({tokens_per_step:,} tokens)"})
            continue
        tokens = steps * tokens_per_step
        if tokens > available and not sweep.design.get("allow_repeat", False):
            rejected.append({**where, "reason": f"needs {tokens:,} tokens but the training split holds "
                                                f"{available:,} (set allow_repeat = true to repeat data)"})
            continue
        train = dataclasses.replace(base.train, steps=steps,
                                    **sweep.recipe.hyperparameters(counts.n_params, tokens, steps))
        config = base.replace(model=model, train=train)
        validate(config)
        trial_id = identity_hash(identity(config, dataset.fingerprint))
        if trial_id in seen:
            continue
        seen.add(trial_id)
        trials.append(Trial(trial=trial_id, config=config, coords=coords, n_params=counts.n_params,
                            n_params_nonembedding=counts.n_params_nonembedding, tokens=tokens, steps=steps,
                            flops_6n=counts.training_flops(tokens, "6n"),
                            flops_chinchilla=counts.training_flops(tokens, "chinchilla"),
                            memory_bytes=counts.memory_bytes()["fp32"]))
    if not trials:
        reasons = "; ".join(sorted({r["reason"] for r in rejected}))[:300]
        raise UserError(f"the design yields no trial that can run: {reasons}")
    return Plan(sweep=sweep, trials=trials, rejected=rejected, data_fingerprint=dataset.fingerprint,
                train_tokens_available=available)


def _isoflop_candidates(sweep: Sweep, ladder, convention: str, tokens_per_step: int):
    design = sweep.design
    budgets = _number_list(design, "budgets")
    if not budgets:
        raise UserError("[design] isoflop needs budgets = [...] (training FLOPs)")
    lo_hi = _number_list(design, "tokens_per_param") or [4.0, 150.0]
    if len(lo_hi) != 2 or lo_hi[0] >= lo_hi[1]:
        raise UserError("[design] tokens_per_param must be [low, high] with low < high")
    sizes = design.get("sizes", 5)
    if not isinstance(sizes, int) or sizes < 1:
        raise UserError(f"[design] sizes must be a positive integer, got {sizes!r}")
    multiples = np.geomspace(lo_hi[0], lo_hi[1], sizes) if sizes > 1 else [math.sqrt(lo_hi[0] * lo_hi[1])]
    smallest = ladder[0][1]
    for budget in budgets:
        one_step = smallest.flops_per_token(convention) * tokens_per_step  # the cheapest possible trial
        if budget < one_step:
            raise UserError(f"[design] budget {budget:.3g} FLOPs is too small for the smallest model "
                            f"(N = {smallest.n_params:,}): one step of {tokens_per_step:,} tokens costs "
                            f"{one_step:.3g} FLOPs [{convention}]; raise the budget or shrink batch_size/seq_len")
        chosen = {}
        for m in sorted(multiples, reverse=True):  # large multiple = small model first
            # the shape whose C = FLOPs/token * m * N is closest to the budget (log scale)
            model, counts = min(ladder, key=lambda mc: abs(math.log(
                mc[1].flops_per_token(convention) * m * mc[1].n_params / budget)))
            ratio = counts.flops_per_token(convention) / counts.n_params
            requested = math.sqrt(budget / (ratio * m))
            if (model.layers, model.d_model) in chosen:
                continue
            chosen[(model.layers, model.d_model)] = True
            tokens = budget / counts.flops_per_token(convention)
            yield model, counts, {"budget": budget, "requested_n": requested, "multiple": float(m)}, tokens


def _grid_candidates(sweep: Sweep, ladder):
    design = sweep.design
    widths, targets = design.get("d_model"), _number_list(design, "n_params")
    if (widths is None) == (not targets):
        raise UserError("[design] grid needs exactly one of d_model = [...] or n_params = [...]")
    if widths is not None:
        by_width = {model.d_model: (model, counts) for model, counts in ladder}
        if not isinstance(widths, list) or not all(isinstance(k, int) and k >= 1 for k in widths):
            raise UserError(f"[design] d_model must be a list of positive integers, got {widths!r}")
        picked = []
        for w in widths:
            if w not in by_width:
                raise UserError(f"[design] d_model = {w} is not a shape of the recipe; widths are multiples of "
                                f"its head_dim up to its max_width: {sorted(by_width)[:6]}...")
            picked.append((by_width[w], float(by_width[w][1].n_params)))
    else:
        picked = [(min(ladder, key=lambda mc: abs(math.log(mc[1].n_params / n))), n) for n in targets]
    tokens, multiples = _number_list(design, "tokens"), _number_list(design, "tokens_per_param")
    if bool(tokens) == bool(multiples):
        raise UserError("[design] grid needs exactly one of tokens = [...] or tokens_per_param = [...]")
    for (model, counts), requested in picked:
        for value in tokens or multiples:
            wanted = value if tokens else value * counts.n_params
            coords = {"budget": None, "requested_n": requested, "multiple": wanted / counts.n_params}
            yield model, counts, coords, wanted
