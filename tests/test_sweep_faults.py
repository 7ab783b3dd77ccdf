"""Issue 10 faults 4, 5, 6 and 8: each test failed before its fix.

4  fit_and_plot never fails a finished sweep (results.csv intact, one line, fit.json records the skip)
5  IsoFLOP design points that snap to an already planned shape are replaced or recorded, never lost
6  [design]/[recipe]/[slurm] are typed; a recipe-owned key set by the user is refused
8  `scaling fit` on a table without usable rows and `scaling size` with an odd d_model: one line
"""

import json
import math

import numpy as np
import pytest

from research.cli import main
from research.fit import approach3, varpro
from research.fit.synthetic import write_sweep_dir
from research.plots import figures
from research.sweep.cli import fit_and_plot
from research.sweep.plan import load_sweep, plan
from tests.conftest import REPO

DEMO = REPO / "sweeps" / "isoflop-demo.toml"  # an isoflop design (the previous main job)
SMOKE = REPO / "sweeps" / "smoke.toml"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------- fault 4

def _solver_that_fails(*args, **kwargs):
    # what fit_approach3 raises when no start converges (research/fit/approach3.py)
    raise RuntimeError("Approach 3: no start converged to a finite objective")


def _varpro_that_fails(*args, **kwargs):
    # what the default solver raises when no grid cell converges (research/fit/varpro.py)
    raise RuntimeError("Approach 3: no grid cell converged to a finite objective")


def test_a_fit_crash_after_training_leaves_results_and_is_recorded(tmp_path, monkeypatch, capsys):
    sweep = write_sweep_dir(tmp_path / "sweep", n_failed=0)
    (sweep / "fit.json").write_text(json.dumps({"approach2": {"a": 0.5}}))  # a previous fit
    results = (sweep / "results.csv").read_bytes()
    monkeypatch.setattr(approach3, "fit_approach3", _solver_that_fails)  # fault injection: the real solvers' errors
    monkeypatch.setattr(varpro, "fit_varpro", _varpro_that_fails)
    fit_and_plot(sweep)  # must not raise
    err = capsys.readouterr().err.splitlines()
    skipped = [line for line in err if line.startswith("fit skipped:")]
    assert len(skipped) == 1 and "RuntimeError: Approach 3: no grid cell converged" in skipped[0]
    assert not any("Traceback" in line for line in err)
    assert (sweep / "results.csv").read_bytes() == results
    fit = json.loads((sweep / "fit.json").read_text())
    assert "RuntimeError" in fit["skipped"]
    assert json.loads((sweep / "fit.prev.json").read_text()) == {"approach2": {"a": 0.5}}
    assert any(line.startswith("plots:") for line in err)  # figures of the data are still drawn


def test_a_plot_crash_is_recorded_beside_the_fit(tmp_path, monkeypatch, capsys):
    sweep = write_sweep_dir(tmp_path / "sweep", n_failed=0)
    results = (sweep / "results.csv").read_bytes()
    monkeypatch.setattr(approach3, "fit_approach3", _solver_that_fails)
    monkeypatch.setattr(varpro, "fit_varpro", _varpro_that_fails)

    def broken_figure(*args, **kwargs):
        raise ValueError("Axis limits cannot be NaN or Inf")

    monkeypatch.setattr(figures, "loss_vs_compute", broken_figure)
    fit_and_plot(sweep)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("plots skipped:")] == [
        "plots skipped: ValueError: Axis limits cannot be NaN or Inf (an internal error; "
        f"`scaling plot {sweep}` shows the traceback)"]
    fit = json.loads((sweep / "fit.json").read_text())
    assert "ValueError" in fit["plots"]["skipped"] and "RuntimeError" in fit["skipped"]
    assert (sweep / "results.csv").read_bytes() == results


# ---------------------------------------------------------------- fault 5

def _design_points(sweep) -> set:
    d = sweep.design
    lo, hi = d.tokens_per_param
    return {(b, round(float(m), 6)) for b in d.budgets for m in np.geomspace(lo, hi, d.sizes)}


@pytest.mark.parametrize("path,overrides", [(DEMO, []), (SMOKE, ["design.sizes=9", "design.budgets=[3e9, 1e10]",
                                                                  "design.allow_mixed_families=true"])])
def test_every_isoflop_point_is_planned_or_recorded(path, overrides):
    sweep = load_sweep(path, overrides)
    p = plan(sweep)
    planned = {(t.coords["budget"], round(t.coords["requested_tokens_per_param"], 6)) for t in p.trials}
    recorded = {(r["budget"], round(r["requested_tokens_per_param"], 6)) for r in p.dropped + p.rejected}
    assert planned | recorded == _design_points(sweep) and not planned & recorded
    assert all(r["reason"] for r in p.dropped)
    for budget in sweep.design.budgets:  # one trial per shape and budget
        shapes = [(t.config.model.layers, t.config.model.d_model) for t in p.trials if t.coords["budget"] == budget]
        assert len(shapes) == len(set(shapes))
    # a point is dropped only when no unused shape trains near its tokens/param
    lo, hi = sweep.design.tokens_per_param
    half = math.sqrt(hi / lo) ** (1 / (sweep.design.sizes - 1))
    for t in p.trials:
        assert lo / half <= t.tokens / t.n_params * (1 + 1e-3) and t.tokens / t.n_params <= hi * half * (1 + 1e-3) \
            or t.coords["requested_tokens_per_param"] in (lo, hi)


def test_isoflop_demo_plans_nineteen_of_twenty_points_and_shows_the_dropped_one(capsys):
    p = plan(load_sweep(DEMO))
    assert len(p.trials) == 19 and len(p.dropped) == 1 and not p.rejected  # was 18, with 2 silently lost
    assert main(["sweep", "plan", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "19 trials of 20 design points" in out
    assert sum(line.startswith("dropped:") for line in out.splitlines()) == 1


# ---------------------------------------------------------------- fault 6

@pytest.mark.parametrize("override,message", [
    ('slurm.partiton="gpu"', "unknown key [slurm] partiton (did you mean 'partition'?)"),
    ("slurm.time_min=0", "[slurm] time_min = 0 must be at least 1"),
    ('slurm.mem_gb="lots"', "[slurm] mem_gb = 'lots' has the wrong type"),
    ('slurm.folder="/tmp/x"', "[slurm] folder"),
    ('recipe.aspect_ratio="wide"', "[recipe] aspect_ratio = 'wide' has the wrong type: expected int"),
    ("recipe.head_dim=7", "[recipe] head_dim = 7 must be even"),
    ("recipe.aspect_rato=8", "unknown key [recipe] aspect_rato (did you mean 'aspect_ratio'?)"),
    ("design.sizes=2.5", "[design] sizes = 2.5 has the wrong type: expected int"),
    ('design.budgets=["1e9"]', "[design] budgets[0] = '1e9' has the wrong type: expected float"),
    ("design.budgets=[inf]", "[design] budgets[0] = inf must be a finite number"),
    ("train.lr=0.01", "[train] lr = 0.01 is set per trial by the recipe"),
    ("train.warmup_steps=10", "[train] warmup_steps = 10 is set per trial by the recipe"),
    ("model.layers=4", "[model] layers = 4 is set per trial by the recipe"),
    ("model.d_model=64", "[model] d_model = 64 is set per trial by the recipe"),
])
def test_sweep_sections_are_typed_and_recipe_keys_are_not_silently_overridden(override, message, capsys):
    assert main(["sweep", "plan", str(SMOKE), "--set", override]) == 2
    line = one_error_line(capsys)
    assert message in line


def test_a_typed_slurm_section_reaches_the_runner_as_given():
    sweep = load_sweep(SMOKE, ['slurm.partition="debug"', "slurm.time_min=30", 'slurm.extra={account="lab"}'])
    assert sweep.slurm == {"partition": "debug", "time_min": 30, "extra": {"account": "lab"}}


# ---------------------------------------------------------------- fault 8

def test_fit_on_a_table_without_usable_rows_is_one_line(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("n_params,tokens,final_eval_loss\n-1,10,3.0\n1000,nan,3.0\n")
    assert main(["fit", str(table), "--no-write"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no usable rows" in err.strip().splitlines()[-1]


def test_size_with_odd_d_model_names_its_divisors(capsys):
    assert main(["size", "--layers", "1", "--d-model", "65", "--heads", "4", "--vocab", "10", "--seq-len", "8"]) == 2
    line = one_error_line(capsys)
    assert "[1, 5, 13, 65]" in line and "even" in line and "[]" not in line
    assert main(["size", "--layers", "1", "--d-model", "96", "--heads", "5", "--vocab", "10", "--seq-len", "8"]) == 2
    assert "pick heads from [1, 2, 3, 4, 6, 8, 12, 16]" in one_error_line(capsys)
