"""Inference-aware (Sardana et al. 2024) and data-constrained (Muennighoff et al. 2023) planning,
against brute-force grids written out here."""

import json
import math

import numpy as np
import pytest

from research.cli import main

EPOCH = (1.8172, 482.01, 2085.43, 0.3478, 0.3658)  # Besiroglu et al. 2024, typed in


def loss(p, n, d):
    E, A, B, al, be = p
    return E + A / n**al + B / d**be


def chinchilla_optimum(p, C):
    E, A, B, al, be = p
    G = (al * A / (be * B)) ** (1 / (al + be))
    n = G * (C / 6) ** (be / (al + be))
    return n, C / (6 * n)


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("T", [0.0, 1e12, 2e13])
def test_inference_optimum_matches_a_brute_force_grid(capsys, T):
    C = 1e22
    out = run_json(capsys, "optimal", "--law", "epoch-2024", "--flops", str(C), "--inference-tokens", str(T),
                   "--json")["inference"]
    n0, d0 = chinchilla_optimum(EPOCH, C)
    target = loss(EPOCH, n0, d0)
    E, A, B, al, be = EPOCH
    n = np.geomspace(n0 / 30, n0 * 3, 400_001)
    gap = target - E - A / n**al
    ok = gap > 0
    d = np.where(ok, (B / np.where(ok, gap, 1)) ** (1 / be), np.inf)
    total = 6 * n * d + 2 * n * T
    i = int(np.argmin(total))
    step = math.log(n[1] / n[0])
    assert abs(math.log(out["n_params"] / n[i])) <= 2 * step + 1e-6
    assert out["total_flops"] == pytest.approx(total[i], rel=1e-6)
    assert loss(EPOCH, out["n_params"], out["tokens"]) == pytest.approx(target, rel=1e-9)
    base = C + 2 * n0 * T
    assert out["flops_saved"] == pytest.approx(base - total[i], rel=1e-4, abs=1e-6 * C)
    if T == 0:
        assert out["n_params"] == pytest.approx(n0, rel=1e-4)
    else:  # serving tokens: a smaller model trained longer, and FLOPs saved
        assert out["n_params"] < n0 and out["tokens_per_param"] > d0 / n0 and out["flops_saved"] > 0


def effective(d, u, r=15.4):
    """Muennighoff et al. 2023 eq. for D' (typed in from the paper)."""
    return d if d <= u else u + u * r * (1 - math.exp(-(d / u - 1) / r))


@pytest.mark.parametrize("U", [1e11, 3e12])
def test_data_constrained_optimum_matches_a_brute_force_grid(capsys, U):
    C = 1e23
    out = run_json(capsys, "optimal", "--law", "epoch-2024", "--flops", str(C), "--unique-tokens", str(U),
                   "--json")["data_constrained"]
    n = np.geomspace(1e9, 1e12, 200_001)
    d = C / (6 * n)
    E, A, B, al, be = EPOCH
    r = np.maximum(d / U - 1, 0)
    d_eff = np.where(d <= U, d, U + U * 15.4 * (1 - np.exp(-r / 15.4)))
    L = E + A / n**al + B / d_eff**be
    i = int(np.argmin(L))
    assert abs(math.log(out["n_params"] / n[i])) <= 3 * math.log(n[1] / n[0])
    assert out["loss"] == pytest.approx(L[i], abs=1e-9)
    assert out["epochs"] == pytest.approx(out["tokens"] / U)
    assert out["effective_tokens"] == pytest.approx(effective(out["tokens"], U))
    n0, d0 = chinchilla_optimum(EPOCH, C)
    if d0 <= U:  # enough unique data: the compute-optimal model, unchanged
        assert out["n_params"] == pytest.approx(n0) and out["epochs"] <= 1
    else:  # scarce data: a bigger model on fewer (repeated) tokens, and a worse loss
        assert out["n_params"] > n0 and out["epochs"] > 1 and out["loss"] > loss(EPOCH, n0, d0)


def test_allocation_only_laws_refuse_in_one_line(capsys):
    for flag in ("--inference-tokens", "--unique-tokens"):
        assert main(["optimal", "--law", "chinchilla-approach1", "--flops", "1e22", flag, "1e12"]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert "needs a law with a loss" in err and "\n" not in err and captured.out == ""


def test_text_output_says_epochs_and_savings(capsys):
    assert main(["optimal", "--law", "chinchilla", "--flops", "5.76e23", "--inference-tokens", "1e13",
                 "--unique-tokens", "1e12"]) == 0
    text = capsys.readouterr().out
    assert "saved" in text and "epochs" in text and "approximation" in text
