"""`scaling predict`: agreement with each law's formula, prediction intervals, noise estimates, bad input."""

import json
import math
import shutil
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from research.cli import main
from research.fit.data import load_table
from research.fit.noise import estimate_noise

DATA = Path(__file__).parent / "data"
N = [1e8, 1e9, 7e10]
D = [2e9, 2e10, 1.4e12]


def run_json(capsys, *args):
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def pairs():
    return ["--n-params", *map(str, N), "--tokens", *map(str, D)]


def test_published_laws_agree_with_their_formulas(capsys):
    expected = {
        # Hoffmann et al. 2022 eq. 10 and Besiroglu et al. 2024, typed in from the papers
        "chinchilla-rounded": lambda n, d: 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28,
        "chinchilla": lambda n, d: 1.69337 + 406.401 / n**0.33917 + 410.723 / d**0.28491,  # unrounded
        "muennighoff-2023": lambda n, d: 1.869 + 520.8 / n**0.353 + 1487.7 / d**0.353,
        "epoch-2024": lambda n, d: 1.8172 + 482.01 / n**0.3478 + 2085.43 / d**0.3658,
        # Kaplan et al. 2020 eq. 1.5: [(N_c/N)^(a_N/a_D) + D_c/D]^a_D
        "kaplan-2020": lambda n, d: ((6.4e13 / n) ** (0.076 / 0.103) + 1.8e13 / d) ** 0.103,
    }
    for law, f in expected.items():
        out = run_json(capsys, "--law", law, *pairs())
        assert [r["loss"] for r in out["rows"]] == pytest.approx([f(n, d) for n, d in zip(N, D)], rel=1e-12)
        assert [(r["n_params"], r["tokens"]) for r in out["rows"]] == list(zip(N, D))
        assert all(r["loss_low"] is None and r["loss_high"] is None for r in out["rows"])
        assert "point prediction" in out["interval"]["description"]
    assert out["n_kind"] == "nonembedding"  # Kaplan counts non-embedding parameters
    # Chinchilla's own headline: 70B on 1.4T tokens
    headline = run_json(capsys, "--law", "chinchilla-rounded", "--n-params", "70e9", "--tokens",
                        "1.4e12")["rows"][0]["loss"]
    assert headline == pytest.approx(1.9366, abs=1e-4)
    # an allocation-only law has no L(N, D): refused in one line
    assert main(["predict", "--law", "chinchilla-approach1", "--n-params", "1e9", "--tokens", "2e10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "allocation" in err and "\n" not in err


def _fit_file(tmp_path, block, name="fit.json"):
    p = tmp_path / name
    p.write_text(json.dumps(block))
    return str(p)


A3 = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.36}


def _chin(p, n, d):
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def test_noise_only_interval_is_the_lognormal_band(tmp_path, capsys):
    """Bootstrap laws all equal to the point law + noise sigma: the interval is L*exp(+-1.96 sigma)."""
    samples = {k: [v] * 500 for k, v in A3.items()}
    fit = {"approach3": {**A3, "bootstrap": {"samples": samples},
                         "noise": {"kind": "replicates", "sigma_log": 0.02, "description": "test noise"}}}
    out = run_json(capsys, "--law", _fit_file(tmp_path, fit), *pairs())
    z = NormalDist().inv_cdf(0.975)
    for r, n, d in zip(out["rows"], N, D):
        mu = _chin(A3, n, d)
        assert r["loss"] == pytest.approx(mu)
        assert math.log(r["loss_high"] / mu) == pytest.approx(z * 0.02, rel=0.06)
        assert math.log(mu / r["loss_low"]) == pytest.approx(z * 0.02, rel=0.06)
    assert out["interval"]["noise"] == "replicates" and out["interval"]["parameter_uncertainty"] == "bootstrap"


def test_interval_mixes_parameter_spread_and_noise(tmp_path, capsys):
    """Independent check: invert the mixture CDF  F(x) = mean_s Phi((ln x - ln L_s)/sigma)  by bisection."""
    rng = np.random.default_rng(0)
    S = 300
    samples = {"E": 1.8 + 0.05 * rng.standard_normal(S), "A": 400 * np.exp(0.2 * rng.standard_normal(S)),
               "B": 2000 * np.exp(0.2 * rng.standard_normal(S)), "alpha": 0.34 + 0.01 * rng.standard_normal(S),
               "beta": 0.36 + 0.01 * rng.standard_normal(S)}
    sigma = 0.015
    fit = {"approach3": {**A3, "bootstrap": {"samples": {k: v.tolist() for k, v in samples.items()}},
                         "noise": {"kind": "residuals", "sigma_log": sigma, "description": "test"}}}
    law = _fit_file(tmp_path, fit)
    out = run_json(capsys, "--law", law, *pairs())
    phi = NormalDist().cdf
    for r, n, d in zip(out["rows"], N, D):
        ln_s = np.log(samples["E"] + samples["A"] / n ** samples["alpha"] + samples["B"] / d ** samples["beta"])

        def quantile(q):
            lo, hi = ln_s.min() - 10 * sigma, ln_s.max() + 10 * sigma
            for _ in range(80):
                mid = (lo + hi) / 2
                F = np.mean([phi((mid - m) / sigma) for m in ln_s])
                lo, hi = (mid, hi) if F < q else (lo, mid)
            return math.exp(lo)

        assert r["loss_low"] == pytest.approx(quantile(0.025), rel=4e-3)
        assert r["loss_high"] == pytest.approx(quantile(0.975), rel=4e-3)
        # parameter-only band: percentiles of the bootstrap laws' losses
        assert r["loss_low_params_only"] == pytest.approx(np.exp(np.quantile(ln_s, 0.025)), rel=1e-9)
        assert r["loss_low"] < r["loss_low_params_only"] < r["loss"] < r["loss_high_params_only"] < r["loss_high"]
    # without the noise block the interval is the parameter-only one, and says so
    fit["approach3"].pop("noise")
    out2 = run_json(capsys, "--law", _fit_file(tmp_path, fit, "nonoise.json"), *pairs())
    assert out2["rows"][0]["loss_low"] == pytest.approx(out["rows"][0]["loss_low_params_only"])
    assert "noise NOT included" in out2["interval"]["description"]
    # a different level narrows it
    out3 = run_json(capsys, "--law", law, *pairs(), "--level", "0.5")
    assert out3["rows"][0]["loss_high"] < out["rows"][0]["loss_high"]


def test_kaplan_fit_block_and_bare_law_files(tmp_path, capsys):
    kap = {"N_c": 1.4e13, "D_c": 2.4e13, "alpha_N": 0.089, "alpha_D": 0.114}
    fit = {"approach2": {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1.0},
           "kaplan": {"n_kind": "nonembedding", "L_ND": {**kap, "noise": {"kind": "residuals", "sigma_log": 0.03,
                                                                          "description": "resid"}}}}
    out = run_json(capsys, "--law", _fit_file(tmp_path, fit), *pairs())  # no approach3: kaplan is the default
    for r, n, d in zip(out["rows"], N, D):
        mu = ((kap["N_c"] / n) ** (kap["alpha_N"] / kap["alpha_D"]) + kap["D_c"] / d) ** kap["alpha_D"]
        assert r["loss"] == pytest.approx(mu, rel=1e-12)
        assert r["loss_high"] == pytest.approx(mu * math.exp(NormalDist().inv_cdf(0.975) * 0.03), rel=1e-9)
    assert "noise only" in out["interval"]["description"] and "nonembedding" in " ".join(out["notes"])
    bare = run_json(capsys, "--law", _fit_file(tmp_path, A3, "law.json"), "--n-params", "1e9", "--tokens", "2e10")
    assert bare["rows"][0]["loss"] == pytest.approx(_chin(A3, 1e9, 2e10))


def test_allocation_only_fits_say_they_cannot_predict(tmp_path, capsys):
    fit = {"approach1": {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1.0},
           "approach2": {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1.0},
           "approach3": {"skipped": "too few runs"}}
    law = _fit_file(tmp_path, fit)
    for extra in ([], ["--approach", "approach1"], ["--approach", "approach2"]):
        assert main(["predict", "--law", law, *extra, "--n-params", "1e9", "--tokens", "2e10"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "only the compute-optimal allocation" in err[0] and "approach3" in err[0]
    assert main(["predict", "--law", law, "--approach", "approach3", "--n-params", "1", "--tokens", "1"]) == 2
    assert "too few runs" in capsys.readouterr().err


@pytest.mark.parametrize("content,args,fragment", [
    ({"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34}, [], "lacks beta"),
    ({"approach3": {"E": 1.8, "A": 400.0, "B": 2000.0, "beta": 0.3}}, [], "lacks alpha"),
    ({**A3, "alpha": None}, [], "alpha must be a finite number"),
    ({**A3, "beta": -0.3}, [], "beta must be positive"),
    ({"kaplan": {"L_ND": {"N_c": 1e13, "D_c": 1e13, "alpha_N": 0.07}}}, ["--approach", "kaplan"], "lacks alpha_D"),
    ("{not json", [], "is not valid JSON"),
    ({"version": 1}, [], "holds no Approach 3 or Kaplan"),
    (A3, ["--n-params", "-5"], "n_params must be a positive finite number, got -5"),
    (A3, ["--n-params", "inf"], "n_params must be a positive finite number, got inf"),
    (A3, ["--tokens", "0"], "tokens must be a positive finite number, got 0"),
    (A3, ["--tokens", "lots"], "--tokens expects numbers"),
    (A3, ["--n-params", "1e9", "2e9", "3e9", "--tokens", "1e10", "2e10"], "3 --n-params values and 2 --tokens"),
])
def test_bad_input_is_one_line(tmp_path, capsys, content, args, fragment):
    p = tmp_path / "law.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    argv = ["predict", "--law", str(p)] + args
    if "--n-params" not in args:
        argv += ["--n-params", "1e9"]
    if "--tokens" not in args:
        argv += ["--tokens", "2e10"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_pairs_from_csv_and_broadcast(tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"n_params": N, "tokens": D}).to_csv(csv, index=False)
    a = run_json(capsys, "--csv", str(csv))
    b = run_json(capsys, *pairs())
    assert a["rows"] == b["rows"]
    c = run_json(capsys, "--n-params", "1e9", "--tokens", "1e10", "2e10", "4e10")
    assert [r["tokens"] for r in c["rows"]] == [1e10, 2e10, 4e10]
    assert len({r["n_params"] for r in c["rows"]}) == 1
    pd.DataFrame({"size": N}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["predict", "--csv", str(tmp_path / "bad.csv")]) == 2
    assert "needs columns n_params and tokens" in capsys.readouterr().err
    assert main(["predict", "--n-params", "1e9"]) == 2
    assert "need --n-params N and --tokens D" in capsys.readouterr().err


def test_predict_from_a_real_fit_with_bootstrap(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    assert main(["fit", str(sweep), "--method", "approach3", "--grid", "small", "--bootstrap", "20"]) == 0
    capsys.readouterr()
    fit = json.loads((sweep / "fit.json").read_text())["approach3"]
    assert fit["noise"]["kind"] == "residuals" and fit["data_range"]["n_params"][0] > 0
    out = run_json(capsys, "--law", str(sweep), "--n-params", "1e6", "1e10", "--tokens", "1e7", "1e7")
    for r in out["rows"]:
        assert r["loss"] == pytest.approx(_chin(fit, r["n_params"], r["tokens"]))
        assert r["loss_low"] < r["loss"] < r["loss_high"]
    assert "20 bootstrap laws" in out["interval"]["description"]
    assert "residual scatter" in out["interval"]["description"]
    # 1e10 parameters is far beyond the sweep's sizes (<= 4e7): warned; 1e6 is inside: not
    own = [w for w in out["warnings"] if not w.startswith("fit: ")]
    assert len(own) == 1 and own[0].startswith("pair 2: N = 1e+10 is 246x the largest fitted")
    assert main(["predict", "--law", str(sweep), "--n-params", "1e6", "--tokens", "1e7"]) == 0
    text = capsys.readouterr().out
    assert "95% interval" in text and "bootstrap laws" in text


def test_noise_from_replicates_with_distinct_seeds(tmp_path):
    """Replicate runs (same N, D, other seed) give the run-to-run sigma; same-seed repeats do not count."""
    rng = np.random.default_rng(1)
    rows = []
    for n in (1e6, 3e6, 1e7):
        for d in (1e8, 1e9):
            for seed in range(5):
                rows.append({"n_params": n, "tokens": d, "seed": seed,
                             "loss": _chin(A3, n, d) * math.exp(rng.normal(0, 0.02))})
    csv = tmp_path / "rep.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    df = load_table(csv, quiet=True).df
    pred = _chin(A3, df["N"], df["D"])
    noise = estimate_noise(df, pred, 5)
    assert noise["kind"] == "replicates" and noise["replicates"]["n_groups"] == 6
    assert noise["replicates"]["dof"] == 24
    assert noise["sigma_log"] == pytest.approx(0.02, rel=0.3)
    # pooled within-group variance, computed here directly
    lnL = np.log(df["L"])
    groups = df.groupby(["N", "D"]).indices.values()
    pooled = math.sqrt(sum(((lnL[g] - lnL[g].mean()) ** 2).sum() for g in groups) / 24)
    assert noise["sigma_log"] == pytest.approx(pooled)
    df_same = df.assign(seed="0")  # all the same seed: repeats, not replicates
    fallback = estimate_noise(df_same, pred, 5)
    assert fallback["kind"] == "residuals" and fallback["replicates"] is None
    assert "residual scatter" in fallback["description"]
