"""The sensitivity report: a as the analyst's choices vary, each refit checked against an
independent fit of the same choice (real solvers, a synthetic sweep with a known law)."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from research.cli import main
from research.fit import approach3 as a3mod
from research.fit.core import run_fits
from research.fit.data import load_table
from research.fit.noise import point_means, same_value_keys
from research.fit.sensitivity import PROFILE_THRESHOLD, _warnings
from research.records import Approach3Result, Sensitivity
from research.fit.synthetic import write_sweep_dir


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path = write_sweep_dir(tmp_path_factory.mktemp("sens") / "sweep", per_budget=5, noise=0.01, seed=3)
    table = load_table(path, quiet=True)
    return path, table, run_fits(table, ["approach2", "approach3"], grid="small")


def _direct_fit(df):
    """An independent Approach-3 fit of one choice's data: a start grid, from scratch."""
    res = a3mod.fit_approach3(df["N"], df["D"], df["L"], grid="small")
    return res["a"], res["objective"]


def test_the_E_profile_never_beats_the_free_fit_and_passes_through_it(fitted):
    _, table, fit = fitted
    p = fit["sensitivity"]["E_profile"]
    assert min(p["objective_rel"]) >= -1e-9  # E held fixed can only do worse than E free
    i = int(np.argmin(np.abs(np.array(p["E"]) - fit["approach3"]["E"])))
    assert p["objective_rel"][i] == pytest.approx(0, abs=1e-6) and p["a"][i] == pytest.approx(fit["approach3"]["a"],
                                                                                               abs=1e-3)
    lo, hi = p["a_within_threshold"]
    near = [a for a, r in zip(p["a"], p["objective_rel"]) if r <= PROFILE_THRESHOLD]
    assert lo == min(near) and hi == max(near)


def test_the_E_profile_matches_an_independent_bounded_fit_at_a_low_E(fitted):
    _, table, fit = fitted
    p = fit["sensitivity"]["E_profile"]
    k = 2  # a grid point far from the fitted E, where the ridge has moved a most
    E = p["E"][k]
    df = table.df
    lnN, lnD, lnL = (np.log(df[c].to_numpy(float)) for c in ("N", "D", "L"))
    best = math.inf
    for x0 in a3mod.grid_starts("small")[::9]:  # scipy L-BFGS-B with e's bounds pinned, from 27 grid starts
        x0 = x0.copy()
        x0[2] = math.log(E)
        bounds = [(None, None)] * 2 + [(math.log(E), math.log(E))] + [(None, None)] * 2
        r = minimize(a3mod.objective_np, x0, args=(lnN, lnD, lnL, np.ones_like(lnN)), jac=True, method="L-BFGS-B",
                     bounds=bounds, options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
        best = min(best, r.fun)
    assert p["objective"][k] == pytest.approx(best, rel=1e-4)


def test_leave_one_size_out_and_seed_means_equal_independent_fits_of_that_data(fitted):
    _, table, fit = fitted
    df = table.df
    choices = {c["choice"]: c for c in fit["sensitivity"]["choices"]}
    size = same_value_keys(df["N"])
    smallest = size == size.min()
    c = choices[f"without N = {float(df['N'][smallest].iloc[0]):,.0f}"]
    a, objective = _direct_fit(df[~smallest].reset_index(drop=True))
    assert c["objective"] <= objective * (1 + 1e-6) and c["approach3"] == pytest.approx(a, abs=5e-3)
    assert c["n_points"] == int((~smallest).sum())
    means = point_means(df)
    if len(means) < len(df):  # the synthetic sweep has one seed: no seed-means choice then
        a, objective = _direct_fit(means)
        assert choices["seed means (one row per (N, D) point)"]["approach3"] == pytest.approx(a, abs=5e-3)
    groups = {c["group"] for c in fit["sensitivity"]["choices"]}
    assert {"leave one size out", "leave one budget out", "N"} <= groups


def test_a_range_wider_than_the_bootstrap_interval_warns():
    block = Sensitivity.from_json({"range": {"approach3": [0.40, 0.60], "width": 0.2},
                                   "choices": [{"group": "rows", "choice": "every row (as fitted)", "approach3": 0.5},
                                               {"group": "leave one size out", "choice": "without N = 1",
                                                "approach3": 0.6}]})
    law = {"E": 1.7, "A": 400.0, "B": 4000.0, "alpha": 0.34, "beta": 0.28, "a": 0.5}
    wide = Approach3Result.from_json(dict(law, bootstrap={"intervals": {"a": [0.3, 0.7]}}))
    narrow = Approach3Result.from_json(dict(law, bootstrap={"intervals": {"a": [0.45, 0.55]}}))
    assert _warnings(block, wide) == []
    (w,) = _warnings(block, narrow)
    assert "[0.400, 0.600]" in w and "[0.450, 0.550]" in w and "without N = 1" in w


def test_fit_prints_the_sensitivity_summary(fitted, capsys):
    path, _, _ = fitted
    assert main(["fit", str(path), "--method", "approach3", "--grid", "small", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "sensitivity of a" in out and "leave one size out" in out and "E profiled" in out


def test_a_table_of_two_families_is_fitted_per_family_and_warned_about(fitted):
    import dataclasses

    _, table, _ = fitted
    df = table.df.copy()
    n_sizes = sorted(df["N"].unique())
    df["family"] = np.where(df["N"] <= n_sizes[len(n_sizes) // 2], "narrow", "wide")
    fit = run_fits(dataclasses.replace(table, df=df), ["approach3"], grid="small")
    alone = [c for c in fit["sensitivity"]["choices"] if c["group"] == "model family"]
    assert [c["choice"] for c in alone] == ["narrow alone", "wide alone"]
    for c in alone:
        if "approach3" in c:  # an independent fit of that family's rows alone
            sub = df[df["family"] == c["choice"].split()[0]].reset_index(drop=True)
            a, objective = _direct_fit(sub)
            assert c["objective"] <= objective * (1 + 1e-6) and c["approach3"] == pytest.approx(a, abs=5e-3)
    assert any("2 model families (narrow, wide)" in w for w in fit["warnings"])
