"""Approach 2's per-slice check (research/fit/isoflop.py `parabola_check`): each design budget's parabola
is judged against the noise of its points' seed means, so a slice that is not one parabola in ln N (two
minima) is named, and a slice of 3 sizes is reported as untested rather than as fitting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import digamma

from research.cli import main

SIZES = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5])
REL = 0.005  # each point's two seeds lie at L * (1 +- REL): their mean is L exactly, their spread known


def table(bump_at=None, bump=0.0, three_sizes_at=None) -> pd.DataFrame:
    """Five budgets whose mean losses lie exactly on a parabola in ln N (minimum moving with C), two seeds
    each; optionally one budget's middle size raised by `bump` nats, one budget trained at 3 sizes only."""
    rows = []
    for j, c in enumerate([1e11, 2e11, 4e11, 8e11, 1.6e12]):
        n_opt = 3e4 * (c / 1e11) ** 0.5
        sizes = SIZES * (c / 1e11) ** 0.5
        if j == three_sizes_at:
            sizes = sizes[1:4]
        for i, n in enumerate(sizes):
            loss = 2.5 - 0.1 * j + 0.05 * np.log(n / n_opt) ** 2 + (bump if (j == bump_at and i == 2) else 0.0)
            for seed, sign in enumerate((1, -1)):
                rows.append({"N": n, "D": c / (6 * n), "C": c, "seed": seed, "loss": loss * (1 + sign * REL)})
    return pd.DataFrame(rows)


def fit(df: pd.DataFrame, tmp_path, capsys) -> tuple[dict, str]:
    """`scaling fit TABLE --method approach2 --json`: the block, and stderr."""
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    code = main(["fit", str(path), "--method", "approach2", "--n-col", "N", "--d-col", "D", "--loss-col", "loss",
                 "--flops-col", "C", "--json", "--no-write"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


def test_slices_on_a_parabola_fit_within_the_noise(tmp_path, capsys):
    res, err = fit(table(), tmp_path, capsys)
    checks = [b["fit_check"] for b in res["budgets"]]
    assert len(checks) == 5 and all(c["dof"] == 2 and c["n_points"] == 5 for c in checks)
    # the means lie exactly on a parabola: nothing is left over, and each slice fits within the noise
    assert all(c["rms_residual"] < 1e-9 and c["chi2"] < 1e-9 and c["within_noise"] for c in checks)
    # the noise of a mean of two seeds at L(1 +- REL): sd of ln L = REL*sqrt(2), over sqrt(2) seeds -> L*REL,
    # times the noise model's correction of a 1-dof ln s^2 for its bias (E ln s^2 = ln sigma^2 + psi(1/2) + ln 2)
    unbias = np.exp(-(digamma(0.5) + np.log(2)) / 2)
    assert checks[0]["noise_of_means"] == pytest.approx(REL * unbias * np.mean(table()["loss"][:10]), rel=0.02)
    assert not any("misses the seed means" in w or "only 3 sizes" in w for w in res["warnings"])


def test_a_slice_with_two_minima_is_named(tmp_path, capsys):
    res, err = fit(table(bump_at=2, bump=0.12), tmp_path, capsys)
    by_c = {b["flops"]: b["fit_check"] for b in res["budgets"]}
    bad = next(c for f, c in by_c.items() if abs(f / 4e11 - 1) < 1e-6)
    assert bad["within_noise"] is False and bad["p_value"] < 0.05 and bad["chi2"] > 6
    assert sum(not c["within_noise"] for c in by_c.values()) == 1
    assert any(w.startswith("IsoFLOP slice at C=4e+11: its parabola misses the seed means beyond their noise")
               for w in res["warnings"])


def test_a_slice_of_three_sizes_is_untested_not_passed(tmp_path, capsys):
    res, err = fit(table(three_sizes_at=1), tmp_path, capsys)
    chk = next(b["fit_check"] for b in res["budgets"] if abs(b["flops"] / 2e11 - 1) < 1e-6)
    assert chk["dof"] == 0 and "within_noise" not in chk and "chi2" not in chk and "untested" in chk["note"]
    assert any(w.startswith("1 of 5 IsoFLOP slices have only 3 sizes (C = 2e+11)") for w in res["warnings"])


def test_without_seeds_there_is_no_check(tmp_path, capsys):
    one_seed = table()
    one_seed = one_seed[one_seed["seed"] == 0]
    res, _ = fit(one_seed, tmp_path, capsys)
    assert all("fit_check" not in b for b in res["budgets"])


def test_one_marginal_miss_among_many_slices_is_called_chance(tmp_path, capsys):
    """A slice missing at 0.01 <= p < 0.05 among 5 tested: the slice's record says it misses, but the
    warning says this is what chance gives among 5 slices (Bonferroni 0.05 / 5), not a second minimum."""
    res, _ = fit(table(bump_at=2, bump=0.065), tmp_path, capsys)
    chk = next(b["fit_check"] for b in res["budgets"] if abs(b["flops"] / 4e11 - 1) < 1e-6)
    assert chk["judged_by"] == "replicates" and chk["lack_of_fit"]["dof"] == [2, 5]
    assert 0.01 <= chk["lack_of_fit"]["p_value"] < 0.05 and chk["within_noise"] is False
    assert not any("misses the seed means beyond their noise" in w for w in res["warnings"])
    (line,) = [w for w in res["warnings"] if "tested IsoFLOP slices miss their parabola" in w]
    assert line.startswith("1 of 5 tested IsoFLOP slices miss their parabola at p < 0.05 (C=4e+11: p = ")
    assert "none at p < 0.01 (0.05 / 5 slices)" in line


def test_a_slice_judged_by_its_own_seeds_when_they_scatter_more_than_the_noise_model_says(tmp_path, capsys):
    """One budget's seeds scatter 3x more than the others' (short runs leaving a plateau): the sweep's
    noise model (pooled over every point) calls its bumped parabola a miss, its own replicates do not,
    and the warning says the noise model understates the noise there."""
    df = table(bump_at=2, bump=0.1)
    at = np.isclose(df["C"], 4e11)
    mean = df.loc[at, "loss"] / (1 + np.where(df.loc[at, "seed"] == 0, REL, -REL))
    df.loc[at, "loss"] = mean * (1 + np.where(df.loc[at, "seed"] == 0, 3 * REL, -3 * REL))
    res, _ = fit(df, tmp_path, capsys)
    chk = next(b["fit_check"] for b in res["budgets"] if abs(b["flops"] / 4e11 - 1) < 1e-6)
    assert chk["p_value"] < 0.05 and chk["lack_of_fit"]["p_value"] > 0.1 and chk["within_noise"] is True
    # the means' own noise: seeds at L(1 +- 3 REL) give a run sd of 3 REL L sqrt(2), over sqrt(2) seeds: 3 REL L
    assert chk["replicate_noise_of_means"] == pytest.approx(3 * REL * np.sqrt(np.mean(mean ** 2)), rel=0.02)
    assert chk["replicate_noise_of_means"] > chk["noise_of_means"]
    (line,) = [w for w in res["warnings"] if w.startswith("IsoFLOP slice at C=4e+11")]
    assert "fits within its own seeds' scatter" in line and "understates the noise" in line


def test_several_marginal_misses_are_weighed_together(tmp_path, capsys):
    """Two slices each missing at 0.01 <= p < 0.05 among 5: neither stands out alone (Bonferroni), but the
    warning gives the chance of two such misses together: P(X >= 2), X ~ Binomial(5, 0.05) = 0.0226."""
    df = table(bump_at=2, bump=0.065)
    at = np.isclose(df["C"], 8e11) & np.isclose(df["N"], SIZES[2] * 8 ** 0.5)  # the middle size of a second budget
    df.loc[at, "loss"] += 0.065 * (1 + np.where(df.loc[at, "seed"] == 0, REL, -REL))
    res, _ = fit(df, tmp_path, capsys)
    (line,) = [w for w in res["warnings"] if "tested IsoFLOP slices miss their parabola" in w]
    assert line.startswith("2 of 5 tested IsoFLOP slices miss their parabola at p < 0.05 (C=4e+11: p = ")
    both = 1 - 0.95 ** 5 - 5 * 0.05 * 0.95 ** 4
    assert f"2 misses at p < 0.05 happen by chance with probability {both:.2g}" in line
