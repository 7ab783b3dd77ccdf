"""`scaling bench`: device-kind parsing, a real CPU benchmark through the CLI, the suite
runner, and the chunked loss (the speed switch the train step uses) against the plain one."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from research.train.devices import peak_for_kind
from research.config import load_run_config
from research.model.accounting import count_model

SCALING = [sys.executable, "-m", "research"]

TINY = """
[data]
corpus = "synthetic"
tokenizer = "bytes"
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
vocab_size = 300
[train]
batch_size = 8
steps = 100
"""


@pytest.mark.parametrize("kind,name,tflops", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756),
    ("NVIDIA H100 NVL", "H100 NVL", 835),
    ("NVIDIA H200", "H200", 989),
    ("NVIDIA GH200 480GB", "GH200", 989),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB", 312),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB", 312),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 312),
    ("NVIDIA A100 80GB PCIe", "A100 80GB", 312),
    ("NVIDIA L4", "L4", 121),
    ("TPU v4", "TPU v4", 275),
    ("TPU v5 lite", "TPU v5e", 197),
    ("TPU v5e", "TPU v5e", 197),
    ("TPU v5", "TPU v5p", 459),
    ("TPU v5p", "TPU v5p", 459),
    ("TPU v6 lite", "TPU v6e", 918),
    ("  nvidia h100 80gb hbm3 ", "H100 SXM", 989),
])
def test_known_device_kinds_map_to_dense_bf16_peaks(kind, name, tflops):
    peak = peak_for_kind(kind)
    assert peak is not None and peak.name == name
    assert peak.bf16_flops == tflops * 1e12


@pytest.mark.parametrize("kind", ["cpu", "Tesla V100-SXM2-16GB", "NVIDIA L40S", "NVIDIA GeForce RTX 4090",
                                  "TPU v4 lite", "Interpreter", ""])
def test_unknown_device_kinds_give_no_peak(kind):
    assert peak_for_kind(kind) is None


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_bench_cli_on_cpu_reports_throughput_and_unknown_mfu(tiny_config, tmp_path):
    out = tmp_path / "res" / "bench.json"
    proc = subprocess.run(SCALING + ["bench", str(tiny_config), "--steps", "3", "--warmup", "1", "--json",
                                     "--out", str(out), "--set", "model.layers=2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == r
    cfg = load_run_config(tiny_config, ["model.layers=2"])
    counts = count_model(cfg.model)
    assert r["config"]["model"]["layers"] == 2 and r["n_params"] == counts.n_params
    assert r["device"]["kind"] == "cpu" and r["device"]["peak_name"] is None
    assert r["mfu"] == {"model": None, "6n": None, "chinchilla": None}
    assert r["flops_per_token"]["model"] == counts.flops_per_token_model
    assert r["flops_per_s"]["model"] == pytest.approx(r["tokens_per_s"] * counts.flops_per_token_model)
    assert r["tokens_per_step"] == 8 * 32
    assert r["step_time_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["tokens_per_step"] / r["step_time_s"])
    for conv in ("6n", "chinchilla"):
        assert r["flops_per_token"][conv] == counts.flops_per_token(conv)
        assert r["flops_per_s"][conv] == pytest.approx(r["tokens_per_s"] * counts.flops_per_token(conv))
    assert r["compile_s"] > 0
    assert r["memory"]["peak_bytes_in_use"] is None  # CPUs keep no allocator statistics
    # the compiled step needs at least the parameters and both AdamW moments (fp32)
    assert r["memory"]["compiled_total_bytes"] >= 3 * 4 * counts.n_params
    assert r["jit_cache_size"] == 1  # warm-up and timed steps reuse one executable
    assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
    assert r["data"] == "uniform random tokens" and r["attention"] == "xla" and r["compute_dtype"] == "float32"
    assert "MFU unknown" in proc.stderr and "no causal halving" in proc.stderr
    assert "a convention for C, not MFU" in proc.stderr


def test_bench_steps_do_not_recompile(tiny_config):
    from research.bench.run import benchmark

    r = benchmark(load_run_config(tiny_config), steps=4, warmup=2)
    assert r["jit_cache_size"] == 1
    assert r["loss_last"] < r["loss_first"]  # it trains: random batches, cycled, are being learnt


def test_bench_bad_input_is_one_line_error(tmp_path, tiny_config):
    proc = subprocess.run(SCALING + ["bench", str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert proc.returncode == 2 and "config file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(SCALING + ["bench", str(tiny_config), "--steps", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--steps" in proc.stderr and "Traceback" not in proc.stderr


def test_suite_writes_one_json_per_run_and_a_summary(tiny_config, tmp_path):
    out_dir = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "research.bench.suite", "--configs", str(tiny_config),
                           "--variants", "default", "--steps", "2", "--warmup", "1", "--out-dir", str(out_dir)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.name for p in out_dir.iterdir())
    assert len(files) == 2 and files[1].startswith("suite-") and files[0].endswith("-tiny-default.json")
    summary = json.loads((out_dir / files[1]).read_text())
    assert summary["device"] == "cpu" and summary["rows"][0]["variant"] == "default"
    assert "| tiny | default | 1 x cpu |" in proc.stdout and "unknown" in proc.stdout


def applied_gradients(cfg, opt_state, metrics):
    """The gradients of a first AdamW step, from its first moment: mu = (1 - beta1) g, where g is
    the gradient after global-norm clipping (a factor min(1, clip / |g|) on every leaf)."""
    t = cfg.train
    clip = min(1.0, t.grad_clip / float(metrics["grad_norm"])) if t.grad_clip > 0 else 1.0
    mu = optax.tree_utils.tree_get(opt_state, "mu")
    return jax.tree.map(lambda m: np.asarray(m) / ((1 - t.beta1) * clip), mu)


@pytest.mark.parametrize("tie", [False, True])
def test_chunked_loss_matches_plain_loss(tiny_config, monkeypatch, tie):
    """Chunks that do not divide the batch (padding) give the same loss, gradients and update."""
    from research.train.step import Stepper, make_mesh

    cfg = load_run_config(tiny_config, [f"model.tie_embeddings={str(tie).lower()}"])
    tokens = np.random.default_rng(1).integers(0, 300, (8, 33), dtype=np.int32)
    results = {}
    for chunk in ("0", "37", "100000"):
        monkeypatch.setenv("SCALING_LOSS_CHUNK", chunk)
        stepper = Stepper(cfg, make_mesh(cfg))
        assert stepper.loss_chunk == int(chunk)
        params, opt_state = stepper.init()
        batch = stepper.put_batch(tokens)
        # The step's own loss and gradients (read back from AdamW's first moment), not a second
        # compiled value_and_grad program beside the step: one compile per chunk size instead of two.
        params, opt_state, metrics = stepper.train_step(params, opt_state, batch)
        results[chunk] = (metrics["loss"], applied_gradients(cfg, opt_state, metrics), params, metrics)
    plain = results["0"]
    for chunk in ("37", "100000"):
        loss, grads, params, metrics = results[chunk]
        np.testing.assert_allclose(loss, plain[0], rtol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads, plain[1])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, plain[2])
        np.testing.assert_allclose(metrics["grad_norm"], plain[3]["grad_norm"], rtol=1e-5)


def test_loss_chunk_setting(monkeypatch):
    from research.errors import UserError
    from research.train.step import CPU_LOSS_CHUNK, loss_chunk

    monkeypatch.delenv("SCALING_LOSS_CHUNK", raising=False)
    assert loss_chunk() == (CPU_LOSS_CHUNK if jax.default_backend() == "cpu" else 0)
    monkeypatch.setenv("SCALING_LOSS_CHUNK", "auto")
    assert loss_chunk() == (CPU_LOSS_CHUNK if jax.default_backend() == "cpu" else 0)
    monkeypatch.setenv("SCALING_LOSS_CHUNK", "0")
    assert loss_chunk() == 0
    monkeypatch.setenv("SCALING_LOSS_CHUNK", "lots")
    with pytest.raises(UserError):
        loss_chunk()


def test_single_process_needs_no_distributed_init(monkeypatch):
    from research.errors import UserError
    from research.train.step import initialize_distributed

    for var in ("SLURM_NTASKS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    assert initialize_distributed() is False
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert initialize_distributed() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES"):
        initialize_distributed()
    assert os.environ["JAX_COORDINATOR_ADDRESS"] == "localhost:1234"
