"""Sweeps: planning arithmetic, bad designs, and the runner's guarantees under kills,
concurrent runners and failing trials (real subprocesses, real training)."""

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from research.errors import UserError
from research.fsutil import read_jsonl
from research.model.accounting import ModelCounts, count_model
from research.sweep.plan import load_sweep, plan
from tests.conftest import REPO, SCALING

SMOKE = REPO / "sweeps" / "smoke.toml"
# two trials of the smoke sweep's shape: enough to test the runner, quick on 2 cores
SMALL = ["--set", "design.budgets=[1e9]", "--set", "design.sizes=2"]


def run_sweep(out: Path, *extra, env=None, check=True):
    return subprocess.run(SCALING + ["sweep", "run", str(SMOKE), "--out", str(out), "--no-fit", *extra],
                          capture_output=True, text=True, env=env, check=check)


def events(out: Path, kind: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in read_jsonl(out / "events.jsonl"):
        if e["event"] == kind:
            counts[e["trial"]] = counts.get(e["trial"], 0) + 1
    return counts


def wait_until_no_trial_runs(out: Path, timeout: float = 120) -> None:
    """After a runner is SIGKILLed its orphaned trial checkpoints on its SIGTERM and exits:
    wait until no trial holds its lock (rather than a fixed sleep, too long when quiet, too
    short on a loaded machine)."""
    from research.train.sweep_dir import trial_status

    deadline = time.time() + timeout
    while any(trial_status(t) == "running" for t in (out / "trials").iterdir()):
        assert time.time() < deadline, "an orphaned trial is still running"
        time.sleep(0.05)


def assert_all_completed_once(out: Path):
    frame = pd.read_csv(out / "results.csv")
    assert (frame["status"] == "completed").all(), frame[["trial", "status", "error"]]
    assert frame["trial"].is_unique
    assert events(out, "completed") == {t: 1 for t in frame["trial"]}
    for trial in frame["trial"]:
        steps = [r["step"] for r in read_jsonl(out / "trials" / trial / "metrics.jsonl")]
        assert len(steps) == len(set(steps)) and steps == sorted(steps)
    return frame


# ---------------------------------------------------------------- planning

@pytest.mark.parametrize("convention", ["6n", "chinchilla"])
def test_isoflop_tokens_come_from_budget_under_the_named_convention(convention):
    sweep = load_sweep(SMOKE, [f'design.flops_convention="{convention}"', "design.budgets=[2e9, 8e9]",
                               "design.allow_mixed_families=true"])
    p = plan(sweep)
    tokens_per_step = sweep.base.train.batch_size * sweep.base.model.seq_len
    assert {t.coords["budget"] for t in p.trials} == {2e9, 8e9}
    for t in p.trials:
        m = t.config.model
        # independent count: 2Vd embeddings + per layer (4d^2 + 2*d*4d + 2d) + d
        n = 2 * m.vocab_size * m.d_model + m.layers * (4 * m.d_model ** 2 + 8 * m.d_model ** 2 + 2 * m.d_model) + m.d_model
        assert t.n_params == n
        per_token = 6 * n if convention == "6n" else count_model(m).flops_per_token_chinchilla
        wanted = t.coords["budget"] / per_token
        assert abs(t.tokens - wanted) <= tokens_per_step / 2 + 1
        assert t.tokens == t.steps * tokens_per_step
        assert t.flops_6n == pytest.approx(6 * n * t.tokens)
        real = t.flops_6n if convention == "6n" else t.flops_chinchilla
        assert real == pytest.approx(t.coords["budget"], rel=tokens_per_step / t.tokens)
    out = p.to_dict()
    assert out["total_flops_6n"] == pytest.approx(sum(t.flops_6n for t in p.trials))
    assert out["total_flops_chinchilla"] == pytest.approx(sum(t.flops_chinchilla for t in p.trials))


def test_plan_json_contract():
    out = subprocess.run(SCALING + ["sweep", "plan", str(SMOKE), "--json"], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert set(got) >= {"trials", "total_flops_6n", "total_flops_chinchilla"}
    for t in got["trials"]:
        assert set(t) >= {"trial", "n_params", "tokens", "flops_6n", "flops_chinchilla", "budget",
                          "requested_n", "requested_tokens_per_param", "n_params_nonembedding", "tokens_per_param", "est_time_s"}
    # a different design point changes the id; the same one keeps it
    again = json.loads(subprocess.run(SCALING + ["sweep", "plan", str(SMOKE), "--json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert [t["trial"] for t in again["trials"]] == [t["trial"] for t in got["trials"]]


def test_plan_rejects_trials_beyond_the_corpus_unless_repeat_allowed():
    sweep = load_sweep(SMOKE, ["design.budgets=[1e9, 1e14]", "design.allow_mixed_families=true"])
    p = plan(sweep)
    assert p.rejected and all("training split holds" in r["reason"] for r in p.rejected)
    assert all(r["budget"] == 1e14 for r in p.rejected)
    assert all(t.tokens <= p.train_tokens_available for t in p.trials)
    allowed = plan(load_sweep(SMOKE, ["design.budgets=[1e9, 1e14]", "design.allow_repeat=true",
                                      "design.allow_mixed_families=true"]))
    assert not allowed.rejected


@pytest.mark.parametrize("overrides,message", [
    (['design.kind="isoflops"'], r"kind = 'isoflops'.*did you mean 'isoflop'"),
    (["design.budget=[1e9]"], r"unknown key \[design\] budget .*did you mean 'budgets'"),
    (["design.budgets=[1e3]"], r"budget 1e\+03 FLOPs is too small for the smallest model"),
    (["train.steps=10"], r"horizons come from its \[design\]"),
    (["design.tokens_per_param=[50, 2]"], r"low < high"),
])
def test_bad_designs_fail_with_one_line(overrides, message):
    with pytest.raises(UserError, match=message):
        plan(load_sweep(SMOKE, overrides))


def test_empty_design_is_refused(tmp_path):
    text = SMOKE.read_text().split("[design]")[0]
    (tmp_path / "s.toml").write_text(text)
    out = subprocess.run(SCALING + ["sweep", "plan", str(tmp_path / "s.toml")], capture_output=True, text=True)
    assert out.returncode == 2 and "has no [design] section" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- running

def test_sweep_dir_of_another_sweep_is_refused(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"name": "someone-else", "source": "/x.toml"}))
    res = run_sweep(out, *SMALL, check=False)
    assert res.returncode == 2 and "belongs to sweep 'someone-else'" in res.stderr
    assert json.loads((out / "sweep.json").read_text())["name"] == "someone-else"


def test_killed_runner_rerun_completes_every_trial_exactly_once(tmp_path):
    out = tmp_path / "sweep"
    args = SCALING + ["sweep", "run", str(SMOKE), "--out", str(out), "--no-fit", "--set", "design.sizes=2",
                      "--set", "design.budgets=[1e9, 2e9]"]
    runner = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once one trial is done and the next is training
        done, started = events(out, "completed"), events(out, "start")
        if done and len(started) > len(done):
            running = [t for t in started if t not in done]
            if read_jsonl(out / "trials" / running[0] / "metrics.jsonl"):
                break
        time.sleep(0.1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    wait_until_no_trial_runs(out)
    res = run_sweep(out, "--set", "design.sizes=2", "--set", "design.budgets=[1e9, 2e9]")
    frame = assert_all_completed_once(out)
    assert len(frame) == 4
    # the interrupted trial resumed rather than restarted
    logs = "".join((out / "trials" / t / "train.log").read_text() for t in frame["trial"])
    assert "resuming from the checkpoint" in logs or events(out, "interrupted"), res.stderr


def test_two_runners_at_once_never_run_a_trial_twice(tmp_path):
    out = tmp_path / "sweep"
    first = subprocess.Popen(SCALING + ["sweep", "run", str(SMOKE), "--out", str(out), "--no-fit", *SMALL],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = run_sweep(out, *SMALL)
    first.wait(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr.read(), second.stderr)
    assert_all_completed_once(out)
    assert set(events(out, "start").values()) == {1}, "a trial was started twice"
    assert len({e["runner"] for e in read_jsonl(out / "events.jsonl")}) == 2, "the second runner did nothing"


def test_failing_trial_is_retried_then_recorded_while_others_complete(tmp_path):
    out = tmp_path / "sweep"
    ids = [t.trial_id for t in plan(load_sweep(SMOKE, SMALL[1::2])).trials]  # the ids `scaling sweep plan --json` lists
    env = dict(os.environ, SCALING_FAIL_TRIALS=ids[0])
    res = run_sweep(out, *SMALL, "--retries", "1", env=env, check=False)
    assert res.returncode == 1
    frame = pd.read_csv(out / "results.csv").set_index("trial")
    assert frame.loc[ids[0], "status"] == "failed"
    assert "fault injected" in frame.loc[ids[0], "error"]
    assert (frame.drop(index=ids[0])["status"] == "completed").all()
    assert events(out, "start")[ids[0]] == 2  # first attempt + one retry
    # re-running leaves the failed trial alone unless asked
    again = run_sweep(out, *SMALL, check=False)
    assert events(out, "start")[ids[0]] == 2 and again.returncode == 1
    fixed = run_sweep(out, *SMALL, "--retry-failed")
    assert fixed.returncode == 0
    assert (pd.read_csv(out / "results.csv")["status"] == "completed").all()

    status = json.loads(subprocess.run(SCALING + ["sweep", "status", str(out), "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    assert status["completed"] == len(ids) and status["failed"] == 0
