"""[design] kinds: every committed sweep file plans the same trials as before, and old sweep records stay readable.

tests/data/sweep_plans_golden.json was recorded from the code at commit b114bc3 (one flat
DesignConfig for every kind), before the design kinds got a typed config each: for every
sweeps/*.toml that is a sweep file, the [design] record its sweep.json held (`design`), and, where it
plans, its trial ids and their trunks in plan order, its trunk ids and the counts of rejected and dropped
points. A trial id is the hash of the trial's resolved config, so equal ids mean a sweep already run
resumes without retraining anything. The entries for demo, demo-rung and study-cpu were re-recorded when
those sweeps moved to the LR rule calibrated on their own 1-layer family (sweeps/lr-rule-cpu-1layer.json:
their learning rates, hence their ids, changed on purpose), and lr-calibration-1layer-cpu was added then,
its `design` the record its sweep.json holds. study-cpu was re-recorded when the study was redesigned
(d_model 40 added, D/N in [6, 600], budgets from 7.07e10: every slice with >= 4 sizes), and
lr-calibration-1layer-ext-cpu added, each `design` the record its reference sweep.json holds.
"""

import json
from pathlib import Path

import pytest

from research.cli import main
from research.errors import UserError
from research.sweep.design import design_from_record
from research.sweep.kinds import KINDS
from research.sweep.plan import load_sweep, plan

REPO = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((REPO / "tests" / "data" / "sweep_plans_golden.json").read_text())
PLANNED = sorted(name for name, entry in GOLDEN.items() if "trials" in entry)


def test_the_golden_record_covers_every_committed_sweep_file():
    sweep_files = {p.stem for p in (REPO / "sweeps").glob("*.toml") if "[design]" in p.read_text()}
    assert sweep_files == set(GOLDEN), "a sweep file was added or removed: record its plan in the golden file"
    kinds = {GOLDEN[name]["design"]["kind"] for name in PLANNED}
    assert {"isoflop", "branches", "lr"} <= kinds


@pytest.mark.parametrize("name", PLANNED)
def test_committed_sweep_plans_the_same_trial_ids(name):
    expected = GOLDEN[name]
    p = plan(load_sweep(REPO / "sweeps" / f"{name}.toml"))
    assert [[t.trial_id, t.trunk_id] for t in p.trials] == expected["trials"]
    assert [t.trial_id for t in p.trunks] == expected["trunks"]
    assert (len(p.rejected), len(p.dropped)) == (expected["rejected"], expected["dropped"])


# ---------------------------------------------------------------- each kind its own typed config

SMOKE = REPO / "sweeps" / "smoke.toml"  # kind "isoflop"
LR = REPO / "sweeps" / "lr-calibration-cpu.toml"  # kind "lr"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_another_kinds_key_is_refused_naming_the_key_the_kind_and_the_keys_it_takes(capsys):
    assert main(["sweep", "plan", str(SMOKE), "--set", "design.lr_multipliers=[0.5, 1, 2]"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("scaling sweep: error: unknown key [design] lr_multipliers for kind 'isoflop'")
    assert "(a key of kind 'lr')" in line
    taken = line.split("kind 'isoflop' takes ", 1)[1].split(", ")
    assert taken == ["budgets", "tokens_per_param", "sizes", "flops_convention", "allow_repeat", "seeds",
                     "allow_mixed_families"]


@pytest.mark.parametrize("sweep,override,suggestion", [
    (SMOKE, "design.size=3", "'sizes'"),
    (SMOKE, "design.flops_conventon=\"6n\"", "'flops_convention'"),
    (LR, "design.lr_multiplier=[0.5, 1, 2]", "'lr_multipliers'"),
])
def test_a_typo_in_a_kinds_key_gets_a_did_you_mean(sweep, override, suggestion, capsys):
    assert main(["sweep", "plan", str(sweep), "--set", override]) == 2
    line = one_error_line(capsys)
    key = override.split("=")[0].split(".")[1]
    assert f"unknown key [design] {key} for kind" in line and f"(did you mean {suggestion}?)" in line


def test_a_kinds_own_key_is_not_refused_for_it_and_a_key_of_no_kind_names_none(capsys):
    with pytest.raises(UserError, match=r"unknown key \[design\] cooldown_fraction for kind 'isoflop' "
                                        r"\(a key of kind 'branches'\)"):
        load_sweep(SMOKE, ["design.cooldown_fraction=0.3"])
    with pytest.raises(UserError, match=r"unknown key \[design\] zzz for kind 'lr'; kind 'lr' takes d_model, "):
        load_sweep(LR, ["design.zzz=1"])
    assert load_sweep(LR, ["design.seeds=2"]).design.seeds == 2  # a common key


def test_each_kind_is_its_own_class_holding_only_its_keys():
    designs = {GOLDEN[name]["design"]["kind"]: load_sweep(REPO / "sweeps" / f"{name}.toml").design
               for name in PLANNED}
    for kind, design in designs.items():
        assert type(design) is KINDS[kind] and design.kind == kind
        assert set(design.to_dict()) <= set(KINDS[kind].keys())
    assert not hasattr(designs["isoflop"], "cooldown_fraction") and not hasattr(designs["branches"], "sizes")
    assert not hasattr(designs["isoflop"], "lr_multipliers") and designs["lr"].lr_multipliers


def test_a_kinds_checks_run_when_its_config_is_built():
    grid = KINDS["grid"]
    assert grid(d_model=[16, 32], tokens=[1e5, 2e5]).check() == 4
    with pytest.raises(UserError, match="grid needs exactly one of tokens"):
        grid(d_model=[16])
    with pytest.raises(UserError, match="seeds = 0 must be an integer from 1 to 64"):
        grid(d_model=[16], tokens=[1e5], seeds=0)
    with pytest.raises(UserError, match=r"\[design\] tokens: every value must be greater than 0"):
        grid(d_model=[16], tokens=[-1.0])
    with pytest.raises(UserError, match="isoflop needs budgets"):
        KINDS["isoflop"]()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_an_earlier_sweep_json_design_block_reads_as_the_sweep_files_design(name):
    """The golden `design` is what sweep.json held before (every kind's record also carried sizes,
    cooldown_fraction and cooldown_shape at their defaults): it reads back as the kind's config the sweep
    file parses to, and the record written now is the old one less the keys the kind never took."""
    old = GOLDEN[name]["design"]
    design = load_sweep(REPO / "sweeps" / f"{name}.toml").design
    assert design_from_record(old) == design
    assert design_from_record(design.to_dict()) == design
    assert design.to_dict() == {k: v for k, v in old.items() if k in KINDS[old["kind"]].keys()}
    assert json.loads(json.dumps(design.to_dict())) == design.to_dict()


def test_a_record_with_a_foreign_key_off_its_old_default_is_refused():
    old = dict(GOLDEN["smoke"]["design"], cooldown_fraction=0.3)  # never written by any version for an isoflop sweep
    with pytest.raises(UserError, match=r"unknown key \[design\] cooldown_fraction for kind 'isoflop'"):
        design_from_record(old)
