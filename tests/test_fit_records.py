"""Typed fit results (research/records.py): every committed fit.json reads into records and writes back
byte for byte; a skipped block is a typed state; a malformed file is one UserError naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research.cli import main
from research.errors import UserError
from research.fit.core import fit_records
from research.fit.data import load_table
from research.fit.record import dumps, write_fit
from research.fit.synthetic import synthetic_table
from research.records import (Approach1Result, Approach2Result, Approach3Result, FitResult, KaplanLND, KaplanResult,
                              Skipped, read_fit_result)

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"
FIT_FILES = sorted(REFERENCE.glob("*/fit.json"))


def test_there_are_committed_fits():
    assert len(FIT_FILES) >= 3, FIT_FILES


@pytest.mark.parametrize("path", FIT_FILES, ids=lambda p: p.parent.name)
def test_committed_fit_round_trips_byte_for_byte(path):
    """from_json then to_json gives the same object, and written as `scaling fit` writes it the same bytes:
    the records add types and change nothing in the file (old files, e.g. an L-BFGS Approach 3 without
    `source` in Approach 1, included)."""
    text = path.read_text()
    data = json.loads(text)
    rec = read_fit_result(data, str(path))
    assert isinstance(rec, FitResult)
    out = rec.to_json()
    assert out == data
    assert list(out) == list(data)  # the same key order, so ...
    assert dumps(out, indent=1) == text  # ... the same bytes
    classes = {"approach1": Approach1Result, "approach2": Approach2Result, "approach3": Approach3Result,
               "kaplan": KaplanResult}
    for name, cls in classes.items():  # a method the data could not support is a typed Skipped, with its reason
        skipped = "skipped" in data[name]
        assert isinstance(rec.method(name), Skipped if skipped else cls), name
        assert not skipped or rec.method(name).reason == data[name]["skipped"]
    assert rec.approach3.E == data["approach3"]["E"] and rec.approach2.a == data["approach2"]["a"]
    assert rec.approach2.budgets[0].n_opt == data["approach2"]["budgets"][0]["n_opt"]
    assert isinstance(rec.kaplan.L_ND, KaplanLND) and not rec.kaplan.L_ND.skipped
    assert rec.approach3.intervals() == data["approach3"].get("bootstrap", {}).get("intervals", {})


def test_skipped_is_a_typed_state():
    rec = FitResult.from_json({"version": 1, "approach2": {"skipped": "too few budgets"},
                               "extrapolation": {"holdout": "largest-budget", "skipped": "no runs"}})
    assert isinstance(rec.approach2, Skipped) and rec.approach2.skipped and rec.approach2.reason == "too few budgets"
    assert rec.fitted("approach2") is None and rec.method("approach3") is None
    assert rec.extrapolation.skipped and rec.extrapolation.extra == {"holdout": "largest-budget"}
    assert list(rec.to_json()["extrapolation"]) == ["holdout", "skipped"]
    whole = read_fit_result({"version": 1, "skipped": "fit failed"})  # a sweep whose fit stage failed
    assert isinstance(whole, Skipped) and whole.reason == "fit failed"
    assert whole.to_json() == {"version": 1, "skipped": "fit failed"}
    assert list(Skipped.of(extra={"holdout": "x"}, reason="r").to_json()) == ["holdout", "skipped"]


@pytest.mark.parametrize("edit, key, what", [
    (lambda d: d["approach3"].pop("alpha"), "approach3.alpha", "approach3 lacks alpha"),
    (lambda d: d["approach3"].update(E="1.7"), "approach3.E", "not a number"),
    (lambda d: d["approach2"]["budgets"][0].pop("n_opt"), "approach2.budgets[0].n_opt", "lacks n_opt"),
    (lambda d: d["kaplan"].update(L_ND=[1, 2]), "kaplan.L_ND", "not an object"),
    (lambda d: d["approach1"].update(warnings="none"), "approach1.warnings", "not an array"),
])
def test_malformed_blocks_name_the_file_and_key(edit, key, what):
    data = json.loads(FIT_FILES[0].read_text())
    edit(data)
    with pytest.raises(UserError) as err:
        read_fit_result(data, "some/fit.json")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("some/fit.json: ") and key in msg, msg
    assert what in msg, msg


def test_malformed_fit_file_is_one_line_from_the_cli(tmp_path, capsys):
    data = json.loads(FIT_FILES[0].read_text())
    data["approach3"]["beta"] = {"not": "a number"}
    bad = tmp_path / "fit.json"
    bad.write_text(json.dumps(data))
    code = main(["predict", "--law", str(bad), "--n-params", "1e6", "--tokens", "1e8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert str(bad) in err[0] and "approach3.beta" in err[0]


def test_fresh_fit_is_records_and_writes_what_it_reads(tmp_path):
    """A fit made now: each method's result is its record, and fit.json written from the records reads back equal."""
    path = tmp_path / "t.csv"
    synthetic_table(seed=3, noise=0.003).to_csv(path, index=False)
    rec = fit_records(load_table(path, "N", "D", "loss", "C", quiet=True), ["approach2", "approach3", "kaplan"], budgets=[1e20],
                      sensitivity=False)
    assert isinstance(rec.approach2, Approach2Result) and isinstance(rec.approach3, Approach3Result)
    assert rec.approach3.noise is not None and rec.approach3.data_range.n_params[0] > 0  # annotated in place
    assert rec.agreement.approaches.keys() == {"approach2", "approach3"}
    out = write_fit(tmp_path / "fit.json", rec, merge=False)
    text = out.read_text()
    back = read_fit_result(json.loads(text), str(out))
    assert dumps(back.to_json(), indent=1) == text
    assert back.approach3.a == pytest.approx(rec.approach3.a)


@pytest.mark.parametrize("old", ["{ not json", "[1, 2, 3]\n"])
def test_a_fit_file_that_cannot_be_merged_is_kept_beside_the_new_one(tmp_path, capsys, old):
    """`scaling fit --out` merges into an existing fit file; one that is not a JSON object is not lost:
    it is kept, byte for byte, as fit.json.unreadable (then .unreadable.1, never over another file)."""
    table = tmp_path / "t.csv"
    synthetic_table(seed=3, noise=0.003).to_csv(table, index=False)
    out = tmp_path / "fit.json"
    (tmp_path / "fit.json.unreadable").write_text("an earlier one")
    out.write_text(old)
    code = main(["fit", str(table), "--method", "approach2", "--n-col", "N", "--d-col", "D", "--loss-col", "loss",
                 "--flops-col", "C", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (tmp_path / "fit.json.unreadable.1").read_text() == old
    assert (tmp_path / "fit.json.unreadable").read_text() == "an earlier one"
    assert "kept as fit.json.unreadable.1" in err and "Traceback" not in err
    assert read_fit_result(json.loads(out.read_text()), str(out)).approach2.a > 0


def test_refitting_one_approach_keeps_the_files_comparison_warnings(tmp_path, capsys):
    """`scaling fit DIR --method approach2` merges into fit.json: the approaches' comparison is recomputed
    over the merged file, and so is its warning (this run alone saw no other approach to disagree with);
    the warnings of the blocks it kept (sensitivity) stay."""
    import shutil

    src = REFERENCE / "study-cpu2"
    for name in ("results.csv", "sweep.json", "plan.json"):
        shutil.copy(src / name, tmp_path / name)
    before = json.loads((src / "fit.json").read_text())
    before["approach1"]["a"] = before["approach2"]["a"] + 0.2  # a file whose Approach 1 disagrees, whatever the data
    sensitivity_warning = "a ranges over [0.1, 0.9] across the analyst's choices (written by this test)"
    before["sensitivity"]["warnings"] = [sensitivity_warning]
    before["warnings"] = [sensitivity_warning]
    (tmp_path / "fit.json").write_text(json.dumps(before))
    assert main(["fit", str(tmp_path), "--method", "approach2"]) == 0
    capsys.readouterr()
    after = json.loads((tmp_path / "fit.json").read_text())
    assert after["agreement"]["max_abs_diff_a"] >= 0.2 - 1e-9
    disagree = [w for w in after["warnings"] if w.startswith("the approaches disagree on a")]
    assert len(disagree) == 1 and f"approach1 gives {before['approach1']['a']:.3f}" in disagree[0]
    assert after["approach1"] == before["approach1"] and after["approach2"]["a"] == before["approach2"]["a"]
    # the sensitivity block was not redone, so it stays, and so does its warning (it was dropped once)
    assert after["sensitivity"] == before["sensitivity"] and after["warnings"].count(sensitivity_warning) == 1


def test_optimal_names_the_fit_file_whose_approach_is_missing(tmp_path, capsys):
    """A fit.json whose Approach 1 block is null (or skipped): `scaling optimal --approach approach1` says
    which file lacks it, in one line (found by the hostile-values campaign)."""
    data = json.loads(FIT_FILES[0].read_text())
    data["approach1"] = None
    bad = tmp_path / "fit.json"
    bad.write_text(json.dumps(data))
    code = main(["optimal", "--law", str(bad), "--approach", "approach1", "--flops", "1e15", "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(bad) in err[0] and "'approach1'" in err[0]


def test_plot_refuses_a_malformed_fit_file_before_drawing(tmp_path, capsys):
    """`scaling plot DIR` reads DIR/fit.json into records first: a block of the wrong type is one line naming
    the file and the key, and no figure is half-written."""
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(Path(__file__).parent / "data" / "sweep_small", sweep)
    data = json.loads(FIT_FILES[0].read_text())
    data["approach2"]["budgets"] = "none"
    (sweep / "fit.json").write_text(json.dumps(data))
    assert main(["plot", str(sweep), "--out", str(tmp_path / "plots")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the table's note of the rows it used
    assert str(sweep / "fit.json") in last and "approach2.budgets" in last and "not an array" in last
    assert not list((tmp_path / "plots").glob("*.png"))


TOY_METHOD = '''
import json, sys
from dataclasses import dataclass
import numpy as np
from research.fit.method import Method, allocation_lines, register
from research.records import AllocationResult

@dataclass(kw_only=True)
class ToyResult(AllocationResult):
    n_budgets: int = 0

def fit(inp):
    df = inp.table.df
    best = df.loc[df.groupby(df["C"].round(-8))["L"].idxmin()]
    a, log_k = np.polyfit(np.log(best["C"]), np.log(best["N"]), 1)
    return ToyResult(a=float(a), b=float(1 - a), k_N=float(np.exp(log_k)), k_D=float(np.exp(-log_k) / 6),
                     n_budgets=len(best), method="toy")

register(Method("toy", "toy (best run per budget)", fit, allocation=True, record=ToyResult,
                describe=lambda r: allocation_lines("toy", r)))
from research.cli import main  # the registry is read after the toy registered, as methods.py's imports do
sys.exit(main(sys.argv[1:]))
'''


def test_a_method_beyond_the_built_in_ones_needs_only_its_own_module(tmp_path):
    """A method registered with its record class (what a research/fit/method_<name>.py does, plus one import
    line in methods.py) is fitted, printed, compared in "agreement", written to fit.json and read back as its
    typed record, with nothing added to research/records.py."""
    import shutil
    import subprocess
    import sys

    ref = tmp_path / "demo"
    shutil.copytree(REFERENCE / "demo-cpu2", ref)
    out = tmp_path / "fit.json"
    got = subprocess.run([sys.executable, "-c", TOY_METHOD, "fit", str(ref), "--out", str(out), "--bootstrap", "0",
                          "--method", "all"], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "toy: N_opt = k_N*C^a" in got.stdout and "toy a=" in got.stdout
    data = json.loads(out.read_text())
    assert set(data["agreement"]["approaches"]) == {"approach1", "approach2", "approach3", "toy"}
    assert data["toy"]["n_budgets"] == 7 and 0 < data["toy"]["a"] < 1
    rec = read_fit_result(data, str(out))
    assert rec.method("toy") is None  # in this process nothing registered "toy": its block stays as written
    assert rec.to_json() == data


def test_a_registered_method_record_reads_typed_and_writes_back_unchanged():
    from dataclasses import dataclass

    from research.records import METHOD_RECORDS, AllocationResult, register_method_record

    @dataclass(kw_only=True)
    class PluginResult(AllocationResult):
        n_budgets: int = 0

    register_method_record("plugin_test", PluginResult)
    try:
        data = {"version": 1, "plugin_test": {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1.7, "n_budgets": 3},
                "approach2": {"skipped": "too few budgets"}}
        rec = read_fit_result(data)
        block = rec.method("plugin_test")
        assert isinstance(block, PluginResult) and block.n_budgets == 3 and rec.fitted("plugin_test") is block
        assert rec.to_json() == data
        rec.set_method("plugin_test", Skipped(reason="no budgets"))
        assert rec.fitted("plugin_test") is None and rec.to_json()["plugin_test"] == {"skipped": "no budgets"}
        with pytest.raises(UserError, match="plugin_test.a"):
            read_fit_result({"plugin_test": {"a": "x", "b": 0.5, "k_N": 0.1, "k_D": 1.7}}).method("plugin_test")
    finally:
        METHOD_RECORDS.pop("plugin_test", None)
