"""Permission refusals (EACCES) from every command that writes: one line naming the path, exit 2,
no traceback, nothing already there changed (issue 23).

The suite often runs as root, which the kernel lets write anywhere, so these cases could not be
seen. Each command here runs in a subprocess without privileges: as root, with every capability
dropped from its bounding set before `exec` (root then obeys a directory's owner bits like any
user: a 0o555 directory it owns is read-only to it; a switch to `nobody` would not do, since the
interpreter may live under root's 0o700 home); as any other user, as it is. A probe checks the
refusal really happens and the module is skipped where it cannot be arranged.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SCALING
from research.train import train
from tests.test_train import TINY, tiny, write_toml

PR_CAPBSET_DROP = 24
_LIBC = ctypes.CDLL(None, use_errno=True)


def _drop_privileges() -> None:  # runs in the child between fork and exec
    for cap in range(64):
        _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


PREEXEC = _drop_privileges if os.geteuid() == 0 else None


def unprivileged(argv: list, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, preexec_fn=PREEXEC,
                          env={**os.environ, **(env or {})}, timeout=600, **kwargs)


@pytest.fixture
def read_only(tmp_path):
    """A directory (holding one file) that the unprivileged commands cannot write; made writable again after."""
    path = tmp_path / "ro"
    path.mkdir()
    (path / "keep.txt").write_text("already here\n")
    path.chmod(0o555)
    probe = unprivileged([sys.executable, "-c", f"open({str(path / 'probe')!r}, 'w')"])
    if probe.returncode == 0:
        path.chmod(0o755)
        pytest.skip("cannot run a command without the privilege to write a read-only directory here")
    yield path
    path.chmod(0o755)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def refused(res: subprocess.CompletedProcess, command: str, path: Path, code: int = 2) -> str:
    """The one line a refused command prints, checked: exit code, no traceback, names the path."""
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith(f"scaling {command}: error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "ermission denied" in lines[0] and str(path) in lines[0], lines[0]
    return lines[0]


def test_train_out_in_a_read_only_directory(tmp_path, read_only):
    cfg = write_toml(tmp_path / "run.toml", dict(TINY, train=dict(TINY["train"], steps=10)))
    before = snapshot(read_only)
    res = unprivileged(SCALING + ["train", cfg, "--no-progress", "--out", read_only / "run"])
    refused(res, "train", read_only / "run")
    assert snapshot(read_only) == before


def test_train_whose_checkpoints_cannot_be_written_stops_keeping_its_metrics(tmp_path):
    """Met mid-run: the first checkpoint save is refused; the logged rows stay; one line, exit 2."""
    run_dir = tmp_path / "run"
    settings = dict(TINY["train"], steps=20, checkpoint_every=10)
    train(tiny(train=settings), run_dir, progress=False)  # leaves the run's config.json; the rest is removed
    shutil.rmtree(run_dir / "checkpoints")
    for name in ("summary.json", "metrics.jsonl"):
        (run_dir / name).unlink()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints").chmod(0o555)
    cfg = write_toml(tmp_path / "run.toml", dict(TINY, train=settings))
    probe = unprivileged([sys.executable, "-c", f"open({str(run_dir / 'checkpoints' / 'probe')!r}, 'w')"])
    if probe.returncode == 0:
        pytest.skip("cannot run a command without the privilege to write a read-only directory here")
    try:
        res = unprivileged(SCALING + ["train", cfg, "--no-progress", "--out", run_dir])
    finally:
        (run_dir / "checkpoints").chmod(0o755)
    refused(res, "train", run_dir / "checkpoints")
    rows = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) >= 10, "the rows logged before the refused save were lost"


def test_fit_out_in_a_read_only_directory(tmp_path, read_only):
    rows = ["n_params,tokens,final_eval_loss,status"]
    for n in (1e6, 3e6, 1e7, 3e7):
        for d in (2e7, 6e7, 2e8):
            rows.append(f"{n:g},{d:g},{1.7 + 400 / n ** 0.34 + 410 / d ** 0.28:.6f},completed")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    before = snapshot(read_only)
    res = unprivileged(SCALING + ["fit", tmp_path / "t.csv", "--method", "approach3", "--grid", "small",
                                  "--backend", "scipy", "--out", read_only / "fit.json"])
    refused(res, "fit", read_only / "fit.json")
    assert snapshot(read_only) == before


@pytest.mark.parametrize("exists", [False, True], ids=["to-create", "existing"])
def test_data_prepare_with_a_read_only_data_dir(tmp_path, read_only, exists):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"text": "document {i} of the corpus"}}\n' for i in range(40)))
    data_dir = read_only if exists else read_only / "cache"
    before = snapshot(read_only)
    res = unprivileged(SCALING + ["data", "prepare", corpus, "--tokenizer", "bytes"],
                       env={"SCALING_DATA_DIR": str(data_dir)})
    refused(res, "data", data_dir)
    assert snapshot(read_only) == before


def test_sweep_run_out_in_a_read_only_directory(tmp_path, read_only):
    repo = Path(__file__).resolve().parents[1]
    before = snapshot(read_only)
    res = unprivileged(SCALING + ["sweep", "run", repo / "sweeps" / "smoke.toml", "--out", read_only / "sweep",
                                  "--no-fit", "--set", 'data.corpus="synthetic:states=16,branch=3,tokens=300000"'])
    refused(res, "sweep", read_only / "sweep")
    assert snapshot(read_only) == before
