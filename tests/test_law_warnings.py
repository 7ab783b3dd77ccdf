"""Warnings travel with a law: `optimal` and `predict` never answer from a warned or out-of-range law
without saying so (text and --json)."""

import json

import pytest

from research.cli import main

# A collapsed fit, as `scaling fit` writes it for a small sweep: E at ~0, a's interval [0.002, 1.0].
COLLAPSED = {
    "approach3": {"E": 1e-6, "A": 40.0, "B": 900.0, "alpha": 0.12, "beta": 0.45,
                  "warnings": ["E = 1e-06 is below 5% of the lowest measured loss: the fit put the irreducible "
                               "loss at zero"],
                  "bootstrap": {"level": 0.95, "intervals": {"a": [0.002, 1.0]}},
                  "data_range": {"n_params": [1e5, 4e6], "tokens": [1e7, 2e8], "flops": [1e13, 1e15]}},
    "warnings": ["the approaches disagree on a"],
}


def law_file(tmp_path, fit):
    p = tmp_path / "fit.json"
    p.write_text(json.dumps(fit))
    return str(p)


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_optimal_carries_the_fits_warnings_and_adds_its_own(tmp_path, capsys):
    path = law_file(tmp_path, COLLAPSED)
    out = run_json(capsys, "optimal", "--law", path, "--flops", "1e11", "--json")
    w = out["warnings"]
    assert "fit: E = 1e-06 is below 5% of the lowest measured loss: the fit put the irreducible loss at zero" in w
    assert "fit: the approaches disagree on a" in w
    # a's interval 0.998 wide: said once (the fit did not say it, so optimal does)
    assert sum("interval on a is [0.002, 1]" in x for x in w) == 1
    # 1e11 is 100x below the smallest fitted budget: the factor is stated
    assert any(x.startswith("budget C = 1e+11 is 100x below the smallest fitted") for x in w)
    assert main(["optimal", "--law", path, "--flops", "1e11"]) == 0
    text = capsys.readouterr().out
    assert text.count("warning:") == len(w)


def test_e_collapse_is_detected_even_when_the_fit_did_not_say_it(tmp_path, capsys):
    fit = {"approach3": {k: v for k, v in COLLAPSED["approach3"].items() if k not in ("warnings", "bootstrap")}}
    out = run_json(capsys, "optimal", "--law", law_file(tmp_path, fit), "--flops", "1e14", "--json")
    assert len(out["warnings"]) >= 1 and "E collapsed" in out["warnings"][0]
    # the same law with a healthy E and the budget inside the range: no warning
    fit["approach3"]["E"] = 2.0
    out = run_json(capsys, "optimal", "--law", law_file(tmp_path, fit), "--flops", "1e14", "--json")
    assert all("E collapsed" not in x and "budget" not in x for x in out["warnings"])


def test_predict_says_by_how_much_it_extrapolates(tmp_path, capsys):
    fit = {"approach3": {"E": 2.0, "A": 40.0, "B": 900.0, "alpha": 0.3, "beta": 0.3,
                         "data_range": {"n_params": [1e5, 4e6], "tokens": [1e7, 2e8]}}}
    path = law_file(tmp_path, fit)
    # 2.5x the largest N and 4x the largest D (the case): both said, with the factor
    out = run_json(capsys, "predict", "--law", path, "--n-params", "1e7", "--tokens", "8e8", "--json")
    assert any(w.startswith("N = 1e+07 is 2.5x the largest fitted") for w in out["warnings"])
    assert any(w.startswith("D = 8e+08 is 4x the largest fitted") for w in out["warnings"])
    inside = run_json(capsys, "predict", "--law", path, "--n-params", "1e6", "--tokens", "1e8", "--json")
    assert inside["warnings"] == []


def test_published_law_beyond_its_papers_range(capsys):
    out = run_json(capsys, "optimal", "--law", "chinchilla", "--flops", "5.76e23", "--json")
    # Chinchilla's runs reach 16B parameters and 500B tokens: 40B / 2.4T is beyond both
    assert any(w.startswith("N = 4.04e+10 is 2.52x the largest fitted") for w in out["warnings"])
    assert any(w.startswith("D = 2.38e+12 is 4.76x") for w in out["warnings"])
    out = run_json(capsys, "optimal", "--law", "deepseek-2024", "--flops", "1e21", "--json")
    assert out["warnings"] == ["the law's data range is unknown: cannot say how far this answer extrapolates"]


@pytest.mark.parametrize("cmd", [["optimal", "--flops", "1e14"], ["predict", "--n-params", "1e6", "--tokens", "1e8"]])
def test_warned_law_text_output_always_has_the_warning(tmp_path, capsys, cmd):
    assert main([*cmd, "--law", law_file(tmp_path, COLLAPSED)]) == 0
    assert "warning: fit: E = 1e-06" in capsys.readouterr().out
