"""Bad-input campaign (issue 10) for the entry points a user feeds by hand.

Hypothesis generates malformed and hostile inputs for
  * run files of `scaling train` (wrong types, unknown keys and sections, missing horizon,
    absurd sizes, nan/inf/negative numbers, huge lists, broken TOML, non-UTF-8 bytes),
  * `--set` overrides of `scaling train` and `scaling sweep plan`,
  * results tables of `scaling fit` (missing columns, nan/inf/negative/text cells, duplicates,
    one row, too few usable rows; CSV, TSV and parquet),
  * `--law` files of `scaling optimal` (any JSON, laws with missing/wrong/non-finite/negative
    parameters, non-UTF-8 bytes, missing files),
  * the arguments of `scaling size`,
  * missing paths and empty globs for `scaling data info/prepare`,
and checks one property: the command exits with status 2, prints exactly one line
`scaling CMD: error: ...` that names the problem (the key, column, flag or file), raises no
exception (no traceback), and leaves every file that existed before unchanged (content hash
and mtime of every path under the workspace, and the prepared dataset it reads).

Every generated input is invalid by construction, so no model is trained. The CLI runs
in-process (research.cli.main) for speed; a few subprocess runs prove the same end to end.
Generated cases are counted per entry point; set BAD_INPUT_COUNTS=FILE to get the counts as JSON,
and BAD_INPUT_SCALE=K to run K times as many examples.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import shutil
import string
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from research.cli import main
from tests.conftest import REPO, SCALING
from tests.tomlgen import toml_value

CASES: Counter = Counter()  # entry point -> generated cases run


def campaign(max_examples: int):
    """Bounded examples (times BAD_INPUT_SCALE for a deeper run), no deadline (a contended CI core),
    no example database written into the repo."""
    return settings(max_examples=max_examples * int(os.environ.get("BAD_INPUT_SCALE", "1")), deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck))

SMOKE_SWEEP = REPO / "sweeps" / "smoke.toml"

BASE_RUN = {
    "data": {"corpus": "synthetic:tokens=20000", "tokenizer": "bytes"},
    "model": {"layers": 1, "d_model": 16, "heads": 2, "seq_len": 16},
    "train": {"steps": 1, "batch_size": 2, "eval_every": 1, "eval_tokens": 64},
}


# ---------------------------------------------------------------- running and checking


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """research.cli.main in-process; an exception other than argparse's SystemExit propagates
    (it would be a traceback for the user) and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse: usage + one error line, status 2
            rc = exit_.code
    return rc, out.getvalue(), err.getvalue()


def snapshot(*roots: Path) -> dict:
    """Every path under `roots` with its content hash and mtime (directories: listing only)."""
    state = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            state[dirpath] = sorted(dirnames + filenames)
            for name in filenames:
                p = Path(dirpath) / name
                if not p.is_file():  # a link to a device, a FIFO: never read (it may never end)
                    state[str(p)] = ("special", os.readlink(p) if p.is_symlink() else p.lstat().st_mode)
                    continue
                state[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return state


def assert_refused(rc, out: str, err: str, names) -> str:
    """Exit 2, no traceback, one error line, and it names the problem (one of `names`)."""
    assert "Traceback" not in err and "Traceback" not in out, err
    assert rc == 2, (rc, out[-500:], err[-1500:])
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    line = errors[0]
    assert line.startswith("scaling"), line
    assert any(str(n) in line for n in names), (names, line)
    return line


def refused_without_changes(entry: str, argv, names, roots) -> str:
    before = snapshot(*roots)
    rc, out, err = run_cli(argv)
    CASES[entry] += 1
    line = assert_refused(rc, out, err, names)
    assert snapshot(*roots) == before, f"{argv} changed files"
    return line


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(CASES.values())
    summary = {"total": total, "by_entry_point": dict(sorted(CASES.items()))}
    print(f"\nbad-input campaign: {total} generated cases: {summary['by_entry_point']}")
    if os.environ.get("BAD_INPUT_COUNTS"):
        Path(os.environ["BAD_INPUT_COUNTS"]).write_text(json.dumps(summary, indent=1) + "\n")


@pytest.fixture(scope="module")
def dataset_dir():
    """The base run's prepared dataset (made once; the campaign checks it is never modified)."""
    from research.data import get_dataset

    d = BASE_RUN["data"]
    return Path(get_dataset(d["corpus"], d["tokenizer"]).path)


def workspace() -> Path:
    """A fresh directory holding a finished-looking run directory that a refused command must not touch."""
    ws = Path(tempfile.mkdtemp(prefix="bad-input-"))
    run = ws / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"identity_hash": "0123456789abcdef", "config": BASE_RUN}))
    (run / "metrics.jsonl").write_text('{"step": 10, "loss": 3.2}\n{"step": 20, "loss": 3.0}\n')
    (run / "summary.json").write_text('{"status": "completed", "steps_done": 20}\n')
    (run / ".lock").write_text("12345\n")
    (ws / "fit.json").write_text('{"approach3": {"E": 1.7, "A": 400, "B": 410, "alpha": 0.34, "beta": 0.28}}\n')
    return ws


# ---------------------------------------------------------------- TOML values


def toml_text(raw: dict) -> str:
    lines = []
    for name, section in raw.items():
        if isinstance(section, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in section.items()]
        else:
            lines.insert(0, f"{name} = {toml_value(section)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- invalid run-file values

KEY = st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True)
WORD = st.text(alphabet=string.ascii_letters + string.digits + "-_:", min_size=1, max_size=12)
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE_LIST = st.integers(1000, 20000).map(lambda n: list(range(n)))
GiB = "GiB"


def below(low: int):
    return st.integers(-(2**70), low - 1)


def floats_outside(lo, hi, lo_incl=True, hi_incl=True):
    parts = [NONFINITE]
    if lo is not None:
        parts.append(st.floats(max_value=lo, exclude_max=lo_incl, allow_nan=False, allow_infinity=False))
    if hi is not None:
        parts.append(st.floats(min_value=hi, exclude_min=hi_incl, allow_nan=False, allow_infinity=False))
    return st.one_of(*parts)


def wrong_type(kind: str):
    """Values of a TOML type that key of `kind` (int, float, str, bool) does not accept."""
    options = {
        "int": st.one_of(WORD, st.booleans(), st.floats(allow_nan=False, allow_infinity=False), HUGE_LIST,
                         st.dictionaries(KEY, st.integers(), max_size=3)),
        "float": st.one_of(WORD, st.booleans(), HUGE_LIST, st.dictionaries(KEY, st.floats(), max_size=3)),
        "str": st.one_of(st.integers(), st.floats(), st.booleans(), HUGE_LIST),
        "bool": st.one_of(st.integers(), WORD, st.lists(st.booleans(), max_size=5)),
    }
    return options[kind]


def not_in(choices):
    return WORD.filter(lambda w: w not in choices)


# (section, key) -> (TOML kind, strategy of invalid values, names one of which the error must contain)
INVALID = {
    ("data", "tokenizer"): ("str", st.one_of(st.just("bpe:0"), st.builds("bpe:{}".format, WORD.filter(
        lambda w: not w.isdigit())), not_in({"bytes"}).filter(lambda w: not w.startswith("bpe:"))), ("tokenizer",)),
    ("data", "val_fraction"): ("float", floats_outside(0.0, 1.0, lo_incl=False, hi_incl=False), ("val_fraction",)),
    ("data", "seed"): ("int", st.one_of(below(0), st.integers(2**63, 2**80)), ("seed",)),
    ("model", "layers"): ("int", st.one_of(below(1), st.integers(10**9, 10**15)), ("layers", GiB)),
    ("model", "d_model"): ("int", st.one_of(below(1), st.integers(2**20 + 1, 2**80)), ("d_model",)),
    ("model", "heads"): ("int", st.one_of(below(1), st.sampled_from([3, 5, 6, 7, 9, 16, 32])), ("heads",)),
    ("model", "seq_len"): ("int", st.one_of(below(1), st.integers(10**6, 10**12)), ("seq_len",)),
    ("model", "ffw"): ("int", below(1), ("ffw",)),
    ("model", "vocab_size"): ("int", st.one_of(below(1), st.integers(1, 255), st.integers(10**11, 10**18)),
                              ("vocab_size", GiB)),
    ("model", "mlp"): ("str", not_in({"gelu", "swiglu"}), ("mlp",)),
    ("model", "tie_embeddings"): ("bool", wrong_type("bool"), ("tie_embeddings",)),
    ("model", "rope_theta"): ("float", floats_outside(0.0, None, lo_incl=False), ("rope_theta",)),
    ("model", "init_std"): ("float", floats_outside(0.0, None, lo_incl=False), ("init_std",)),
    ("model", "compute_dtype"): ("str", not_in({"auto", "float32", "bfloat16"}), ("compute_dtype",)),
    ("model", "attention"): ("str", not_in({"auto", "xla", "cudnn"}), ("attention",)),
    ("train", "batch_size"): ("int", st.one_of(below(1), st.integers(10**12, 10**18)), ("batch_size", GiB)),
    ("train", "steps"): ("int", st.one_of(below(1), st.integers(2**31, 2**80)), ("steps",)),
    ("train", "lr"): ("float", floats_outside(0.0, 1.0, lo_incl=False, hi_incl=False), ("lr",)),
    ("train", "schedule"): ("str", not_in({"cosine", "constant", "wsd"}), ("schedule",)),
    ("train", "warmup_steps"): ("int", below(0), ("warmup_steps",)),
    ("train", "min_lr_ratio"): ("float", floats_outside(0.0, 1.0), ("min_lr_ratio",)),
    ("train", "decay_fraction"): ("float", floats_outside(0.0, 1.0, lo_incl=False), ("decay_fraction",)),
    ("train", "decay_shape"): ("str", not_in({"1-sqrt", "linear"}), ("decay_shape",)),
    ("train", "weight_decay"): ("float", floats_outside(0.0, None), ("weight_decay",)),
    ("train", "beta1"): ("float", floats_outside(0.0, 1.0, hi_incl=False), ("beta1",)),
    ("train", "beta2"): ("float", floats_outside(0.0, 1.0, hi_incl=False), ("beta2",)),
    ("train", "eps"): ("float", floats_outside(0.0, None, lo_incl=False), ("eps",)),
    ("train", "grad_clip"): ("float", floats_outside(0.0, None), ("grad_clip",)),
    ("train", "seed"): ("int", st.one_of(below(0), st.integers(2**63, 2**80)), ("seed",)),
    ("train", "eval_every"): ("int", below(1), ("eval_every",)),
    ("train", "log_every"): ("int", below(1), ("log_every",)),
    ("train", "checkpoint_every"): ("int", below(1), ("checkpoint_every",)),
    ("train", "keep_checkpoints"): ("int", below(1), ("keep_checkpoints",)),
    ("train", "eval_tokens"): ("int", below(1), ("eval_tokens",)),
    # a prefix of the eval set: 1..eval_tokens (64 in BASE_RUN)
    ("train", "dense_eval_tokens"): ("int", st.one_of(below(1), st.integers(65, 10**9)), ("dense_eval_tokens",)),
    ("train", "mesh_data"): ("int", st.one_of(st.just(0), below(-1), st.integers(10**6, 10**9)), ("mesh_data",)),
    ("train", "mesh_fsdp"): ("int", st.one_of(below(1), st.integers(10**6, 10**9)), ("mesh_fsdp",)),
    ("train", "prefetch"): ("int", below(0), ("prefetch",)),
}
# Values the typed sections refuse before any data or device is looked at (all but sizes whose
# refusal needs the dataset's vocabulary or the device's memory).
CONFIG_ONLY = {k for k in INVALID if k not in {("model", "layers"), ("model", "seq_len"), ("model", "vocab_size"),
                                               ("train", "batch_size"), ("train", "mesh_data"),
                                               ("train", "mesh_fsdp"), ("data", "tokenizer")}}


@st.composite
def bad_value(draw, keys=tuple(INVALID)):
    """(section, key, value, names): a wrong type or an out-of-range value for one key."""
    section, key = draw(st.sampled_from(sorted(keys)))
    kind, invalid, names = INVALID[(section, key)]
    value = draw(st.one_of(invalid, wrong_type(kind)) if kind != "bool" else invalid)
    return section, key, value, names + (key,)


@st.composite
def bad_run_file(draw, ws: Path):
    """(file bytes, names): the base run file broken in one to three ways."""
    raw = json.loads(json.dumps(BASE_RUN))
    names = []
    kinds = draw(st.lists(st.sampled_from(["value", "unknown_key", "unknown_section", "not_a_table",
                                           "no_horizon", "two_horizons", "corpus"]), min_size=1, max_size=3))
    for kind in kinds:
        if kind == "value":
            section, key, value, n = draw(bad_value())
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = value
                names += n
        elif kind == "unknown_key":
            section = draw(st.sampled_from(["data", "model", "train"]))
            key = draw(KEY.filter(lambda k: k not in {f for s in BASE_RUN for f in _fields(s)}))
            if isinstance(raw.get(section), dict):
                raw[section][key] = draw(st.one_of(st.integers(), WORD))
                names.append(key)
        elif kind == "unknown_section":
            name = draw(KEY.filter(lambda k: k not in ("data", "model", "train")))
            raw[name] = {"x": 1}
            names.append(name)
        elif kind == "not_a_table":
            section = draw(st.sampled_from(["data", "model", "train"]))
            raw[section] = draw(st.one_of(st.integers(), WORD, HUGE_LIST))
            names.append(section)
        elif kind == "no_horizon":
            if isinstance(raw.get("train"), dict):
                raw["train"].pop("steps", None)
                raw["train"].pop("tokens", None)
                names += ["horizon"]
        elif kind == "two_horizons":
            if isinstance(raw.get("train"), dict):
                raw["train"]["tokens"] = draw(st.integers(1, 10**6))
                raw["train"].setdefault("steps", 1)
                names += ["horizon"]
        else:  # a local corpus path that matches nothing
            name = draw(WORD.filter(lambda w: w not in ("synthetic", "shakespeare", "python-stdlib", "stdlib")
                                    and not w.startswith("synthetic:")))
            path = draw(st.sampled_from([f"{ws}/missing-{name}.txt", f"{ws}/{name}*.jsonl", f"{ws}/nothing-{name}/"]))
            if isinstance(raw.get("data"), dict):
                raw["data"]["corpus"] = path
                names += ["corpus"]
    assume(names)
    text = toml_text(raw).encode()
    damage = draw(st.sampled_from(["none"] * 6 + ["garbage", "binary"]))
    if damage == "garbage":
        text += draw(st.sampled_from([b"[[[", b"= 1", b'x = "unterminated', b"[data]\n"]))
        names = ["TOML"]
    elif damage == "binary":
        text = draw(st.binary(min_size=1, max_size=64)).join([b"\xff\xfe", b""])
        names = ["UTF-8", "TOML"]
    return text, names


def _fields(section: str) -> list[str]:
    import dataclasses

    from research.config import SECTIONS

    return [f.name for f in dataclasses.fields(SECTIONS[section])]


# ---------------------------------------------------------------- scaling train: run files


@campaign(70)
@given(data=st.data())
def test_train_refuses_bad_run_files(data, dataset_dir):
    ws = workspace()
    try:
        text, names = data.draw(bad_run_file(ws))
        (ws / "bad.toml").write_bytes(text)
        out = ws / data.draw(st.sampled_from(["run", "new-run"]))
        refused_without_changes("train: run file", ["train", ws / "bad.toml", "--out", out, "--no-progress"],
                                names, [ws, dataset_dir])
    finally:
        shutil.rmtree(ws)


# ---------------------------------------------------------------- --set overrides

NOISE = st.text(alphabet=string.ascii_letters + string.digits + "._=-:[]{}, ", max_size=30)


@st.composite
def bad_overrides(draw, keys=tuple(INVALID)):
    """(overrides, names): noise overrides (any text), then one that is invalid for sure."""
    noise = draw(st.lists(NOISE, max_size=3))
    names = []
    for text in noise:
        names.append(repr(text))
        head = text.split("=", 1)[0]
        names += [p.strip() for p in head.split(".", 1) if p.strip()]
    kind = draw(st.sampled_from(["value", "value", "value", "malformed", "unknown_key", "unknown_section"]))
    if kind == "value":
        section, key, value, n = draw(bad_value(keys))
        last = f"{section}.{key}={toml_value(value)}"
        names += list(n)
    elif kind == "malformed":
        last = draw(st.sampled_from(["lr=1", "train.lr", "=", "train=1", "", ".=", "=train.lr", "train.=1", ".lr=1"]))
        names += [repr(last)]
    elif kind == "unknown_key":
        key = draw(KEY.filter(lambda k: k not in {f for s in BASE_RUN for f in _fields(s)}))
        last = f"{draw(st.sampled_from(['data', 'model', 'train']))}.{key}={draw(st.integers())}"
        names.append(key)
    else:
        section = draw(KEY.filter(lambda k: k not in ("data", "model", "train", "design", "recipe", "slurm")))
        last = f"{section}.x=1"
        names.append(section)
    return noise + [last], names


@campaign(60)
@given(data=st.data())
def test_train_refuses_bad_overrides(data, dataset_dir):
    ws = workspace()
    try:
        (ws / "ok.toml").write_text(toml_text(BASE_RUN))
        overrides, names = data.draw(bad_overrides())
        argv = ["train", ws / "ok.toml", "--out", ws / "run", "--no-progress"]
        for text in overrides:
            argv.append(f"--set={text}")
        refused_without_changes("train: --set", argv, names, [ws, dataset_dir])
    finally:
        shutil.rmtree(ws)


@campaign(25)
@given(data=st.data())
def test_sweep_plan_refuses_bad_overrides(data, dataset_dir):
    """`scaling sweep plan FILE --set ...`: the [data]/[model]/[train] keys a sweep shares with a run file."""
    ws = workspace()
    try:
        shutil.copy(SMOKE_SWEEP, ws / "sweep.toml")
        overrides, names = data.draw(bad_overrides(keys=tuple(sorted(CONFIG_ONLY - {("train", "steps"), ("model", "heads")}))))
        argv = ["sweep", "plan", ws / "sweep.toml", f"--set=data.corpus={toml_value(BASE_RUN['data']['corpus'])}"]
        argv += [f"--set={text}" for text in overrides]
        refused_without_changes("sweep plan: --set", argv, names, [ws, dataset_dir])
    finally:
        shutil.rmtree(ws)


# ---------------------------------------------------------------- scaling fit: results tables

NUMERIC_JUNK = st.one_of(NONFINITE, st.floats(max_value=0.0), st.just(""), WORD.filter(lambda w: not _is_number(w)))
REQUIRED = ("n_params", "tokens", "final_eval_loss")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@st.composite
def good_row(draw):
    return {"n_params": draw(st.floats(1e4, 1e9)), "tokens": draw(st.floats(1e6, 1e12)),
            "final_eval_loss": draw(st.floats(1.5, 6.0)), "status": "completed"}


@st.composite
def bad_row(draw):
    row = draw(good_row())
    if draw(st.booleans()):
        row["status"] = draw(st.sampled_from(["failed", "diverged", "running", "", "pending"]))
    else:
        for col in draw(st.lists(st.sampled_from(REQUIRED), min_size=1, max_size=3, unique=True)):
            row[col] = draw(NUMERIC_JUNK)
    return row


@st.composite
def bad_table(draw, allow_no_usable_row: bool):
    """(rows, columns, names): at most 4 usable rows (every method needs >= 5), or a required column missing."""
    missing = draw(st.sampled_from([None, None, *REQUIRED]))
    columns = [c for c in ("n_params", "tokens", "final_eval_loss", "status")
               if c != missing and (c != "status" or draw(st.booleans()))]
    n_good = draw(st.integers(0 if allow_no_usable_row or missing else 1, 12 if missing else 4))
    good = [draw(good_row()) for _ in range(n_good)]
    dups = draw(st.integers(0, 3 if missing else 4 - n_good)) if good else 0  # duplicates are usable rows too
    rows = good + [dict(good[0]) for _ in range(dups)] + draw(st.lists(bad_row(), max_size=6))
    rows = draw(st.permutations(rows)) if rows else rows
    if missing:
        return rows, columns, ([repr(missing)] if missing != "final_eval_loss" else ["loss column"])
    usable = sum(1 for r in rows if ("status" not in columns or r["status"] == "completed") and all(
        isinstance(r[c], float) and math.isfinite(r[c]) and r[c] > 0 for c in REQUIRED))
    assume(usable <= 4 and (allow_no_usable_row or usable >= 1))
    return rows, columns, ["need", "no fit possible"]  # the reason the data support no fit


def write_table(rows, columns, path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    if path.suffix == ".parquet":
        df.astype(str).to_parquet(path)  # mixed cells: text, as a spreadsheet export would hold them
    elif path.suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    else:
        df.to_csv(path, index=False)


@campaign(50)
@given(data=st.data())
def test_fit_refuses_unusable_tables(data):
    ws = workspace()
    try:
        rows, columns, names = data.draw(bad_table(allow_no_usable_row=False))
        table = ws / f"results.{data.draw(st.sampled_from(['csv', 'tsv', 'parquet']))}"
        write_table(rows, columns, table)
        method = data.draw(st.sampled_from(["all", "approach1", "approach2", "approach3", "kaplan"]))
        argv = ["fit", table, "--method", method, "--grid", "small", "--backend", "scipy", "--out", ws / "fit.json"]
        if data.draw(st.booleans()):
            argv += ["--budgets", "1e18,1e20"]
        if method == "approach1":
            names = names + ["sweep directory"]
        refused_without_changes("fit: table", argv, names, [ws])
    finally:
        shutil.rmtree(ws)


@pytest.mark.parametrize("cells", ["nan,inf,-1", "abc,1e8,3.0", "1e6,1e8,"])
def test_fit_refuses_tables_without_usable_rows(tmp_path, cells):
    (tmp_path / "t.csv").write_text(f"n_params,tokens,final_eval_loss\n{cells}\n")
    (tmp_path / "fit.json").write_text("{}\n")
    line = refused_without_changes("fit: table (no usable row)", ["fit", tmp_path / "t.csv", "--out",
                                                                  tmp_path / "fit.json"], ["rows"], [tmp_path])
    assert "0 of 1" in line or "no usable" in line


def test_fit_parquet_without_pyarrow_is_one_line(tmp_path):
    """pyarrow import blocked in a real subprocess (a meta-path finder refusing it)."""
    import pandas as pd

    pd.DataFrame({"n_params": [1e6], "tokens": [1e8], "final_eval_loss": [3.0]}).to_parquet(tmp_path / "t.parquet")
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pyarrow', 'fastparquet'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from research.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    before = snapshot(tmp_path)
    p = subprocess.run([sys.executable, "-c", blocker, "fit", str(tmp_path / "t.parquet"), "--no-write"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    CASES["fit: parquet without pyarrow"] += 1
    line = assert_refused(p.returncode, p.stdout, p.stderr, ["pyarrow"])
    assert "parquet" in line and "CSV" in line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- scaling optimal: --law files

JSON_ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                    max_size=4), max_leaves=12)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
ALLOCATION = {"k_N": 0.1, "a": 0.5, "k_D": 1.7, "b": 0.5}


@st.composite
def broken_law(draw):
    """(law dict, names): a valid law block with one parameter missing, of the wrong type, non-finite or out of range."""
    block = dict(draw(st.sampled_from([CHINCHILLA, ALLOCATION])))
    key = draw(st.sampled_from(sorted(block)))
    how = draw(st.sampled_from(["missing", "type", "nonfinite", "range"]))
    if how == "missing" and key in ("E", "alpha", "k_N", "a"):  # these keys mark the law's kind: break, not drop
        how = "type"
    if how == "missing":
        del block[key]
    elif how == "type":
        block[key] = draw(st.one_of(st.text(max_size=5), st.booleans(), st.none(), st.lists(st.floats(), max_size=3),
                                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
    elif how == "nonfinite":
        block[key] = draw(NONFINITE)
    else:
        block[key] = draw(st.floats(max_value=0.0, exclude_max=key == "E", allow_nan=False, allow_infinity=False))
    return block, [repr(key), f" {key} ", "JSON"]


@st.composite
def bad_law_file(draw, ws: Path):
    """(--law argument, names): a file or directory no law can be read from."""
    kind = draw(st.sampled_from(["any_json", "broken", "broken_nested", "not_json", "binary", "missing", "dir"]))
    path = ws / draw(st.sampled_from(["fit.json", "law.json", "mylaw"]))
    extra = []
    if kind == "any_json":
        value = draw(JSON_ANY)
        assume(not (isinstance(value, dict) and any(k in value for k in ("E", "k_N", "approach1", "approach2",
                                                                          "approach3"))))
        path.write_text(json.dumps(value))
    elif kind == "broken":
        block, extra = draw(broken_law())
        path.write_text(json.dumps(block))
    elif kind == "broken_nested":
        block, extra = draw(broken_law())
        approach = "approach3" if "E" in block else draw(st.sampled_from(["approach1", "approach2"]))
        path.write_text(json.dumps({"version": 1, approach: block}))
    elif kind == "not_json":
        path.write_text(draw(st.sampled_from(["{", "[1,", "E = 1.69", "", "{'E': 1}", "nan"])))
        if path.suffix != ".json":
            return str(path), ["unknown law", str(path)]  # not a .json: read as a law name, did-you-mean
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe" + draw(st.binary(max_size=32)))
        if path.suffix != ".json":
            return str(path), ["unknown law", str(path)]
    elif kind == "missing":
        return str(ws / f"missing-{draw(WORD)}.json"), ["does not exist"]
    else:
        d = ws / "sweep-without-fit"
        d.mkdir(exist_ok=True)
        return str(d), ["does not exist"]
    return str(path), [str(path)] + extra


@campaign(70)
@given(data=st.data())
def test_optimal_refuses_bad_law_files(data):
    ws = workspace()
    try:
        (ws / "fit.json").unlink()
        law, names = data.draw(bad_law_file(ws))
        argv = ["optimal", "--flops", data.draw(st.sampled_from(["1e18", "5.76e23", "1e25"])), "--law", law]
        if data.draw(st.booleans()):
            argv += ["--approach", data.draw(st.sampled_from(["approach1", "approach2", "approach3"]))]
            names = names + ["approach"]
        refused_without_changes("optimal: --law", argv, names, [ws])
    finally:
        shutil.rmtree(ws)


# ---------------------------------------------------------------- scaling size

SIZE_OK = {"layers": "2", "d-model": "64", "heads": "4", "vocab": "256", "seq-len": "128"}
SIZE_BAD = {
    "layers": st.one_of(below(1).map(str), WORD.filter(lambda w: not w.lstrip("-").isdigit()), st.just("1.5")),
    "d-model": st.one_of(below(1).map(str), st.integers(2**20 + 1, 2**64).map(str), st.just("6e1")),
    "heads": st.one_of(below(1).map(str), st.sampled_from(["3", "5", "7", "64", "abc"])),
    "vocab": st.one_of(below(1).map(str), st.just("")),
    "seq-len": st.one_of(below(1).map(str), st.just("0x10")),
    "ffw": st.one_of(below(1).map(str), st.just("1e3")),
    "tokens": st.one_of(st.sampled_from(["nan", "inf", "-inf", "0", "-1e9", "1e400", "lots"])),
    "mlp": not_in({"gelu", "swiglu"}),
}


@campaign(60)
@given(data=st.data())
def test_size_refuses_bad_arguments(data):
    flag = data.draw(st.sampled_from(sorted(SIZE_BAD)))
    args = dict(SIZE_OK)
    if data.draw(st.booleans()) and flag not in SIZE_OK:
        del args[data.draw(st.sampled_from(sorted(SIZE_OK)))]  # also a required flag missing
    args[flag] = data.draw(SIZE_BAD[flag])
    argv = ["size"] + [f"--{k}={v}" for k, v in args.items()]
    key = flag.replace("-", "_")
    names = [f"--{flag}", key, "required", "heads", "head dimension"]
    rc, out, err = run_cli(argv)
    CASES["size: arguments"] += 1
    assert_refused(rc, out, err, names)


# ---------------------------------------------------------------- scaling data: missing paths, empty globs


@campaign(15)
@given(name=WORD.filter(lambda w: w not in ("shakespeare", "synthetic", "python-stdlib", "stdlib")
                        and not w.startswith("synthetic:")),
       form=st.sampled_from(["missing/{}.txt", "{}*.jsonl", "empty-dir", "missing-dir/{}/"]),
       command=st.sampled_from(["prepare", "info"]))
def test_data_refuses_missing_corpus_paths(name, form, command):
    ws = workspace()
    try:
        (ws / "empty-dir").mkdir()
        corpus = str(ws / form.format(name))
        argv = ["data", command, corpus, "--tokenizer", "bytes", "--data-dir", ws / "cache"]
        refused_without_changes("data: corpus path", argv, ["corpus", corpus], [ws])
    finally:
        shutil.rmtree(ws)


# ---------------------------------------------------------------- regression tests for each fix


def test_non_utf8_run_file_is_one_line(tmp_path):
    (tmp_path / "r.toml").write_bytes(b"[train]\nlr = 0.1 # caf\xe9\n")
    rc, out, err = run_cli(["train", tmp_path / "r.toml", "--out", tmp_path / "run"])
    assert "UTF-8" in assert_refused(rc, out, err, ["r.toml"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", [".=", "train.=1", ".lr=1", " . = 3"])
def test_set_without_section_or_key(tmp_path, text):
    """'.=' used to say only 'unknown section []'."""
    (tmp_path / "r.toml").write_text(toml_text(BASE_RUN))
    rc, out, err = run_cli(["train", tmp_path / "r.toml", f"--set={text}"])
    assert "expected section.key=value" in assert_refused(rc, out, err, [repr(text)])


def test_set_into_a_section_that_is_a_value(tmp_path):
    (tmp_path / "r.toml").write_text('data = "shakespeare"\n')
    rc, out, err = run_cli(["train", tmp_path / "r.toml", "--set", "data.corpus=x"])
    assert "not a [data] table" in assert_refused(rc, out, err, ["data"])


@pytest.mark.parametrize("section,key,value,expected", [
    ("model", "rope_theta", "nan", "finite"),
    ("model", "init_std", "-1.0", "init_std"),
    ("train", "beta1", "5", "beta1"),
    ("train", "eps", "-1", "eps"),
    ("train", "grad_clip", "-inf", "finite"),
    ("train", "weight_decay", "nan", "finite"),
    ("train", "warmup_steps", "-5", "warmup_steps"),
    ("train", "seed", "-1", "seed"),
    ("data", "seed", "-1", "seed"),
    ("data", "val_fraction", "1.5", "val_fraction"),
    ("train", "mesh_fsdp", "0", "mesh_fsdp"),
    ("train", "mesh_data", "0", "mesh_data"),
    ("train", "prefetch", "-3", "prefetch"),
    ("model", "ffw", "0", "ffw"),
    ("train", "dense_eval_tokens", "0", "dense_eval_tokens"),
    ("train", "dense_eval_tokens", "65", "prefix of the eval set"),  # more than eval_tokens (64)
    ("model", "d_model", "1000000000001", "d_model"),
    ("train", "steps", "100000000000000", "int32"),
    ("train", "tokens", "1" + "0" * 400, "int32"),  # was an OverflowError in the float ceil of tokens/step
    ("train", "lr", "1" + "0" * 400, "too large"),
])
def test_run_config_refuses(section, key, value, expected):
    """Each of these was accepted (and trained, diverged or crashed with a traceback) before."""
    from research.config import apply_overrides, run_config_from_dict
    from research.errors import UserError

    raw = json.loads(json.dumps(BASE_RUN))
    if key == "tokens":
        del raw["train"]["steps"]  # one horizon only
    with pytest.raises(UserError, match=expected):
        run_config_from_dict(apply_overrides(raw, [f"{section}.{key}={value}"]))


@pytest.mark.parametrize("override,expected", [
    ("train.batch_size=1000000000000", "GiB"),  # used to be a MemoryError traceback
    ("model.layers=100000000", "GiB"),  # used to exhaust host memory
    ("model.vocab_size=100000000000", "GiB"),
    ("train.mesh_data=1000", "mesh_data"),  # used to leave a config.json behind
    ("model.seq_len=100000", "seq_len"),
    ("data.corpus='/nonexistent/x.txt'", "corpus"),
])
def test_train_refuses_before_touching_the_run_directory(dataset_dir, override, expected):
    ws = workspace()
    try:
        (ws / "ok.toml").write_text(toml_text(BASE_RUN))
        before = snapshot(ws)
        for out in (ws / "run", ws / "fresh"):
            rc, stdout, err = run_cli(["train", ws / "ok.toml", "--out", out, "--set", override, "--no-progress"])
            assert_refused(rc, stdout, err, [expected])
        assert snapshot(ws) == before  # the existing run untouched (.lock included), no fresh/ created
    finally:
        shutil.rmtree(ws)


def test_memory_check_is_a_lower_bound_that_admits_the_base_run():
    from research.config import run_config_from_dict
    from research.errors import UserError
    from research.model.accounting import count_model
    from research.train.step import check_memory, device_memory_bytes, make_mesh

    config = run_config_from_dict(apply_vocab(BASE_RUN))
    mesh = make_mesh(config)
    check_memory(config, count_model(config.model).n_params, mesh)  # 11k parameters fit anywhere
    limit = device_memory_bytes(mesh.devices.flat[0])
    n_too_many = limit // 16 + 1  # 16 bytes per parameter alone exceed the device
    with pytest.raises(UserError, match="GiB"):
        check_memory(config, n_too_many, mesh)


def apply_vocab(raw: dict) -> dict:
    out = json.loads(json.dumps(raw))
    out["model"]["vocab_size"] = 256
    return out


@pytest.mark.parametrize("content,expected", [
    ("[1, 2]", "JSON list"),
    ('"text"', "JSON str"),
    ('{"E": "a", "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}', "E = 'a'"),
    ('{"E": 1, "A": -1, "B": 1, "alpha": 0.3, "beta": 0.3}', "A = -1"),  # was a complex-number TypeError
    ('{"E": 1, "A": 1, "B": 1, "alpha": 0, "beta": 0}', "alpha = 0"),  # was ZeroDivisionError
    ('{"E": 1, "A": 1, "alpha": 0.3, "beta": 0.3}', "no 'B'"),  # was KeyError
    ('{"E": NaN, "A": 1, "B": 1, "alpha": 0.3, "beta": 0.3}', "E = nan"),  # was accepted
    ('{"k_N": 1, "a": 0.5}', "no 'k_D'"),
    ('{"approach3": [1]}', "approach3 holds a JSON array, not an object"),  # the typed fit record names the block
])
def test_law_files_refused(tmp_path, content, expected):
    (tmp_path / "fit.json").write_text(content)
    rc, out, err = run_cli(["optimal", "--flops", "1e20", "--law", tmp_path / "fit.json"])
    assert expected in assert_refused(rc, out, err, ["fit.json"])


def test_law_file_not_utf8(tmp_path):
    (tmp_path / "fit.json").write_bytes(b"\xff\xfe{}")
    rc, out, err = run_cli(["optimal", "--flops", "1e20", "--law", tmp_path / "fit.json"])
    assert "not valid JSON" in assert_refused(rc, out, err, ["fit.json"])


def test_optimum_that_overflows_is_refused():
    from research.errors import UserError
    from research.fit.laws import ChinchillaLaw, optimum

    law = ChinchillaLaw(E=1.0, A=1e300, B=1e-300, alpha=0.5, beta=0.5)  # G = (A/B)^1 overflows
    with pytest.raises(UserError, match="no finite optimum"):
        optimum(law, 1e20)


def test_torn_parquet_is_one_line(tmp_path):
    (tmp_path / "t.parquet").write_bytes(b"PAR1 torn")
    rc, out, err = run_cli(["fit", tmp_path / "t.parquet", "--no-write"])
    assert "parquet" in assert_refused(rc, out, err, ["t.parquet"])


def test_fit_with_nothing_fittable_exits_2_and_keeps_fit_json(tmp_path):
    """A one-row table used to exit 0 and, for a sweep directory, replace fit.json's results with 'skipped'."""
    (tmp_path / "results.csv").write_text("n_params,tokens,final_eval_loss\n1e6,1e8,3.0\n")
    (tmp_path / "sweep.json").write_text('{"name": "s"}')
    (tmp_path / "fit.json").write_text('{"approach3": {"E": 1.7}}\n')
    before = snapshot(tmp_path)
    rc, out, err = run_cli(["fit", tmp_path])
    assert "no fit possible" in assert_refused(rc, out, err, ["Approach 3 needs"])
    assert snapshot(tmp_path) == before


def test_fit_out_must_be_a_file_path_not_a_directory_or_under_a_file(tmp_path):
    (tmp_path / "t.csv").write_text("n_params,tokens,final_eval_loss\n1e6,1e8,3.0\n")
    for out in (tmp_path, tmp_path / "t.csv" / "fit.json"):
        rc, stdout, err = run_cli(["fit", tmp_path / "t.csv", "--out", out])
        assert_refused(rc, stdout, err, ["--out"])


@pytest.mark.parametrize("tokens", ["nan", "inf", "0", "-5"])
def test_size_tokens_must_be_positive_and_finite(tokens):
    rc, out, err = run_cli(["size", "--layers=1", "--d-model=64", "--heads=4", "--vocab=10", "--seq-len=8",
                            f"--tokens={tokens}"])
    assert_refused(rc, out, err, ["--tokens"])


def test_size_heads_message_lists_real_divisors():
    rc, out, err = run_cli(["size", "--layers=1", "--d-model=65", "--heads=4", "--vocab=10", "--seq-len=8"])
    line = assert_refused(rc, out, err, ["heads"])
    assert "[]" not in line and "5" in line


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    rc, out, err = run_cli(["data", "prepare", "synthetic:tokens=2000", "--tokenizer", "bytes",
                            "--data-dir", tmp_path / "file"])
    assert_refused(rc, out, err, ["data-dir", "file"])


def test_user_error_with_a_line_break_prints_one_line(tmp_path):
    missing = tmp_path / "two\nlines.toml"
    rc, out, err = run_cli(["train", missing])
    assert_refused(rc, out, err, ["lines.toml"])
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- end to end: real processes


END_TO_END = {  # case -> (argv, what the error line must name)
    "train-nan": (["train", "ok.toml", "--set", "train.lr=nan", "--out", "run"], "lr"),
    "train-binary": (["train", "bin.toml"], "UTF-8"),
    "optimal-list": (["optimal", "--flops", "1e20", "--law", "law.json"], "law.json"),
    "fit-one-row": (["fit", "t.csv"], "no fit possible"),
    "size-heads": (["size", "--layers", "1", "--d-model", "64", "--heads", "3", "--vocab", "10", "--seq-len", "8"],
                   "heads"),
}


@pytest.mark.parametrize("case", sorted(END_TO_END))
def test_no_traceback_end_to_end(tmp_path, case):
    argv, expected = END_TO_END[case]
    (tmp_path / "ok.toml").write_text(toml_text(BASE_RUN))
    (tmp_path / "bin.toml").write_bytes(b"\x00\xff\xfe[train]")
    (tmp_path / "law.json").write_text("[1, 2, 3]")
    (tmp_path / "t.csv").write_text("n_params,tokens,final_eval_loss\n1e6,1e8,3.0\n")
    before = snapshot(tmp_path)
    p = subprocess.run(SCALING + argv, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    CASES["end to end (subprocess)"] += 1
    assert_refused(p.returncode, p.stdout, p.stderr, [expected])
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- issue 23: the operating system's refusals

FIT_TABLE = REPO / "tests" / "data" / "sweep_small" / "results.csv"


@st.composite
def hostile_path(draw, ws: Path, kind_of_file: str):
    """(path, names): a path the OS refuses or that is not a regular file: under a file, a
    directory, or a link to a device that never ends (/dev/zero) or is always full (/dev/full)."""
    how = draw(st.sampled_from(["under_a_file", "directory", "dev_zero", "dev_full", "fifo"]))
    name = draw(st.sampled_from(["o.json", "law.json", "x"]))
    if how == "under_a_file":
        (ws / "plain").write_text("not a directory\n")
        return ws / "plain" / name, ["plain", "not a directory", "Not a directory"]
    if how == "directory":
        (ws / "adir").mkdir(exist_ok=True)
        return ws / "adir", ["adir"]
    if how == "fifo":
        path = ws / f"pipe-{name}"
        os.mkfifo(path)
        return path, [str(path), "not a regular file"]
    path = ws / f"{how}-{name}"
    path.symlink_to("/dev/zero" if how == "dev_zero" else "/dev/full")
    return path, [str(path), "not a regular file"]


@campaign(40)
@given(data=st.data())
def test_paths_that_are_not_regular_files_are_refused_in_one_line(data):
    """--out, --law and run files that are devices, FIFOs, directories or under a file: exit 2, one
    line, never read as data (a link to /dev/zero used to be read until memory ran out)."""
    ws = workspace()
    try:
        path, names = data.draw(hostile_path(ws, "any"))
        entry = data.draw(st.sampled_from(["fit --out", "optimal --law", "predict --law", "train config"]))
        argv = {"fit --out": ["fit", FIT_TABLE, "--method", "approach2", "--out", path],
                "optimal --law": ["optimal", "--flops", "1e21", "--law", path],
                "predict --law": ["predict", "--law", path, "--n-params", "1e9", "--tokens", "2e10"],
                "train config": ["train", path, "--out", ws / "newrun"]}[entry]
        names = names + ["does not exist", "is a directory", "not found", "unknown law"]
        refused_without_changes(f"os: {entry}", argv, names, [ws])
    finally:
        shutil.rmtree(ws)


def test_json_to_a_full_device_is_one_line():
    with open("/dev/full", "w") as full:
        out = subprocess.run(SCALING + ["optimal", "--flops", "1e21", "--json"], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left" in lines[0] and "standard output" in lines[0], lines


def test_os_error_lines_name_the_path_and_operation(tmp_path):
    from research.errors import os_error_line
    from research.fsutil import atomic_write_text

    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path / "f" / "out.json", "{}")
    line = os_error_line(err.value)
    assert str(tmp_path / "f") in line and "creating the directory" in line and "\n" not in line, line
    with pytest.raises(OSError) as err:
        atomic_write_text(tmp_path, "{}")  # a directory where a file goes
    assert str(tmp_path) in os_error_line(err.value)


# ---------------------------------------------------------------- issue 23: fit.json's typed read paths

REF_FIT = REPO / "results" / "reference" / "study-cpu2" / "fit.json"  # every block: noise trend, profile, holdout
HOSTILE_JSON = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([-1e308, 1e308, 1e-320, 0.5, -0.0]),
    st.text(max_size=4), st.just("x" * 5000), st.lists(st.none() | st.floats() | st.text(max_size=2), max_size=3),
    st.dictionaries(st.sampled_from(["skipped", "a", "low", "E"]), st.integers() | st.text(max_size=2), max_size=2))


def _json_paths(obj, pre=()):
    """Every key path into `obj` (lists: their first 3 entries)."""
    yield pre
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:3]) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _json_paths(v, pre + (k,))


@functools.cache
def _ref_fit() -> tuple[dict, list]:
    fit = json.loads(REF_FIT.read_text())
    paths = [p for p in _json_paths(fit) if p and p[0] in ("approach1", "approach2", "approach3", "kaplan",
                                                           "noise", "extrapolation", "agreement", "data")]
    return fit, paths


def _put(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _fit_with(changes: dict) -> dict:
    """The reference fit.json with each key path (dotted; [i] for a list entry) set to its value."""
    fit = json.loads(REF_FIT.read_text())
    for dotted, value in changes.items():
        path = [int(k) if k.isdigit() else k for k in dotted.replace("[", ".").replace("]", "").split(".")]
        _put(fit, path, value)
    return fit


@campaign(80)
@given(data=st.data())
def test_hostile_values_anywhere_in_a_fit_json_never_traceback(data):
    """Any value at any key path of a real fit.json: predict and optimal answer (exit 0) or refuse in one
    line naming the file (exit 2); never a traceback, never a change to the file."""
    fit, paths = _ref_fit()
    fit = json.loads(json.dumps(fit))
    path = data.draw(st.sampled_from(paths))
    _put(fit, path, data.draw(HOSTILE_JSON))
    ws = Path(tempfile.mkdtemp(prefix="bad-fit-"))
    try:
        law = ws / "fit.json"
        law.write_text(json.dumps(fit))
        argv = data.draw(st.sampled_from([
            ["predict", "--law", law, "--n-params", "1e6", "--tokens", "2e8"],
            ["predict", "--law", law, "--approach", "kaplan", "--n-params", "1e6", "--tokens", "2e8", "--json"],
            ["optimal", "--law", law, "--flops", "1e15"],
            ["optimal", "--law", law, "--approach", data.draw(st.sampled_from(["approach1", "approach2"])),
             "--flops", "1e15", "--json"]]))
        before = snapshot(ws)
        rc, out, err = run_cli(argv)
        CASES[f"fit.json: {argv[0]}"] += 1
        if rc != 0:
            assert_refused(rc, out, err, [str(law)])
        assert "Traceback" not in err and snapshot(ws) == before
    finally:
        shutil.rmtree(ws)


NESTED_FIT_DAMAGE = {  # found by fuzzing the typed read paths: each was a traceback before
    "interval-end-a-string": ({"approach2.bootstrap.intervals.a[0]": "nan"}, "optimal",
                              "'approach2.bootstrap.intervals.a[0]' holds a JSON string, not a number"),
    "interval-end-a-list": ({"approach2.bootstrap.intervals.a[0]": [None, None]}, "optimal",
                            "'approach2.bootstrap.intervals.a[0]' holds a JSON array"),
    "interval-reversed": ({"approach3.bootstrap.intervals.a": [0.7, 0.4]}, "optimal",
                          "'approach3.bootstrap.intervals.a' is [0.7, 0.4], not [low, high]"),
    "interval-one-end": ({"approach3.bootstrap.intervals.a": [0.4]}, "optimal", "not [low, high]"),
    "bootstrap-level": ({"approach3.bootstrap.level": 95}, "predict", "'approach3.bootstrap.level' is 95"),
    "samples-lengths": ({"approach3.bootstrap.samples.E": [1.6, 1.7]}, "predict", "different lengths"),
    "noise-trend-range": ({"kaplan.L_ND.noise.by_tokens_per_param.range": {}}, "predict-kaplan",
                          "by_tokens_per_param"),
    "noise-trend-c1": ({"approach3.noise.by_tokens_per_param.c1": {}}, "predict", "by_tokens_per_param"),
    "noise-trend-c0": ({"approach3.noise.by_tokens_per_param.c0": None}, "predict", "by_tokens_per_param"),
    "noise-replicates": ({"approach3.noise.replicates": "many"}, "predict", "noise replicates"),
    "data-range-negative": ({"approach3.data_range.tokens": [288768.0, -1]}, "optimal", "data_range tokens"),
    "data-range-flops": ({"approach3.data_range.flops": [1e12, 1e11]}, "optimal", "data_range flops"),
    "profile-ragged": ({"approach3.profile.alpha_beta.objective[0]": [1.0]}, "predict",
                       "'approach3.profile.alpha_beta' is not a grid"),
    "profile-E-lengths": ({"approach3.profile.E.a": [0.5]}, "optimal", "'approach3.profile.E' holds lists"),
    "profile-range": ({"approach3.profile.a_range.high": 0.1}, "optimal", "'approach3.profile.a_range' is not a range"),
}
COMMANDS = {"predict": ["predict", "--n-params", "1e6", "--tokens", "2e8"],
            "predict-kaplan": ["predict", "--approach", "kaplan", "--n-params", "1e6", "--tokens", "2e8"],
            "optimal": ["optimal", "--flops", "1e15"]}


@pytest.mark.parametrize("case", sorted(NESTED_FIT_DAMAGE))
def test_nested_fit_json_damage_is_one_line(tmp_path, case):
    changes, command, expected = NESTED_FIT_DAMAGE[case]
    law = tmp_path / "fit.json"
    law.write_text(json.dumps(_fit_with(changes)))
    line = refused_without_changes("fit.json: nested damage", COMMANDS[command] + ["--law", law], [expected],
                                   [tmp_path])
    assert str(law) in line and "re-run `scaling fit`" in line, line


def test_a_huge_exponent_is_a_limit_not_an_overflow(tmp_path):
    """alpha = 1e308: N**alpha is infinite, A/N**alpha is 0 (predict answers E + B/D**beta); optimal has no
    finite optimum and says so (both raised OverflowError)."""
    fit = _fit_with({"approach3.alpha": 1e308})
    law = tmp_path / "fit.json"
    law.write_text(json.dumps(fit))
    rc, out, err = run_cli(["predict", "--law", law, "--n-params", "1e6", "--tokens", "2e8", "--json"])
    assert rc == 0, err
    a3 = fit["approach3"]
    assert json.loads(out)["rows"][0]["loss"] == pytest.approx(a3["E"] + a3["B"] / 2e8 ** a3["beta"])
    refused_without_changes("fit.json: nested damage", ["optimal", "--law", law, "--flops", "1e15"],
                            ["no finite optimum"], [tmp_path])


def test_plot_refuses_a_damaged_profile_before_any_figure(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(REF_FIT.parent / "results.csv", sweep / "results.csv")
    (sweep / "fit.json").write_text(json.dumps(_fit_with({"approach3.profile.alpha_beta.beta": [1.0]})))
    refused_without_changes("plot: fit.json", ["plot", sweep, "--format", "png"],
                            ["'approach3.profile.alpha_beta' is not a grid"], [tmp_path])
    assert not (sweep / "plots").exists()


def test_an_unreadable_profile_threshold_draws_no_contour():
    from research.records import ARange

    assert ARange(threshold="objective <= f_min * exp(...) = f_min * 1.039 (Laplace)").factor() == 1.039
    for text in ("f_min * abc", "f_min * ", "f_min * -2", "f_min * nan", None, "no factor"):
        assert ARange(threshold=text).factor() is None, text


def test_fit_one_method_keeps_a_damaged_other_approach_and_says_how_to_rewrite_it(tmp_path):
    """fit --method approach2 on a sweep whose fit.json holds a damaged approach3: the fit is written,
    approach3 kept byte for byte and left out of agreement, one warning names it and the --method that
    rewrites it (it used to fit, then exit 2 advising a re-run that failed the same way)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(REPO / "tests" / "data" / "sweep_small", sweep)
    damaged = {"E": 1.7, "A": 400, "B": 410, "alpha": 0.34, "beta": 0.28, "a": {"x": 1}}
    (sweep / "fit.json").write_text(json.dumps({"approach3": damaged}))
    rc, out, err = run_cli(["fit", sweep, "--method", "approach2", "--bootstrap", "0"])
    assert rc == 0 and "Traceback" not in err, err
    warned = [line for line in err.splitlines() if "approach3.a" in line]
    assert len(warned) == 1 and "--method approach3" in warned[0] and "kept as it was" in warned[0], err
    written = json.loads((sweep / "fit.json").read_text())
    assert written["approach3"] == damaged and "approach2" in written
    assert "approach3" not in written["agreement"].get("approaches", {})


# ---------------------------------------------------------------- issue 23: lr rules' model block, curve tables

def _rule_sweep(tmp_path, change) -> Path:
    rule = json.loads((REPO / "sweeps" / "lr-rule-cpu-1layer.json").read_text())
    change(rule)
    (tmp_path / "lr-rule-cpu-1layer.json").write_text(json.dumps(rule))
    shutil.copy(REPO / "sweeps" / "demo.toml", tmp_path / "demo.toml")
    return tmp_path / "demo.toml"


def test_a_huge_value_in_a_rules_model_block_keeps_the_line_short_and_its_fix(tmp_path):
    sweep = _rule_sweep(tmp_path, lambda r: r["model"].update(families="x" * 200_000))
    line = refused_without_changes("sweep plan: lr rule", ["sweep", "plan", sweep], ["model.families"], [tmp_path])
    assert len(line) < 400 and line.endswith("refit the rule"), line[:500]


def test_a_huge_value_in_a_rules_conditions_is_a_short_warning(tmp_path):
    sweep = _rule_sweep(tmp_path, lambda r: r["conditions"].update(seq_len="x" * 200_000, tokenizer=list(range(10**4))))
    rc, out, err = run_cli(["sweep", "plan", sweep])
    assert rc == 0, err
    warned = [line for line in (out + err).splitlines() if "seq_len" in line or "tokenizer =" in line]
    assert len(warned) == 2 and all(len(line) < 1000 for line in warned), [len(w) for w in warned]
    assert any("(10000 values)" in line for line in warned)


@st.composite
def hostile_rule_model(draw):
    """A rule's `model` block with a hostile value: wrong types, NaN, signs, nesting, unknown keys."""
    value = draw(st.one_of(HOSTILE_JSON, st.sampled_from([float("nan"), float("inf"), [[[[]]]], {"1 layer": [0]},
                                                          {"1 layer": [float("nan")]}, {"1 layer": "x"}, ["1 layer"]])))
    key = draw(st.sampled_from(["families", "head_dim", "mlp", "ffw_ratio", "tie_embeddings", "init_std", "norm"]))
    return key, value


@campaign(25)
@given(data=st.data())
def test_hostile_rule_model_blocks_plan_or_refuse_in_one_line(data):
    key, value = data.draw(hostile_rule_model())
    ws = Path(tempfile.mkdtemp(prefix="bad-rule-"))
    try:
        sweep = _rule_sweep(ws, lambda r: r["model"].update({key: value}))
        before = snapshot(ws)
        rc, out, err = run_cli(["sweep", "plan", sweep])
        CASES["sweep plan: lr rule model"] += 1
        if rc != 0:
            assert_refused(rc, out, err, ["model"])
        assert "Traceback" not in err and snapshot(ws) == before
    finally:
        shutil.rmtree(ws)


@pytest.mark.parametrize("cell,column,expected", [
    ("", "run", "run is empty"), ("nan", "run", "run is empty"),
    ("1e12", "step", "at most 10,000,000"), ("2e7", "step", "at most 10,000,000"),
    ("-1", "lr", "lr = -1.0 is negative"), ("1.5", "step", "step = 1.5 is not a step number")])
def test_curve_tables_with_a_hostile_cell_are_one_line(tmp_path, cell, column, expected):
    rows = [{"run": "a", "step": s, "lr": 1e-3, "loss": 3 + 1 / s} for s in range(1, 41)]
    rows[17][column] = cell
    table = tmp_path / "t.csv"
    table.write_text("run,step,lr,loss\n" + "".join(f"{r['run']},{r['step']},{r['lr']},{r['loss']}\n" for r in rows))
    line = refused_without_changes("curves fit: table", ["curves", "fit", table, "--out", tmp_path / "law.json",
                                                         "--bootstrap", "0"], [expected], [tmp_path])
    assert "t.csv row 19" in line, line


def test_a_noise_block_without_its_description_still_describes_the_interval(tmp_path):
    fit = json.loads((REPO / "results" / "reference" / "isoflop-demo-cpu2" / "fit.json").read_text())
    del fit["kaplan"]["L_ND"]["noise"]["description"]  # was a KeyError traceback
    law = tmp_path / "fit.json"
    law.write_text(json.dumps(fit))
    rc, out, err = run_cli(["predict", "--law", law, "--approach", "kaplan", "--n-params", "1e5", "--tokens", "1e7"])
    assert rc == 0, err
    assert "interval from run-to-run noise only (residuals noise, sigma of ln L 0.0157)" in out, out


@pytest.mark.parametrize("convention", ["nope", 5, None, ["6n"]])
def test_a_sweep_record_with_an_unknown_flop_convention_is_refused_not_read_as_6n(tmp_path, convention):
    """sweep.json's flops_convention picks the FLOP column fitted: an unknown one used to be read as 6n
    silently (a chinchilla sweep would be fitted in the wrong convention)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(REPO / "tests" / "data" / "sweep_small" / "results.csv", sweep / "results.csv")
    (sweep / "sweep.json").write_text(json.dumps({"design": "isoflop", "flops_convention": convention}))
    line = refused_without_changes("fit: sweep.json", ["fit", sweep, "--method", "approach2", "--bootstrap", "0"],
                                   ["flops_convention"], [tmp_path])
    assert str(sweep / "sweep.json") in line and "6n, chinchilla" in line, line


@pytest.mark.parametrize("content", ["[1, 2]", '"6n"', "{torn", "null"])
def test_a_sweep_record_that_is_not_an_object_is_refused_not_read_as_6n(tmp_path, content):
    """sweep.json there but not a JSON object: its FLOP convention is unknown, so the fit stops in one line
    instead of fitting the table as 6n (what a missing sweep.json means)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copy(REPO / "tests" / "data" / "sweep_small" / "results.csv", sweep / "results.csv")
    (sweep / "sweep.json").write_text(content)
    line = refused_without_changes("fit: sweep.json", ["fit", sweep, "--method", "approach2", "--bootstrap", "0"],
                                   ["not a JSON object"], [tmp_path])
    assert str(sweep / "sweep.json") in line and "read as 6n" in line, line


def test_the_sweep_fit_summary_prints_nulls_as_not_available(capsys):
    """A NaN the fit wrote as null (a, a held-out error, a level) is "n/a" in `sweep run`'s summary,
    not a format traceback after every trial has finished."""
    from research.sweep.cli import _print_fit_summary

    fit = _fit_with({"approach2.a": None, "extrapolation.approach3.summary.mean_abs_rel_error": None,
                     "extrapolation.approach3.summary.level": None})
    _print_fit_summary(fit)
    err = capsys.readouterr().err
    assert "approach2: N_opt ~ C^n/a [95%" in err and "mean |error| n/a" in err and "their n/a intervals" in err, err


@pytest.mark.parametrize("column,cell,expected", [
    ("steps", "abc", "steps = 'abc', not a positive whole number"), ("steps", "0", "steps = 0, not a positive"),
    ("flops_6n", "abc", "flops_6n = 'abc', not a positive number"), ("n_params", "nan", "n_params = nan, not"),
    ("branch_step", "-3", "branch_step = -3, not a whole step in [0, steps]"),
    ("branch_step", "1e9", "branch_step = 1000000000.0, not a whole step"), ("trial", None, "no 'trial' column")])
def test_trunks_only_refuses_a_damaged_results_table_in_one_line(tmp_path, column, cell, expected):
    """results.csv's branch rows are read as numbers: text in steps or flops_6n was a ValueError traceback."""
    import pandas as pd

    from tests.test_curves import write_branch_sweep

    sweep = tmp_path / "sweep"
    raw = write_branch_sweep(sweep, {"trunkA": 0.01, "trunkB": -0.01}, steps=200, horizons=(100, 200))
    raw["steps"] = raw["tokens"] // 2048
    raw["flops_6n"] = 6 * 1000 * raw["tokens"]
    raw = raw.astype({c: object for c in raw.columns})
    if cell is None:
        raw = raw.drop(columns=[column])
    else:
        raw.loc[1, column] = cell
    raw.to_csv(sweep / "results.csv", index=False)
    line = refused_without_changes("curves trunks-only: results.csv", ["curves", "trunks-only", sweep, "--out",
                                                                      tmp_path / "t.csv"], [expected], [tmp_path])
    assert str(sweep / "results.csv") in line and "scaling sweep run" in line, line


def test_a_held_out_point_outside_its_interval_draws_no_negative_bar(tmp_path):
    """A bootstrap interval need not hold the point fit; the figure drew yerr < 0 (matplotlib's ValueError)."""
    from research.plots.extrapolation import extrapolation_figure

    block = json.loads((REPO / "results" / "reference" / "isoflop-demo-cpu2" / "fit.json").read_text())["extrapolation"]
    point = block["kaplan"]["points"][1]
    point["loss_low"], point["loss_high"] = point["predicted"] - 0.2, point["predicted"] - 0.1
    block["approach3"]["points"][0]["flops"] = None
    block["approach3"]["summary"]["mean_abs_rel_error"] = None
    extrapolation_figure(block).savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 10_000


@pytest.mark.parametrize("changes,expected", [
    ({"sensitivity.E_profile.a": {}}, "'sensitivity.E_profile' is not E's profile"),
    ({"sensitivity.E_profile.a": [0.5]}, "'sensitivity.E_profile' is not E's profile"),
    ({"sensitivity.E_profile.threshold": "2%"}, "'sensitivity.E_profile' is not E's profile"),
    ({"extrapolation.approach3.points[1].loss_low": 9.0}, "'extrapolation.approach3.points[1]' is not a prediction"),
    ({"extrapolation.approach3.points[0].measured": -1}, "'extrapolation.approach3.points[0]' is not a prediction"),
    ({"extrapolation.kaplan.points[1].predicted": math.inf}, "'extrapolation.kaplan.points[1]' is not a prediction")])
def test_damaged_sensitivity_and_held_out_blocks_are_one_line(tmp_path, changes, expected):
    """The plot's sensitivity and held-out figures read these (KeyError, negative error bars); refused on read."""
    law = tmp_path / "fit.json"
    law.write_text(json.dumps(_fit_with(changes)))
    refused_without_changes("fit.json: nested damage", COMMANDS["optimal"] + ["--law", law], [expected], [tmp_path])


def test_offsets_leave_a_text_loss_unusable_instead_of_a_traceback(tmp_path):
    """A results.csv cell that is not a number (final_eval_loss, n_params) was a ValueError traceback in
    `curves offsets` and `fit --trunk-offsets`; it is NaN in the corrected table, as `scaling fit` drops it."""
    import pandas as pd

    from tests.test_curves import write_branch_sweep

    sweep = tmp_path / "sweep"
    raw = write_branch_sweep(sweep, {"trunkA": 0.01, "trunkB": -0.01}, steps=200, horizons=(100, 200))
    raw = raw.astype({"final_eval_loss": object, "n_params": object})
    raw.loc[1, "final_eval_loss"] = "lost"
    raw.loc[2, "n_params"] = "big"
    raw.to_csv(sweep / "results.csv", index=False)
    rc, out, err = run_cli(["curves", "offsets", sweep, "--out", tmp_path / "c.csv"])
    assert rc == 0 and "Traceback" not in err, err
    corrected = pd.read_csv(tmp_path / "c.csv")
    assert np.isnan(corrected.final_eval_loss[1]) and corrected.final_eval_loss_raw[1] == "lost"
    assert np.isfinite(corrected.final_eval_loss.drop(index=1)).all()
    assert np.isfinite(corrected.trunk_offset).all()  # trunkB's size read from its other row: every row corrected


def test_plot_draws_no_curve_for_a_law_without_finite_numbers(tmp_path):
    """approach2.a null (a NaN the fit wrote), approach3.b inf and approach3.a absent: the allocation figure
    left those curves out or read a and b from alpha and beta (it raised KeyError/TypeError); exit 0."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    ref = REPO / "results" / "reference" / "isoflop-demo-cpu2"
    for name in ("results.csv", "sweep.json"):
        shutil.copy(ref / name, sweep / name)
    fit = json.loads((ref / "fit.json").read_text())
    fit["approach3"]["b"] = math.inf
    del fit["approach3"]["a"]
    fit["approach2"]["a"] = None
    (sweep / "fit.json").write_text(json.dumps(fit))
    rc, out, err = run_cli(["plot", sweep, "--format", "png"])
    assert rc == 0 and "Traceback" not in err, err
    assert (sweep / "plots" / "optimal_allocation.png").stat().st_size > 10_000
