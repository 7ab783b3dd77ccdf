"""Bad-input campaign for sweep files and sweep directories (issue 10), with Hypothesis.

Malformed and hostile sweep TOML is generated section by section (wrong types, unknown keys,
missing sections, absurd sizes, NaN/inf/negative numbers, huge lists, broken files) and fed to
`scaling sweep plan` (in-process, through research.cli.main) and, for input that must be refused,
to `scaling sweep run`, which must refuse it before training anything. Sweep directories made by
another sweep file are fed to `scaling sweep run --out`. The property everywhere:

    no traceback; a refusal is exit status 2 with ONE stderr line naming the problem;
    input that must be refused is refused; nothing that existed before is modified
    (every file's bytes and mtime, and the set of files, compared before and after).

Each test appends its number of generated cases to CASES; the session prints the totals.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research.cli import main
from tests.conftest import REPO, SCALING
from tests.tomlgen import toml_key, toml_value

SMOKE = tomllib.loads((REPO / "sweeps" / "smoke.toml").read_text())
CASES: dict[str, int] = {}
# SCALING_CAMPAIGN_SCALE=10 runs ten times the examples with fresh random draws (a deeper search);
# the suite runs the bounded, derandomized campaign (the same cases every time, ~20 s).
SCALE = int(os.environ.get("SCALING_CAMPAIGN_SCALE", "1"))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                derandomize=SCALE == 1, database=None)

# Every key a user can write, by section, with its kind (what a wrong value of it looks like).
NUMERIC = {
    "model": ["seq_len", "ffw", "rope_theta", "init_std"],
    "train": ["batch_size", "min_lr_ratio", "decay_fraction", "weight_decay", "beta1", "beta2", "eps", "grad_clip",
              "seed", "eval_every", "eval_tokens", "log_every", "checkpoint_every", "keep_checkpoints", "prefetch"],
    "data": ["val_fraction", "seed"],
    "design": ["sizes"],
    "recipe": ["aspect_ratio", "head_dim", "max_width", "lr_base", "lr_ref_params", "lr_exponent", "lr_max",
               "warmup_fraction"],
    "slurm": ["time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "max_requeues", "array_parallelism",
              "signal_delay_s", "poll_s"],
}
STRINGS = {"model": ["mlp", "compute_dtype", "attention"], "train": ["schedule", "decay_shape"],
           "data": ["corpus", "tokenizer"], "design": ["kind", "flops_convention"], "recipe": ["class", "lr_rule"],
           "slurm": ["partition", "job_name"]}
LISTS = {"design": ["budgets", "tokens_per_param"]}
SECTIONS = ["data", "model", "train", "design", "recipe", "slurm"]


def record(name: str) -> None:
    CASES[name] = CASES.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    total = sum(CASES.values())
    print(f"\nsweep bad-input campaign: {total} generated cases: " + ", ".join(f"{k} {v}" for k, v in CASES.items()))
    out = os.environ.get("SCALING_CAMPAIGN_COUNTS")
    if out:  # for the README's reliability section: SCALING_CAMPAIGN_COUNTS=path pytest tests/test_sweep_campaign.py
        Path(out).write_text(json.dumps({"total": total, **CASES}, indent=1))


def snapshot(root: Path) -> dict:
    """Every file under root: (size, mtime_ns, sha256); and every directory."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.is_dir():
            state[str(p.relative_to(root))] = "dir"
        else:
            st_ = p.stat()
            state[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return state


def to_toml(doc: dict) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def base_sweep() -> dict:
    doc = json.loads(json.dumps(SMOKE))
    doc["design"]["budgets"] = [1e9]
    doc["design"]["sizes"] = 2
    return doc


def cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def check(argv: list[str], root: Path, must_fail: bool, why: str = "") -> None:
    before = snapshot(root)
    code, out, err = cli(argv)  # an exception other than UserError escapes main: the test fails with it
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    if must_fail or code != 0:
        assert code == 2, (why, code, err[-500:])
        assert len(lines) == 1 and lines[0].startswith("scaling sweep: error: "), (why, err[-800:])
    assert snapshot(root) == before, why


# ---------------------------------------------------------------- generated malformed sections

wrong_for_number = st.one_of(st.text(max_size=8), st.lists(st.integers(), max_size=3),
                             st.dictionaries(st.sampled_from("ab"), st.integers(), max_size=2), st.booleans())
wrong_for_string = st.one_of(st.integers(), st.floats(allow_nan=False), st.lists(st.text(max_size=3), max_size=2),
                             st.booleans())
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def malformed(draw):
    """(document, must_fail, description) for one mutation of a valid sweep file."""
    doc = base_sweep()
    kind = draw(st.sampled_from(["wrong_type", "unknown_key", "missing_section", "non_finite", "negative",
                                 "absurd", "huge_list", "bad_string", "section_not_table"]))
    section = draw(st.sampled_from(SECTIONS))
    table = doc.setdefault(section, {})
    if kind == "wrong_type":
        if draw(st.booleans()) and STRINGS.get(section):
            key = draw(st.sampled_from(STRINGS[section]))
            value = draw(wrong_for_string)
        else:
            key = draw(st.sampled_from(NUMERIC[section] + LISTS.get(section, [])))
            value = draw(wrong_for_number)
            if key in LISTS.get(section, []) and isinstance(value, list) and not value:
                value = "x"
        table[key] = value
        return doc, True, f"[{section}] {key} = {value!r}"
    if kind == "unknown_key":
        key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
        valid = set(NUMERIC[section]) | set(STRINGS.get(section, [])) | set(LISTS.get(section, []))
        valid |= {"layers", "d_model", "heads", "vocab_size", "tie_embeddings", "remat", "lr", "warmup_steps",
                  "steps", "tokens", "mesh_data", "mesh_fsdp", "allow_repeat", "n_params", "extra"}
        if key in valid:
            key += "_x"
        table[key] = draw(st.integers(1, 5))
        return doc, True, f"unknown [{section}] {key}"
    if kind == "missing_section":
        doc.pop("design")
        return doc, True, "no [design]"
    if kind == "section_not_table":
        doc[section] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
        return doc, True, f"[{section}] = {doc[section]!r}"
    if kind == "non_finite":
        if section == "design" and draw(st.booleans()):
            table["budgets"] = [1e9, draw(non_finite)]
            return doc, True, f"budgets {table['budgets']}"
        floats = {"model": ["rope_theta", "init_std"], "train": ["weight_decay", "beta1", "eps", "grad_clip",
                                                                 "min_lr_ratio"],
                  "data": ["val_fraction"], "design": ["tokens_per_param"],
                  "recipe": ["lr_base", "lr_exponent", "lr_max", "warmup_fraction"], "slurm": ["mem_gb", "poll_s"]}
        key = draw(st.sampled_from(floats[section]))
        value = draw(non_finite)
        table[key] = [2.0, value] if key == "tokens_per_param" else value
        return doc, True, f"[{section}] {key} = {value}"
    if kind == "negative":
        key = draw(st.sampled_from(NUMERIC[section] + LISTS.get(section, [])))
        value = draw(st.one_of(st.integers(-10**6, -1), st.floats(-1e6, -1e-6)))
        table[key] = [value, 1e9] if key in LISTS.get(section, []) else value
        return doc, False, f"[{section}] {key} = {value}"  # some keys may be negative (lr_exponent)
    if kind == "absurd":
        key = draw(st.sampled_from(NUMERIC[section] + LISTS.get(section, [])))
        value = draw(st.sampled_from([10**12, 2**62, 1e30, 1e300, 10**9]))
        table[key] = [value] if key == "budgets" else [1.0, value] if key == "tokens_per_param" else value
        return doc, False, f"[{section}] {key} = {value}"
    if kind == "huge_list":
        n = draw(st.sampled_from([5_001, 20_000]))
        key = draw(st.sampled_from(["budgets", "tokens_per_param"]))
        doc["design"][key] = [1e9 * (1 + i) for i in range(n)]
        return doc, True, f"[design] {key}: {n} entries"
    key = draw(st.sampled_from(STRINGS[section]))  # bad_string
    value = draw(st.one_of(st.text(max_size=20), st.sampled_from(["../../etc", "\x00", "é" * 50, ":", "a:b"])))
    if section == "data" and key == "corpus":
        value = f"/nonexistent/{value}"  # never an existing corpus (a real one would be prepared)
    if section == "data" and key == "tokenizer":
        value = f"bad-{value}"
    if section == "slurm":
        return doc | {"slurm": {key: value}}, False, f"[slurm] {key} = {value!r}"
    table[key] = value
    return doc, section in ("design", "recipe", "data"), f"[{section}] {key} = {value!r}"


@settings(max_examples=160 * SCALE, **SETTINGS)
@given(case=malformed())
def test_sweep_plan_refuses_malformed_files_in_one_line(tmp_path_factory, case):
    doc, must_fail, why = case
    root = tmp_path_factory.mktemp("plan")
    path = root / "sweep.toml"
    path.write_text(to_toml(doc))
    check(["sweep", "plan", str(path), "--out", str(root / "out")], root, must_fail, why)
    record("sweep plan: malformed sections")


@settings(max_examples=40 * SCALE, **SETTINGS)
@given(case=malformed())
def test_sweep_run_refuses_before_training(tmp_path_factory, case):
    doc, must_fail, why = case
    if not must_fail:  # a file that may be valid would train: plan covers it
        return
    root = tmp_path_factory.mktemp("run")
    path = root / "sweep.toml"
    path.write_text(to_toml(doc))
    check(["sweep", "run", str(path), "--out", str(root / "out"), "--no-fit", "--quiet"], root, True, why)
    assert not (root / "out").exists()  # refused before a directory, let alone a trial, was made
    record("sweep run: malformed sections")


@settings(max_examples=40 * SCALE, **SETTINGS)
@given(blob=st.one_of(st.binary(max_size=200), st.text(max_size=200),
                      st.sampled_from([b"\xff\xfe\x00[design]", b"[design]\nkind = ", b"[[design]]\nkind='grid'",
                                       b"name = 1\n[design]\nkind='isoflop'\nbudgets=[1e9]", b"",
                                       b"[design]\nkind = 'isoflop'\n[design]\nkind='grid'"])))
def test_sweep_plan_refuses_broken_files_in_one_line(tmp_path_factory, blob):
    root = tmp_path_factory.mktemp("blob")
    path = root / "sweep.toml"
    path.write_bytes(blob if isinstance(blob, bytes) else blob.encode())
    check(["sweep", "plan", str(path)], root, must_fail=True, why=repr(blob)[:80])
    record("sweep plan: broken files")


# ---------------------------------------------------------------- directories of another sweep file

@st.composite
def foreign_dir(draw):
    """What an existing --out directory holds: (files, description)."""
    kind = draw(st.sampled_from(["other_name", "other_convention", "other_data", "corrupt_record", "record_not_object",
                                 "not_a_sweep_dir", "is_a_file"]))
    record_ = {"name": "smoke", "source": "/elsewhere/smoke.toml", "flops_convention": "6n",
               "data_fingerprint": None}
    if kind == "other_name":
        record_["name"] = draw(st.text(min_size=1, max_size=10).filter(lambda s: s != "smoke"))
    elif kind == "other_convention":
        record_["flops_convention"] = "chinchilla"
    elif kind == "other_data":
        record_["data_fingerprint"] = draw(st.text("0123456789abcdef", min_size=12, max_size=12))
    files = {"results.csv": "trial,status\nabc,completed\n", "trials/abc/summary.json": '{"status": "completed"}'}
    if kind == "corrupt_record":
        files["sweep.json"] = draw(st.sampled_from(['{"name": "smo', "", "\x00\x01", "{{}}"]))
    elif kind == "record_not_object":
        files["sweep.json"] = json.dumps(draw(st.sampled_from([[1, 2], "smoke", 3, None])))
    elif kind == "not_a_sweep_dir":
        files = {"notes.txt": "my thesis", "metrics.jsonl": '{"step": 1}\n'}
    elif kind != "is_a_file":
        files["sweep.json"] = json.dumps(record_)
    return kind, files


@pytest.fixture(scope="module")
def smoke_fingerprint(tmp_path_factory):
    from research.sweep.plan import load_sweep, plan

    return plan(load_sweep(REPO / "sweeps" / "smoke.toml", ["design.budgets=[1e9]", "design.sizes=2"])).data_fingerprint


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(case=foreign_dir())
def test_sweep_run_leaves_another_sweeps_directory_untouched(tmp_path_factory, smoke_fingerprint, case):
    kind, files = case
    root = tmp_path_factory.mktemp("foreign")
    out = root / "out"
    if kind == "is_a_file":
        out.write_text("not a directory")
    for rel, text in files.items():
        if kind == "is_a_file":
            break
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel == "sweep.json" and kind != "other_data" and '"data_fingerprint": null' in text:
            text = text.replace('"data_fingerprint": null', json.dumps({"data_fingerprint": smoke_fingerprint})[1:-1])
        p.write_text(text)
    path = root / "smoke.toml"
    doc = base_sweep()
    path.write_text(to_toml(doc))
    check(["sweep", "run", str(path), "--out", str(out), "--no-fit", "--quiet"], root, True, kind)
    record("sweep run: directory of another sweep")


# ---------------------------------------------------------------- a few real subprocesses

@pytest.mark.parametrize("args,message", [
    (["--set", 'slurm.partiton="gpu"'], "unknown key [slurm] partiton (did you mean 'partition'?)"),
    (["--set", "design.budgets=[nan]"], "[design] budgets[0] = nan must be a finite number"),
    (["--set", "train.lr=0.1"], "[train] lr = 0.1 is set per trial by the recipe"),
])
def test_the_installed_command_prints_one_line(tmp_path, args, message):
    before = snapshot(REPO / "sweeps")
    res = subprocess.run(SCALING + ["sweep", "run", str(REPO / "sweeps" / "smoke.toml"), "--out",
                                    str(tmp_path / "out"), "--no-fit", *args], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"scaling sweep: error: {message}"] \
        or (res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr), res.stderr
    assert not (tmp_path / "out").exists() and snapshot(REPO / "sweeps") == before
    record("sweep run: subprocess")


# ---------------------------------------------------------------- status / collect on foreign and damaged dirs

junk = st.one_of(st.binary(max_size=40), st.sampled_from([b"[1, 2]", b'"x"', b"null", b'{"status": 3}',
                                                          b'{"config": [], "coords": 5, "planned": {"n_params": "x"}}',
                                                          b'{"status": "completed", "n_params": "many"}']))


@st.composite
def damaged_dir(draw):
    """(files, is_sweep_dir): a non-sweep directory, or a sweep directory whose trial files are damaged."""
    if draw(st.booleans()):
        files = draw(st.sampled_from([{"results.csv": b"mine,not,yours\n1,2,3\n"}, {"sweep.json": b"[1]"},
                                      {"sweep.json": b"\xff\xfe"}, {"notes.txt": b"thesis"}]))
        return files, False
    files = {"sweep.json": b'{"name": "smoke", "flops_convention": "6n"}'}
    if draw(st.booleans()):
        files["plan.json"] = draw(junk)
    for i in range(draw(st.integers(1, 3))):
        for name in draw(st.lists(st.sampled_from(["trial.json", "summary.json", "failed.json", "metrics.jsonl"]),
                                  min_size=1, max_size=3, unique=True)):
            files[f"trials/t{i}/{name}"] = draw(junk)
    return files, True


@settings(max_examples=40 * SCALE, **SETTINGS)
@given(case=damaged_dir(), command=st.sampled_from(["status", "collect"]))
def test_status_and_collect_refuse_or_survive_damaged_dirs(tmp_path_factory, case, command):
    files, is_sweep = case
    root = tmp_path_factory.mktemp("damaged")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    before = snapshot(root)
    code, out, err = cli(["sweep", command, str(root)])
    assert "Traceback" not in err
    after = snapshot(root)
    if not is_sweep:  # refused, untouched
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert after == before
    else:  # a sweep directory: damaged trials read as pending; only the derived results.csv is (re)written
        assert code == 0, err
        assert {k: v for k, v in after.items() if k != "results.csv"} == \
            {k: v for k, v in before.items() if k != "results.csv"}
    record(f"sweep {command}: damaged directories")


# ---------------------------------------------------------------- issue 23: a sweep directory's files replaced

SMALL_SWEEP = REPO / "tests" / "data" / "sweep_small"


@st.composite
def damaged_sweep_file(draw):
    """(file, how): one of the files the fit and plot stages read, replaced by something that is not it."""
    return (draw(st.sampled_from(["fit.json", "results.csv", "sweep.json"])),
            draw(st.sampled_from(["directory", "dev_zero", "fifo", "nested", "list"])))


@settings(max_examples=20 * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=damaged_sweep_file(), command=st.sampled_from(["fit", "plot"]))
def test_fit_and_plot_of_a_damaged_sweep_directory_are_one_line(tmp_path_factory, case, command):
    import shutil

    name, how = case
    root = tmp_path_factory.mktemp("damaged")
    sweep = root / "sweep"
    shutil.copytree(SMALL_SWEEP, sweep)
    target = sweep / name
    target.unlink(missing_ok=True)
    if how == "directory":
        target.mkdir()
    elif how == "dev_zero":
        target.symlink_to("/dev/zero")
    elif how == "fifo":
        os.mkfifo(target)
    elif how == "nested":
        target.write_text("[" * 5000 + "]" * 5000)
    else:
        target.write_text("[1, 2, 3]\n")
    record(f"damaged {name} ({command})")
    before = snapshot_regular(root)
    code, out, err = cli([command, str(sweep)] + (["--method", "approach2"] if command == "fit" else []))
    assert "Traceback" not in err, err[-2000:]
    lines = [line for line in err.strip().splitlines() if ": error: " in line]
    if code != 0:
        assert code == 2 and len(lines) == 1, (case, code, err[-800:])
    if how == "list" and name == "fit.json" and code == 0:  # not a fit record: a fresh fit, the old one kept
        assert (sweep / "fit.json.unreadable").read_text() == "[1, 2, 3]\n", case
    else:
        assert snapshot_regular(root) == before or code == 0, case


def snapshot_regular(root: Path) -> dict:
    """As snapshot, but a device link or FIFO is recorded, never read (it may never end)."""
    state = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not (p.is_dir() or p.is_file()):
            state[str(p.relative_to(root))] = "special"
        elif p.is_dir():
            state[str(p.relative_to(root))] = "dir"
        else:
            state[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state
