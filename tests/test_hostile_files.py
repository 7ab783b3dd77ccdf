"""Issue 23: nested parts of the files the harness reads are validated (law noise, bootstrap
samples, data_range, flops_per_token; a run's config.json; a dataset manifest), a metrics log
cut mid-line is reported and the whole rows after the cut are kept, and generated bounds
and environment cases are refused in one line."""

import json
import math

import pytest
from hypothesis import given, strategies as st

from research.errors import UserError
from research.fsutil import read_jsonl
from research.train.run_dir import RunDir
from tests.test_bad_input import assert_refused, campaign, run_cli

LAW = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BROKEN_PARTS = {
    "noise": [{"sigma_log": -0.1}, {"sigma_log": math.nan}, {"sigma_log": "x"}, [1, 2], "noisy"],
    "bootstrap": [{"samples": {"E": [1.0, "x"]}}, {"samples": [1, 2]}, "many",
                  {"samples": {"E": [1.0, 2.0], "A": [1.0]}}],
    "data_range": [{"n_params": [1e9, 1e6], "tokens": [1e9, 1e10]}, {"n_params": [-1, 5]}, [1, 2],
                   {"n_params": [1e6, math.inf], "tokens": [1, 2]}],
}


@campaign(40)
@given(part=st.sampled_from(sorted(BROKEN_PARTS)), data=st.data())
def test_predict_refuses_law_files_with_broken_nested_parts(tmp_path_factory, part, data):
    value = data.draw(st.sampled_from(BROKEN_PARTS[part]))
    path = tmp_path_factory.mktemp("law") / "law.json"
    path.write_text(json.dumps({"approach3": dict(LAW, **{part: value})}, allow_nan=True))
    rc, out, err = run_cli(["predict", "--law", path, "--n-params", "1e9", "--tokens", "2e10"])
    assert_refused(rc, out, err, [part, "sigma_log"])


@pytest.mark.parametrize("flops_per_token", [{"k": -6, "p": 1}, {"k": "six"}, [6, 1], {"k": 6, "p": math.nan}])
def test_optimal_refuses_broken_flops_per_token(tmp_path, flops_per_token):
    path = tmp_path / "law.json"
    path.write_text(json.dumps(dict(LAW, flops_per_token=flops_per_token), allow_nan=True))
    rc, out, err = run_cli(["optimal", "--flops", "1e21", "--law", path])
    assert_refused(rc, out, err, ["flops_per_token"])


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", "", None])
def test_corrupt_run_config_is_reported_as_corrupt(tmp_path, content):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    if content is None:
        run.config_path.mkdir()  # a directory where config.json goes
    else:
        run.config_path.write_text(content)
    (run.path / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    with pytest.raises(UserError, match="config.json is corrupt"):
        run.check_or_write_config({"identity_hash": "x", "identity": {}})


def test_manifest_that_is_a_list_is_refused(tmp_path):
    from research.data.shards import MANIFEST_FILE, read_manifest

    (tmp_path / MANIFEST_FILE).write_text("[1, 2, 3]")
    with pytest.raises(UserError, match="corrupt"):
        read_manifest(tmp_path)


def test_metrics_cut_mid_line_warns_and_keeps_the_rows_after_the_cut(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.metrics_path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo{"step": 3, "loss": 2.8}\n'
                                '{"step": 4, "loss": 2.7}\n{"step": 5, "loss": 2.6}\n')
    run.truncate_metrics(4)
    assert [r["step"] for r in read_jsonl(run.metrics_path)] == [1, 3, 4]
    assert "unreadable line" in capsys.readouterr().err
    assert any('"step": 2, "lo' in r["line"] for r in read_jsonl(run.removed_metrics_path))


NUMBERS = {
    "fit --seed": lambda v: ["fit", "x.csv", "--bootstrap", "10", "--seed", str(v)],
    "predict --seed": lambda v: ["predict", "--n-params", "1e9", "--tokens", "2e10", "--seed", str(v)],
    "fit --bootstrap": lambda v: ["fit", "x.csv", "--bootstrap", str(v)],
    "bench --steps": lambda v: ["bench", "x.toml", "--steps", str(v)],
    "optimal --flops": lambda v: ["optimal", "--flops", str(v)],
}
BAD = {
    "fit --seed": st.integers(max_value=-1) | st.integers(min_value=2**32),
    "predict --seed": st.integers(max_value=-1) | st.integers(min_value=2**32),
    "fit --bootstrap": st.integers(max_value=-1) | st.integers(min_value=100_001, max_value=10**30),
    "bench --steps": st.integers(max_value=0) | st.integers(min_value=10**9 + 1, max_value=10**40),
    "optimal --flops": st.floats(min_value=1e-320, max_value=0.99) | st.floats(min_value=1e41, max_value=1e300),
}


@campaign(60)
@given(data=st.data())
def test_numbers_out_of_bounds_are_refused_in_one_line(data):
    entry = data.draw(st.sampled_from(sorted(NUMBERS)))
    value = data.draw(BAD[entry])
    rc, out, err = run_cli(NUMBERS[entry](value))
    assert_refused(rc, out, err, [entry.split()[1]])


ENV = st.sampled_from([{"SLURM_NTASKS": "4"}, {"SLURM_NTASKS": "4(x2)"}, {"JAX_NUM_PROCESSES": "two"},
                       {"SLURM_NPROCS": "-1"}, {"JAX_PROCESS_ID": "1.5"}])


@campaign(10)
@given(env=ENV)
def test_environment_that_cannot_be_a_launch_is_named(env):
    from research.guards import check_environment

    with pytest.raises(UserError) as err:
        check_environment(env)
    assert next(iter(env)) in str(err.value) and "\n" not in str(err.value)
