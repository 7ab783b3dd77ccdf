"""The noise model (per-trunk offsets apart from per-run noise, the trend in D/N, independent dof),
prediction intervals at each point's own D/N, and the held-out check's baselines (real fits on
tables built with a known noise structure)."""

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from research.fit.core import run_fits
from research.fit.data import load_table
from research.fit.holdout import per_size_baseline, run_holdout
from research.fit.noise import noise_model, noise_sigma
from research.fit.predict import predict, predictor_from_fit

SIZES = (1e4, 2e4, 4e4)
RATIOS = np.geomspace(10, 300, 6)


def table(offset_sd=0.0, run_sd=lambda x: 0.0, seeds=2, seed=0):
    """Rows of a seeded design: ln L = a smooth law + a (size, seed) offset + per-run noise of sd run_sd(D/N)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in SIZES:
        offsets = rng.normal(0, offset_sd, seeds)
        for x in RATIOS:
            d = n * x
            for s in range(seeds):
                lnL = math.log(1.5 + 400 / n ** 0.5 + 300 / d ** 0.4) + offsets[s] + rng.normal(0, run_sd(x))
                rows.append({"N": n, "D": d, "L": math.exp(lnL), "seed": str(s), "C": 6 * n * d, "F": 6 * n * d})
    return pd.DataFrame(rows)


def test_offsets_alone_are_all_offset_and_count_one_dof_per_size_and_extra_seed():
    m = noise_model(table(offset_sd=0.05, seeds=3))
    assert m["offset_share"] == pytest.approx(1.0) and m["sigma_log_run"] == pytest.approx(0.0, abs=1e-12)
    assert m["dof_independent"] == len(SIZES) * 2 and m["dof_naive"] == len(SIZES) * len(RATIOS) * 2
    assert m["dof_offset"] + m["dof_run"] == m["dof_naive"]


def test_per_run_noise_alone_is_mostly_run_noise_and_its_trend_in_d_over_n_is_recovered():
    sd = lambda x: 0.02 * (x / 10) ** -0.5  # noqa: E731
    df = table(run_sd=sd, seeds=8, seed=1)
    m = noise_model(df)
    assert m["offset_share"] < 0.35  # an offset is the mean of 6 runs' noise: about 1/6 of the squares
    assert m["trend"]["exponent"] == pytest.approx(-0.5, abs=0.15)
    sigma = noise_sigma({"sigma_log": 0.01, "by_tokens_per_param": m["trend"]}, np.array([1e4, 1e4]),
                        np.array([1e5, 3e6]))
    assert sigma[0] == pytest.approx(sd(10), rel=0.3) and sigma[1] == pytest.approx(sd(300), rel=0.3)
    binned = [b["sigma_log"] for b in m["binned"]]
    assert binned == sorted(binned, reverse=True)  # falling with D/N, bin by bin


def test_prediction_intervals_take_the_noise_at_each_points_own_d_over_n(tmp_path):
    df = table(run_sd=lambda x: 0.02 * (x / 10) ** -0.5, seeds=4, seed=2)
    path = tmp_path / "t.csv"
    df.rename(columns={"N": "n_params", "D": "tokens", "L": "final_eval_loss", "C": "budget"}).to_csv(path, index=False)
    fit = run_fits(load_table(path, quiet=True), ["approach3"], grid="small", sensitivity=False)
    noise = fit["approach3"]["noise"]
    assert "by_tokens_per_param" in noise
    pred = predictor_from_fit(fit, "approach3")
    N, D = np.array([2e4, 2e4]), np.array([2e4 * 12, 2e4 * 250])
    rows = predict(pred, N, D, level=0.95)["rows"]
    k = NormalDist().inv_cdf(0.975)
    for row, sigma in zip(rows, noise_sigma(noise, N, D)):
        assert row["loss_high"] / row["loss"] == pytest.approx(math.exp(k * sigma), rel=1e-9)
    assert rows[0]["loss_high"] / rows[0]["loss"] > rows[1]["loss_high"] / rows[1]["loss"]  # wider at small D/N


def test_the_per_size_baseline_is_exact_where_each_size_is_a_power_law_in_d():
    rows = [{"N": n, "D": n * x, "L": 3.0 * (n * x) ** -0.05 * (n / 1e4) ** -0.02, "C": 6 * n * n * x}
            for n in SIZES for x in RATIOS]
    df = pd.DataFrame(rows)
    held = df["D"] / df["N"] == RATIOS[-1]
    out = per_size_baseline(df[~held].reset_index(drop=True), df[held].reset_index(drop=True), 0.95, None)
    assert out["summary"]["n"] == len(SIZES) and out["summary"]["mean_abs_rel_error"] < 1e-9


def test_the_held_out_check_reports_baselines_bias_and_spread_and_warns_when_the_law_loses(tmp_path):
    df = table(offset_sd=0.01, run_sd=lambda x: 0.01, seeds=2, seed=3)
    path = tmp_path / "t.csv"
    df.rename(columns={"N": "n_params", "D": "tokens", "L": "final_eval_loss", "C": "flops_6n"}).to_csv(path, index=False)
    out = run_holdout(load_table(path, quiet=True), "tokens/n_params>250", bootstrap=0, grid="small")
    law, base = out["approach3"]["summary"], out["baselines"]["per_size_lnL_lnD"]["summary"]
    for key in ("mean_abs_rel_error", "bias", "std_rel_error", "bias_over_spread", "max_abs_rel_error"):
        assert key in law and key in base
    assert base["n"] == len(SIZES) * 2 and out["heldout_noise"]["dof"] == len(SIZES)
    assert "kaplan" in out["baselines"]
    losing = [w for w in out["warnings"] if "worse" in w]
    assert bool(losing) == any(b["summary"]["mean_abs_rel_error"] < law["mean_abs_rel_error"]
                               for b in out["baselines"].values())


def test_a_baseline_that_reaches_only_some_held_out_runs_is_compared_with_the_law_on_those_runs(tmp_path):
    """Held out: the largest D/N of every size, plus a fourth size trained at one token count only (the
    per-size baseline cannot extend one point, the law can): the baseline's summary and the law's on the
    same runs (`law_on_same_runs`) cover the same rows, and the warning compares those."""
    df = table(offset_sd=0.01, run_sd=lambda x: 0.01, seeds=2, seed=3)
    extra = df[df["N"] == SIZES[-1]].copy()
    extra["N"] = 8e4
    extra = extra[extra["D"] / 4e4 >= RATIOS[-2] * 0.999].assign(D=lambda t: t["D"] * 2, C=lambda t: 6 * 8e4 * t["D"])
    df = pd.concat([df, extra], ignore_index=True)
    path = tmp_path / "t.csv"
    df.rename(columns={"N": "n_params", "D": "tokens", "L": "final_eval_loss", "C": "flops_6n"}).to_csv(path, index=False)
    out = run_holdout(load_table(path, quiet=True), "tokens/n_params>250", bootstrap=0, grid="small",
                      methods=["approach3"])
    law, base = out["approach3"], out["baselines"]["per_size_lnL_lnD"]
    assert len(law["points"]) == len(SIZES) * 2 + 2 and base["summary"]["n"] == len(SIZES) * 2
    assert base["n_unpredicted"] == 2
    reached = [p["row"] for p in base["points"]]
    expected = np.mean([abs(law["points"][i]["rel_error"]) for i in reached])
    assert base["law_on_same_runs"]["n"] == len(reached)
    assert base["law_on_same_runs"]["mean_abs_rel_error"] == pytest.approx(expected, rel=1e-12)
    for i, p in zip(reached, base["points"]):  # the rows named are the runs the baseline predicted
        assert (law["points"][i]["n_params"], law["points"][i]["tokens"]) == (p["n_params"], p["tokens"])
    losing = [w for w in out["warnings"] if "worse" in w]
    assert bool(losing) == (base["summary"]["mean_abs_rel_error"] < expected)
