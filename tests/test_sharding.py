"""Sharded training on 8 forced CPU devices, in processes of its own (the device count
of this test process is left alone): one device, data-parallel, FSDP x data-parallel, and
two processes joined by `jax.distributed` give the same losses; FSDP really shards
parameters and AdamW moments."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SCALING = [sys.executable, "-m", "research"]
EIGHT = "--xla_force_host_platform_device_count=8"

RUN = """
[data]
corpus = "synthetic"
tokenizer = "bytes"
[model]
layers = 2
d_model = 32
heads = 2
seq_len = 32
[train]
batch_size = 16
steps = 12
lr = 3e-3
log_every = 1
eval_every = 12
eval_tokens = 512
checkpoint_every = 12
"""


def env_with(xla_flags: str, **extra) -> dict:
    env = dict(os.environ)  # SCALING_DATA_DIR comes from tests/conftest.py
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    for var in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(var, None)
    env.update(extra)
    return env


@pytest.mark.parametrize("mesh", ["data 8", "data 2 x fsdp 4"])
def test_sharded_runs_match_one_device(losses_by_mesh, mesh):
    one, one_summary = losses_by_mesh["one device"]
    got, summary = losses_by_mesh[mesh]
    assert len(one) == 12 and len(got) == 12
    assert one[-1] < one[0] - 0.1  # it learns, so the comparison is not between constants
    np.testing.assert_allclose(got, one, rtol=1e-4)
    assert summary["final_eval_loss"] == pytest.approx(one_summary["final_eval_loss"], rel=1e-4)
    assert summary["device"]["count"] == 8  # the 8 forced devices were there


MULTI = textwrap.dedent("""
    import json, sys
    from research.train.step import initialize_distributed
    multi = initialize_distributed()
    import jax, numpy as np
    from research.config import load_run_config
    from research.train.step import Stepper, make_mesh
    cfg = load_run_config({config!r}, ["model.vocab_size=256", "train.mesh_data=2", "train.mesh_fsdp=4"])
    stepper = Stepper(cfg, make_mesh(cfg))
    params, opt_state = stepper.init()
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(4):
        batch = stepper.put_batch(rng.integers(0, 256, (16, 33), dtype=np.int32))
        params, opt_state, metrics = stepper.train_step(params, opt_state, batch)
        losses.append(float(jax.device_get(metrics)["loss"]))
    out = {{"multi": multi, "process": jax.process_index(), "processes": jax.process_count(),
           "devices": jax.device_count(), "local": jax.local_device_count(), "losses": losses}}
""")

# Where one step from a fresh init leaves the parameters, AdamW moments and batch. The run alone
# (1 process x 8 devices) reports it beside its losses, so the run the two-process runs are
# compared with and the one FSDP's sharding is read from are one process.
SHARDS = textwrap.dedent("""
    params, opt_state = stepper.init()
    batch = stepper.put_batch(np.zeros((16, 33), np.int32))
    params, opt_state, _ = stepper.train_step(params, opt_state, batch)
    def describe(tree):
        return {jax.tree_util.keystr(path): [list(x.shape), list(x.sharding.spec),
                sorted({tuple(s.data.shape) for s in x.addressable_shards}), len(x.addressable_shards)]
                for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if hasattr(x, "sharding")}
    out["shards"] = {"params": describe(params), "opt": describe(opt_state),
                     "batch": [list(batch.sharding.spec), sorted({tuple(s.data.shape) for s in batch.addressable_shards})],
                     "mesh": dict(stepper.mesh.shape)}
""")


MESHES = {"one device": (1, 1), "data 8": (8, 1), "data 2 x fsdp 4": (2, 4)}

# The run file trained on each mesh by what `scaling train CONFIG --out DIR --set train.mesh_data=...
# --set train.mesh_fsdp=...` runs (research/train/cli.py: initialize_distributed, then train), one run
# after another in the same process; their summaries are what `--json` prints.
TRAIN = textwrap.dedent("""
    from pathlib import Path
    from research.train.loop import train
    out["runs"] = {{}}
    for name, (data, fsdp) in {meshes!r}.items():
        run_cfg = load_run_config({config!r}, [f"train.mesh_data={{data}}", f"train.mesh_fsdp={{fsdp}}"])
        out["runs"][name] = train(run_cfg, Path({where!r}) / name.replace(" ", "_"), progress=False)
""")


def script(config, describe: bool, train_in=None) -> str:
    return (MULTI.format(config=str(config)) + (SHARDS if describe else "")
            + (TRAIN.format(meshes=MESHES, config=str(config), where=str(train_in)) if train_in else "")
            + "print(json.dumps(out))\n")


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> dict:
    """One process with 8 forced CPU devices: 4 steps on the 2 x 4 mesh (and where the first leaves
    the shards), then the run file trained on each of MESHES. One process rather than a
    `scaling train` per mesh saves two Python and JAX start-ups; the command's own sharded
    launch is test_scaling_train_as_two_processes_writes_one_run's."""
    tmp = tmp_path_factory.mktemp("sharding")
    config = tmp / "run.toml"
    config.write_text(RUN)
    proc = subprocess.run([sys.executable, "-c", script(config, describe=True, train_in=tmp)], env=env_with(EIGHT),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["dir"] = str(tmp)
    return out


@pytest.fixture(scope="module")
def one_process_eight_devices(eight_devices) -> dict:
    return eight_devices


@pytest.fixture(scope="module")
def losses_by_mesh(eight_devices) -> dict:
    out = {}
    for name, summary in eight_devices["runs"].items():
        run_dir = Path(eight_devices["dir"]) / name.replace(" ", "_")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        out[name] = (np.array([r["loss"] for r in rows]), summary)
    return out


def test_fsdp_shards_parameters_and_adam_moments(one_process_eight_devices):
    got = one_process_eight_devices["shards"]
    assert got["mesh"] == {"data": 2, "fsdp": 4}
    assert got["batch"] == [[["data", "fsdp"], None], [[2, 33]]]  # 16 rows over 8 devices
    matrices = {k: v for k, v in got["params"].items() if len(v[0]) == 2}
    assert len(matrices) == 2 * 4 + 2  # per layer qkv, out, up, down; embed and unembed
    for path, (shape, spec, shard_shapes, n_shards) in matrices.items():
        assert spec.count("fsdp") == 1, path
        assert n_shards == 8 and len(shard_shapes) == 1, path
        assert np.prod(shard_shapes[0]) * 4 == np.prod(shape), path  # a quarter each, replicated over data
    for path, (shape, spec, shard_shapes, _) in got["params"].items():
        if len(shape) == 1:  # norm scales stay whole
            assert spec == [] and shard_shapes == [shape], path
    moments = {k: v for k, v in got["opt"].items() if len(v[0]) == 2}
    assert len(moments) == 2 * len(matrices)  # mu and nu of every matrix, sharded the same way
    for path, (shape, spec, shard_shapes, _) in moments.items():
        assert spec.count("fsdp") == 1 and np.prod(shard_shapes[0]) * 4 == np.prod(shape), path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, one_process_eight_devices):
    """jax.distributed via the JAX_* variables: 2 processes x 4 devices == 1 process x 8 devices."""
    config = tmp_path / "run.toml"
    config.write_text(RUN)
    one = one_process_eight_devices
    assert (one["multi"], one["processes"], one["devices"]) == (False, 1, 8)

    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", script(config, describe=False)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=env_with("--xla_force_host_platform_device_count=4",
                                           JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                           JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-2000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(o["process"] for o in outs) == [0, 1]
    for o in outs:
        assert (o["multi"], o["processes"], o["devices"], o["local"]) == (True, 2, 8, 4)
        np.testing.assert_allclose(o["losses"], one["losses"], rtol=1e-5)


def test_scaling_train_as_two_processes_writes_one_run(losses_by_mesh, tmp_path):
    """`scaling train` launched as 2 processes x 4 devices into one --out: process 0 alone writes
    the log and summary, both save the checkpoint, and the losses equal 1 process x 8 devices."""
    config = tmp_path / "run.toml"
    config.write_text(RUN)
    run_dir = tmp_path / "run"
    port = _free_port()
    procs = [subprocess.Popen(SCALING + ["train", str(config), "--out", str(run_dir), "--no-progress",
                                         "--set", "train.mesh_data=2", "--set", "train.mesh_fsdp=4"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_with("--xla_force_host_platform_device_count=4",
                                           JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                           JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    try:
        for p in procs:
            _, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13)), "steps missing or written twice"
    expected, _ = losses_by_mesh["data 2 x fsdp 4"]
    np.testing.assert_allclose([r["loss"] for r in rows], expected, rtol=1e-4)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert (run_dir / "checkpoints" / "12").is_dir()
