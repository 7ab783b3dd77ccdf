"""The analysis notebooks run end to end (nbclient, a kernel from this venv) on a small sweep."""

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def run(name, env, tmp_path):
    nb = nbformat.read(ROOT / "analysis" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "stored with outputs"
    assert "parameters" in nb.cells[0].metadata.get("tags", [])
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def text(nb):
    out = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            out.append(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def test_sweep_report_notebook(tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(DATA / "sweep_small", sweep)
    nb = run("sweep_report.ipynb", {"SWEEP_DIR": str(sweep), "BOOTSTRAP": "20", "FIT_GRID": "small"}, tmp_path)
    assert (sweep / "fit.json").exists()
    assert len(list((sweep / "plots").glob("*.png"))) == 7  # 6 fit figures (the Approach-3 profile too) + held-out
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 7
    assert "approach3" in text(nb)
    assert "WARNING: " in text(nb) and "mean_abs_rel_error" in text(nb)


def test_compute_optimal_notebook(tmp_path):
    fit = {"approach3": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    nb = run("compute_optimal.ipynb", {"FIT_JSON": str(tmp_path / "fit.json")}, tmp_path)
    out = text(nb)
    assert "epoch-2024" in out and "kaplan-2020" in out
    assert "FIT_JSON not set" not in out
