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


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sweep_report_notebook(tmp_path):
    sweep, report = tmp_path / "sweep", tmp_path / "report"
    shutil.copytree(DATA / "sweep_small", sweep)
    (sweep / "fit.json").write_text(json.dumps({"version": 1, "extrapolation": {"kept": "by the sweep"}}))
    before = snapshot(sweep)
    nb = run("sweep_report.ipynb", {"SWEEP_DIR": str(sweep), "REPORT_DIR": str(report), "BOOTSTRAP": "20",
                                    "FIT_GRID": "small"}, tmp_path)
    assert snapshot(sweep) == before, "the notebook wrote into the sweep directory"
    assert len(list(report.glob("*.png"))) == 8  # 7 fit figures (Approach-3 profile, sensitivity) + the held-out check
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images == 8
    assert "approach3" in text(nb)
    assert "WARNING: " in text(nb) and "mean_abs_rel_error" in text(nb)


def test_compute_optimal_notebook(tmp_path):
    fit = {"approach3": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    nb = run("compute_optimal.ipynb", {"FIT_JSON": str(tmp_path / "fit.json")}, tmp_path)
    out = text(nb)
    assert "epoch-2024" in out and "kaplan-2020" in out
    assert "FIT_JSON not set" not in out


def test_sweep_report_defaults_to_an_absolute_path_and_the_end_point_envelope(tmp_path):
    """Started from analysis/ (where Jupyter opens it), the default sweep is the repository's results/demo."""
    nb = nbformat.read(ROOT / "analysis" / "sweep_report.ipynb", as_version=4)
    scope: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT / "analysis")
    try:
        for k in ("SWEEP_DIR", "REPORT_DIR"):
            os.environ.pop(k, None)
        exec(nb.cells[0].source, scope)
    finally:
        os.chdir(cwd)
    assert scope["SWEEP_DIR"] == ROOT / "results" / "demo" and scope["SWEEP_DIR"].is_absolute()
    assert ROOT not in scope["REPORT_DIR"].parents
    scope["REPORT_DIR"].rmdir()
    prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "training-curve envelope" not in prose and "end points" in prose


def test_the_analysis_extra_installs_what_the_notebooks_import():
    import re
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()  # noqa: E731
    declared = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["analysis"]}
    dists = packages_distributions()
    for path in sorted((ROOT / "analysis").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        modules = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", code, flags=re.M))
        for module in modules - set(sys.stdlib_module_names) - {"research"}:
            owners = {d.lower() for d in dists.get(module, [])}
            assert owners & declared, f"{path.name} imports {module} ({owners}); add it to the [analysis] extra"
