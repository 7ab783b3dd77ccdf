"""`scaling optimal`: published laws against hand calculations, fit.json laws, hardware estimates."""

import json
import math

import pytest

from research.cli import main
from research.fit.laws import CHINCHILLA_TABLE3, load_law, optimum


def hand(E, A, B, alpha, beta, C):
    """Chinchilla App. D.2 frontier, written out independently of the library."""
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    n = G * (C / 6) ** a
    d = (C / 6) ** b / G
    return n, d, E + A / n**alpha + B / d**beta


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("law,params", [
    ("chinchilla", (1.69337, 406.401, 410.723, 0.33917, 0.28491)),
    ("chinchilla-rounded", (1.69, 406.4, 410.7, 0.34, 0.28)),
    ("epoch-2024", (1.8172, 482.01, 2085.43, 0.3478, 0.3658)),
])
def test_optimal_at_gopher_budget_matches_hand_calculation(capsys, law, params):
    out = run_json(capsys, "optimal", "--flops", "5.76e23", "--law", law, "--json")
    n, d, loss = hand(*params, 5.76e23)
    assert out["n_params"] == pytest.approx(n, rel=1e-9)
    assert out["tokens"] == pytest.approx(d, rel=1e-9)
    assert out["tokens_per_param"] == pytest.approx(d / n, rel=1e-9)
    assert out["loss"] == pytest.approx(loss, rel=1e-9)
    assert out["convention"] == "6n"
    assert 6 * out["n_params"] * out["tokens"] == pytest.approx(5.76e23, rel=1e-9)


def test_published_numbers_tell_the_known_story():
    # Epoch: the summed-Huber refit gives ~20 tokens/param at Chinchilla's budget, close to the
    # 67B / 1.5T of Table 3; the published Approach-3 parameters imply far more tokens per parameter.
    ep = optimum(load_law("epoch-2024"), 5.76e23)
    ch = optimum(load_law("chinchilla-rounded"), 5.76e23)
    assert 15 < ep["tokens_per_param"] < 25
    assert ep["n_params"] == pytest.approx(67e9, rel=0.15)
    assert ch["tokens_per_param"] > 60
    assert ch["n_params"] == pytest.approx(3.22e10, rel=0.01)


def test_kaplan_law_is_anchored_and_has_no_loss(capsys):
    out = run_json(capsys, "optimal", "--flops", "1.92e19", "--law", "kaplan-2020", "--json")
    assert out["n_params"] == pytest.approx(CHINCHILLA_TABLE3[0][0], rel=1e-9)
    assert out["loss"] is None
    k = load_law("kaplan-2020")
    assert k.n_opt(1.92e21) / k.n_opt(1.92e19) == pytest.approx(100**0.73)
    assert main(["optimal", "--flops", "1e21", "--law", "kaplan-2020"]) == 0
    assert "loss unavailable" in capsys.readouterr().out


def test_training_cost_with_gpu(capsys):
    out = run_json(capsys, "optimal", "--flops", "1e21", "--law", "chinchilla", "--gpu", "h100", "--mfu", "0.4",
                   "--json")
    t = out["training"]
    assert t["peak_flops"] == 989e12
    assert t["device_hours"] == pytest.approx(1e21 / (989e12 * 0.4) / 3600)
    assert t["train_state_bytes"] == pytest.approx(16 * out["n_params"])
    out = run_json(capsys, "optimal", "--flops", "1e21", "--gpu", "a100", "--peak-flops", "1e15", "--json")
    assert out["training"]["device_hours"] == pytest.approx(1e21 / (1e15 * 0.4) / 3600)


def test_optimal_from_fit_json(tmp_path, capsys):
    fit = {"approach3": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
           "approach2": {"method": "approach2", "k_N": 0.1, "a": 0.5, "k_D": 1 / 0.6, "b": 0.5}}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    a3 = run_json(capsys, "optimal", "--flops", "5.76e23", "--law", str(tmp_path / "fit.json"), "--json")
    ep = run_json(capsys, "optimal", "--flops", "5.76e23", "--law", "epoch-2024", "--json")
    assert a3["n_params"] == pytest.approx(ep["n_params"])
    a2 = run_json(capsys, "optimal", "--flops", "1e20", "--law", str(tmp_path), "--approach", "approach2", "--json")
    assert a2["n_params"] == pytest.approx(0.1 * 1e10) and a2["loss"] is None


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    assert main(["optimal", "--flops", "1e21", "--law", "chinchila"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'chinchilla'" in err and "\n" not in err
    assert main(["optimal", "--flops", "1e21", "--gpu", "h1000"]) == 2
    assert "did you mean 'h100'" in capsys.readouterr().err
    assert main(["optimal", "--flops", "1e21", "--law", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not math.isnan(CHINCHILLA_TABLE3[3][1])
