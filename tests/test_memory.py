"""Memory by precision and grouped-query attention in `scaling size` and `scaling optimal`."""

import json

import pytest

from research.cli import main

LLAMA2 = {  # Touvron et al. 2023, Llama 2 (Table 1 / the released configs): SwiGLU, untied embeddings
    "7b": (["--layers", "32", "--d-model", "4096", "--heads", "32", "--ffw", "11008"], 6.74e9),
    "70b": (["--layers", "80", "--d-model", "8192", "--heads", "64", "--kv-heads", "8", "--ffw", "28672"], 68.98e9),
}


def size_json(capsys, *extra):
    argv = ["size", "--vocab", "32000", "--seq-len", "4096", "--mlp", "swiglu", *extra, "--json"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def hand_llama(layers, d, heads, kv, ffw, vocab=32000):
    """Written out independently: per layer two RMSNorm scales, Q and O d x d, K and V d x (kv * d/heads),
    three SwiGLU matrices; input and output embeddings; a final norm."""
    hd = d // heads
    per_layer = 2 * d + 2 * d * d + 2 * d * kv * hd + 3 * d * ffw
    return layers * per_layer + 2 * vocab * d + d


@pytest.mark.parametrize("name", LLAMA2)
def test_llama2_parameter_counts(capsys, name):
    argv, published = LLAMA2[name]
    out = size_json(capsys, *argv)
    assert round(out["n_params"] / 1e7) == round(published / 1e7)  # 6.74B and 68.98B to the printed digits
    a = dict(zip(argv[::2], map(int, argv[1::2])))
    assert out["n_params"] == hand_llama(a["--layers"], a["--d-model"], a["--heads"],
                                         a.get("--kv-heads", a["--heads"]), a["--ffw"])


def test_gqa_memory_and_kv_cache(capsys):
    out = size_json(capsys, *LLAMA2["70b"][0])
    n = out["n_params"]
    assert out["weights_memory_bytes"] == pytest.approx({"fp32": 4 * n, "bf16": 2 * n, "int8": n, "int4": n / 2})
    assert out["training_memory_bytes"]["bf16_mixed"] == 16 * n
    # 2 (K, V) x 80 layers x 8 kv heads x 128 head dim x 2 bytes = 327,680 B per token in bf16
    assert out["kv_cache_bytes_per_token"]["bf16"] == 2 * 80 * 8 * 128 * 2
    mha = size_json(capsys, *[x for x in LLAMA2["70b"][0] if x not in ("--kv-heads", "8")])
    assert mha["kv_cache_bytes_per_token"]["bf16"] == 8 * out["kv_cache_bytes_per_token"]["bf16"]
    # without GQA the 70B shape has 78.4B parameters (the miscount)
    assert round(mha["n_params"] / 1e8) == 784
    assert mha["flops_per_token_chinchilla"] > out["flops_per_token_chinchilla"]


def test_bad_kv_heads_is_one_line(capsys):
    assert main(["size", "--layers", "2", "--d-model", "64", "--heads", "4", "--kv-heads", "3", "--vocab", "100",
                 "--seq-len", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--kv-heads 3 must divide --heads 4" in err and "\n" not in err


def test_optimal_reports_memory_by_precision(capsys):
    assert main(["optimal", "--law", "epoch-2024", "--flops", "1e22", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    n = out["n_params"]
    assert out["memory"]["weights_bytes"]["int4"] == pytest.approx(0.5 * n)
    assert out["memory"]["training_state_bytes"]["bf16"] == pytest.approx(8 * n)
    assert main(["optimal", "--law", "epoch-2024", "--flops", "1e22"]) == 0
    assert "int4" in capsys.readouterr().out
