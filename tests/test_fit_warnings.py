"""Reviewer warnings: each fires on a table built to trigger it and stays silent on a well-designed one."""

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.cli import main
from research.fit import agreement
from research.fit import diagnostics as dg
from research.fit.core import run_fits
from research.fit.data import load_table
from research.fit.kaplan import PUBLISHED as KAPLAN
from research.fit.kaplan import kaplan_joint
from research.fit.synthetic import CHINCHILLA_BUDGETS, default_truth, synthetic_table
from research.records import Approach1Result, Approach3Result

DATA = Path(__file__).parent / "data"
TRUTH = default_truth()
# Every Approach-3 table here has 81 rows (9 budgets x 9 sizes), so the jitted solver compiles once.


def _a1(counts: dict) -> Approach1Result:
    """An Approach-1 record holding only the envelope's point counts (the exponents unset)."""
    return Approach1Result.from_json({"a": None, "b": None, "k_N": None, "k_D": None, **counts})


def _table(df, tmp_path, name="t.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return load_table(p, "N", "D", "loss", "C", quiet=True)


def _design(budgets=CHINCHILLA_BUDGETS, per_budget=9, span=10.0, lo=None, hi=None):
    """(C, N, D) arrays; sizes log-spaced over [N*/span, N*·span] or [N*·lo, N*·hi] around the optimum."""
    rows = []
    for c in budgets:
        center = TRUTH.n_opt(c)
        sizes = np.geomspace(center * (lo or 1 / span), center * (hi or span), per_budget)
        rows += [(c, n, c / (6 * n)) for n in sizes]
    return (np.array(v) for v in zip(*rows))


def _frame(c, n, d, loss):
    return pd.DataFrame({"N": n, "D": d, "C": c, "loss": loss})


@pytest.fixture(scope="module")
def good_fit(tmp_path_factory):
    """9 budgets x 9 sizes centred on the optimum, 0.5% noise, bootstrap: what a careful sweep looks like."""
    table = _table(synthetic_table(seed=2, noise=0.005), tmp_path_factory.mktemp("w"))
    return run_fits(table, ["approach2", "approach3"], bootstrap=30, grid="small", budgets=[1e20, 1e21])


def test_well_designed_table_raises_no_warning(good_fit):
    assert good_fit["warnings"] == []
    assert good_fit["approach2"]["warnings"] == []
    assert good_fit["approach3"]["warnings"] == []
    assert agreement.all_warnings(good_fit) == []


def test_wide_interval_on_the_exponent(tmp_path):
    c, n, d = _design(budgets=CHINCHILLA_BUDGETS[:3])
    loss = TRUTH.loss(n, d) * np.exp(np.random.default_rng(0).normal(0, 0.03, len(n)))
    r = run_fits(_table(_frame(c, n, d, loss), tmp_path), ["approach2"], bootstrap=40, budgets=[1e20])
    iv = r["approach2"]["bootstrap"]["intervals"]["a"]
    assert iv[1] - iv[0] > dg.WIDTH_MAX
    assert any(w.startswith("95% interval on a is") for w in r["approach2"]["warnings"])


def test_isoflop_minimum_at_the_edge_of_the_sampled_sizes(tmp_path):
    # sizes from N*/1.3 to 40 N*: the minimum sits between the two smallest sizes of every budget
    c, n, d = _design(lo=1 / 1.3, hi=40.0)
    r = run_fits(_table(_frame(c, n, d, TRUTH.loss(n, d)), tmp_path), ["approach2"])
    edge = [w for w in r["approach2"]["warnings"] if w.startswith("IsoFLOP minimum at C=")]
    assert len(edge) == len(r["approach2"]["budgets"]) == 9
    assert "add smaller models" in edge[0]


def test_fewer_than_three_budgets_or_sizes(tmp_path):
    c, n, d = _design(budgets=(1e19, 1e20))
    r = run_fits(_table(_frame(c, n, d, TRUTH.loss(n, d)), tmp_path), ["approach2"])
    assert "data: only 2 FLOP budget(s) in the data (need >= 3 for a trend)" in r["warnings"]
    assert any(w.startswith("only 2 budgets with an interior IsoFLOP minimum") for w in r["approach2"]["warnings"])
    # two model sizes trained at many token counts
    n2 = np.repeat([1e8, 1e9], 6)
    d2 = np.tile(np.geomspace(1e9, 1e11, 6), 2)
    r2 = run_fits(_table(_frame(6 * n2 * d2, n2, d2, TRUTH.loss(n2, d2)), tmp_path, "two.csv"), ["approach2"])
    assert "data: only 2 model size(s) in the data (need >= 3 for a trend)" in r2["warnings"]


def test_approaches_that_disagree_beyond_their_intervals(tmp_path):
    """Runs drawn from Kaplan's joint law: the Chinchilla form of Approach 3 is wrong for them and its
    exponent leaves Approach 2's interval."""
    c, n, d = _design()
    loss = kaplan_joint(KAPLAN["L_ND"], n, d) * np.exp(np.random.default_rng(0).normal(0, 0.005, len(n)))
    r = run_fits(_table(_frame(c, n, d, loss), tmp_path), ["approach2", "approach3"], bootstrap=30, grid="small",
                 budgets=[1e20])
    dis = [w for w in r["warnings"] if "disagree beyond their intervals" in w]
    assert len(dis) == 1 and dis[0].startswith("approach2 (a=") and "approach3 (a=" in dis[0]


def test_approach3_optimum_on_the_edge_of_the_start_grid(tmp_path):
    # a grid far from the truth (alpha, beta >= 0.8; the truth has 0.35): the optimum lies outside it.
    # 128 starts, as many lanes as the "small" grid uses, so the jitted solver is reused.
    grid = np.array(list(itertools.product((12.0, 14.0), (12.0, 14.0), (1.0, 1.2), (0.8, 0.9, 1.0, 1.1),
                                           (0.8, 0.9, 1.0, 1.1))))
    table = _table(synthetic_table(seed=2, noise=0.005), tmp_path)
    r = run_fits(table, ["approach3"], grid=grid, budgets=[1e20])
    assert any("outside the start grid's range" in w for w in r["approach3"]["warnings"])
    assert any(w.startswith("approach3: best fit") for w in agreement.all_warnings(r))


def test_unidentified_exponent_when_the_loss_ignores_n(tmp_path):
    c, n, d = _design()
    loss = (TRUTH.E + TRUTH.B / d**TRUTH.beta) * np.exp(np.random.default_rng(1).normal(0, 0.002, len(n)))
    r = run_fits(_table(_frame(c, n, d, loss), tmp_path), ["approach3"], grid="small", budgets=[1e20])
    blk = r["approach3"]
    spread = np.ptp(blk["A"] / n ** blk["alpha"]) / np.median(loss)  # the fitted N term, computed here
    assert spread < dg.TERM_SPREAD_MIN
    warned = [w for w in blk["warnings"] if w.startswith("the N term A/N^alpha") and "barely depends on N" in w]
    assert len(warned) == 1 and not any(w.startswith("the D term") for w in blk["warnings"])


def test_lack_of_fit_against_replicate_spread(tmp_path):
    """Three seeds per point with 0.3% noise, and a 3% wiggle in log N the form cannot follow."""
    c, n, d = _design(budgets=CHINCHILLA_BUDGETS[::3])
    c, n, d = (np.repeat(v, 3) for v in (c, n, d))
    rng = np.random.default_rng(3)
    noise = np.exp(rng.normal(0, 0.003, len(n)))
    seeds = np.tile([0, 1, 2], len(n) // 3)
    for wiggle, fires in ((0.03, True), (0.0, False)):
        loss = TRUTH.loss(n, d) * (1 + wiggle * np.sin(2 * np.log(n))) * noise
        df = _frame(c, n, d, loss).assign(seed=seeds)
        r = run_fits(_table(df, tmp_path, f"w{wiggle}.csv"), ["approach3"], grid="small", budgets=[1e20])
        noise_block = r["approach3"]["noise"]
        assert noise_block["kind"] == "replicates" and noise_block["replicates"]["n_groups"] == 27
        assert noise_block["sigma_log"] == pytest.approx(0.003, rel=0.35)
        lof = [w for w in r["approach3"]["warnings"] if "misses the data beyond noise" in w]
        assert bool(lof) == fires


def test_extrapolation_of_the_optimum_beyond_the_data(good_fit):
    far = dict(good_fit, budgets_for_intervals=[1e20, 5.76e23])
    msgs = agreement.overall_warnings(far, pd.DataFrame({"N": [1e8, 1e9, 1e10], "D": [1e9] * 3, "C": [1e19, 1e20, 3e21]}))
    assert any("5.76e+23, 2.3 decades beyond the largest budget" in m for m in msgs)
    # the well-designed fit reported only budgets inside the data: silent (checked above)


def test_no_bootstrap_is_itself_a_warning(tmp_path):
    r = run_fits(_table(synthetic_table(seed=2, noise=0.005), tmp_path), ["approach2"], budgets=[1e20])
    assert any(w.startswith("no bootstrap") for w in r["warnings"])


def test_rules_without_their_own_table():
    """E above the lowest loss and an Approach-1 envelope won by the edge sizes (checked on result blocks)."""
    df = pd.DataFrame({"N": [1e8, 1e9, 1e10], "D": [1e9, 1e10, 1e11], "C": [1e18, 1e19, 1e20],
                       "L": [2.5, 2.2, 2.0]})
    blk = {"E": 2.1, "A": 1.0, "B": 1.0, "alpha": 0.3, "beta": 0.3}
    assert any("above the lowest measured loss" in w for w in dg.approach3_warnings(Approach3Result.from_json(blk), df))
    assert not any("above the lowest" in w for w in dg.approach3_warnings(Approach3Result.from_json(dict(blk, E=1.9)), df))
    assert dg.approach1_warnings(_a1({"n_envelope_points": 300, "n_edge_points_dropped": 700}))
    assert dg.approach1_warnings(_a1({"n_envelope_points": 700, "n_edge_points_dropped": 300})) == []


def test_cli_prints_warnings_and_plots_show_them(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    assert main(["fit", str(sweep), "--method", "approach2"]) == 0
    out = capsys.readouterr().out
    assert "warning: no bootstrap" in out
    saved = json.loads((sweep / "fit.json").read_text())
    assert any(w.startswith("no bootstrap") for w in saved["warnings"])
    from research.plots import plot_sweep_dir
    from research.plots.extrapolation import add_warnings, figure_warnings

    lines = figure_warnings("isoflop", saved)
    assert lines and lines[0].startswith("no bootstrap")
    from matplotlib.figure import Figure

    fig = add_warnings(Figure(figsize=(6, 4), layout="constrained"), lines)
    assert any("no bootstrap" in t.get_text() for t in fig.texts)
    assert fig.get_figheight() > 4  # room made below the axes
    paths = plot_sweep_dir(sweep, fit=saved, formats=("png",))
    assert {p.stem for p in paths} >= {"isoflop", "optimal_allocation"}


def test_fit_json_keeps_warning_lists_per_approach_and_overall(good_fit):
    assert isinstance(good_fit["warnings"], list)
    for k in ("approach2", "approach3"):
        assert isinstance(good_fit[k]["warnings"], list)
    assert good_fit["approach3"]["noise"]["kind"] == "residuals"
    assert good_fit["approach3"]["noise"]["sigma_log"] == pytest.approx(0.005, rel=0.3)
    assert math.isclose(good_fit["approach3"]["data_range"]["flops"][1], max(CHINCHILLA_BUDGETS))


def _study_like_table(rng_seed):
    """The 2-seed study design's (N, D) points (6 sizes, 11 budgets a factor sqrt(2) apart, D/N in [10, 400]),
    losses from a law like the study's fit times exp(trunk offset + run noise) at the measured sizes."""
    from research.fit.laws import ChinchillaLaw

    law = ChinchillaLaw(1.388, 9.31, 13990.0, 0.311, 0.778)
    rng = np.random.default_rng(rng_seed)
    rows = []
    for d_model in (16, 24, 32, 40, 48, 56):
        n = 512 * d_model + max(1, round(d_model / 32)) * (12 * d_model ** 2 + 2 * d_model) + d_model
        for c in (5e10 * 2 ** (k / 2) for k in range(11)):
            d = c / (6 * n)
            if 10 <= d / n <= 400 and d <= 8.39e6:
                rows += [(n, d, c, str(s)) for s in range(2)]
    df = pd.DataFrame(rows, columns=["N", "D", "C", "seed"])
    offset = {(n, s): rng.normal(0, 0.0085) for n, s in zip(df["N"], df["seed"])}
    eps = rng.normal(0, 0.006, len(df)) + np.array([offset[k] for k in zip(df["N"], df["seed"])])
    return df.assign(L=law.loss(df["N"].to_numpy(), df["D"].to_numpy()) * np.exp(eps)), law


def test_approach3_irreducible_loss_at_zero_is_flagged():
    """A noisy table over one decade of N can put E at 0 with a tiny alpha (A/N^alpha standing in for E):
    a confidently wrong a whose resamples share the choice. The fit must say so; a resample-only collapse
    is named too."""
    from research.fit.core import run_approach3

    df, law = _study_like_table(101)
    fit = run_approach3(df, bootstrap=50, seed=0, grid="small")
    lo, hi = fit["bootstrap"]["intervals"]["a"]
    assert fit["E"] < 1e-3 and lo <= hi  # the point fit collapses onto E = 0 ...
    assert abs(fit["a"] - law.a) > 0.1  # ... with an a far from the true 0.714 (the old multi-start's interval
    # excluded the truth too; variable projection's resamples leave the basin more often, so its interval is wider)
    assert any("put the irreducible loss at zero" in w for w in dg.approach3_warnings(Approach3Result.from_json(fit), df))
    ok = {"E": 1.4, "A": 9.3, "B": 1.4e4, "alpha": 0.31, "beta": 0.78}
    assert not any("at zero" in w for w in dg.approach3_warnings(Approach3Result.from_json(ok), df))  # a fit with E in place: silent
    samples = {"E": [1e-12] * 20 + [1.3] * 80}
    share = dg.approach3_warnings(Approach3Result.from_json(dict(ok, bootstrap={"samples": samples})), df)
    assert any(w.startswith("20% of the bootstrap resamples put E at zero") for w in share)
    samples = {"E": [1e-12] * 4 + [1.3] * 96}
    assert not any("at zero" in w for w in dg.approach3_warnings(Approach3Result.from_json(dict(ok, bootstrap={"samples": samples})), df))
