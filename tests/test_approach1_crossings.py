"""Approach 1's exponent from the envelope's crossings (research/fit/crossings.py), not from a line through
its staircase of winners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research.errors import UserError
from research.fit.allocation import SIX_N, FlopsPerToken
from research.fit.crossings import crossings, fit_crossings
from research.fit.endpoint_envelope import fit_approach1_endpoints
from research.fit.laws import ChinchillaLaw

LADDER = (11_312, 19_272, 28_768, 39_800, 52_368, 82_112, 118_000)  # the study's sizes: uneven ratios 1.3-1.7
STUDY_LIKE = ChinchillaLaw(1.635, 392.7, 1.115e5, 0.7556, 0.9491)  # a = beta / (alpha + beta) = 0.557


def ladder_table(law, ladder=LADDER, tokens_per_param=(6.0, 600.0), n_tokens=10):
    """Every size at n_tokens log-spaced D/N over the window, loss from the law (no noise)."""
    rows = [(n, n * r) for n in ladder for r in np.geomspace(*tokens_per_param, n_tokens)]
    N, D = (np.array(v, float) for v in zip(*rows))
    return pd.DataFrame({"N": N, "D": D, "F": 6 * N * D, "L": law.loss(N, D)})


def test_crossings_are_ties_measured_on_both_sides_not_a_profile_starting():
    C_G = np.geomspace(1.0, 100.0, 201)
    L_RG = np.vstack([np.full_like(C_G, 2.0),                         # N = 1e4: flat
                      2.0 * (C_G / 10.0) ** -0.1,                     # N = 4e4: ties with the first at C = 10
                      np.where(C_G >= 50.0, 1.0, np.inf)])            # N = 9e4: enters at C = 50 already best
    x = crossings([1e4, 4e4, 9e4], L_RG, C_G)
    assert len(x["flops"]) == 1  # the third row's entry changes the winner but ties with nothing measured
    assert x["flops"][0] == pytest.approx(10.0, rel=0.03)
    assert (x["n_left"][0], x["n_right"][0]) == (1e4, 4e4) and x["n_opt"][0] == pytest.approx(2e4)


def test_fit_crossings_recovers_an_exact_power_law_in_either_convention():
    a, k = 0.6, 0.02
    N_X = np.array([1e4, 2e4, 4e4, 8e4])
    x = {"flops": (N_X / k) ** (1 / a), "n_opt": N_X}
    f = fit_crossings(x, SIX_N)
    assert f["a"] == pytest.approx(a, rel=1e-9) and f["k_N"] == pytest.approx(k, rel=1e-9)
    assert f["b"] == pytest.approx(1 - a, rel=1e-9) and f["k_D"] == pytest.approx(1 / (6 * k), rel=1e-9)
    f2 = fit_crossings(x, FlopsPerToken(7.0, 1.05, "chinchilla"))  # D_opt = C / (7 N_opt^1.05)
    assert f2["a"] == pytest.approx(a) and f2["b"] == pytest.approx(1 - 1.05 * a, rel=1e-9)
    assert fit_crossings({"flops": np.array([1e10, 2e10]), "n_opt": np.array([3e4, 3e4])}, SIX_N) is None
    assert fit_crossings({"flops": np.array([2e10, 1e10]), "n_opt": np.array([3e4, 5e4])}, SIX_N) is None


def test_crossings_recover_the_law_on_the_studys_ladder_where_the_staircase_does_not():
    # 20 D per size (the study has 10-16): with fewer, the straight lines between a size's points move
    # the crossings (10 per size: 0.551)
    r = fit_approach1_endpoints(ladder_table(STUDY_LIKE, n_tokens=20), SIX_N)
    assert r["estimator"] == "crossings" and r["n_crossings"] >= 5
    assert r["a"] == pytest.approx(STUDY_LIKE.a, abs=0.002)
    assert r["b"] == pytest.approx(1 - r["a"], abs=1e-9)
    # the line through the winners: every step at a trained size, the end steps cut by the data's range
    assert abs(r["staircase"]["a"] - STUDY_LIKE.a) > 0.02
    for c in r["crossings"]:  # each crossing's N_opt lies between two neighbouring sizes of the ladder
        i = LADDER.index(round(c["n_left"]))
        assert round(c["n_right"]) == LADDER[i + 1]


def test_no_measured_tie_is_refused_not_read_off_the_staircase():
    # optimum at D/N ~ 1-3 on this ladder, below every size's lowest D/N (6): a size wins from its first
    # point on and no two sizes are seen to tie
    law = ChinchillaLaw(1.6, 300.0, 1e4, 0.6, 0.9)
    assert all(c / (6 * law.n_opt(c) ** 2) < 3 for c in (1e10, 1e12))
    with pytest.raises(UserError, match="crossing") as err:
        fit_approach1_endpoints(ladder_table(law), SIX_N)
    assert "\n" not in str(err.value) and "Approach 2" in str(err.value)

