"""`scaling compare`: the effective-compute multiplier recovered from sweeps of known multiplier, and bad input."""

import contextlib
import io
import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from research.cli import main
from research.errors import UserError
from research.fit.compare import CompareOptions, compare, compute_to_reach, crossover, fit_pair, multiplier, summarize
from research.fit.laws import ChinchillaLaw
from research.fit.synthetic import compute_shifted, demo_truth, isoflop_design, write_sweep_dir
from tests.conftest import SCALING

# a few starts around the truth's basin instead of the 243-point grid: the statistics are under test, not the search
QUICK_GRID = {"alpha": (0.3, 0.6), "beta": (0.3, 0.6), "e": (0.0,), "a": (3.0, 6.0), "b": (3.0, 6.0)}
BUDGETS = (1e13, 1e14, 1e15)


def sweep_table(law, rng, noise=0.01, seeds=2, budgets=BUDGETS, per_budget=5, span=4.0) -> pd.DataFrame:
    """An IsoFLOP results table from `law`, every point run with `seeds` seeds (multiplicative noise)."""
    rows = []
    for c, n, d in isoflop_design(budgets, per_budget, span, law):
        for s in range(seeds):
            rows.append({"n_params": n, "tokens": d, "budget": c, "seed": s,
                         "final_eval_loss": float(law.loss(n, d) * np.exp(rng.normal(0.0, noise)))})
    return pd.DataFrame(rows)


def write_pair(tmp_path, factor, seed, **kw):
    rng = np.random.default_rng(seed)
    law = demo_truth()
    a, b = tmp_path / f"a{seed}.csv", tmp_path / f"b{seed}.csv"
    sweep_table(law, rng, **kw).to_csv(a, index=False)
    sweep_table(compute_shifted(law, factor), rng, **kw).to_csv(b, index=False)
    return a, b


def test_shifted_law_is_worth_its_factor_at_every_budget():
    law = demo_truth()
    shifted = compute_shifted(law, 3.0)
    c = np.array([1e10, 1e13, 1e18])
    np.testing.assert_allclose(shifted.loss_opt(c), law.loss_opt(3.0 * c), rtol=1e-12)
    np.testing.assert_allclose(multiplier(law, shifted, c), 3.0, rtol=1e-9)
    np.testing.assert_allclose(compute_to_reach(law, law.loss_opt(c)), c, rtol=1e-9)
    assert np.isinf(compute_to_reach(law, law.E * 0.99))  # below E: never reached


def test_crossover_of_frontiers_that_cross():
    # B has a lower irreducible loss but a worse start: B loses at small C and wins at large C
    a = ChinchillaLaw(1.5, 40.0, 80.0, 0.32, 0.34)
    b = ChinchillaLaw(1.3, 80.0, 160.0, 0.32, 0.34)
    x = float(crossover(a, b, (1e8, 1e22)))
    assert np.isclose(a.loss_opt(x), b.loss_opt(x), rtol=1e-9)
    assert multiplier(a, b, x / 10) < 1 < multiplier(a, b, x * 10)
    assert np.isnan(crossover(a, compute_shifted(a, 2.0), (1e8, 1e22)))  # parallel frontiers never cross


def test_frontiers_that_cross_twice_report_the_crossing_nearest_the_budgets():
    # the GELU (a) and SwiGLU (b) demo laws of results/reference/compare-gelu-vs-swiglu-cpu2 (rounded): their
    # frontiers cross below the budgets and again inside them; the smallest crossing used to be reported
    from research.fit.compare import all_crossovers
    a = ChinchillaLaw(1.7569, 8573.9, 8.2140e6, 1.11874, 1.28319)
    b = ChinchillaLaw(1.7228, 5869.7, 1.2432e6, 1.06985, 1.13778)
    window = (7.07e7, 5.66e14)
    grid = np.geomspace(*window, 20001)
    sign = np.sign(a.loss_opt(grid) - b.loss_opt(grid))
    brute = grid[np.flatnonzero(sign[:-1] != sign[1:])]
    listed = all_crossovers(a, b, window)
    assert len(brute) == len(listed) == 2
    for x, g in zip(listed, brute):
        assert x == pytest.approx(g, rel=2e-3) and np.isclose(a.loss_opt(x), b.loss_opt(x), rtol=1e-9)
    assert float(crossover(a, b, window)) == pytest.approx(listed[0], rel=1e-6)  # default: the smallest
    centre = np.sqrt(7.07e10 * 5.66e11)  # the sweeps' budgets
    assert float(crossover(a, b, window, near=centre)) == pytest.approx(listed[1], rel=1e-6)
    assert 7.07e10 < listed[1] < 5.66e11 and listed[0] < 7.07e10


def test_known_multiplier_recovered_within_its_interval(tmp_path):
    inside, detected = 0, 0
    for seed in range(20):
        a, b = write_pair(tmp_path, 2.0, seed)
        opts = CompareOptions(bootstrap=40, grid=QUICK_GRID, seed=seed, bootstrap_starts=2)
        result = summarize(*fit_pair(a, b, opts), opts=opts)
        row = next(r for r in result["rows"] if np.isclose(r["flops"], 1e14))
        m = row["multiplier"]
        inside += m["low"] <= 2.0 <= m["high"]
        detected += bool(row["detectable"])
        assert not row["extrapolated"]
    assert inside >= 18, f"the true multiplier 2 fell inside the interval in {inside} of 20 seeds"
    assert detected >= 18, f"a factor of 2 was detected in only {detected} of 20 seeds"


def test_equal_recipes_show_no_detectable_difference_and_extrapolation_is_flagged(tmp_path):
    a, b = write_pair(tmp_path, 1.0, 7)
    opts = CompareOptions(bootstrap=40, grid=QUICK_GRID, bootstrap_starts=2, at=(1e17,))
    result = compare(a, b, opts)
    assert all(r["multiplier"]["low"] <= 1.0 <= r["multiplier"]["high"] for r in result["rows"])
    assert any("no detectable difference" in w for w in result["warnings"])
    far = next(r for r in result["rows"] if np.isclose(r["flops"], 1e17))
    assert far["extrapolated"] and "outside A's budgets" in far["extrapolation"]
    assert [r["flops"] for r in result["rows"]] == pytest.approx([1e13, 1e14, 1e15, 1e17])


@pytest.mark.parametrize("shared", [("E",), ("alpha", "beta")])
def test_joint_fit_shares_what_it_is_asked_to(tmp_path, shared):
    a, b = write_pair(tmp_path, 2.0, 3)
    opts = CompareOptions(bootstrap=20, grid=QUICK_GRID, bootstrap_starts=2, shared=shared)
    result = compare(a, b, opts)
    pa, pb = result["sweeps"]["A"]["params"], result["sweeps"]["B"]["params"]
    for name in shared:
        assert pa[name] == pb[name]
    assert pa["A"] != pb["A"]
    row = next(r for r in result["rows"] if np.isclose(r["flops"], 1e14))
    assert row["multiplier"]["low"] <= 2.0 <= row["multiplier"]["high"]


def run_cli(*args):
    return subprocess.run(SCALING + ["compare", *map(str, args)], capture_output=True, text=True)


def test_cli_json_gives_multiplier_bounds_and_a_figure(tmp_path):
    a, b = write_pair(tmp_path, 2.0, 11)
    out = run_cli(a, b, "--bootstrap", "20", "--grid", "small", "--at", "3e14", "--json", "--plot", tmp_path / "c.png")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    row = next(r for r in result["rows"] if np.isclose(r["flops"], 3e14))
    assert set(row["multiplier"]) == {"value", "low", "high"} and row["multiplier"]["low"] < row["multiplier"]["high"]
    assert (tmp_path / "c.png").stat().st_size > 10_000
    help_out = run_cli("--help")
    assert help_out.returncode == 0 and "--shared" in help_out.stdout


def run_cli_here(*args):
    """`scaling compare ARGS` through research.cli.main in this process (no interpreter start and
    imports, ~1 CPU s each): its exit status and stderr, as run_cli returns them."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(["compare", *map(str, args)])
        except SystemExit as exc:  # argparse
            code = exc.code
    return subprocess.CompletedProcess(["compare", *map(str, args)], code, "", err.getvalue())


def _one_line_error(out, *words):
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("scaling compare: error: ")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    for w in words:
        assert w in errors[0], out.stderr


def test_bad_input_is_refused_in_one_line(tmp_path):
    a, b = write_pair(tmp_path, 2.0, 5)
    # different FLOP conventions
    six = write_sweep_dir(tmp_path / "six", convention="6n")
    chin = write_sweep_dir(tmp_path / "chin", convention="chinchilla")
    # one refusal as a real `scaling compare` process, the rest through the same main() in this process
    _one_line_error(run_cli(six, chin, "--bootstrap", "0"), "FLOPs differently", "6n", "chinchilla")
    # an empty sweep: a header and nothing else; then only failed runs
    empty = tmp_path / "empty.csv"
    empty.write_text("n_params,tokens,final_eval_loss,budget\n")
    _one_line_error(run_cli_here(a, empty), "sweep B")
    failed = pd.read_csv(a).assign(status="failed")
    failed.to_csv(tmp_path / "failed.csv", index=False)
    _one_line_error(run_cli_here(tmp_path / "failed.csv", b), "sweep A", "no usable rows")
    # a missing column
    pd.read_csv(a).drop(columns="tokens").to_csv(tmp_path / "no_tokens.csv", index=False)
    _one_line_error(run_cli_here(tmp_path / "no_tokens.csv", b), "sweep A", "'tokens'")
    # --bpb on tables without bits per byte; an unknown --shared parameter; too few runs to fit
    _one_line_error(run_cli_here(a, b, "--bpb"), "eval_bits_per_byte")
    _one_line_error(run_cli_here(a, b, "--shared", "alpah"), "did you mean 'alpha'")
    pd.read_csv(a).head(4).to_csv(tmp_path / "tiny.csv", index=False)
    _one_line_error(run_cli_here(tmp_path / "tiny.csv", b), "sweep A", "Approach 3 needs")
    _one_line_error(run_cli_here(tmp_path / "missing_dir", b), "does not exist")
    (tmp_path / "not_run").mkdir()  # a sweep directory with nothing collected yet
    _one_line_error(run_cli_here(a, tmp_path / "not_run"), "sweep B", "without results.csv")


def test_different_data_needs_bits_per_byte(tmp_path):
    one = write_sweep_dir(tmp_path / "one", seed=1)
    two = write_sweep_dir(tmp_path / "two", seed=2)
    for path, fingerprint in ((one, "aaaa"), (two, "bbbb")):
        record = json.loads((path / "sweep.json").read_text())
        (path / "sweep.json").write_text(json.dumps(dict(record, data_fingerprint=fingerprint)))
    with pytest.raises(UserError, match="different data or tokens.*--bpb"):
        compare(one, two, CompareOptions(bootstrap=0, grid=QUICK_GRID))
    result = compare(one, two, CompareOptions(bootstrap=0, grid=QUICK_GRID, bpb=True))
    assert result["loss_units"] == "bits/byte"
    assert any("bits per byte" in n for n in result["notes"])
