"""An lr sweep's directory -> its learning-rate rule (DIR/lr_rule.json), and the lines a finished
lr sweep prints. The fitting itself (per-size parabolas in ln LR, the power law across sizes, the
bootstrap) is `research.fit.lr_rule`, which reads and writes no files but the rule's own."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from research.config import ModelConfig
from research.errors import UserError
from research.fit.lr_rule import (CONDITION_KEYS, DEFAULT_BOOTSTRAP, LEVEL, MODEL_SETTING_KEYS, SAME_N_RTOL,
                                  fit_lr_rule, rule_document, run_settings)
from research.fsutil import atomic_write_text
from research.model.family import depth_family
from research.train.sweep_dir import SweepDir


@dataclass(frozen=True)
class CalibrationSweep:
    """The sweep file an lr sweep was run from (`scaling lr-rule DIR --sweep FILE`): where DIR keeps no
    trials (a reference result), the rule's [model] settings are read from it."""

    path: str
    name: str
    config: dict  # the resolved config of one of its shapes (RunConfig.to_dict())


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _trial_config(sweep: SweepDir, frame) -> dict:
    """The config (trial.json's) of the sweep's first completed trial; {} when there is none (a reference)."""
    done = frame[frame["status"] == "completed"]
    record = _read_json(sweep.trial_dir(done["trial"].iloc[0]) / "trial.json") if len(done) else {}
    return record.get("config") if isinstance(record.get("config"), dict) else {}


def _conditions(sweep: SweepDir, config: dict, design: dict) -> dict:
    """The [train]/[model]/[data] settings the rule was calibrated under, read from a completed trial's config."""
    if not config and sweep.lr_rule_path.is_file():  # a reference directory keeps no trials: its rule has them
        return _read_json(sweep.lr_rule_path).get("conditions") or {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    settings = run_settings(config)
    out = {k: settings[k] for k in CONDITION_KEYS if k in settings}
    out["seq_len"] = settings.get("seq_len")
    for key in ("tokens", "tokens_per_param"):
        if design.get(key):
            out[key] = design[key][0]
    if train.get("warmup_steps") and train.get("steps"):
        out["warmup_fraction"] = round(train["warmup_steps"] / train["steps"], 4)
    out["corpus"], out["tokenizer"] = settings.get("corpus"), settings.get("tokenizer")
    out["lr_multipliers"] = design.get("lr_multipliers")
    return {k: v for k, v in out.items() if v is not None}


@dataclass
class _Calibration:
    """One lr sweep directory as the rule reads it: its finished rows and what they were run under."""

    path: Path
    name: str | None
    frame: object  # its results table (pandas), every status
    used: object  # the completed and diverged rows
    conditions: dict
    settings_source: str | None  # where MODEL_SETTING_KEYS come from (trials, a sweep file, a stored rule)
    settings: dict


def _read_calibration(sweep: SweepDir, sweep_file: CalibrationSweep | None) -> _Calibration:
    record = sweep.record() or {}
    design = sweep.design()
    if not sweep.is_lr_sweep():
        raise UserError(f"{sweep.path} is a {design.get('kind')!r} sweep, not an lr sweep ([design] kind = \"lr\"); "
                        "an lr rule is fitted from sizes x lr_multipliers")
    if sweep.trials_dir.is_dir():
        frame = sweep.collect()  # rebuilt from the trials, so it never disagrees with them
    elif sweep.results_path.is_file():  # a committed reference result: its table is the record
        import pandas as pd  # lazy: pandas; `scaling --help` and `sweep plan` import this module (recipe)

        frame = pd.read_csv(sweep.results_path)
    else:
        raise UserError(f"{sweep.path} has neither trials/ nor results.csv; run 'scaling sweep run' first")
    used = frame[frame["status"].isin(["completed", "diverged"])]
    if used.empty:
        raise UserError(f"{sweep.path} has no finished trials yet; run 'scaling sweep run' first")
    config = _trial_config(sweep, frame)
    stored = _read_json(sweep.lr_rule_path).get("model") if sweep.lr_rule_path.is_file() else None
    if config:
        source, settings = "trials", run_settings(config)
    elif sweep_file is not None:
        source, settings = f"sweep file {Path(sweep_file.path).name}", run_settings(sweep_file.config)
    elif isinstance(stored, dict) and stored.get("settings_from"):
        source, settings = stored["settings_from"], stored
    else:
        source, settings = None, {}
    return _Calibration(sweep.path, record.get("name"), frame, used, _conditions(sweep, config, design),
                        source, settings)


def _model_record(used, fitted: dict, calibrations: list[_Calibration]) -> dict | None:
    """What the rule was calibrated on beyond [train]: the family of each calibrated size and the head
    dimensions, from the table (its `family` column; a table without one: the depth's family from
    `layers`), and MODEL_SETTING_KEYS from a trial's config, else the sweep file (--sweep), else the
    record of the rule already in DIR (a reference directory keeps no trials); absent when none has them."""
    families: dict[str, list[float]] = {}
    head_dims = set()
    for size in fitted["per_size"]:
        if size.get("refused"):
            continue
        rows = used[(used["n_params"] / size["n_params"] - 1).abs() <= SAME_N_RTOL]
        for _, row in rows.iterrows():
            named = str(row["family"]) if "family" in rows and isinstance(row["family"], str) else ""
            family = named or (depth_family(row["layers"]) if "layers" in rows else "")
            if family and size["n_params"] not in families.setdefault(family, []):
                families[family].append(size["n_params"])
            if "d_model" in rows and "heads" in rows and row["heads"] > 0:
                head_dims.add(ModelConfig(d_model=int(row["d_model"]), heads=int(row["heads"])).head_dim)
    out = {"families": families} if families else {}
    if head_dims:
        out["head_dim"] = sorted(head_dims)
    found = [c for c in calibrations if c.settings_source]
    if found:
        kept = {k: found[0].settings[k] for k in MODEL_SETTING_KEYS if k in found[0].settings}
        for other in found[1:]:
            for key, value in kept.items():
                if key in other.settings and other.settings[key] != value:
                    raise UserError(f"{found[0].path} and {other.path} were calibrated with different [model] "
                                    f"{key} ({value!r} and {other.settings[key]!r}): one rule needs one model setting")
        if kept:
            out.update(kept, settings_from=" + ".join(dict.fromkeys(c.settings_source for c in found)))
    return out or None


def _same_setting(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def _merged_conditions(calibrations: list[_Calibration]) -> dict:
    """The settings every sweep was calibrated under (they must agree: the optimal LR moves with each);
    lr_multipliers, which only place the samples, are their union."""
    first = calibrations[0]
    out = dict(first.conditions)
    for other in calibrations[1:]:
        for key in sorted(set(out) & set(other.conditions) - {"lr_multipliers"}):
            if not _same_setting(out[key], other.conditions[key]):
                raise UserError(f"{first.path} and {other.path} were calibrated under different {key} "
                                f"({out[key]!r} and {other.conditions[key]!r}): the optimal LR depends on it, so one "
                                "rule cannot be fitted from both; rerun one under the other's settings")
        for key in set(other.conditions) - set(out):
            out[key] = other.conditions[key]
    multipliers = {float(m) for c in calibrations for m in (c.conditions.get("lr_multipliers") or [])}
    if multipliers:
        out["lr_multipliers"] = sorted(multipliers)
    return out


def fit_lr_sweep_dir(sweep_dir, *, out=None, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     sweep_file: CalibrationSweep | None = None, more_dirs=()) -> dict:
    """Fit the rule from an lr sweep's results.csv (rebuilt from its trials when DIR has them; a reference
    directory's table as it is) and write it (default DIR/lr_rule.json) with what it was calibrated on.
    `more_dirs`: further lr sweeps (new sizes under the same settings) fitted together with DIR; their
    rule is written only to `out`, never over one of theirs by default."""
    if bootstrap < 0:
        raise UserError(f"--bootstrap {bootstrap}: must be 0 or more")
    dirs = [sweep_dir, *more_dirs]
    if more_dirs and out is None:
        raise UserError("several lr sweeps: name the rule file to write with --out FILE (each sweep keeps its own "
                        "lr_rule.json)")
    sweeps = [SweepDir.require(d) for d in dirs]
    names = [(sweep.record() or {}).get("name") for sweep in sweeps]
    if len({str(sweep.path.resolve()) for sweep in sweeps}) < len(sweeps):
        raise UserError("the same sweep directory is named twice: each lr sweep counts once")
    if sweep_file is not None and sweep_file.name not in names:
        raise UserError(f"--sweep {sweep_file.path} is sweep {sweep_file.name!r}, but "
                        f"{' and '.join(str(d) for d in dirs)} hold sweep(s) {', '.join(repr(n) for n in names)}: "
                        "name the sweep file the lr sweep was run from")
    calibrations = [_read_calibration(sweep, sweep_file if sweep_file is not None and sweep_file.name == n else None)
                    for sweep, n in zip(sweeps, names)]
    import pandas as pd  # lazy, as above

    used = pd.concat([c.used for c in calibrations], ignore_index=True)
    loss = used["final_eval_loss"].where(used["status"] == "completed")  # a diverged run has no usable loss
    fitted = fit_lr_rule(used["n_params"].to_numpy(float), used["lr"].to_numpy(float), loss.to_numpy(float),
                         bootstrap=bootstrap, seed=seed)
    source = {"sweep": " + ".join(str(c.name) for c in calibrations),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "runs": int(len(used)),
              "pending_or_failed": int(sum(len(c.frame) - len(c.used) for c in calibrations))}
    if more_dirs:
        source["sweeps"] = [{"sweep": c.name, "runs": int(len(c.used))} for c in calibrations]
    rule = rule_document(fitted, _merged_conditions(calibrations), source,
                         model=_model_record(used, fitted, calibrations))
    path = Path(out) if out else sweeps[0].lr_rule_path
    atomic_write_text(path, json.dumps(rule, indent=1) + "\n")
    rule["path"] = str(path)
    return rule


def summary_lines(rule: dict) -> list[str]:
    """What a finished lr sweep prints: the exponent with its interval and LR* per size."""
    iv = rule["intervals"]
    e_iv = iv.get("exponent")
    level = f"{iv.get('level', LEVEL):.0%}"
    lines = [f"lr rule: lr = {rule['lr_ref']:.3g} * (N / {rule['n_ref']:,.0f}) ** {rule['exponent']:.3f}"
             + (f"  (exponent {level} [{e_iv[0]:.3f}, {e_iv[1]:.3f}])" if e_iv else "")
             + f"; N counts embeddings, calibrated on N in [{rule['n_range'][0]:,.0f}, {rule['n_range'][1]:,.0f}]"]
    if (rule.get("bootstrap") or {}).get("note"):
        lines.append(f"  {rule['bootstrap']['note']}")
    for s in rule["per_size"]:
        if s.get("refused"):
            lines.append(f"  N {s['n_params']:>10,.0f}: refused: {s['refused']}")
        else:
            s_iv = s.get("interval")
            lines.append(f"  N {s['n_params']:>10,.0f}: LR* = {s['lr_opt']:.3g}"
                         + (f" [{s_iv[0]:.3g}, {s_iv[1]:.3g}]" if s_iv else "")
                         + f", loss* = {s['loss_opt']:.4f} nats/token, {s['n_runs']} runs")
    return lines
