"""`scaling fit --holdout`: held-out selection, recovery and interval coverage on a known law, errors."""

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from research.cli import main
from research.errors import UserError
from research.fit.data import load_table
from research.fit.holdout import holdout_mask, run_holdout
from research.fit.synthetic import default_truth, synthetic_table

DATA = Path(__file__).parent / "data"
TRUTH = default_truth()  # Epoch 2024 refit: E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658
NOISE = 0.01  # sigma of ln L in synthetic_table
# A coarse start grid (THETA order a, b, e, alpha, beta: 32 starts) keeps each fit to seconds.
COARSE = np.array(list(itertools.product((5.0, 8.0), (5.0, 8.0), (0.0, 1.0), (0.25, 0.5), (0.25, 0.5))))


def _table(df, path):
    df.to_csv(path, index=False)
    return load_table(path, "N", "D", "loss", "C", quiet=True)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return _table(synthetic_table(seed=5, noise=NOISE), tmp_path_factory.mktemp("h") / "t.csv")


def test_named_specs_and_queries_select_the_rows_they_say(table):
    df = table.df
    np.testing.assert_array_equal(holdout_mask(df, "largest-budget"), np.isclose(df["C"], df["C"].max()))
    np.testing.assert_array_equal(holdout_mask(df, "largest-n"), df["N"] >= df["N"].max() * 0.999)
    np.testing.assert_array_equal(holdout_mask(df, "largest-tokens"), df["D"] >= df["D"].max() * 0.999)
    np.testing.assert_array_equal(holdout_mask(df, "n_params>=5e8"), df["N"] >= 5e8)
    np.testing.assert_array_equal(holdout_mask(df, "tokens/n_params>100"), df["D"] / df["N"] > 100)
    np.testing.assert_array_equal(holdout_mask(df, "budget >= 1e21 and tokens_per_param < 20"),
                                  (df["C"] >= 1e21) & (df["D"] / df["N"] < 20))
    np.testing.assert_array_equal(holdout_mask(df, "flops > 2e21"), df["F"] > 2e21)


@pytest.mark.parametrize("spec,fragment", [
    ("n_parms>=5e8", "did you mean 'n_params'"),
    ("n_params>=", "does not parse"),
    ("n_params=5e8", "use == to compare"),
    ("n_params*2", "not a true/false condition"),
    ("largest-budgets", "not a known spec (did you mean 'largest-budget'?)"),
    ("n_params>1e30", "matches none of the 81 runs"),
    ("n_params>0", "leaves 0 runs"),
    ("n_params > 5e7", "leaves 5 runs with 5 sizes"),  # the five smallest sizes are below 5e7
])
def test_bad_holdout_specs_are_one_clear_line(table, spec, fragment):
    with pytest.raises(UserError) as err:
        run_holdout(table, spec, ["approach3"], bootstrap=0, grid=COARSE)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_holdout_recovers_held_out_losses_with_nominal_coverage(tmp_path):
    """Fit a known Approach-3 law (1% noise) on 8 budgets, predict the 9th: errors are of the size of
    the noise, and over repeated draws about 95% of held-out runs lie inside the 95% intervals,
    which are not inflated to get there."""
    inside = total = 0
    half_widths, log_errs = [], []
    for draw in range(4):
        table = _table(synthetic_table(seed=100 + draw, noise=NOISE), tmp_path / f"{draw}.csv")
        r = run_holdout(table, "largest-budget", ["approach3"], bootstrap=40, seed=draw, grid=COARSE)
        b = r["approach3"]
        assert r["n_heldout"] == 9 and r["n_train"] == 72
        assert b["interval"]["noise"] == "residuals" and b["interval"]["parameter_uncertainty"] == "bootstrap"
        for p in b["points"]:
            true = TRUTH.loss(p["n_params"], p["tokens"])
            assert abs(math.log(p["predicted"] / true)) < 2 * NOISE  # the law, recovered out of sample
            assert abs(p["rel_error"]) < 4 * NOISE  # the measured loss, within the noise
            assert p["rel_error"] == pytest.approx(p["predicted"] / p["measured"] - 1)
            assert p["inside"] == (p["loss_low"] <= p["measured"] <= p["loss_high"])
            half_widths.append(math.log(p["loss_high"] / p["loss_low"]) / 2)
            log_errs.append(math.log(p["predicted"] / p["measured"]))
        s = b["summary"]
        assert s["mean_abs_rel_error"] == pytest.approx(np.mean([abs(p["rel_error"]) for p in b["points"]]))
        assert s["coverage"] == pytest.approx(np.mean([p["inside"] for p in b["points"]]))
        inside += s["n_inside"]
        total += s["n"]
    coverage = inside / total
    assert 0.85 <= coverage <= 1.0, coverage
    # about nominal, not bought with inflated intervals: half-width ~ 1.96 x (noise + parameter spread)
    assert 1.96 * NOISE <= np.mean(half_widths) <= 3.5 * NOISE
    assert np.sqrt(np.mean(np.square(log_errs))) < 2 * NOISE


def test_shifted_held_out_runs_fail_the_check_with_warnings(tmp_path):
    """Held-out runs 8% worse than the law (a broken extrapolation) are outside the intervals and
    flagged as a bias."""
    df = synthetic_table(seed=7, noise=NOISE)
    top = np.isclose(df["C"], df["C"].max())
    df.loc[top, "loss"] *= 1.08
    r = run_holdout(_table(df, tmp_path / "t.csv"), "largest-budget", ["approach3"], bootstrap=30, grid=COARSE)
    s = r["approach3"]["summary"]
    assert s["coverage"] < 0.3 and s["mean_rel_error"] < -0.05
    text = " ".join(r["warnings"])
    assert "inside their 95% prediction intervals" in text and "systematically under-predicted" in text


def test_cli_holdout_writes_extrapolation_and_figure_and_keeps_the_rest(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    (sweep / "fit.json").write_text(json.dumps({"approach2": {"a": 0.5, "b": 0.5, "k_N": 1, "k_D": 1}}))
    assert main(["fit", str(sweep), "--holdout", "largest-budget", "--grid", "small", "--bootstrap", "20",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    saved = json.loads((sweep / "fit.json").read_text())
    assert saved["approach2"]["a"] == 0.5  # merged, not overwritten
    assert saved["extrapolation"]["holdout"] == "largest-budget" == out["holdout"]
    for law in ("approach3", "kaplan"):
        pts = saved["extrapolation"][law]["points"]
        assert len(pts) == 7
        assert {"measured", "predicted", "rel_error", "inside", "loss_low", "loss_high"} <= set(pts[0])
    assert (sweep / "plots" / "extrapolation.png").stat().st_size > 10_000
    # a plain table with --out
    dest = tmp_path / "out" / "holdout.json"
    assert main(["fit", str(DATA / "external_chinchilla_like.csv"), "--n-col", "Model Size", "--d-col",
                 "Training Tokens", "--loss-col", "Loss", "--flops-col", "FLOPs", "--method", "kaplan",
                 "--holdout", "n_params>=2e9", "--out", str(dest)]) == 0
    text = capsys.readouterr().out
    assert "coverage of the 95% intervals" in text and "noise only" in text
    assert json.loads(dest.read_text())["extrapolation"]["kaplan"]["summary"]["n"] >= 1
    assert (tmp_path / "out" / "holdout_extrapolation.png").exists()


def test_cli_holdout_errors_are_single_lines_and_write_nothing(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    before = sorted(p.name for p in sweep.iterdir())
    for spec in ("tokens/n_params>1e9", "n_params >>> 3", "largest-nn"):
        assert main(["fit", str(sweep), "--holdout", spec]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and err[-1].startswith("scaling fit: error: --holdout")  # first: rows used
    assert main(["fit", str(sweep), "--holdout", "largest-budget", "--method", "approach2"]) == 2
    assert "only the compute-optimal allocation" in capsys.readouterr().err
    assert sorted(p.name for p in sweep.iterdir()) == before


def test_fit_sweep_dir_holdout_is_recorded_or_skipped_never_raised(tmp_path):
    from research.fit import fit_sweep_dir
    from research.fit.holdout import holdout_or_skip

    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    skipped = holdout_or_skip(load_table(sweep, quiet=True), "n_params>1e30", bootstrap=10, grid=COARSE)
    assert skipped["holdout"] == "n_params>1e30" and "matches none" in skipped["skipped"]
    fit_sweep_dir(sweep, grid="small", holdout="largest-budget", holdout_bootstrap=20)
    saved = json.loads((sweep / "fit.json").read_text())
    assert "approach3" in saved and "approach2" in saved
    ex = saved["extrapolation"]
    assert ex["n_heldout"] == 7 and ex["bootstrap"] == 20
    assert ex["approach3"]["summary"]["mean_abs_rel_error"] < 0.05


def test_approach2_is_judged_on_n_opt_at_held_out_budgets(table, tmp_path):
    """Approach 2 gives no loss, but its N_opt at a held-out budget can be checked against that budget's
    own IsoFLOP minimum; a budget whose minimum moved (its losses tilted in log N) is inconsistent."""
    from research.fit.holdout import check_allocation

    df = table.df
    top = holdout_mask(df, "largest-budget")
    ok = check_allocation(df[~top].reset_index(drop=True), df[top].reset_index(drop=True), 0.95, 0, 100)
    (b,) = ok["budgets"]
    assert b["flops"] == pytest.approx(df["C"].max())
    assert b["n_opt_predicted"] == pytest.approx(ok["k_N"] * b["flops"] ** ok["a"])
    assert 0.75 < b["ratio"] < 1.33 and b["consistent"] and ok["warnings"] == []
    held = df[top].reset_index(drop=True)
    held["L"] = held["L"] * np.exp(0.03 * np.log(held["N"] / held["N"].median()))  # minimum moves to smaller N
    bad = check_allocation(df[~top].reset_index(drop=True), held, 0.95, 0, 100)
    assert bad["budgets"][0]["ratio"] > 2 and not bad["budgets"][0]["consistent"]
    assert "does not extrapolate" in bad["warnings"][0]
    top_n = holdout_mask(df, "largest-n")
    skipped = check_allocation(df[~top_n].reset_index(drop=True), df[top_n].reset_index(drop=True), 0.95)
    assert "no held-out budget has an interior IsoFLOP minimum" in skipped["skipped"]
