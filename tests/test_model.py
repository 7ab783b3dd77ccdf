"""Model family and accounting: counts equal the built tree; FLOPs equal an independent formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import ModelConfig
from research.model import Transformer, count_model

SHAPES = [
    dict(layers=1, d_model=32, heads=2, vocab_size=97, seq_len=16),
    dict(layers=3, d_model=48, heads=6, vocab_size=300, seq_len=24, ffw=100),
    dict(layers=2, d_model=64, heads=4, vocab_size=256, seq_len=32, mlp="swiglu"),
    dict(layers=2, d_model=64, heads=4, vocab_size=256, seq_len=32, tie_embeddings=True),
    dict(layers=2, d_model=64, heads=8, vocab_size=513, seq_len=8, mlp="swiglu", tie_embeddings=True, ffw=96),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_counted_params_equal_built_tree(shape):
    cfg = ModelConfig(**shape)
    # the tree the constructor builds, its shapes only (nnx.eval_shape runs the same __init__ without
    # computing a single initial value: an XLA compile per eager op otherwise, ~2 CPU s a shape)
    params = nnx.state(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))), nnx.Param)
    built = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    counts = count_model(cfg)
    assert counts.n_params == built
    # the embedding part is exactly the (V, d) tables the model holds
    tables = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    assert counts.n_params_embedding == tables
    assert counts.n_params_nonembedding == built - tables


def _chinchilla_reference(L, d, h, V, s, ffw, mlp_mats=2):
    """Hoffmann et al. 2022, Appendix F, transcribed term by term (forward, one sequence)."""
    kh = d  # key size x heads
    embeddings = 2 * s * V * d
    attention = {
        "qkv": 2 * 3 * s * d * kh,
        "logits": 2 * s * s * kh,
        "softmax": 3 * h * s * s,
        "reduction": 2 * s * s * kh,
        "project": 2 * s * kh * d,
    }
    dense = 2 * s * (mlp_mats * d * ffw)
    logits = 2 * s * d * V
    forward = embeddings + L * (sum(attention.values()) + dense) + logits
    return 3 * forward / s  # training = forward + backward (2x), per token


@pytest.mark.parametrize("L,d,h,V,s", [(12, 768, 12, 50304, 1024), (2, 64, 4, 256, 128), (24, 2048, 16, 32000, 2048)])
def test_chinchilla_flops_match_appendix_f(L, d, h, V, s):
    cfg = ModelConfig(layers=L, d_model=d, heads=h, vocab_size=V, seq_len=s)
    counts = count_model(cfg)
    assert counts.flops_per_token_chinchilla == pytest.approx(_chinchilla_reference(L, d, h, V, s, 4 * d), rel=1e-12)
    assert counts.flops_per_token_6n == 6 * counts.n_params


def test_swiglu_dense_block_has_three_matrices():
    cfg = ModelConfig(layers=2, d_model=64, heads=4, vocab_size=256, seq_len=32, mlp="swiglu", ffw=96)
    assert count_model(cfg).flops_per_token_chinchilla == pytest.approx(
        _chinchilla_reference(2, 64, 4, 256, 32, 96, mlp_mats=3), rel=1e-12)


def test_gpt2_small_known_size():
    # GPT-2 small with untied 50,304-row embeddings and no biases/positions:
    # 12 layers x (4d^2 + 8d^2 + 2d) + 2Vd + d
    d, V = 768, 50304
    cfg = ModelConfig(layers=12, d_model=d, heads=12, vocab_size=V, seq_len=1024)
    assert count_model(cfg).n_params == 12 * (12 * d * d + 2 * d) + 2 * V * d + d


def test_causal_no_gradient_from_future_tokens():
    cfg = ModelConfig(layers=2, d_model=32, heads=2, vocab_size=50, seq_len=12)
    model = Transformer(cfg, nnx.Rngs(1))
    graphdef, state = nnx.split(model)
    tokens = jax.random.randint(jax.random.key(0), (1, 12), 0, 50)
    t = 5

    def logit_at_t(emb_in):
        m = nnx.merge(graphdef, state)
        x = emb_in
        for block in m.blocks:
            x = block(x)
        return m.unembed(m.final_norm(x))[0, t].sum()

    emb = model.embed(tokens)
    # jitted: one compiled program, not an XLA compile per eager op (~6 s of CPU on 2 cores)
    grad = jax.jit(jax.grad(logit_at_t))(emb)
    assert jnp.all(grad[0, t + 1:] == 0), "position t depends on a later position"
    assert jnp.any(grad[0, : t + 1] != 0)


def test_changing_future_tokens_leaves_past_logits_unchanged():
    cfg = ModelConfig(layers=2, d_model=32, heads=4, vocab_size=40, seq_len=16, mlp="swiglu")
    model = Transformer(cfg, nnx.Rngs(2))
    a = jax.random.randint(jax.random.key(1), (2, 16), 0, 40)
    b = a.at[:, 9:].set((a[:, 9:] + 7) % 40)
    forward = nnx.jit(lambda m, tokens: m(tokens))  # one compile for both calls, not one per eager op
    la, lb = forward(model, a), forward(model, b)
    np.testing.assert_allclose(la[:, :9], lb[:, :9], atol=1e-5)
    assert not np.allclose(la[:, 9:], lb[:, 9:], atol=1e-3)


def test_size_cli_json(tmp_path):
    import json
    import subprocess

    from tests.conftest import SCALING

    out = subprocess.run(SCALING + ["size", "--layers", "12", "--d-model", "768", "--heads", "12", "--ffw", "3072",
                                    "--vocab", "50304", "--seq-len", "1024", "--json"],
                         capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    for key in ("n_params", "n_params_nonembedding", "flops_per_token_6n", "flops_per_token_chinchilla",
                "memory_bytes_per_param"):
        assert key in got
    assert got["n_params"] == 12 * (12 * 768 ** 2 + 2 * 768) + 2 * 50304 * 768 + 768
    assert got["flops_per_token_chinchilla"] == pytest.approx(_chinchilla_reference(12, 768, 12, 50304, 1024, 3072))


def test_size_cli_rejects_bad_heads():
    import subprocess

    from tests.conftest import SCALING

    out = subprocess.run(SCALING + ["size", "--layers", "2", "--d-model", "64", "--heads", "5", "--vocab", "256",
                                    "--seq-len", "32"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "heads = 5 does not divide d_model = 64" in out.stderr
    assert "Traceback" not in out.stderr
