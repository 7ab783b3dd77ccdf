"""Cooldown branches and seeds: a branch is the straight WSD run it stands for; trunks and
branches survive a killed runner; seeds replicate points distinctly and reproducibly; the
design's bad input is one line (real planning, real training, real subprocesses)."""

import json
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from research.errors import UserError
from research.fsutil import read_jsonl
from research.sweep.plan import load_sweep, plan
from research.train.loop import BranchFrom, train
from research.train.optim import cooldown_steps
from tests.conftest import SCALING
from tests.test_sweep import events, wait_until_no_trial_runs

SWEEP = """
name = "branches"
[data]
corpus = "shakespeare"
tokenizer = "bytes"
[model]
seq_len = 32
[train]
batch_size = 4
eval_every = 1000
eval_tokens = 1024
log_every = 5
checkpoint_every = 20
[design]
kind = "branches"
d_model = [8, 16]
tokens = [2560, 5120]
seeds = 2
[recipe]
aspect_ratio = 16
head_dim = 8
warmup_tokens = 640
"""


def write_sweep(tmp_path, text=SWEEP, **design) -> str:
    for key, value in design.items():
        text = text.replace("[recipe]", f"{key} = {json.dumps(value)}\n[recipe]") if key not in text \
            else "\n".join(f"{key} = {json.dumps(value)}" if line.startswith(f"{key} =") else line
                           for line in text.splitlines())
    path = tmp_path / "branches.toml"
    path.write_text(text)
    return str(path)


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r}


# ---------------------------------------------------------------- planning

def test_plan_shares_one_trunk_per_size_and_seed_and_counts_spent_against_represented(tmp_path):
    p = plan(load_sweep(write_sweep(tmp_path)))
    assert len(p.trunks) == 2 * 2 and len(p.trials) == 2 * 2 * 2
    tokens_per_step = 4 * 32
    for t in p.trials:
        trunk = next(k for k in p.trunks if k.trial_id == t.trunk_id)
        # the branch leaves its trunk where a straight WSD run's cooldown begins
        assert t.branch_step == t.steps - cooldown_steps(t.steps, 0.2)
        assert t.branch_step in trunk.keep_steps and trunk.steps == max(trunk.keep_steps)
        assert t.config.train.schedule == "wsd" and trunk.config.train.schedule == "constant"
        assert (t.config.model, t.config.train.lr, t.config.train.warmup_steps, t.config.train.seed) == \
               (trunk.config.model, trunk.config.train.lr, trunk.config.train.warmup_steps, trunk.config.train.seed)
        assert t.tokens == t.steps * tokens_per_step  # N, D, C of the whole history, as a straight run
    out = p.to_dict()
    represented = sum(t.flops_6n for t in p.trials)
    spent = sum(k.flops_6n for k in p.trunks) + sum(t.flops_6n * (t.steps - t.branch_step) / t.steps for t in p.trials)
    assert out["total_flops_6n"] == pytest.approx(represented)
    assert out["total_flops_spent_6n"] == pytest.approx(spent)
    assert out["flops_spent_over_represented"] == pytest.approx(spent / represented) and spent < represented
    assert {t.config.train.seed for t in p.trials} == {0, 1}
    assert len({t.trial_id for t in p.trials + p.trunks}) == len(p.trials) + len(p.trunks)


def test_branches_from_isoflop_budgets_keep_the_budget_and_respect_the_ratio_range(tmp_path):
    text = SWEEP.replace("tokens = [2560, 5120]", "budgets = [2e9, 6e9]\ntokens_per_param = [5, 200]")
    p = plan(load_sweep(write_sweep(tmp_path, text, seeds=1)))
    for t in p.trials:
        assert t.coords["budget"] in (2e9, 6e9)
        assert 5 <= t.coords["requested_tokens_per_param"] <= 200
        assert abs(t.flops_6n / t.coords["budget"] - 1) < 0.2  # whole steps
    joined = {(t.n_params, t.coords["budget"]) for t in p.trials}
    for trunk in p.trunks:  # every (size, budget) pair inside the ratio range is planned, and no other
        for budget in (2e9, 6e9):
            ratio = budget / (6 * trunk.n_params) / trunk.n_params
            assert ((trunk.n_params, budget) in joined) == (5 <= ratio <= 200)


@pytest.mark.parametrize("design, message", [
    ({"cooldown_fraction": 1.0}, "cooldown_fraction = 1.0 must lie strictly between 0 and 1"),
    ({"cooldown_fraction": 0}, "must lie strictly between 0 and 1"),
    ({"seeds": 0}, "seeds = 0 must be an integer from 1"),
    ({"cooldown_shape": "cosine"}, "cooldown_shape = 'cosine'"),
    ({"trunk_tokens_per_param": 0.1}, "beyond the trunk's"),
])
def test_bad_branch_designs_are_one_line(tmp_path, design, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        plan(load_sweep(write_sweep(tmp_path, **design)))
    assert "\n" not in str(err.value)


def test_a_branch_design_refuses_a_warmup_that_depends_on_the_horizon(tmp_path):
    text = SWEEP.replace("warmup_tokens = 640", "warmup_fraction = 0.05")
    with pytest.raises(UserError, match="depends on the training horizon.*warmup_tokens") as err:
        plan(load_sweep(write_sweep(tmp_path, text)))
    assert "\n" not in str(err.value)


def test_the_same_point_in_two_sweeps_with_other_budgets_trains_bit_identically(tmp_path):
    """A run is a function of its own (shape, D, seed, recipe): the branch to 5,120 tokens trains
    the same in a sweep beside a shorter horizon as in one beside a longer one (its trunk differs
    in length), to the last bit of every logged loss."""
    rows = {}
    for name, tokens in (("short", [2560, 5120]), ("long", [5120, 7680])):
        (tmp_path / name).mkdir()
        path = write_sweep(tmp_path / name, d_model=[8], tokens=tokens, seeds=1)
        out = tmp_path / name / "out"
        subprocess.run(SCALING + ["sweep", "run", path, "--out", str(out), "--no-fit"], capture_output=True,
                       text=True, check=True)
        frame = pd.read_csv(out / "results.csv")
        row = frame[frame["tokens"] == 5120].iloc[0]
        rows[name] = (row, losses(out / "trials" / row["trial"]), losses(out / "trials" / row["trunk"]))
    (a, curve_a, trunk_a), (b, curve_b, trunk_b) = rows["short"], rows["long"]
    assert a["trial"] == b["trial"] and a["trunk"] != b["trunk"]  # same run, trunks of other lengths
    assert a["final_eval_loss"] == b["final_eval_loss"]
    assert curve_a == curve_b and len(curve_a) >= 2  # the cooldown's logged steps
    common = sorted(set(trunk_a) & set(trunk_b))  # the trunks agree (warmup included) up to the shorter one's end
    assert len(common) >= 5 and [trunk_a[k] for k in common] == [trunk_b[k] for k in common]


def test_a_schedule_in_train_is_refused_for_a_branch_design(tmp_path):
    text = SWEEP.replace("batch_size = 4", "batch_size = 4\nschedule = \"cosine\"")
    with pytest.raises(UserError, match="remove it \\(set \\[design\\] kind"):
        load_sweep(write_sweep(tmp_path, text))


def test_seeds_of_a_grid_replicate_every_point(tmp_path):
    text = SWEEP.replace('kind = "branches"', 'kind = "grid"').replace("seeds = 2", "seeds = 3")
    p = plan(load_sweep(write_sweep(tmp_path, text)))
    assert len(p.trials) == 2 * 2 * 3 and not p.trunks
    by_point = {}
    for t in p.trials:
        by_point.setdefault((t.n_params, t.tokens), []).append(t.config.train.seed)
    assert all(sorted(v) == [0, 1, 2] for v in by_point.values())


# ---------------------------------------------------------------- training

def test_a_branch_equals_the_straight_wsd_run_to_its_horizon(tmp_path):
    p = plan(load_sweep(write_sweep(tmp_path, seeds=1)))
    branch = max((t for t in p.trials if t.n_params == min(x.n_params for x in p.trials)), key=lambda t: t.steps)
    trunk = next(k for k in p.trunks if k.trial_id == branch.trunk_id)
    train(trunk.config, tmp_path / "trunk", progress=False, keep_steps=trunk.keep_steps)
    assert (tmp_path / "trunk" / "branch_points" / str(branch.branch_step)).is_dir()
    got = train(branch.config, tmp_path / "branch", progress=False,
                branch_from=BranchFrom(tmp_path / "trunk", branch.branch_step))
    straight = train(branch.config, tmp_path / "straight", progress=False)
    assert got["status"] == straight["status"] == "completed"
    assert got["tokens"] == straight["tokens"] and got["flops_6n"] == straight["flops_6n"]
    assert got["final_eval_loss"] == pytest.approx(straight["final_eval_loss"], rel=1e-5, abs=1e-6)
    b, s = losses(tmp_path / "branch"), losses(tmp_path / "straight")
    assert min(b) > branch.branch_step and set(b) <= set(s)  # the branch logs only its own steps
    np.testing.assert_allclose([b[k] for k in sorted(b)], [s[k] for k in sorted(b)], rtol=1e-5, atol=1e-6)
    # and the trunk matched the straight run where they overlap (same LR, data and seed)
    t = losses(tmp_path / "trunk")
    common = sorted(k for k in t if k <= branch.branch_step and k in s)
    assert len(common) >= 5
    np.testing.assert_allclose([t[k] for k in common], [s[k] for k in common], rtol=1e-5, atol=1e-6)


def test_a_branch_refuses_a_trunk_of_another_model(tmp_path):
    p = plan(load_sweep(write_sweep(tmp_path, seeds=1)))
    small, large = sorted(p.trunks, key=lambda k: k.n_params)
    train(small.config, tmp_path / "trunk", progress=False, keep_steps=small.keep_steps)
    branch = next(t for t in p.trials if t.trunk_id == large.trial_id)
    with pytest.raises(UserError, match="does not continue its trunk"):
        train(branch.config, tmp_path / "branch", progress=False,
              branch_from=BranchFrom(tmp_path / "trunk", branch.branch_step))
    assert not (tmp_path / "branch").exists()  # refused before anything was written


def _kill_runner_when(out, args, condition, timeout=240):
    runner = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and runner.poll() is None and not condition():
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    if (out / "trials").exists():
        wait_until_no_trial_runs(out)


def test_killed_runner_during_a_trunk_and_during_a_branch_completes_every_point_once(tmp_path):
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path, seeds=1, d_model=[8])
    args = SCALING + ["sweep", "run", path, "--out", str(out), "--no-fit"]
    p = plan(load_sweep(path))
    (trunk,) = p.trunks

    def trunk_training():
        rows = read_jsonl(out / "trials" / trunk.trial_id / "metrics.jsonl") if (out / "trials").exists() else []
        return len(rows) >= 2

    _kill_runner_when(out, args, trunk_training)
    summary = out / "trials" / trunk.trial_id / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())["status"] == "interrupted"

    def branch_training():
        done = events(out, "completed")
        started = [t for t in events(out, "start") if t not in done and t != trunk.trial_id]
        return bool(started) and bool(read_jsonl(out / "trials" / started[0] / "metrics.jsonl"))

    _kill_runner_when(out, args, branch_training)
    subprocess.run(args, capture_output=True, text=True, check=True)
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "completed").all() and len(frame) == len(p.trials) and set(frame["kind"]) == {"branch"}
    # every point, and the trunk, finished once (a trial that finished just as its runner was killed
    # has no "completed" event, and is skipped, never retrained, by the next runner)
    completed = events(out, "completed")
    assert all(completed.get(t, 0) <= 1 for t in [*frame["trial"], trunk.trial_id]), completed
    assert json.loads((out / "trials" / trunk.trial_id / "summary.json").read_text())["status"] == "completed"
    for t in frame["trial"]:
        steps = [r["step"] for r in read_jsonl(out / "trials" / t / "metrics.jsonl")]
        assert steps == sorted(set(steps))
    # the trunk was trained once: its metrics never repeat a step, and it resumed rather than restarted
    steps = [r["step"] for r in read_jsonl(out / "trials" / trunk.trial_id / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == trunk.steps
    assert "resuming from the checkpoint" in (out / "trials" / trunk.trial_id / "train.log").read_text()
    straight = {}
    for row in frame.itertuples():  # each branch row is a whole WSD history: tokens = steps x batch tokens
        assert row.tokens == row.steps * 4 * 32 and row.branch_step == row.steps - cooldown_steps(row.steps, 0.2)
        straight[row.trial] = row.final_eval_loss
    assert all(np.isfinite(list(straight.values())))


def test_seeds_give_distinct_reproducible_runs(tmp_path):
    text = SWEEP.replace('kind = "branches"', 'kind = "grid"').replace("d_model = [8, 16]", "d_model = [8]") \
        .replace("tokens = [2560, 5120]", "tokens = [1280]")
    p = plan(load_sweep(write_sweep(tmp_path, text)))
    first, second = sorted(p.trials, key=lambda t: t.config.train.seed)
    a = train(first.config, tmp_path / "a", progress=False)
    again = train(first.config, tmp_path / "again", progress=False)
    b = train(second.config, tmp_path / "b", progress=False)
    assert a["final_eval_loss"] == again["final_eval_loss"]  # reproducible: same seed, same run
    assert losses(tmp_path / "a") == losses(tmp_path / "again")
    assert a["final_eval_loss"] != b["final_eval_loss"]  # distinct: another init and data order
    assert losses(tmp_path / "a")[5] != losses(tmp_path / "b")[5]


def test_results_have_seed_kind_and_trunk_columns(tmp_path):
    out = tmp_path / "sweep"
    path = write_sweep(tmp_path, d_model=[8], tokens=[1280, 2560])
    subprocess.run(SCALING + ["sweep", "run", path, "--out", str(out), "--no-fit"], capture_output=True, text=True,
                   check=True)
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["seed"]) == [0, 0, 1, 1] and set(frame["kind"]) == {"branch"}
    assert set(frame["family"]) == {"1 layer"} and set(frame["layers"]) == {1}  # every row names its model family
    plan_json = json.loads((out / "plan.json").read_text())
    assert set(frame["trunk"]) == {t["trial"] for t in plan_json["trunks"]}
    assert frame["flops_spent_6n"].sum() < frame["flops_6n"].sum()
