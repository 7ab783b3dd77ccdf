"""fit.json names the table it read relative to the sweep directory (or as the user gave
it), never as an absolute path of the machine that ran the fit (issue 10, fault 9)."""

import json
import shutil
from pathlib import Path

from research.cli import main

DATA = Path(__file__).parent / "data"


def test_fit_json_records_the_table_relative_to_the_sweep_dir(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    assert main(["fit", str(sweep.absolute()), "--method", "approach2", "--json"]) == 0
    capsys.readouterr()
    text = (sweep / "fit.json").read_text()
    assert json.loads(text)["data"]["source"] == "results.csv", text[:500]
    assert str(tmp_path) not in text


def test_a_loose_table_is_recorded_as_given(tmp_path, monkeypatch):
    from research.fit.data import load_table

    shutil.copy(DATA / "sweep_small" / "results.csv", tmp_path / "mine.csv")
    monkeypatch.chdir(tmp_path)
    assert load_table("mine.csv", quiet=True).meta()["source"] == "mine.csv"
