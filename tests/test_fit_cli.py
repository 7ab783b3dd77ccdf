"""`scaling fit` command line: output contract, custom columns, errors."""

import json
import shutil
from pathlib import Path

import pytest

from research.cli import main

DATA = Path(__file__).parent / "data"


@pytest.fixture
def sweep(tmp_path):
    shutil.copytree(DATA / "sweep_small", tmp_path / "s")
    return tmp_path / "s"


def test_fit_json_contract_for_each_method(sweep, capsys):
    assert main(["fit", str(sweep / "results.csv"), "--method", "approach3", "--grid", "small",
                 "--bootstrap", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        assert isinstance(out[k], float)
    assert out["bootstrap"]["intervals"]["alpha"][0] <= out["alpha"] <= out["bootstrap"]["intervals"]["alpha"][1]
    assert main(["fit", str(sweep), "--method", "approach2", "--json"]) == 0
    out2 = json.loads(capsys.readouterr().out)
    assert {"a", "b", "budgets"} <= set(out2) and len(out2["budgets"]) == 5
    assert main(["fit", str(sweep), "--method", "approach1", "--json"]) == 0
    out1 = json.loads(capsys.readouterr().out)
    assert {"a", "b", "optima"} <= set(out1)
    # fit.json in the sweep dir accumulates the methods run
    saved = json.loads((sweep / "fit.json").read_text())
    assert {"approach1", "approach2", "approach3"} <= set(saved)


def test_fit_someone_elses_table_with_column_flags(capsys):
    csv = DATA / "external_chinchilla_like.csv"
    assert main(["fit", str(csv), "--method", "approach2", "--n-col", "Model Size", "--d-col", "Training Tokens",
                 "--loss-col", "Loss", "--flops-col", "FLOPs", "--json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["a"] == pytest.approx(0.513, abs=0.05)
    assert "dropped 2" in cap.err


def test_fit_errors_are_single_lines(capsys, tmp_path):
    csv = DATA / "external_chinchilla_like.csv"
    assert main(["fit", str(csv), "--method", "approach2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "n_params" in err and "--n-col" in err and "\n" not in err
    assert main(["fit", str(csv), "--method", "approach1", "--n-col", "Model Size", "--d-col", "Training Tokens",
                 "--loss-col", "Loss"]) == 2
    assert "sweep directory" in capsys.readouterr().err
    (tmp_path / "one.csv").write_text("n_params,tokens,loss\n1e6,1e8,3.0\n2e6,1e8,2.9\n")
    assert main(["fit", str(tmp_path / "one.csv"), "--method", "approach3"]) == 2
    assert "Approach 3 needs" in capsys.readouterr().err


def test_fit_help_is_fast_and_lists_methods(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "approach3" in capsys.readouterr().out
