"""Learning-rate calibration: the lr design, the LR-rule fit, the rule file through the recipe, bad input."""

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest

from research.errors import UserError
from research.fit.lr_rule import LR_RULE_MARGIN, fit_lr_rule, load_rule, rule_document
from research.sweep.plan import load_sweep, plan
from research.sweep.recipe import AspectRatioRecipe
from tests.conftest import SCALING

MULTIPLIERS = [0.25, 0.5, 1.0, 2.0, 4.0]


def synthetic(sizes, c=0.5, gamma=-0.3, k=0.05, noise=0.002, offset=1.3, seeds=1, rng_seed=1):
    """Loss = L0(N) + k (ln lr - ln lr*(N))^2 + noise, lr*(N) = c N^gamma; LRs are multipliers around
    offset * lr*(N) (the grid is deliberately not centred on the optimum)."""
    rng = np.random.default_rng(rng_seed)
    n, lr, loss = [], [], []
    for size in sizes:
        best = c * size ** gamma
        for m in MULTIPLIERS:
            for _ in range(seeds):
                value = best * offset * m
                n.append(size)
                lr.append(value)
                loss.append(3.0 - 0.1 * math.log(size) + k * (math.log(value) - math.log(best)) ** 2
                            + rng.normal(0, noise))
    return n, lr, loss


# ---------------------------------------------------------------- the fit

@pytest.mark.parametrize("seeds", [1, 3])
def test_fit_recovers_a_known_power_law(seeds):
    c, gamma = 0.5, -0.3
    sizes = [1e4, 3e4, 1e5, 3e5]
    rule = fit_lr_rule(*synthetic(sizes, c=c, gamma=gamma, seeds=seeds), bootstrap=400, seed=0)
    low, high = rule["intervals"]["exponent"]
    assert low < gamma < high
    assert high - low < 0.1  # noise of 0.002 nats on a curvature of 0.05 pins the vertex well
    assert rule["exponent"] == pytest.approx(gamma, abs=0.03)
    n_ref = math.exp(np.mean(np.log(sizes)))
    assert rule["n_ref"] == pytest.approx(n_ref)
    lo_ref, hi_ref = rule["intervals"]["lr_ref"]
    assert lo_ref < c * n_ref ** gamma < hi_ref
    for size, row in zip(sizes, rule["per_size"]):
        assert row["n_params"] == pytest.approx(size)
        assert row["n_runs"] == 5 * seeds and "refused" not in row
        assert row["lr_opt"] == pytest.approx(c * size ** gamma, rel=0.05)
        assert row["interval"][0] < row["lr_opt"] < row["interval"][1]
        assert row["loss_opt"] == pytest.approx(3.0 - 0.1 * math.log(size), abs=0.01)
    assert rule["n_range"] == [pytest.approx(1e4), pytest.approx(3e5)]


def test_sizes_group_within_a_tenth_of_a_percent():
    n, lr, loss = synthetic([1e4, 1e5, 3e5])
    n = [v * (1 + 5e-4 * (i % 2)) for i, v in enumerate(n)]  # replicates with N off by 0.05%: still one size
    rule = fit_lr_rule(n, lr, loss, bootstrap=0)
    assert [row["n_runs"] for row in rule["per_size"]] == [5, 5, 5]


def test_unbracketed_and_downward_sizes_are_refused_and_left_out():
    n, lr, loss = synthetic([1e4, 3e4, 1e5])
    # a size whose LRs all lie far below its optimum: the vertex is above the sampled range
    best = 0.5 * 3e5 ** -0.3
    for m in MULTIPLIERS:
        value = best * m / 64
        n.append(3e5)
        lr.append(value)
        loss.append(2.0 + 0.05 * (math.log(value) - math.log(best)) ** 2)
    # a size whose losses fall on both sides of the middle: a parabola opening downward
    for m, value in zip(MULTIPLIERS, [2.0, 2.1, 2.15, 2.1, 2.0]):
        n.append(1e6)
        lr.append(1e-3 * m)
        loss.append(value)
    rule = fit_lr_rule(n, lr, loss, bootstrap=200)
    by_n = {round(row["n_params"]): row for row in rule["per_size"]}
    assert "above the highest sampled LR" in by_n[300000]["refused"] and by_n[300000]["lr_opt"] is None
    assert "opens downward" in by_n[1000000]["refused"]
    assert rule["n_range"] == [pytest.approx(1e4), pytest.approx(1e5)]  # the refused sizes are not in the law
    assert rule["exponent"] == pytest.approx(-0.3, abs=0.03)


def test_diverged_runs_are_left_out_and_counted():
    n, lr, loss = synthetic([1e4, 1e5])
    n.append(1e4)
    lr.append(10.0)
    loss.append(float("nan"))  # a diverged run
    rule = fit_lr_rule(n, lr, loss, bootstrap=0)
    assert rule["per_size"][0]["n_left_out"] == 1 and rule["per_size"][0]["n_runs"] == 5


def test_no_interval_where_a_parabola_fits_its_three_runs_exactly():
    n, lr, loss = synthetic([1e4, 1e5])
    keep = [i for i in range(len(n)) if i % 5 in (1, 2, 3)]  # three learning rates per size
    rule = fit_lr_rule(*([v[i] for i in keep] for v in (n, lr, loss)), bootstrap=100)
    assert rule["intervals"]["exponent"] is None and all(s["interval"] is None for s in rule["per_size"])
    assert "no residuals to resample" in rule["bootstrap"]["note"]


def test_fewer_than_two_calibrated_sizes_is_one_line():
    n, lr, loss = synthetic([1e4])
    with pytest.raises(UserError, match="at least two calibrated sizes, got 1 of 1"):
        fit_lr_rule(n, lr, loss, bootstrap=0)


# ---------------------------------------------------------------- the rule through the recipe

def write_rule(path, sizes=(1e4, 3e4, 1e5)):
    fitted = fit_lr_rule(*synthetic(list(sizes)), bootstrap=50)
    path.write_text(json.dumps(rule_document(fitted, {"schedule": "wsd"}, {"sweep": "test"})))
    return fitted


def test_rule_round_trip_through_the_recipe(tmp_path):
    fitted = write_rule(tmp_path / "rule.json")
    recipe = AspectRatioRecipe(lr_rule=str(tmp_path / "rule.json"), lr_max=0.9)
    for n in (6e3, 2e4, 1.5e5):
        expected = fitted["lr_ref"] * (n / fitted["n_ref"]) ** fitted["exponent"]
        assert recipe.hyperparameters(n, 1_000_000, 100)["lr"] == pytest.approx(expected, rel=1e-12)
    capped = AspectRatioRecipe(lr_rule=str(tmp_path / "rule.json"), lr_max=1e-3)
    assert capped.hyperparameters(2e4, 1_000_000, 100)["lr"] == 1e-3  # lr_max still caps the rule


def test_sweep_file_names_its_rule_relative_to_itself(tmp_path):
    (tmp_path / "rules").mkdir()
    fitted = write_rule(tmp_path / "rules" / "r.json", sizes=(8e3, 1.2e4, 2e4))
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP + 'lr_rule = "rules/r.json"\nlr_max = 0.9\n')
    p = plan(load_sweep(sweep_file))
    for t in p.trials:
        expected = fitted["lr_ref"] * (t.n_params / fitted["n_ref"]) ** fitted["exponent"]
        assert t.config.train.lr == pytest.approx(expected * t.coords["lr_multiplier"], rel=1e-12)


@pytest.mark.parametrize("content,message", [
    (None, "lr_rule: file not found"),
    ("{not json", "is not JSON"),
    (json.dumps({"kind": "fit", "version": 1}), "is not an lr rule"),
    (json.dumps({"kind": "lr_rule", "version": 1, "lr_ref": 0.01, "n_ref": 1e4, "exponent": float("nan"),
                 "n_range": [1e4, 2e4]}), "exponent = nan must be a finite number"),
    (json.dumps({"kind": "lr_rule", "version": 1, "lr_ref": 0.01, "n_ref": 1e4, "exponent": -0.3}),
     "n_range = None must be"),
    (json.dumps({"kind": "lr_rule", "version": 1, "lr_ref": -0.01, "n_ref": 1e4, "exponent": -0.3,
                 "n_range": [1e4, 2e4]}), "must be positive"),
])
def test_bad_rule_file_is_one_line_and_nothing_trained(tmp_path, content, message):
    if content is not None:
        (tmp_path / "rule.json").write_text(content)
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP + 'lr_rule = "rule.json"\n')
    with pytest.raises(UserError, match=message):
        load_sweep(sweep_file)
    out = subprocess.run(SCALING + ["sweep", "run", str(sweep_file), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_n_outside_the_rule_coverage_is_refused_at_plan_time(tmp_path):
    write_rule(tmp_path / "rule.json", sizes=(1e5, 2e5, 4e5))  # the tiny sweep's N (~5k-11k) is far below
    sweep_file = tmp_path / "s.toml"
    grid = TINY_LR_SWEEP.replace('kind = "lr"', 'kind = "grid"').replace("lr_multipliers = [0.5, 1, 2]\n", "")
    sweep_file.write_text(grid + 'lr_rule = "rule.json"\n')
    with pytest.raises(UserError) as err:
        plan(load_sweep(sweep_file))  # load_sweep itself (the recipe-owned-key check) still works
    text = str(err.value)
    low = 1e5 / LR_RULE_MARGIN
    assert f"covers [{low:,.0f}," in text and "a trial has N = " in text and "calibrate at that size" in text
    out = subprocess.run(SCALING + ["sweep", "run", str(sweep_file), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "calibrate at that size" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()


def test_an_lr_sweep_samples_new_sizes_around_the_rule_extrapolated(tmp_path, capsys):
    """Calibrating beyond a rule's sizes is how a rule is extended: an lr sweep centres each new size on
    the rule's own (extrapolated) guess, says so, and a law sweep with the same sizes is still refused."""
    fitted = write_rule(tmp_path / "rule.json", sizes=(1e5, 2e5, 4e5))
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP + 'lr_rule = "rule.json"\nlr_max = 0.9\n')
    planned = plan(load_sweep(sweep_file))
    assert {t.n_params for t in planned.trials} and all(t.n_params < 1e5 / LR_RULE_MARGIN for t in planned.trials)
    for t in planned.trials:
        guess = fitted["lr_ref"] * (t.n_params / fitted["n_ref"]) ** fitted["exponent"]
        assert t.config.train.lr == pytest.approx(guess * t.coords["lr_multiplier"], rel=1e-12)
    extrapolated = [line for line in planned.lr_rule_notes if "around the rule extrapolated there" in line]
    assert len(extrapolated) == 1 and "samples 4,888, 11,312 around" in extrapolated[0]
    assert "scaling lr-rule DIR1 DIR2" in extrapolated[0]


def test_recipe_owned_lr_is_still_refused_with_a_rule(tmp_path):
    write_rule(tmp_path / "rule.json", sizes=(1e6, 2e6))  # 1e5, the usual probe N, is outside its coverage
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP.replace("[train]\n", "[train]\nlr = 0.01\n")
                          + 'lr_rule = "rule.json"\n')
    with pytest.raises(UserError, match=r"\[train\] lr = 0.01 is set per trial by the recipe.*lr_rule"):
        load_sweep(sweep_file)


# ---------------------------------------------------------------- the lr design and a real tiny sweep

TINY_LR_SWEEP = """
name = "tiny-lr"
[data]
corpus = "shakespeare"
tokenizer = "bytes"
[model]
seq_len = 32
[train]
batch_size = 8
schedule = "wsd"
min_lr_ratio = 0.0
eval_every = 1000
eval_tokens = 2048
log_every = 5
checkpoint_every = 1000
[design]
kind = "lr"
d_model = [8, 16]
tokens = [5120]
lr_multipliers = [0.5, 1, 2]
[recipe]
aspect_ratio = 16
head_dim = 8
max_width = 64
"""


@pytest.mark.parametrize("change,message", [
    ("lr_multipliers = [0.5, 1, 2]", "at least 3 distinct positive values"),
    ("tokens = [5120]", "exactly one of tokens"),
    ("d_model = [8, 16]", "exactly one of d_model"),
])
def test_bad_lr_designs_fail_with_one_line(tmp_path, change, message):
    replacement = {"lr_multipliers = [0.5, 1, 2]": "lr_multipliers = [1, 1, 2]",
                   "tokens = [5120]": "tokens = [5120]\ntokens_per_param = [20]",
                   "d_model = [8, 16]": ""}[change]
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP.replace(change, replacement))
    with pytest.raises(UserError, match=message):
        load_sweep(sweep_file)


def test_two_horizons_are_refused(tmp_path):
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP.replace("tokens = [5120]", "tokens = [5120, 10240]"))
    with pytest.raises(UserError, match="one horizon: tokens must hold one value, got 2"):
        load_sweep(sweep_file)


def test_tiny_lr_sweep_runs_with_lr_multiplier_in_results(tmp_path):
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_LR_SWEEP)
    sweep = load_sweep(sweep_file)
    base_lr = {t.n_params: sweep.recipe.hyperparameters(t.n_params, t.tokens, t.steps)["lr"] for t in plan(sweep).trials}
    out = tmp_path / "out"
    res = subprocess.run(SCALING + ["sweep", "run", str(sweep_file), "--out", str(out), "--quiet"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 6 and (frame["status"] == "completed").all()
    assert sorted(frame["lr_multiplier"]) == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    for _, row in frame.iterrows():
        assert row["lr"] == pytest.approx(base_lr[row["n_params"]] * row["lr_multiplier"], rel=1e-9)
        assert row["tokens"] == 5120 and math.isfinite(row["final_eval_loss"])
    # the fit stage ran the LR-rule fit, not the Chinchilla fits: a rule, or a one-line reason why not
    assert "internal error" not in res.stderr and "approach" not in res.stderr
    if (out / "lr_rule.json").exists():
        rule = load_rule(out / "lr_rule.json")
        assert "lr rule: lr = " in res.stderr and rule.n_range[0] >= frame["n_params"].min()
        fitted = json.loads((out / "lr_rule.json").read_text())  # 3 runs per size: a parabola through them, no interval
        model = fitted["model"]  # what it was calibrated on, from the trials' configs and the table
        assert set(model["families"]) == {"1 layer"} and model["head_dim"] == [8]
        assert (model["mlp"], model["ffw_ratio"], model["settings_from"]) == ("gelu", 4.0, "trials")
        assert fitted["intervals"]["exponent"] is None and "passes through its 3 runs exactly" in res.stderr
        assert (out / "plots" / "lr_opt_vs_n.png").exists() and (out / "plots" / "loss_vs_lr.png").exists()
    else:
        assert "fit skipped: an lr rule needs at least two calibrated sizes" in res.stderr
    assert not (out / "fit.json").exists() or "skipped" in json.loads((out / "fit.json").read_text())


@pytest.mark.parametrize("reference, rule_file, n_range", [
    ("lr-calibration-cpu2", "lr-rule-cpu.json", (11312.0, 104216.0)),  # the aspect-ratio ladder, 1 and 2 layers
    ("lr-calibration-1layer-cpu2", "lr-rule-cpu-1layer.json", (11312.0, 118000.0)),  # the demo's and study's family
])
def test_committed_reference_refits_to_its_rule_without_touching_its_table(tmp_path, reference, rule_file, n_range):
    import shutil

    from tests.conftest import REPO

    ref = tmp_path / "ref"
    shutil.copytree(REPO / "results" / "reference" / reference, ref)
    table = (ref / "results.csv").read_bytes()
    out = subprocess.run(SCALING + ["lr-rule", str(ref), "--out", str(tmp_path / "rule.json"), "--json"],
                         capture_output=True, text=True, check=True)
    assert (ref / "results.csv").read_bytes() == table  # a reference table is read, never rebuilt
    refit, committed = json.loads(out.stdout), json.loads((REPO / "sweeps" / rule_file).read_text())
    for key in ("lr_ref", "n_ref", "exponent"):
        assert refit[key] == pytest.approx(committed[key], rel=1e-9), key
    assert refit["intervals"]["exponent"] == pytest.approx(committed["intervals"]["exponent"], rel=1e-9)
    assert [s["lr_opt"] for s in refit["per_size"]] == pytest.approx([s["lr_opt"] for s in committed["per_size"]])
    assert refit["n_range"] == committed["n_range"] and refit["conditions"] == committed["conditions"]
    assert refit["model"] == committed["model"]  # families and head_dim from the table, the rest carried over
    assert json.loads((REPO / "results" / "reference" / reference / "lr_rule.json").read_text()) == committed
    rule = load_rule(REPO / "sweeps" / rule_file)
    assert rule.n_range == n_range


def _split_reference(tmp_path, below: float):
    """The committed one-family calibration as two lr sweep directories: sizes below `below` and the rest."""
    import shutil

    from tests.conftest import REPO

    parts = []
    for name, keep in (("small", lambda n: n < below), ("large", lambda n: n >= below)):
        part = tmp_path / name
        shutil.copytree(REPO / "results" / "reference" / "lr-calibration-1layer-cpu2", part)
        table = pd.read_csv(part / "results.csv")
        table[keep(table["n_params"])].to_csv(part / "results.csv", index=False)
        parts.append(part)
    return parts


def test_two_lr_sweeps_fit_as_one_rule(tmp_path):
    """A calibration extended by a second lr sweep (new sizes, same settings) gives the rule one sweep
    of all the sizes gives; the rule goes only where --out says, and mismatched settings are refused."""
    from tests.conftest import REPO

    small, large = _split_reference(tmp_path, below=25_000)
    whole = json.loads(subprocess.run(
        SCALING + ["lr-rule", str(REPO / "results" / "reference" / "lr-calibration-1layer-cpu2"), "--out", str(tmp_path / "w.json"),
                   "--json"], capture_output=True, text=True, check=True).stdout)
    before = {p: (p / "lr_rule.json").read_bytes() for p in (small, large)}
    out = subprocess.run(SCALING + ["lr-rule", str(small), str(large), "--out", str(tmp_path / "both.json"), "--json"],
                         capture_output=True, text=True, check=True)
    both = json.loads(out.stdout)
    for key in ("lr_ref", "n_ref", "exponent"):
        assert both[key] == pytest.approx(whole[key], rel=1e-9), key
    assert [s["lr_opt"] for s in both["per_size"]] == pytest.approx([s["lr_opt"] for s in whole["per_size"]])
    assert both["n_range"] == whole["n_range"] and both["conditions"] == whole["conditions"]
    assert both["model"]["families"] == whole["model"]["families"]
    assert [s["runs"] for s in both["source"]["sweeps"]] == [20, 40] and both["source"]["runs"] == 60
    assert {p: (p / "lr_rule.json").read_bytes() for p in (small, large)} == before  # each keeps its own rule

    refused = subprocess.run(SCALING + ["lr-rule", str(small), str(large)], capture_output=True, text=True)
    assert refused.returncode == 2 and "--out FILE" in refused.stderr and "Traceback" not in refused.stderr
    twice = subprocess.run(SCALING + ["lr-rule", str(small), str(small), "--out", str(tmp_path / "x.json")],
                           capture_output=True, text=True)
    assert twice.returncode == 2 and "named twice" in twice.stderr and not (tmp_path / "x.json").exists()
    rule = json.loads((large / "lr_rule.json").read_text())
    rule["conditions"]["batch_size"] = 32
    (large / "lr_rule.json").write_text(json.dumps(rule))
    mixed = subprocess.run(SCALING + ["lr-rule", str(small), str(large), "--out", str(tmp_path / "x.json")],
                           capture_output=True, text=True)
    assert mixed.returncode == 2 and "different batch_size (16 and 32)" in mixed.stderr
    assert len(mixed.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_a_nearly_flat_size_is_refused_not_an_overflow():
    """A size whose loss barely moves with the LR (a tiny model at its capacity) has a parabola whose
    vertex lies e^1000 away: refused with a reason, as any unbracketed size (found on d_model 8)."""
    from research.fit.lr_rule import vertex

    ln_lr = np.log([0.0125, 0.025, 0.05, 0.1, 0.2])
    x, why = vertex(np.array([1e-9, -2.1e-6, 2.39]), ln_lr)  # vertex at ln LR = 1050
    assert x is None and "e^1050" in why and "add larger lr_multipliers" in why
    x, why = vertex(np.array([1e-9, 2.1e-6, 2.39]), ln_lr)
    assert x is None and "e^-1050" in why and "add smaller lr_multipliers" in why
