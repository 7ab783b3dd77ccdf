"""Run configuration: typed sections, TOML loading, `--set` overrides, validation.

A run file has three sections, each a dataclass below, and an optional fourth:

    [data]   what text and which tokenizer        -> DataConfig
    [model]  the architecture                      -> ModelConfig
    [train]  optimiser, schedule, horizon, logging -> TrainConfig
    [logging] experiment trackers (W&B, TensorBoard) -> LoggingConfig

Unknown keys, wrong types and impossible shapes raise `UserError` with one
line naming the key (and the closest valid one). Sweep files add their own
sections (see `research.sweep.design`); `load_run_config` ignores only the
sections it is told to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from research.errors import UserError, closest
from research.fsutil import MAX_NESTING, nesting_depth, read_regular_text

MAX_SET_CHARS = 10_000  # a --set value: a number, a word or a short list

# The choices of a setting, defined once: each is a Literal type (for the typed configs) and the
# tuple of its values (for checks and messages).
FlopConvention = typing.Literal["6n", "chinchilla"]  # C = 6·N·D, or Hoffmann et al. 2022 App. F
Schedule = typing.Literal["cosine", "constant", "wsd"]  # wsd: warmup-stable-decay
DecayShape = typing.Literal["1-sqrt", "linear"]  # a wsd cooldown's shape ("1-sqrt": Hägele et al. 2024)
FLOP_CONVENTIONS: tuple[str, ...] = typing.get_args(FlopConvention)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
DECAY_SHAPES: tuple[str, ...] = typing.get_args(DecayShape)


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "shakespeare"  # built-in name, synthetic:..., a path/glob (see docs: your own corpus), or a prepared dir
    tokenizer: str = "bpe:4096"  # "bpe:V", "bytes", "file:PATH" (a tokenizer.json) or "ids:V" (tokenized input)
    val_fraction: float = 0.1  # share of documents held out (split by document)
    seed: int = 0  # seed of the train/validation split and of synthetic corpora


@dataclass(frozen=True)
class ModelConfig:
    layers: int = 2  # transformer blocks
    d_model: int = 64  # residual-stream width
    heads: int = 4  # attention heads; must divide d_model, d_model/heads even (rotary)
    ffw: int | None = None  # hidden width of the MLP; default 4 * d_model
    seq_len: int = 128  # tokens per training sequence (context length)
    vocab_size: int | None = None  # default: the dataset's real vocabulary
    mlp: str = "gelu"  # "gelu" (two matrices) or "swiglu" (three)
    tie_embeddings: bool = False  # share the input embedding with the output head
    rope_theta: float = 10_000.0  # rotary position base
    init_std: float = 0.02  # std of the normal initialisation of weight matrices
    compute_dtype: str = "auto"  # "auto" = bfloat16 on GPU/TPU, float32 on CPU
    remat: bool = False  # rematerialise each block in the backward pass
    attention: str = "auto"  # "auto" = cuDNN flash attention on GPU in bf16, else "xla"

    @property
    def d_ffw(self) -> int:
        return self.ffw if self.ffw is not None else 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # sequences per step
    steps: int | None = None  # horizon in optimiser steps ...
    tokens: int | None = None  # ... or in training tokens (rounded up to whole steps)
    lr: float = 3e-3  # peak learning rate
    schedule: Schedule = "cosine"  # "cosine", "constant" or "wsd" (warmup-stable-decay)
    warmup_steps: int | None = None  # default: 5% of the horizon, at least 1
    min_lr_ratio: float = 0.1  # cosine/wsd end at this fraction of the peak
    decay_fraction: float = 0.2  # wsd: share of steps in the final cooldown
    decay_shape: DecayShape = "1-sqrt"  # wsd cooldown: "1-sqrt" (Hägele et al. 2024) or "linear"
    weight_decay: float = 0.1  # AdamW decoupled weight decay (matrices only)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # global-norm clipping; 0 disables
    seed: int = 0  # parameter init and data order
    eval_every: int = 100  # steps between evaluations (and always at the end)
    eval_tokens: int = 32_768  # validation tokens per evaluation (a fixed set)
    dense_eval_tokens: int | None = None  # evaluations before the last: a fixed prefix of this many eval tokens
    log_every: int = 10  # steps between metrics rows (metrics.jsonl, trackers)
    checkpoint_every: int = 200  # steps between checkpoints (and always at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    mesh_data: int = -1  # data-parallel axis size; -1 = all devices not used by fsdp
    mesh_fsdp: int = 1  # parameters and optimiser state sharded over this many devices
    prefetch: int = 2  # batches prepared ahead on a background thread
    loss_chunk: int | str = "auto"  # tokens per chunk of the loss; 0 = off; "auto" = 256 on CPU, off on GPU/TPU


WANDB_MODES = ("online", "offline")


@dataclass(frozen=True)
class WandbConfig:
    """`[logging] wandb = { project = "...", group = "..." }`; see research/train/tracking.py."""

    project: str | None = None  # default: WANDB_PROJECT, else W&B's own default
    entity: str | None = None  # team or user; default: the logged-in account's
    group: str | None = None  # default: the sweep's name for the trials of a sweep
    mode: str | None = None  # "online" or "offline"; default: WANDB_MODE, else online

    def __post_init__(self):
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise UserError(f"[logging] wandb.mode = {self.mode!r}: expected 'online' or 'offline'"
                            f"{closest(self.mode, WANDB_MODES)}")


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers beside metrics.jsonl (which stays the record); none by default."""

    wandb: WandbConfig | None = None  # Weights & Biases; needs `pip install -e '.[wandb]'`
    tensorboard: bool = False  # event files under <run dir>/tensorboard; needs '.[tensorboard]'


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Content hash of everything that changes what is trained."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def replace(self, **sections) -> "RunConfig":
        return dataclasses.replace(self, **sections)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "logging": LoggingConfig}


MAX_LIST = 10_000  # longest list a config key accepts


def _check_type(section: str, key: str, value, annotation):
    """Coerce ints to floats where a float is wanted; reject anything else that does not fit
    (and non-finite floats: NaN or inf is never a meaningful setting)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    hints = typing.get_args(annotation) if union else (annotation,)
    where = f"[{section}] {key}"
    if value is None:
        if type(None) in hints:
            return None
        raise UserError(f"{where} must not be empty")
    for hint in hints:
        if hint is bool and isinstance(value, bool):
            return value
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise UserError(f"{where} = {value} is too large for a float") from None
            if not math.isfinite(number):
                raise UserError(f"{where} = {value!r} must be a finite number")
            return number
        if (hint is str or typing.get_origin(hint) is typing.Literal) and isinstance(value, str):
            return value  # a Literal's value is checked by `validate`, with the choices in its message
        if hint is dict and isinstance(value, dict):
            return dict(value)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):  # an inline table: [logging] wandb = {...}
            return section_from_dict(f"{section}.{key}", hint, value)
        if typing.get_origin(hint) is list and isinstance(value, list):
            if len(value) > MAX_LIST:
                raise UserError(f"{where} has {len(value):,} entries; at most {MAX_LIST:,}")
            (item,) = typing.get_args(hint)
            return [_check_type(section, f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    names = " or ".join(_type_name(h) for h in hints if h is not type(None))
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise UserError(f"{where} = {shown} has the wrong type: expected {names}")


def _type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {dict: "a table"}.get(hint, getattr(hint, "__name__", str(hint)))


def section_from_dict(name: str, cls, raw: dict):
    """A typed section (dataclass `cls`) from its TOML table."""
    if not isinstance(raw, dict):
        raise UserError(f"[{name}] must be a table of keys, got {raw!r}"[:200])
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in hints:
            raise UserError(f"unknown key [{name}] {key}{closest(key, valid)}")
        values[key] = _check_type(name, key, value, hints[key])
    return cls(**values)


def parse_override(text: str) -> tuple[str, str, object]:
    """'train.lr=1e-3' -> ('train', 'lr', 0.001); values are TOML literals, bare words are strings."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--set {text!r}: expected section.key=value, e.g. --set train.lr=1e-3")
    dotted, literal = text.split("=", 1)
    section, key = (part.strip() for part in dotted.split(".", 1))
    if not section or not key:
        raise UserError(f"--set {text!r}: expected section.key=value, e.g. --set train.lr=1e-3")
    if len(literal) > MAX_SET_CHARS:
        raise UserError(f"--set {dotted}: the value is {len(literal):,} characters; at most {MAX_SET_CHARS:,}")
    try:
        value = tomllib.loads(f"v = {literal}")["v"]
    except tomllib.TOMLDecodeError:
        value = literal.strip()
    except RecursionError:
        value = None
    if value is None or nesting_depth(value) > MAX_NESTING:
        raise UserError(f"--set {dotted}: the value is nested more than {MAX_NESTING} levels deep")
    return section, key, value


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(read_regular_text(path, "config file"))
    except RecursionError:
        raise UserError(f"{path} is nested too deeply to be a run file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); a run file is TOML") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    if nesting_depth(raw) > MAX_NESTING:
        raise UserError(f"{path} is nested more than {MAX_NESTING} levels deep; not a run file")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise UserError(f"--set {text!r}: {section} is a value in the file ({table!r}), not a [{section}] table")
        table[key] = value
    return raw


def run_config_from_dict(raw: dict, extra_sections: tuple[str, ...] = ()) -> RunConfig:
    for name, value in raw.items():
        if name in extra_sections:
            continue
        if name not in SECTIONS:
            raise UserError(f"unknown section [{name}]{closest(name, list(SECTIONS) + list(extra_sections))}")
        if not isinstance(value, dict):
            raise UserError(f"[{name}] must be a table of keys, got {value!r}")
    config = RunConfig(**{name: section_from_dict(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()})
    validate(config)
    return config


def load_run_config(path: str | Path, overrides: list[str] = (), extra_sections: tuple[str, ...] = ()) -> RunConfig:
    raw = read_toml(path)
    if isinstance(raw.get("design"), dict) and "design" not in extra_sections:
        raise UserError(f"{path} is a sweep file (it has a [design] section), not a run file: "
                        f"run it with `scaling sweep run {path}` (`scaling sweep plan {path}` lists its trials)")
    return run_config_from_dict(apply_overrides(raw, list(overrides)), extra_sections)


def validate(config: RunConfig) -> None:
    """Shape and range checks that need no data; `resolve` checks the rest."""
    m, t = config.model, config.train
    _check_numbers(config)
    for name in ("layers", "d_model", "heads", "seq_len"):
        if getattr(m, name) < 1:
            raise UserError(f"[model] {name} must be at least 1, got {getattr(m, name)}")
    if m.d_model > MAX_D_MODEL:
        raise UserError(f"[model] d_model = {m.d_model:,} is beyond any trainable width (at most {MAX_D_MODEL:,})")
    if m.d_model % m.heads:
        raise UserError(f"[model] heads = {m.heads} does not divide d_model = {m.d_model}; {_heads_hint(m.d_model)}")
    if m.head_dim % 2:
        raise UserError(f"[model] head dimension d_model/heads = {m.head_dim} must be even for rotary positions")
    if m.mlp not in ("gelu", "swiglu"):
        raise UserError(f"[model] mlp = {m.mlp!r}: expected 'gelu' or 'swiglu'")
    if m.compute_dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"[model] compute_dtype = {m.compute_dtype!r}: expected 'auto', 'float32' or 'bfloat16'")
    if m.attention not in ("auto", "xla", "cudnn"):
        raise UserError(f"[model] attention = {m.attention!r}: expected 'auto', 'xla' or 'cudnn'")
    if t.schedule not in SCHEDULES:
        raise UserError(f"[train] schedule = {t.schedule!r}: expected 'cosine', 'constant' or 'wsd'{closest(t.schedule, SCHEDULES)}")
    if t.decay_shape not in DECAY_SHAPES:
        raise UserError(f"[train] decay_shape = {t.decay_shape!r}: expected '1-sqrt' or 'linear'")
    if t.loss_chunk != "auto" and not (isinstance(t.loss_chunk, int) and t.loss_chunk >= 0):
        raise UserError(f"[train] loss_chunk = {t.loss_chunk!r}: expected a number of tokens, 0 (off) or \"auto\"")
    if (t.steps is None) == (t.tokens is None):
        raise UserError("[train] give exactly one horizon: steps = ... or tokens = ...")
    if t.batch_size < 1 or (t.steps is not None and t.steps < 1) or (t.tokens is not None and t.tokens < 1):
        raise UserError("[train] batch_size, steps and tokens must be positive")
    if total_steps(config) > MAX_STEPS:
        raise UserError(f"[train] a horizon of {total_steps(config):,} steps exceeds the optimiser's int32 step "
                        f"counter ({MAX_STEPS:,}); lower steps or tokens")
    if not (0 < t.lr < 1):
        raise UserError(f"[train] lr = {t.lr} is outside (0, 1)")
    if not (0 <= t.min_lr_ratio <= 1) or not (0 < t.decay_fraction <= 1):
        raise UserError("[train] min_lr_ratio must lie in [0, 1] and decay_fraction in (0, 1]")
    for name in ("eval_every", "log_every", "checkpoint_every", "keep_checkpoints", "eval_tokens"):
        if getattr(t, name) < 1:
            raise UserError(f"[train] {name} must be at least 1")
    if t.dense_eval_tokens is not None and not 1 <= t.dense_eval_tokens <= t.eval_tokens:
        raise UserError(f"[train] dense_eval_tokens = {t.dense_eval_tokens} must lie in 1..eval_tokens "
                        f"({t.eval_tokens}): the intermediate evaluations use a prefix of the eval set")
    _check_ranges(config)


MAX_D_MODEL = 2**20  # ~40x the widest published transformers; also bounds the divisor search below
MAX_SEED = 2**63 - 1  # numpy and jax take seeds as 64-bit integers
MAX_STEPS = 2**31 - 1  # optax counts steps in int32

# (section, key, test, what the value must be) for keys whose range no other check covers
RANGES = [
    ("data", "val_fraction", lambda v: 0 < v < 1, "between 0 and 1"),
    ("data", "seed", lambda v: 0 <= v < 2**63, "a non-negative integer"),
    ("model", "ffw", lambda v: v is None or v >= 1, "at least 1"),
    ("model", "vocab_size", lambda v: v is None or v >= 1, "at least 1"),
    ("model", "rope_theta", lambda v: v > 0, "positive"),
    ("model", "init_std", lambda v: v > 0, "positive"),
    ("train", "seed", lambda v: 0 <= v < 2**63, "a non-negative integer"),
    ("train", "warmup_steps", lambda v: v is None or v >= 0, "at least 0"),
    ("train", "weight_decay", lambda v: v >= 0, "at least 0"),
    ("train", "beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train", "beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train", "eps", lambda v: v > 0, "positive"),
    ("train", "grad_clip", lambda v: v >= 0, "at least 0 (0 disables clipping)"),
    ("train", "prefetch", lambda v: v >= 0, "at least 0"),
    ("train", "mesh_fsdp", lambda v: v >= 1, "at least 1"),
    ("train", "mesh_data", lambda v: v == -1 or v >= 1, "-1 (all devices) or at least 1"),
]


def _check_numbers(config: RunConfig) -> None:
    """Every float finite: NaN or inf is never a meaningful setting (a config built in code, not
    parsed from TOML, reaches here unchecked)."""
    for section, values in config.to_dict().items():
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"[{section}] {key} = {value} must be a finite number")


def _check_ranges(config: RunConfig) -> None:
    for section, key, ok, must in RANGES:
        value = getattr(getattr(config, section), key)
        if not ok(value):
            raise UserError(f"[{section}] {key} = {value!r} must be {must}")


def _heads_hint(d_model: int) -> str:
    """Which head counts work for d_model: they must divide it and leave an even head dimension."""
    divisors = [k for k in range(1, d_model + 1) if d_model % k == 0]
    usable = [k for k in divisors if (d_model // k) % 2 == 0]
    if usable:
        return f"pick heads from {usable[:8]}" + (" ..." if len(usable) > 8 else "")
    return (f"its divisors {divisors[:8]} all leave an odd head dimension, and rotary positions need an even one: "
            f"make d_model even (e.g. {d_model + 1})")


def total_steps(config: RunConfig) -> int:
    t = config.train
    if t.steps is not None:
        return t.steps
    return max(1, -(-t.tokens // (t.batch_size * config.model.seq_len)))  # exact ceil, even for huge ints


def warmup_steps(config: RunConfig) -> int:
    t = config.train
    steps = total_steps(config)
    w = t.warmup_steps if t.warmup_steps is not None else max(1, round(0.05 * steps))
    return min(w, steps)


def cooldown_steps(steps: int, decay_fraction: float) -> int:
    """Steps in a WSD run's final cooldown: the last `decay_fraction` of `steps`, at least one.

    The one place this is computed: the schedule (research/train/optim.py), and the sweep planner that starts a
    cooldown branch from its trunk at step `steps - cooldown_steps(steps, f)` (so a branch
    and a straight WSD run to the same horizon share every learning rate)."""
    return max(1, round(decay_fraction * steps))
