"""Approaches 1 and 2, Kaplan fits, input tables, fit_sweep_dir."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.errors import UserError
from research.fit import fit_sweep_dir
from research.fit.data import load_table
from research.fit.envelope import fit_approach1, load_curves
from research.fit.isoflop import fit_approach2, parabola_min, BudgetRejected
from research.fit.kaplan import fit_kaplan, kaplan_joint
from research.fit.synthetic import default_truth, demo_truth, synthetic_table, write_sweep_dir

DATA = Path(__file__).parent / "data"


def _clean(df):
    return pd.DataFrame({"N": df.N, "D": df.D, "L": df.loss, "C": df.C, "F": 6 * df.N * df.D})


def test_approach2_recovers_allocation_exponents():
    truth = default_truth()
    df = _clean(synthetic_table(seed=2, noise=0.002))
    r = fit_approach2(df)
    assert r["n_budgets"] == 9 and not r["rejected_budgets"]
    assert r["a"] == pytest.approx(truth.a, abs=0.02)
    assert r["b"] == pytest.approx(truth.b, abs=0.02)
    assert r["a"] + r["b"] == pytest.approx(1.0, abs=1e-6)  # D_opt = C/(6 N_opt)
    for b in r["budgets"]:  # each IsoFLOP minimum near the law's true optimum
        assert b["n_opt"] == pytest.approx(truth.n_opt(b["flops"]), rel=0.2)
        assert b["d_opt"] * 6 * b["n_opt"] == pytest.approx(b["flops"], rel=1e-9)


def test_approach2_refuses_budget_whose_minimum_is_not_interior():
    truth = default_truth()
    rows = []
    for c in (1e19, 1e20, 1e21):
        center = truth.n_opt(c)
        # last budget samples only models larger than its optimum -> minimum at the edge
        sizes = np.geomspace(center * 2, center * 40, 6) if c == 1e21 else np.geomspace(center / 8, center * 8, 7)
        for n in sizes:
            rows.append({"N": n, "D": c / (6 * n), "C": c, "F": c, "L": truth.loss(n, c / (6 * n))})
    r = fit_approach2(pd.DataFrame(rows))
    assert [b["flops"] for b in r["budgets"]] == pytest.approx([1e19, 1e20])
    (rej,) = r["rejected_budgets"]
    assert rej["flops"] == pytest.approx(1e21)
    assert "outside the sampled sizes" in rej["reason"] and "smaller" in rej["reason"]
    with pytest.raises(BudgetRejected, match="distinct model sizes"):
        parabola_min([1e6, 1e6, 2e6], [3.0, 3.0, 2.9])


def test_approach2_too_few_budgets_is_a_clear_error():
    df = _clean(synthetic_table(seed=2, budgets=(1e20,)))
    with pytest.raises(UserError, match="needs >= 2 budgets"):
        fit_approach2(df)


def test_approach1_envelope_recovers_exponent(tmp_path):
    truth = demo_truth()
    sweep = write_sweep_dir(tmp_path / "s", budgets=(1e13, 3e13, 1e14, 3e14, 1e15, 3e15), per_budget=9, span=8.0,
                            noise=0.002, curve_points=80)
    table = load_table(sweep, quiet=True)
    curves = load_curves(sweep, table.df)
    assert len(curves) == len(table.df) == 54
    r = fit_approach1(curves, bootstrap=30)
    assert r["a"] == pytest.approx(truth.a, abs=0.05)
    assert r["b"] == pytest.approx(truth.b, abs=0.05)
    lo, hi = r["bootstrap"]["intervals"]["a"]
    assert lo < r["a"] < hi
    # envelope points really are the minimum over curves at their FLOP value
    env = r["envelope"]
    for c, loss in zip(env["flops"][::10], env["loss"][::10]):
        best = min(np.interp(np.log(c), np.log(cv["flops"]), cv["loss"]) for cv in curves
                   if cv["flops"][0] <= c <= cv["flops"][-1])
        assert loss == pytest.approx(best)


def test_kaplan_joint_form_recovered():
    p = {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103}  # Kaplan 2020 L(N, D)
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e6), np.log(1e10), 60))
    D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 60))
    L = kaplan_joint(p, N, D) * np.exp(rng.normal(0, 0.002, 60))
    r = fit_kaplan(N, D, L)
    assert r["L_ND"]["alpha_N"] == pytest.approx(0.076, abs=0.01)
    assert r["L_ND"]["alpha_D"] == pytest.approx(0.103, abs=0.015)
    # single-variable law on data generated from it
    Ns = np.geomspace(1e6, 1e10, 8)
    r1 = fit_kaplan(Ns, np.full(8, 1e12), (8.8e13 / Ns) ** 0.076)
    assert r1["L_N"]["alpha_N"] == pytest.approx(0.076, rel=1e-6)
    assert r1["L_N"]["N_c"] == pytest.approx(8.8e13, rel=1e-4)


def test_table_loading_drops_bad_rows_and_names_columns(capsys):
    t = load_table(DATA / "external_chinchilla_like.csv", n_col="Model Size", d_col="Training Tokens",
                   loss_col="Loss", flops_col="FLOPs")
    assert len(t.df) == 81 and t.n_rows_read == 83
    assert sum(t.dropped.values()) == 2
    assert "using 81 of 83 rows; dropped 2" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"column 'Model Sise'.*did you mean 'Model Size'.*--n-col"):
        load_table(DATA / "external_chinchilla_like.csv", n_col="Model Sise")
    s = load_table(DATA / "sweep_small", quiet=True)
    assert s.dropped == {"status=failed": 1, "status=diverged": 1}
    assert s.budget_source == "budget" and s.columns["loss"] == "final_eval_loss"
    with pytest.raises(UserError, match="does not exist"):
        load_table(DATA / "nope.csv")


def test_budgets_default_to_6ND_clusters_without_a_budget_column(tmp_path):
    df = synthetic_table(seed=0, noise=0.005)[["N", "D", "loss"]]
    df.to_csv(tmp_path / "t.csv", index=False)
    t = load_table(tmp_path / "t.csv", n_col="N", d_col="D", loss_col="loss", quiet=True)
    assert t.budget_source == "6*N*D"
    r = fit_approach2(t.df)
    assert r["n_budgets"] == 9


def test_fit_sweep_dir_writes_every_approach_and_skips_with_reasons(tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    r = fit_sweep_dir(sweep, grid="small", bootstrap=20)
    on_disk = json.loads((sweep / "fit.json").read_text())
    assert on_disk["approach3"]["alpha"] == pytest.approx(r["approach3"]["alpha"])
    for m in ("approach1", "approach2", "approach3", "kaplan"):
        assert "skipped" not in r[m], r[m]
    assert r["kaplan"]["n_kind"] == "nonembedding"
    assert "intervals" in r["approach3"]["bootstrap"]
    # a sweep that has only two runs so far: nothing fails, every approach says why it skipped
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    pd.read_csv(sweep / "results.csv").head(2).to_csv(tiny / "results.csv", index=False)
    r2 = fit_sweep_dir(tiny, grid="small")
    for m in ("approach1", "approach2", "approach3", "kaplan"):
        assert "skipped" in r2[m] and len(r2[m]["skipped"]) > 10
    assert json.loads((tiny / "fit.json").read_text())["approach3"]["skipped"].startswith("Approach 3 needs")
