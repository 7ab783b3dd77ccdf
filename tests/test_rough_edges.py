"""The rough edges a newcomer hit in a first hour (issue 24), one regression test each."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from research.fsutil import read_jsonl
from research.train import train
from tests.conftest import REPO, SCALING
from tests.test_train import tiny


# ---------------------------------------------------------------- 1: rates on evaluation rows

def test_logged_rates_agree_with_wall_clock_deltas_on_evaluation_rows(tmp_path):
    """tokens/s (and the FLOPs/s and MFU derived from it) over the steps since the last row must
    match the tokens and wall time the rows record. Evaluation is one batch here (a few percent of
    an interval), so it may be left out of the rate without moving it 5%; the train steps that an
    evaluation waits for may not."""
    run_dir = tmp_path / "run"
    # 50 steps an interval: one eval batch stays a few percent of it even when another test shares the cores
    train(tiny(train={"steps": 200, "log_every": 50, "eval_every": 50, "eval_tokens": 256,
                      "checkpoint_every": 1000}), run_dir, progress=False)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [50, 100, 150, 200] and all("eval_loss" in r for r in rows)
    for before, row in zip(rows[1:], rows[2:]):  # the first interval has no row before it
        wall = (row["tokens"] - before["tokens"]) / (row["wall_time_s"] - before["wall_time_s"])
        assert row["tokens_per_s"] == pytest.approx(wall, rel=0.05), (row["step"], row["tokens_per_s"], wall)
        assert row["flops_per_s_6n"] == pytest.approx(row["flops_6n"] / row["tokens"] * row["tokens_per_s"])


# ---------------------------------------------------------------- 2: file modes

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_result_files_get_the_mode_the_umask_gives(tmp_path, umask):
    from research.fsutil import atomic_write_json, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "sweep.json", {"a": 1})
        atomic_write_text(tmp_path / "results.csv", "a\n1\n")
        (tmp_path / "plain.txt").write_text("x")  # what an ordinary write gives, for comparison
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == want
    for name in ("sweep.json", "results.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_replacing_a_file_keeps_its_mode(tmp_path):
    from research.fsutil import atomic_write_text

    path = tmp_path / "plan.json"
    path.write_text("{}")
    path.chmod(0o640)
    atomic_write_text(path, '{"b": 2}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{"b": 2}'



# ---------------------------------------------------------------- 4: the wrong kind of file

def test_train_given_a_sweep_file_names_the_sweep_command():
    got = subprocess.run(SCALING + ["train", str(REPO / "sweeps" / "smoke.toml")], capture_output=True, text=True)
    assert got.returncode == 2 and "Traceback" not in got.stderr
    [line] = got.stderr.strip().splitlines()
    assert "is a sweep file" in line and "scaling sweep run" in line, line


@pytest.mark.parametrize("command", ["plan", "run"])
def test_sweep_given_a_run_file_names_the_train_command(command, tmp_path):
    got = subprocess.run(SCALING + ["sweep", command, str(REPO / "sweeps" / "tiny-train.toml"),
                                    "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert got.returncode == 2 and "Traceback" not in got.stderr
    [line] = got.stderr.strip().splitlines()
    assert "is a run file" in line and "scaling train" in line, line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 7: a design that supports no fit

def test_sweep_plan_says_up_front_when_a_design_supports_no_fit():
    got = subprocess.run(SCALING + ["sweep", "plan", str(REPO / "sweeps" / "smoke.toml")], capture_output=True,
                         text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "fits this design supports: none" in got.stdout
    assert "warning: this design supports no fit" in got.stdout
    as_json = subprocess.run(SCALING + ["sweep", "plan", str(REPO / "sweeps" / "smoke.toml"), "--json"],
                             capture_output=True, text=True)
    support = json.loads(as_json.stdout)["fit_support"]
    assert all(support[m] for m in ("approach1", "approach2", "approach3", "holdout")), support


def test_design_support_counts_points_sizes_and_budgets():
    import numpy as np

    from research.fit.support import design_support

    budgets = np.repeat([1e12, 3e12, 1e13], 4)
    n = np.tile([1e4, 2e4, 4e4, 8e4], 3)
    got = design_support(n, budgets / (6 * n), budgets)
    assert got == {"approach1": None, "approach2": None, "approach3": None, "holdout": None}
    two = design_support(n[:8], budgets[:8] / (6 * n[:8]), budgets[:8])  # two budgets: fits, no held-out check
    assert two["approach2"] is None and "needs >= 3 budgets" in two["holdout"]
    one = design_support(n[:4], budgets[:4] / (6 * n[:4]), budgets[:4])
    assert all(one.values()) and "the design has 0" in one["approach1"]


# ---------------------------------------------------------------- 5: default reporting budgets

@pytest.mark.parametrize("c_max", [5.66e11, 1e12, 1.01e11, 3e21])
def test_default_budgets_stay_near_the_fitted_range_and_raise_no_extrapolation_warning(c_max):
    import pandas as pd

    from research.fit import agreement as dg
    from research.fit.core import default_budgets

    df = pd.DataFrame({"N": [1e4, 2e4, 4e4], "D": [1e6] * 3, "C": [c_max / 8, c_max / 3, c_max]})
    budgets = default_budgets(df)
    assert min(budgets) <= df["C"].min() and max(budgets) >= c_max  # the whole fitted range is reported
    assert max(budgets) < 100 * c_max
    block = {"a": 0.5, "b": 0.5, "k_N": 0.1, "k_D": 1.0, "bootstrap": {"intervals": {"a": [0.4, 0.6]}}}
    msgs = dg.overall_warnings({"approach2": block, "budgets_for_intervals": budgets}, df)
    assert not any("decades beyond" in m for m in msgs), msgs


# ---------------------------------------------------------------- 8: small things a newcomer meets

def test_scaling_version():
    from research import __version__

    got = subprocess.run(SCALING + ["--version"], capture_output=True, text=True)
    assert got.returncode == 0 and got.stdout.strip() == f"scaling {__version__}"


def test_a_trial_at_step_zero_is_labelled_compiling():
    from research.sweep.runner import trial_progress

    assert trial_progress("0123456789abcdef", 0, 309) == "01234567 compiling 0/309"
    assert trial_progress("0123456789abcdef", 12, 309) == "01234567 12/309"


def test_fit_says_what_it_is_fitting_before_it_fits():
    got = subprocess.run(SCALING + ["fit", str(REPO / "results" / "reference" / "demo-cpu2"), "--method", "approach2",
                                    "--no-write"], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr[-2000:]
    lines = got.stderr.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("approach2: fitting (1/1)"))
    done = next(i for i, l in enumerate(lines) if l.startswith("approach2: done in"))
    assert start < done


def test_predict_says_why_fewer_bootstrap_laws_than_resamples():
    from research.fit.predict import Predictor, interval_description

    samples = {k: [1.0] * 183 for k in ("E", "A", "B", "alpha", "beta")}
    pred = Predictor("fit", "chinchilla", {}, samples=samples, samples_drawn=200,
                     noise={"kind": "replicates", "description": "pooled seed spread"})
    text = json.dumps(interval_description(pred, 0.95))
    assert "183 of 200 bootstrap laws" in text and "17 resamples were dropped" in text
    pred.samples_drawn = 183
    assert "(183 bootstrap laws)" in json.dumps(interval_description(pred, 0.95))


def test_predict_counts_the_resamples_a_fit_recorded(tmp_path):
    from research.fit.predict import load_predictor

    thetas = {"E": [1.0, 1.1, None, 1.2], "A": [400.0, -1.0, 410.0, 390.0], "B": [400.0] * 4,
              "alpha": [0.3] * 4, "beta": [0.3] * 4}
    block = {"E": 1.1, "A": 400.0, "B": 400.0, "alpha": 0.3, "beta": 0.3, "bootstrap": {"samples": thetas}}
    (tmp_path / "fit.json").write_text(json.dumps({"approach3": block}))
    pred = load_predictor(str(tmp_path / "fit.json"))
    assert pred.samples_drawn == 4 and len(pred.samples["A"]) == 2


def test_start_grid_warnings_name_log_a_and_log_e_not_a_and_e():
    import numpy as np

    from research.fit.approach3 import _edge_warnings

    lo, hi = np.zeros(5), np.ones(5)
    starts = np.full((2, 5), 0.5)
    xs = np.array([[2.0, 0.5, -1.0, 0.5, 0.5], [0.5] * 5])
    [warning] = _edge_warnings(starts, xs, 0, (lo, hi))
    assert "log A, log E outside the start grid" in warning, warning


# ---------------------------------------------------------------- 6: figures

@pytest.fixture(scope="module")
def demo_reference():
    from research.fit.data import load_table

    ref = REPO / "results" / "reference" / "demo-cpu2"
    return load_table(ref, quiet=True).df, json.loads((ref / "fit.json").read_text())


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _visible_labels(axis, renderer):
    labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in labels]


def test_loss_vs_compute_has_plain_ticks_that_do_not_collide_and_a_whole_title(demo_reference):
    from research.plots import figures as F

    df, fit = demo_reference
    fig = F.loss_vs_compute(df, fit)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    y = _visible_labels(ax.yaxis, renderer)
    assert y and not any("times" in text or "^" in text for text, _ in y), [t for t, _ in y]
    x = sorted(_visible_labels(ax.xaxis, renderer), key=lambda tb: tb[1].x0)
    assert len(x) >= 2
    for (_, a), (_, b) in zip(x, x[1:]):
        assert a.x1 <= b.x0, "x tick labels overlap"
    title = ax.get_title()
    assert title.count("(") == title.count(")") and not title.endswith("'s)"), title


def test_contours_draw_what_their_legend_lists_and_label_isoflop_lines(demo_reference):
    from research.plots import figures as F

    df, fit = demo_reference
    far = dict(fit, approach3=dict(fit["approach3"], A=fit["approach3"]["A"] * 1e12))  # optimum far off the plot
    for f in (fit, far):
        ax = F.approach3_contours(df, f).axes[0]
        handles, labels = ax.get_legend_handles_labels()
        assert any(l.startswith("IsoFLOP lines") for l in labels), labels
        for h, l in zip(handles, labels):
            if l.startswith("efficient frontier"):
                assert len(h.get_xdata()) >= 2, "the legend lists a frontier that is not drawn"
    texts = [t.get_text() for t in F.approach3_contours(df, far).axes[0].texts]
    assert any("outside the plotted" in t for t in texts), texts


def test_optimal_allocation_limits_follow_the_lines_not_the_bands(demo_reference):
    import numpy as np

    from research.plots import figures as F

    df, fit = demo_reference
    fig = F.optimal_allocation(df, fit)
    for ax in fig.axes[:2]:
        lines = [np.asarray(l.get_ydata(), float) for l in ax.get_lines() if len(l.get_xdata()) > 2]
        ys = np.concatenate(lines)
        ys = ys[np.isfinite(ys) & (ys > 0)]
        lo, hi = ax.get_ylim()
        assert lo >= ys.min() / 10 and hi <= ys.max() * 10, (lo, hi, ys.min(), ys.max())


def test_residuals_and_extrapolation_use_one_sign(demo_reference):
    import numpy as np

    from research.fit.laws import ChinchillaLaw
    from research.plots import figures as F

    df, fit = demo_reference
    a3 = fit["approach3"]
    law = ChinchillaLaw(a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"])
    ax = F.residuals(df, fit).axes[0]
    plotted = ax.collections[0].get_offsets()[:, 1]
    assert np.allclose(plotted, 100 * (law.loss(df["N"], df["D"]) / df["L"] - 1))  # predicted/measured - 1
    assert "predicted/measured" in ax.get_ylabel()
    from research.plots.extrapolation import extrapolation_figure

    assert "predicted/measured" in extrapolation_figure(fit["extrapolation"]).axes[1].get_ylabel()


def test_isoflop_figure_says_when_approach2_was_skipped(demo_reference):
    from research.plots import figures as F

    df, fit = demo_reference
    fig = F.isoflop(df, dict(fit, approach2={"skipped": "Approach 2 needs >= 2 budgets"}))
    assert any("Approach 2 skipped" in t.get_text() for t in fig.axes[0].texts)
