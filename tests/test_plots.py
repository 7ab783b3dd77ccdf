"""Figures: `plot_sweep_dir` and `scaling plot` write every figure, PNG and SVG, non-trivially."""

import shutil
from pathlib import Path

from research.cli import main
from research.fit import fit_sweep_dir
from research.plots import plot_sweep_dir

DATA = Path(__file__).parent / "data"
FIGURES = {"approach3_profile", "isoflop", "loss_vs_compute", "optimal_allocation", "approach3_contours", "residuals",
           "sensitivity"}


def test_plot_sweep_dir_writes_every_figure(tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    fit_sweep_dir(sweep, grid="small", bootstrap=20)
    paths = plot_sweep_dir(sweep)
    assert {p.stem for p in paths} == FIGURES
    assert {p.suffix for p in paths} == {".png", ".svg"}
    for p in paths:
        assert p.parent == sweep / "plots"
        assert p.stat().st_size > 20_000, p  # a real figure, not an empty canvas
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<?xml" in p.read_bytes()[:100]


def test_scaling_plot_cli_fits_first_when_needed(tmp_path, capsys):
    sweep = tmp_path / "s"
    shutil.copytree(DATA / "sweep_small", sweep)
    csv_only = tmp_path / "c"
    csv_only.mkdir()
    shutil.copy(sweep / "results.csv", csv_only / "results.csv")  # no curves, no fit.json
    assert main(["plot", str(csv_only), "--format", "png"]) == 0
    written = {Path(line).name for line in capsys.readouterr().out.split()}
    assert {"isoflop.png", "optimal_allocation.png", "approach3_contours.png"} <= written
    assert (csv_only / "fit.json").exists()
    assert main(["plot", str(csv_only), "--format", "gif"]) == 2
