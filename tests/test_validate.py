"""The validation rung: [validate] parsing, its cost in `sweep plan`, and a real rung trained from a known law."""

import dataclasses
import json
import math
import subprocess
import warnings

import jax
import pytest

from research.errors import UserError
from research.fit.laws import ChinchillaLaw
from research.fsutil import read_json, read_jsonl
from research.model.accounting import count_model
from research.sweep.plan import load_sweep, plan
from research.sweep.runner import LocalRunner
from research.sweep.validate import estimate, report_lines, run_rung
from tests.conftest import REPO, SCALING

SMOKE = REPO / "sweeps" / "smoke.toml"
# the smoke sweep at three budgets (8 runs; their sizes span the 1- and 2-layer families) with a rung at twice the largest
RUNG = ["design.budgets=[2e9, 4e9, 8e9]", "design.allow_mixed_families=true", "validate.factors=[2.0]"]
# a rung trained in the test: one small fitted budget (the fit is given), a target 4x beyond it; the smoke
# sweep's batch, so its shapes are programs other tests compile too (the suite shares one compilation cache)
TRAINED = ["design.budgets=[1e9]", "validate.factors=[4.0]"]
# a law with N_opt = sqrt(C / 30) (5 tokens per parameter) at 6n: alpha = beta = 0.5, A = B / sqrt(5)
LAW = {"E": 1.5, "A": 100.0 / math.sqrt(5.0), "B": 100.0, "alpha": 0.5, "beta": 0.5}


def test_validate_section_is_typed_with_did_you_mean():
    with pytest.raises(UserError, match=r"unknown key \[validate\] factor .*did you mean 'factors'"):
        load_sweep(SMOKE, ["validate.factor=[2.0]"])
    with pytest.raises(UserError, match="exactly one of budgets"):
        load_sweep(SMOKE, ["validate.neighbours=1"])
    with pytest.raises(UserError, match="above 1"):
        load_sweep(SMOKE, ["validate.factors=[0.5]"])
    with pytest.raises(UserError, match=r"\[validate\] factors.*wrong type"):
        load_sweep(SMOKE, ['validate.factors="two"'])
    sweep = load_sweep(SMOKE, ["validate.budgets=[2e9]"])  # the smoke sweep's largest budget is 3e9
    with pytest.raises(UserError, match="not beyond the largest fitted budget 3e"):
        estimate(sweep.validate, plan(sweep), 1e10)


def test_plan_shows_the_rungs_cost_before_anything_runs(tmp_path):
    out = subprocess.run(SCALING + ["sweep", "plan", str(SMOKE), "--json", "--out", str(tmp_path / "none")]
                         + [a for o in RUNG for a in ("--set", o)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rung = json.loads(out.stdout)["validate"]
    (target,) = rung["targets"]
    assert target["flops"] == pytest.approx(1.6e10) and target["runs"] == 3  # N_opt and one neighbour each side
    assert rung["total_flops"] == pytest.approx(3 * 1.6e10)
    assert "N_opt is known only after the fit" in rung["note"]
    text = subprocess.run(SCALING + ["sweep", "plan", str(SMOKE)] + [a for o in RUNG for a in ("--set", o)],
                          capture_output=True, text=True)
    assert "validation rung: 1 target budget(s) 1.6e+10 (2x)" in text.stdout and "estimated" in text.stdout


def test_rung_trains_n_opt_and_neighbours_and_scores_the_prediction(tmp_path):
    sweep = load_sweep(SMOKE, TRAINED)
    p = plan(sweep)
    out = tmp_path / "sweep"
    out.mkdir()
    a3 = dict(LAW, flops_per_token={"k": 6.0, "p": 1.0}, noise={"sigma_log": 0.01})
    (out / "fit.json").write_text(json.dumps({"approach3": a3, "noise": {"pooled": {"std": 0.01}}}))

    def run_trials(rung_plan, dirs):
        LocalRunner(rung_plan, out, live=False).run(dirs)

    jax.numpy.ones(1).block_until_ready()  # JAX started in this process, as in a sweep's fit before its rung
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        block = run_rung(p, out, run_trials)
    # each trial is a fresh Python (fork then exec): JAX's "os.fork() was called" warning must not reach the user
    assert not [w for w in caught if "os.fork()" in str(w.message)]
    (target,) = block["targets"]
    law = ChinchillaLaw(**LAW)
    # the ladder shape nearest the law's N_opt (log scale), and one step either side, counted independently
    vocab = p.trials[0].config.model.vocab_size
    sizes = [count_model(dataclasses.replace(sweep.base.model, vocab_size=vocab, **shape)).n_params
             for shape in sweep.recipe.ladder()]
    n_opt = math.sqrt(4e9 / 30.0)
    assert target["n_opt_law"] == pytest.approx(n_opt, rel=1e-9)
    best = min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i] / n_opt)))
    assert [r["n_params"] for r in target["runs"]] == sizes[best - 1:best + 2]
    assert [r["role"] for r in target["runs"]] == ["smaller", "n_opt", "larger"]
    for run in target["runs"]:
        assert abs(6.0 * run["n_params"] * run["tokens"] / 4e9 - 1) < 0.1  # each trains at the target budget
        (trial,) = run["trials"]
        summary = read_json(out / "trials" / trial / "summary.json")
        assert run["measured"] == summary["final_eval_loss"]
        assert run["predicted"] == pytest.approx(float(law.loss(run["n_params"], run["tokens"])), rel=1e-9)
        assert run["error"] == pytest.approx(run["measured"] - run["predicted"])
        assert run["inside"] == (run["low"] <= run["measured"] <= run["high"])
    measured = {r["role"]: r["measured"] for r in target["runs"]}
    assert target["n_opt_best"] == (measured["n_opt"] == min(measured.values()))
    saved = read_json(out / "fit.json")
    assert saved["validate"]["targets"][0]["runs"] == target["runs"] and saved["approach3"]["E"] == LAW["E"]
    assert any(line.startswith("validate: C = 4e+09") for line in report_lines(block))
    # resumable and content-addressed: a second rung finds every trial done and trains nothing
    starts = sum(e["event"] == "start" for e in read_jsonl(out / "events.jsonl"))
    assert starts == 3
    again = run_rung(p, out, run_trials)
    assert sum(e["event"] == "start" for e in read_jsonl(out / "events.jsonl")) == starts
    assert again["targets"][0]["runs"] == target["runs"]


def test_rung_without_a_usable_law_is_recorded_not_crashed(tmp_path):
    p = plan(load_sweep(SMOKE, TRAINED))
    (tmp_path / "fit.json").write_text(json.dumps({"approach3": {"skipped": "too few runs"}}))
    block = run_rung(p, tmp_path, lambda *a: pytest.fail("nothing may train without a law"))
    assert "too few runs" in block["skipped"]
    assert read_json(tmp_path / "fit.json")["validate"] == block
