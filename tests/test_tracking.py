"""Experiment tracking: W&B (offline mode, read back from its .wandb file) and TensorBoard
(read back with the `tensorboard` library) hold what metrics.jsonl and summary.json hold;
a resumed run continues its tracker runs; a failing tracker never stops training; a sweep
logs its fit and figures as its own run; [logging] is a typed, checked config section."""

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from research.config import run_config_from_dict
from research.errors import UserError
from research.fsutil import read_json, read_jsonl
from research.train import train
from tests.conftest import REPO, SCALING

wandb = pytest.importorskip("wandb")
pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from wandb.proto import wandb_internal_pb2  # noqa: E402

TINY = {
    "data": {"corpus": "synthetic:states=16,branch=3,tokens=300000", "tokenizer": "bytes"},
    "model": {"layers": 1, "d_model": 32, "heads": 2, "seq_len": 32},
    "train": {"batch_size": 8, "steps": 20, "lr": 1e-2, "eval_every": 10, "eval_tokens": 2048,
              "log_every": 1, "checkpoint_every": 10},
}
ROW_KEYS = {"loss", "eval_loss", "tokens", "flops_6n", "flops_chinchilla", "lr", "tokens_per_s"}


def tiny(logging: dict):
    return run_config_from_dict(dict(TINY, logging=logging))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B in offline mode writing under tmp_path: no network, no account."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    (tmp_path / "wandb-dir").mkdir()
    yield tmp_path / "wandb-dir"
    wandb.teardown()


# ---------------------------------------------------------------- reading the trackers' files back

def wandb_records(path: Path):
    """The protobuf records of a .wandb file (a LevelDB-style log: 7-byte file header, then
    32 KiB blocks of records with a 7-byte header: crc32, length, type full/first/middle/last)."""
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, "not a W&B datastore file"
    pos, pieces, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            yield record


def read_wandb_run(path: Path) -> dict:
    """run (id, project, group, name, job type), config, history rows and final summary of one offline run."""
    out = {"config": {}, "history": [], "summary": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = r.run
            out.update(id=run.run_id, project=run.project, group=run.run_group, name=run.display_name,
                       job_type=run.job_type)
            out["config"].update({i.key: json.loads(i.value_json) for i in run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return out


def wandb_runs(wandb_dir: Path) -> list[tuple[Path, dict]]:
    wandb.teardown()  # the W&B service writes the .wandb file after finish() returns; wait for it
    files = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    return [(f.parent, read_wandb_run(f)) for f in files]


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"TensorBoard holds step(s) of {tag} twice"
        out[tag] = {e.step: e.value for e in events}
    return out


def assert_rows_match(rows: list[dict], history: list[dict], scalars: dict):
    """Every metrics.jsonl row is in W&B exactly (JSON numbers) and in TensorBoard (as float32)."""
    by_step = {h["step"]: h for h in history if "step" in h}
    assert sorted(by_step) == [r["step"] for r in rows]
    for row in rows:
        logged = by_step[row["step"]]
        for key, value in row.items():
            if value is None:  # no measurement (the first row's tokens_per_s): nothing to log
                assert key not in logged and row["step"] not in scalars.get(key, {}), (row["step"], key)
                continue
            assert logged[key] == value, (row["step"], key)
            if key != "step":
                assert scalars[key][row["step"]] == np.float32(value), (row["step"], key)
    assert ROW_KEYS <= set(scalars)


# ---------------------------------------------------------------- a real run, killed and resumed

def test_wandb_offline_and_tensorboard_hold_every_row_across_a_resume(tmp_path, offline_wandb):
    run_dir = tmp_path / "run"
    config = tiny({"wandb": {"project": "tracking-test", "group": "g1"}, "tensorboard": True})
    first = train(config, run_dir, progress=False)
    assert first["status"] == "completed"
    [(_, run1)] = wandb_runs(offline_wandb)
    rows1 = read_jsonl(run_dir / "metrics.jsonl")
    assert_rows_match(rows1, run1["history"], tensorboard_scalars(run_dir / "tensorboard"))
    record = read_json(run_dir / "config.json")
    assert (run1["project"], run1["group"], run1["name"], run1["job_type"]) == ("tracking-test", "g1", "run", "train")
    assert run1["config"]["identity_hash"] == record["identity_hash"]
    assert run1["config"]["config"]["model"] == record["config"]["model"]
    summary = read_json(run_dir / "summary.json")
    for key in ("final_eval_loss", "final_train_loss", "flops_6n", "flops_chinchilla", "n_params", "tokens", "status"):
        assert run1["summary"][key] == summary[key], key
    assert run1["summary"]["device/backend"] == summary["device"]["backend"]

    # As if killed after step 20's rows but before its checkpoint and summary: resume from step 10.
    shutil.rmtree(run_dir / "checkpoints" / "20")
    (run_dir / "summary.json").unlink()
    second = train(config, run_dir, progress=False)
    assert second["status"] == "completed"
    rows2 = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows2] == list(range(1, 21))
    assert rows2[10]["wall_time_s"] != rows1[10]["wall_time_s"], "step 11 was not trained again"

    [(dir1, again1), (dir2, run2)] = wandb_runs(offline_wandb)
    assert again1 == run1 and run2["id"] == run1["id"], "the resumed run is not the same W&B run"
    assert [h["step"] for h in run2["history"]] == list(range(11, 21))
    # TensorBoard: the first attempt's events past step 10 are purged; what remains is metrics.jsonl.
    assert_rows_match(rows2, run1["history"][:10] + run2["history"], tensorboard_scalars(run_dir / "tensorboard"))


# ---------------------------------------------------------------- failures never stop training

def test_failing_trackers_warn_once_and_training_completes(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tensorboard").write_text("a file where the event directory should go")
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # `import wandb` fails: package missing
    config = tiny({"wandb": {"project": "p"}, "tensorboard": True})
    summary = train(config, run_dir, progress=False)
    assert summary["status"] == "completed"
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 21))
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "tracking is off" in line]
    assert len(warnings) == 2, err
    assert any("W&B" in w and "pip install -e '.[wandb]'" in w for w in warnings)
    assert any("TensorBoard" in w for w in warnings)


def test_tracker_broken_mid_run_warns_once_and_the_others_carry_on(tmp_path, offline_wandb, capfd):
    from research.train.tracking import open_run_tracking

    config = tiny({"wandb": {"project": "p"}, "tensorboard": True})
    tracking = open_run_tracking(config.logging, tmp_path, {"x": 1}, 0)
    rows = [{"step": s, "loss": 3.0 - 0.1 * s, "tokens": 256 * s} for s in range(1, 7)]
    for row in rows[:3]:
        tracking.log_row(row["step"], row)
    tracking.sinks[0].run.finish()  # the W&B run ends under the tracker: every later call fails
    for row in rows[3:]:
        tracking.log_row(row["step"], row)
    tracking.log_summary({"status": "completed"})
    tracking.close()
    warnings = [line for line in capfd.readouterr().err.splitlines() if "tracking is off" in line]
    assert len(warnings) == 1 and "W&B" in warnings[0] and "log_row failed" in warnings[0]
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars["loss"] == {r["step"]: np.float32(r["loss"]) for r in rows}
    [(_, run)] = wandb_runs(offline_wandb)
    assert [h["step"] for h in run["history"]] == [1, 2, 3]


# ---------------------------------------------------------------- sweeps

def test_trial_is_grouped_under_its_sweep(tmp_path, offline_wandb):
    from research.train.tracking import open_run_tracking

    trial_dir = tmp_path / "trials" / "abc123"
    trial_dir.mkdir(parents=True)
    (trial_dir / "trial.json").write_text(json.dumps({"trial": "abc123", "sweep": "demo"}))
    config = tiny({"wandb": {"project": "p"}})
    tracking = open_run_tracking(config.logging, trial_dir, {"x": 1}, 0)
    tracking.log_row(1, {"step": 1, "loss": 2.5})
    tracking.close()
    [(_, run)] = wandb_runs(offline_wandb)
    assert (run["group"], run["name"], run["job_type"]) == ("demo", "abc123", "trial")
    assert [h["loss"] for h in run["history"]] == [2.5]


def test_sweep_logs_results_fit_and_figures_as_its_own_run(tmp_path, offline_wandb):
    from research.train.tracking import log_sweep

    sweep_dir = tmp_path / "demo"
    shutil.copytree(REPO / "results" / "reference" / "isoflop-demo-cpu2", sweep_dir)
    config = tiny({"wandb": {"project": "p"}, "tensorboard": True})
    log_sweep(sweep_dir, config.logging, "demo")

    [(run_path, run)] = wandb_runs(offline_wandb)
    assert (run["group"], run["name"], run["job_type"]) == ("demo", "demo-fit", "sweep")
    fit = read_json(sweep_dir / "fit.json")
    assert run["summary"]["approach1/a"] == fit["approach1"]["a"]
    assert run["config"]["sweep"]["name"] == "demo"
    pngs = sorted(p.stem for p in (sweep_dir / "plots").glob("*.png"))
    logged = {k.split("/")[1] for h in run["history"] for k in h if k.startswith("figures/")}
    assert sorted(logged) == pngs
    assert sorted(p.name.rsplit("_", 2)[0] for p in run_path.glob("files/media/images/figures/*.png")) == pngs
    [table_file] = run_path.glob("files/media/table/results*.table.json")
    table = json.loads(table_file.read_text())
    csv_trials = [line.split(",")[0] for line in (sweep_dir / "results.csv").read_text().splitlines()[1:]]
    trial_col = table["columns"].index("trial")
    assert sorted(r[trial_col] for r in table["data"]) == sorted(csv_trials)

    acc = event_accumulator.EventAccumulator(str(sweep_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert sorted(t.split("/", 1)[1] for t in acc.Tags()["images"]) == pngs
    texts = {t.split("/")[0] for t in acc.Tags()["tensors"]}
    assert {"config", "results", "summary"} <= texts


# ---------------------------------------------------------------- configuration and flags

def test_logging_section_is_typed_and_checked():
    c = tiny({"wandb": {"project": "p", "group": "g", "mode": "offline"}, "tensorboard": True})
    assert (c.logging.wandb.project, c.logging.wandb.group, c.logging.tensorboard) == ("p", "g", True)
    assert run_config_from_dict(c.to_dict()) == c  # trial.json round trip
    for bad, words in [({"wandb": {"projct": "p"}}, "did you mean 'project'"),
                       ({"tensorbord": True}, "did you mean 'tensorboard'"),
                       ({"wandb": "p"}, "expected a table"),
                       ({"wandb": {"mode": "ofline"}}, "expected 'online' or 'offline'"),
                       ({"tensorboard": "yes"}, "wrong type")]:
        with pytest.raises(UserError, match=words):
            tiny(bad)


def test_tracking_does_not_change_a_runs_identity():
    from research.train.run_dir import identity, identity_hash

    plain = run_config_from_dict(TINY)
    tracked = tiny({"wandb": {"project": "p"}, "tensorboard": True})
    assert identity_hash(identity(plain, "fp")) == identity_hash(identity(tracked, "fp"))


def test_command_line_flags(tmp_path):
    from research.cli import build_parser
    from research.train.tracking import apply_flags

    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nsteps = 1\n[logging]\nwandb = { project = "from-file", group = "g" }\n')
    args = build_parser().parse_args(["train", str(toml), "--wandb", "flagged", "--wandb-mode", "offline",
                                      "--tensorboard"])
    from research.config import load_run_config

    logging = apply_flags(load_run_config(toml).logging, args)
    assert (logging.wandb.project, logging.wandb.group, logging.wandb.mode, logging.tensorboard) == \
        ("flagged", "g", "offline", True)
    plain = tmp_path / "plain.toml"
    plain.write_text("[train]\nsteps = 1\n")
    out = subprocess.run(SCALING + ["train", str(plain), "--wandb-group", "g", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "--wandb-group and --wandb-mode need --wandb PROJECT" in out.stderr
