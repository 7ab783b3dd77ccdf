"""An LR rule applied outside what it was calibrated on: the record a rule file keeps (families, head_dim,
[model] settings beside its [train] conditions) and the lines `scaling sweep plan` / `sweep run` print
for every mismatch with the sweep that applies it (research/fit/lr_rule_check.py)."""

import json
import re

import pytest

from research.cli import main
from research.errors import UserError
from research.fit.lr_rule import load_rule, parse_rule
from research.fit.lr_rule_check import PlannedRun, rule_checks
from research.sweep.plan import load_sweep, plan
from research.sweep.runner import prepare_sweep_dir
from tests.conftest import REPO

ONE_LAYER = "lr-rule-cpu-1layer.json"  # calibrated on the demo's and study's family: 1 layer, GELU, batch 16
MIXED = "lr-rule-cpu.json"  # calibrated on the aspect-ratio ladder: 1 and 2 layers
FIX = ("recalibrate with an lr design ([design] kind = \"lr\") {what}, then 'scaling lr-rule DIR' "
       "(see docs/how-to/lr-calibration.md)")


def sweep_copy(tmp_path, sweep: str, rule: str = ONE_LAYER, edit=None):
    """A committed sweep file copied to tmp_path, applying a copy of a committed rule file (as rule.json),
    optionally edited."""
    text = re.sub(r'^lr_rule = "[^"]*"', 'lr_rule = "rule.json"', (REPO / "sweeps" / f"{sweep}.toml").read_text(),
                  flags=re.M)
    assert 'lr_rule = "rule.json"' in text
    data = json.loads((REPO / "sweeps" / rule).read_text())
    if edit is not None:
        edit(data)
    (tmp_path / "rule.json").write_text(json.dumps(data))
    path = tmp_path / f"{sweep}.toml"
    path.write_text(text)
    return path


def plan_lines(capsys, path, *sets) -> list[str]:
    """The warning and note lines of `scaling sweep plan` (checked against its --json record)."""
    args = ["sweep", "plan", str(path)] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("warning:", "note:"))]
    assert main(args + ["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lr_rule_notes"] == lines
    return lines


def test_the_demo_with_its_own_familys_rule_plans_silently(tmp_path, capsys):
    assert plan_lines(capsys, sweep_copy(tmp_path, "demo")) == []


def test_a_batch_size_the_rule_was_not_calibrated_at_is_one_warning(tmp_path, capsys):
    lines = plan_lines(capsys, sweep_copy(tmp_path, "demo"), "train.batch_size=32")
    assert lines == ["warning: [recipe] lr_rule rule.json: batch_size = 16 in its calibration, 32 in this sweep: the "
                     "optimal LR depends on it; " + FIX.format(what="under this sweep's settings")]


def test_a_family_the_rule_never_saw_is_one_warning(tmp_path, capsys):
    lines = plan_lines(capsys, sweep_copy(tmp_path, "demo"), "recipe.layers=2")
    assert lines == ["warning: [recipe] lr_rule rule.json: family = 1 layer (N 11,312-118,000) in its calibration, "
                     "2 layers (N 14,416-59,080) in this sweep: it never calibrated 2 layers; "
                     + FIX.format(what="on this sweep's family (2 layers)")]


def test_a_rule_calibrated_across_families_warns_even_on_one_of_them(tmp_path, capsys):
    """The old rule: calibrated on 1- and 2-layer sizes, applied to the 1-layer demo (issue 19)."""
    lines = plan_lines(capsys, sweep_copy(tmp_path, "demo", rule=MIXED))
    assert lines == ["warning: [recipe] lr_rule rule.json: family = 1 layer (N 11,312-28,768), 2 layers "
                     "(N 80,112-104,216) in its calibration, 1 layer (N 11,312-39,800) in this sweep: a rule fitted "
                     "across 2 families mixes the change of architecture with N; "
                     + FIX.format(what="on this sweep's family (1 layer)")]


def test_swiglu_under_a_gelu_rule_is_one_warning(tmp_path, capsys):
    lines = plan_lines(capsys, sweep_copy(tmp_path, "demo-swiglu"))
    assert lines == ["warning: [recipe] lr_rule rule.json: mlp = 'gelu' in its calibration, 'swiglu' in this sweep: "
                     "the optimal LR depends on it; " + FIX.format(what="under this sweep's settings")]


def test_an_old_rule_without_the_record_loads_with_one_note_and_the_same_trials(tmp_path, capsys):
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    new_dir.mkdir()
    old_dir.mkdir()
    new = plan(load_sweep(sweep_copy(new_dir, "demo")))
    path = sweep_copy(old_dir, "demo", edit=lambda data: data.pop("model"))
    assert load_rule(old_dir / "rule.json").model is None
    lines = plan_lines(capsys, path)
    assert lines == ["note: [recipe] lr_rule rule.json does not record the model family or [model] settings it was "
                     "calibrated on (a rule file from before they were recorded): they are not checked; refit it with "
                     "'scaling lr-rule DIR' (see docs/how-to/lr-calibration.md)"]
    old = plan(load_sweep(path))
    # the record is not part of any trial: the same ids (hashes of the resolved configs) and learning rates
    assert [t.trial_id for t in old.trials] == [t.trial_id for t in new.trials]
    assert [t.trial_id for t in old.trunks] == [t.trial_id for t in new.trunks]
    assert [t.config.train.lr for t in old.trials] == [t.config.train.lr for t in new.trials]


def test_sweep_run_says_the_warnings_before_training_and_plan_json_keeps_them(tmp_path, capsys):
    path = sweep_copy(tmp_path, "demo-swiglu")
    blocked = tmp_path / "not-a-sweep"
    blocked.mkdir()
    (blocked / "keep.txt").write_text("mine")
    assert main(["sweep", "run", str(path), "--out", str(blocked)]) == 2  # refused before anything trains
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: [recipe] lr_rule rule.json: mlp = 'gelu' in its calibration, 'swiglu'")
    assert "is not empty and is not a sweep directory" in err[-1]
    p = plan(load_sweep(path))
    prepare_sweep_dir(p, tmp_path / "out")
    recorded = json.loads((tmp_path / "out" / "plan.json").read_text())["lr_rule_notes"]
    assert recorded == p.lr_rule_notes and len(recorded) == 1 and "mlp = 'gelu'" in recorded[0]


# ---------------------------------------------------------------- the check itself, on planned runs


def one_layer_runs(tokens=2e6, warmup=1e5, **settings):
    base = {"schedule": "wsd", "batch_size": 16, "decay_fraction": 0.2, "decay_shape": "1-sqrt", "min_lr_ratio": 0.0,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0, "seq_len": 128,
            "corpus": "shakespeare", "tokenizer": "bytes", "head_dim": 8, "mlp": "gelu", "ffw_ratio": 4.0,
            "tie_embeddings": False, "init_std": 0.02}
    return [PlannedRun(n_params=n, tokens=tokens, family="1 layer", warmup_tokens=warmup, settings={**base, **settings})
            for n in (2e4, 5e4)]


def test_matching_runs_give_no_line():
    assert rule_checks(load_rule(REPO / "sweeps" / ONE_LAYER), one_layer_runs()) == []


def test_a_horizon_beyond_ten_times_the_calibrations_is_a_note():
    rule = load_rule(REPO / "sweeps" / ONE_LAYER)  # calibrated at 2e6 tokens
    assert rule_checks(rule, one_layer_runs(tokens=1.9e7)) == []  # within 10x: silent (the study trains up to 9.3e6)
    lines = rule_checks(rule, one_layer_runs(tokens=3e7))
    assert len(lines) == 1 and lines[0].startswith(
        "note: [recipe] lr_rule lr-rule-cpu-1layer.json: tokens (the horizon) = 2,000,000 in its calibration, "
        "30,000,000-30,000,000 in this sweep (beyond 10x)")


def test_a_warmup_far_from_the_calibrations_is_a_note():
    rule = load_rule(REPO / "sweeps" / ONE_LAYER)  # 5.02% of 2e6 tokens
    lines = rule_checks(rule, one_layer_runs(warmup=1e4))
    assert len(lines) == 1 and lines[0].startswith("note: [recipe] lr_rule lr-rule-cpu-1layer.json: warmup = 100,400 "
                                                   "tokens in its calibration, 10,000-10,000 in this sweep")


def test_a_cooldowns_settings_are_compared_only_between_wsd_schedules():
    rule = load_rule(REPO / "sweeps" / ONE_LAYER)
    lines = rule_checks(rule, one_layer_runs(schedule="cosine", decay_fraction=0.5))
    assert len(lines) == 1 and "schedule = 'wsd' in its calibration, 'cosine' in this sweep" in lines[0]
    lines = rule_checks(rule, one_layer_runs(decay_fraction=0.5, head_dim=16))
    assert [line.split(": ")[2].split(" in ")[0] for line in lines] == ["decay_fraction = 0.2", "head_dim = 8"]


def test_a_malformed_record_is_one_line():
    data = json.loads((REPO / "sweeps" / ONE_LAYER).read_text())
    with pytest.raises(UserError, match=r"model.families = .* must map each family to its calibrated N"):
        parse_rule(dict(data, model={"families": ["1 layer"]}), "rule.json")
    with pytest.raises(UserError, match=r"model.families = .* must map each family to its calibrated N"):
        parse_rule(dict(data, model={"families": {"1 layer": []}}), "rule.json")
    with pytest.raises(UserError, match=r"model = \[\] must be an object of settings"):
        parse_rule(dict(data, model=[]), "rule.json")
    with pytest.raises(UserError, match=r"conditions = 'wsd' must be an object of settings"):
        parse_rule(dict(data, conditions="wsd"), "rule.json")


def test_a_reference_refit_names_its_sweep_file_or_is_refused(tmp_path, capsys):
    import shutil

    ref = tmp_path / "ref"
    shutil.copytree(REPO / "results" / "reference" / "lr-calibration-1layer-cpu2", ref)
    (ref / "lr_rule.json").unlink()  # no record to carry over: the settings come from the sweep file
    conditions = json.loads((REPO / "sweeps" / ONE_LAYER).read_text())["conditions"]
    (ref / "lr_rule.json").write_text(json.dumps({"conditions": conditions}))
    assert main(["lr-rule", str(ref), "--out", str(tmp_path / "r.json"), "--bootstrap", "0",
                 "--sweep", str(REPO / "sweeps" / "demo.toml")]) == 2
    assert "is sweep 'demo', but" in capsys.readouterr().err
    no_design = tmp_path / "no-design.toml"
    no_design.write_text('name = "lr-calibration-1layer-cpu"\n[data]\ncorpus = "shakespeare"\n')
    assert main(["lr-rule", str(ref), "--out", str(tmp_path / "r.json"), "--bootstrap", "0",
                 "--sweep", str(no_design)]) == 2  # named as such, not "add kind = isoflop or grid"
    assert "no [design] section; name the lr sweep file" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    assert main(["lr-rule", str(ref), "--out", str(tmp_path / "bare.json"), "--bootstrap", "0"]) == 0
    bare = json.loads((tmp_path / "bare.json").read_text())["model"]
    assert bare == {"families": {"1 layer": [11312.0, 19272.0, 28768.0, 52368.0, 82112.0, 118000.0]}, "head_dim": [8]}
    assert main(["lr-rule", str(ref), "--out", str(tmp_path / "r.json"), "--bootstrap", "0",
                 "--sweep", str(REPO / "sweeps" / "lr-calibration-1layer-cpu.toml")]) == 0
    model = json.loads((tmp_path / "r.json").read_text())["model"]
    assert model == json.loads((REPO / "sweeps" / ONE_LAYER).read_text())["model"]
    lines = rule_checks(load_rule(tmp_path / "bare.json"), one_layer_runs())
    assert lines == ["note: [recipe] lr_rule bare.json does not record mlp, ffw_ratio, tie_embeddings, init_std of its "
                     "calibration: not checked; refit it with 'scaling lr-rule DIR' (--sweep FILE where DIR keeps no "
                     "trials; see docs/how-to/lr-calibration.md)"]
