"""Approach 3 by variable projection (research/fit/varpro.py) against independent solves."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from research.cli import main
from research.fit.core import resolve_solver
from research.fit import varpro
from research.fit.approach3 import objective_np, resample_weights
from research.fit.synthetic import default_truth, synthetic_table

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def table():
    df = synthetic_table(seed=1)
    return tuple(np.log(df[c].to_numpy(float)) for c in ("N", "D", "loss"))


def huber_obj(theta, lnN, lnD, lnL, delta=1e-3):
    """The objective written out independently of the library (Hoffmann et al. App. D.2, summed)."""
    a, b, e, al, be = theta
    pred = np.logaddexp(np.logaddexp(a - al * lnN, b - be * lnD), e)
    r = pred - lnL
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))))


@pytest.fixture(scope="module")
def fit(table):
    return varpro.fit_varpro(*table)


def test_reaches_the_optimum_an_lbfgs_from_the_truth_reaches(table, fit):
    law = default_truth()
    truth = np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])
    res = minimize(objective_np, truth, args=(*table, np.ones_like(table[0])), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
    assert fit["objective"] <= res.fun * (1 + 1e-12)
    assert fit["objective"] == pytest.approx(huber_obj(fit["theta"], *table), rel=1e-12)
    np.testing.assert_allclose(fit["theta"], res.x, rtol=1e-4, atol=1e-5)


def test_a_finer_grid_changes_nothing_at_printed_precision(table, fit, monkeypatch):
    monkeypatch.setattr(varpro, "COARSE_STEP", varpro.COARSE_STEP / 2)
    monkeypatch.setattr(varpro, "FINE_STEP", varpro.FINE_STEP / 2)
    finer = varpro.fit_varpro(*table)
    assert finer["coarse"]["objective"].size == 4 * fit["coarse"]["objective"].size
    for x, y in zip(finer["theta"], fit["theta"]):
        assert f"{x:.4g}" == f"{y:.4g}"


def test_profile_cells_are_the_inner_minimum(table, fit):
    coarse = fit["coarse"]
    obj = coarse["objective"]
    lnN, lnD, lnL = table
    i0, j0 = np.unravel_index(np.nanargmin(obj), obj.shape)
    far = np.unravel_index(np.nanargmax(np.where(obj < 10 * obj[i0, j0], obj, -np.inf)), obj.shape)
    # cells near the best (within varpro.NEAR_FACTOR) are converged; far cells are within 1% of their minimum
    for (i, j), tol in (((i0, j0), 1e-6), ((i0 + 1, j0), 1e-6), ((i0, j0 + 1), 1e-6), (far, 1e-2)):
        al, be = coarse["alpha"][i], coarse["beta"][j]
        best = min(minimize(lambda x: huber_obj([x[0], x[1], x[2], al, be], lnN, lnD, lnL), x0,
                            method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000}).fun
                   for x0 in ([5.0, 5.0, 0.5], [2.0, 8.0, 0.0], [8.0, 2.0, 0.7], list(coarse["params"][i, j, :3])))
        assert best * (1 - 1e-9) <= obj[i, j] <= best * (1 + tol)


def test_profile_block_a_range_and_E(table, fit):
    prof = varpro.profile_block(fit, *table)
    a = fit["theta"][4] / (fit["theta"][3] + fit["theta"][4])
    assert prof["a_range"]["low"] <= a <= prof["a_range"]["high"]
    assert prof["a_range"]["high"] - prof["a_range"]["low"] < 0.2
    E = np.array(prof["E"]["E"])
    obj = np.array(prof["E"]["objective"])
    assert np.nanmin(obj) >= fit["objective"] * (1 - 1e-9)  # fixing E can only cost
    near = np.argmin(np.abs(E - np.exp(fit["theta"][2])))
    assert obj[near] < 1.2 * fit["objective"]  # close to the fitted E the profile is near the best
    assert obj[0] > 1.5 * fit["objective"]  # E = 0 is clearly worse on data generated with E = 1.8


def test_bootstrap_matches_lbfgs_per_resample(table, fit):
    lnN, lnD, lnL = table
    W = resample_weights(len(lnN), 6, seed=3)
    thetas, objs = varpro.bootstrap(*(np.exp(v) for v in table), fit["optima"], W)
    for w, t, f in zip(W, thetas, objs):
        res = minimize(objective_np, fit["theta"], args=(lnN, lnD, lnL, w), jac=True, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
        assert f <= res.fun * (1 + 1e-7)
        assert f == pytest.approx(objective_np(t, lnN, lnD, lnL, w)[0], rel=1e-12)


def test_cli_default_solver_and_profile(tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", str(ROOT / "tests/data/sweep_small"), "--method", "approach3", "--out", str(out),
                 "--bootstrap", "40", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["solver"] == "varpro" and r["bootstrap"]["solver"] == "varpro"
    assert r["bootstrap"]["intervals"]["a"][0] <= r["a"] <= r["bootstrap"]["intervals"]["a"][1]
    assert len(r["profile"]["alpha_beta"]["objective"]) == len(r["profile"]["alpha_beta"]["alpha"])
    assert r["profile"]["a_range"]["low"] <= r["a"] <= r["profile"]["a_range"]["high"]
    # the multi-start solver stays available; scipy's stopping rules (the published early stop) select it
    assert resolve_solver(None) == "varpro" and resolve_solver(None, "scipy") == "lbfgs"
    assert resolve_solver("lbfgs") == "lbfgs"
    from research.plots.profile import approach3_profile

    approach3_profile({"approach3": r}).savefig(tmp_path / "profile.png")
    assert (tmp_path / "profile.png").stat().st_size > 10_000
