"""Published laws as published: Chinchilla Table 3 row by row, Approach 3's 40B, provenance."""

import json

import numpy as np
import pytest

from research.cli import main
from research.fit.cli import PUBLISHED_NAMES
from research.fit.laws import PUBLISHED, load_law, optimum

# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", Table 3 (Approach 1):
# parameters, FLOPs, tokens, as printed (kept here, independent of research.fit.laws).
TABLE3 = [
    ("400M", 400e6, 1.92e19, "8.0B", 8.0e9),
    ("1B", 1e9, 1.21e20, "20.2B", 20.2e9),
    ("10B", 10e9, 1.23e22, "205.1B", 205.1e9),
    ("67B", 67e9, 5.76e23, "1.5T", 1.5e12),
    ("175B", 175e9, 3.85e24, "3.7T", 3.7e12),
    ("280B", 280e9, 9.90e24, "5.9T", 5.9e12),
    ("520B", 520e9, 3.43e25, "11.0T", 11.0e12),
    ("1T", 1e12, 1.27e26, "21.2T", 21.2e12),
    ("10T", 10e12, 1.30e28, "216.2T", 216.2e12),
]
GOPHER_ROW = 3  # "67B, 5.76e23, 1.5T": inconsistent with C = 6ND and with the other eight rows (see below)


def half_unit(printed: str, value: float) -> float:
    """Relative half-unit of the last printed digit: '20.2B' -> 0.05/20.2; '400M' -> 0.5/400."""
    mantissa = printed.rstrip("MBT")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 0.5 * 10.0**-decimals / float(mantissa)


def printed_like(value: float, printed: str) -> str:
    """`value` written as Table 3 writes `printed`: same unit (M, B, T) and number of decimals."""
    unit = printed[-1]
    mantissa = printed[:-1]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return f"{value / {'M': 1e6, 'B': 1e9, 'T': 1e12}[unit]:.{decimals}f}{unit}"


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_lists_every_published_law():
    assert set(PUBLISHED_NAMES) == set(PUBLISHED)
    for name in PUBLISHED:
        law = load_law(name)
        assert law.source and law.name == name


def test_approach1_line_is_the_least_squares_line_through_table3():
    N = np.array([r[1] for r in TABLE3])
    C = np.array([r[2] for r in TABLE3])
    a, logk = np.polyfit(np.log(C), np.log(N), 1)
    for name in ("chinchilla-approach1", "chinchilla-approach1-line"):
        law = load_law(name)
        assert law.a == pytest.approx(a, abs=1e-6)
        assert law.k_N == pytest.approx(np.exp(logk), rel=1e-5)
        assert 0.488 <= law.a <= 0.502  # Table 2's interval on Approach 1's a


@pytest.mark.parametrize("row", range(len(TABLE3)), ids=[r[0] for r in TABLE3])
def test_table3_row_by_row(row):
    """`chinchilla-approach1` is Table 3 as printed: each row to the table's rounding, the Gopher row included."""
    n_txt, n, c, d_txt, d = TABLE3[row]
    out = optimum(load_law("chinchilla-approach1"), c)
    assert out["n_params"] == pytest.approx(n, rel=half_unit(n_txt, n))
    assert out["tokens"] == pytest.approx(d, rel=half_unit(d_txt, d))
    assert printed_like(out["n_params"], n_txt) == n_txt
    assert printed_like(out["tokens"], d_txt) == d_txt


@pytest.mark.parametrize("row", range(len(TABLE3)), ids=[r[0] for r in TABLE3])
def test_table3_line_rows_and_the_gopher_row(row):
    """The smooth line (`chinchilla-approach1-line`, D = C/(6N)) meets eight rows to the table's rounding;
    the Gopher-budget row is not on it: 1.5T tokens break C = 6ND by 4.7% and 67B is 1.2% off the line."""
    n_txt, n, c, d_txt, d = TABLE3[row]
    out = optimum(load_law("chinchilla-approach1-line"), c)
    assert 6 * out["n_params"] * out["tokens"] == pytest.approx(c, rel=1e-9)
    if row == GOPHER_ROW:
        assert 6 * n * d / c == pytest.approx(1.047, abs=0.001)
        assert out["n_params"] == pytest.approx(n, rel=0.015) and out["n_params"] > n * 1.005
        assert out["tokens"] == pytest.approx(c / (6 * n), rel=0.015)
        return
    # half a unit of the last printed digit, at least 0.4% for the rounded exponent's curvature
    assert out["n_params"] == pytest.approx(n, rel=max(half_unit(n_txt, n), 0.004))
    assert out["tokens"] == pytest.approx(d, rel=max(half_unit(d_txt, d), 0.004))


def test_table_law_between_and_beyond_rows():
    law = load_law("chinchilla-approach1")
    line = load_law("chinchilla-approach1-line")
    C = np.array([r[2] for r in TABLE3])
    grid = np.geomspace(C[0] / 100, C[-1] * 100, 400)
    n = np.array([law.n_opt(c) for c in grid])
    d = np.array([law.d_opt(c) for c in grid])
    assert np.all(np.diff(n) > 0) and np.all(np.diff(d) > 0)  # monotone through every row
    # between two rows: the geometric interpolation (halfway in log C -> geometric mean of the rows)
    for (_, n0, c0, _, d0), (_, n1, c1, _, d1) in zip(TABLE3, TABLE3[1:]):
        mid = np.sqrt(c0 * c1)
        assert law.n_opt(mid) == pytest.approx(np.sqrt(n0 * n1), rel=1e-12)
        assert law.d_opt(mid) == pytest.approx(np.sqrt(d0 * d1), rel=1e-12)
    # the table keeps close to C = 6ND everywhere but around the Gopher row
    ratio = 6 * n * d / grid
    assert np.all(np.abs(ratio - 1) < 0.05)
    # beyond the table: the line's exponent from the end rows, and D = C/(6N)
    for c, (_, n_end, c_end, _, _) in ((C[0] / 50, TABLE3[0]), (C[-1] * 50, TABLE3[-1])):
        assert law.n_opt(c) == pytest.approx(n_end * (c / c_end) ** line.a, rel=1e-12)
        assert 6 * law.n_opt(c) * law.d_opt(c) == pytest.approx(c, rel=1e-12)


def test_gopher_budget_cli(capsys):
    a1 = run_json(capsys, "optimal", "--law", "chinchilla-approach1", "--flops", "5.76e23", "--json")
    assert round(a1["n_params"] / 1e9) == 67 and a1["loss"] is None
    assert round(a1["tokens"] / 1e12, 1) == 1.5
    assert any("6*N*D = 6.03e23" in n for n in a1["notes"])  # the table's own inconsistency is said
    far = run_json(capsys, "optimal", "--law", "chinchilla-approach1", "--flops", "1e20", "--json")
    assert not any("Gopher" in n for n in far["notes"])
    line = run_json(capsys, "optimal", "--law", "chinchilla-approach1-line", "--flops", "5.76e23", "--json")
    assert round(line["n_params"] / 1e9, 1) == 67.8 and round(line["tokens"] / 1e12, 2) == 1.42
    a3 = run_json(capsys, "optimal", "--law", "chinchilla-approach3", "--flops", "5.76e23", "--json")
    assert a3["n_params"] == pytest.approx(40e9, abs=1e9)
    # hand calculation with the unrounded constants (Hoffmann et al. App. D.2 frontier)
    E, A, B, al, be = 1.69337, 406.401, 410.723, 0.33917, 0.28491
    G = (al * A / (be * B)) ** (1 / (al + be))
    assert a3["n_params"] == pytest.approx(G * (5.76e23 / 6) ** (be / (al + be)), rel=1e-12)
    assert run_json(capsys, "optimal", "--law", "chinchilla", "--flops", "5.76e23", "--json")["n_params"] \
        == a3["n_params"]
    a2 = run_json(capsys, "optimal", "--law", "chinchilla-approach2", "--flops", "5.76e23", "--json")
    assert a2["n_params"] == pytest.approx(63e9)
    k = load_law("chinchilla-approach2")
    assert k.n_opt(5.76e25) / k.n_opt(5.76e23) == pytest.approx(100**0.49)


def test_deepseek_allocation_in_parameters():
    # DeepSeek LLM eq. 4: M_opt = 0.1715 C^0.5243, D_opt = 5.8316 C^0.4757, C = M * D; N = M / 6
    law = load_law("deepseek-2024")
    for c in (1e20, 5.76e23, 1e25):
        m, d = 0.1715 * c**0.5243, 5.8316 * c**0.4757
        assert law.n_opt(c) == pytest.approx(m / 6, rel=1e-12)
        assert law.d_opt(c) == pytest.approx(d, rel=2e-3)  # 1/0.1715 = 5.8309: the bases agree to 0.012%
        assert law.n_opt(c) * law.d_opt(c) * 6 == pytest.approx(c)


def test_muennighoff_law_matches_its_constants():
    law = load_law("muennighoff-2023")
    n, d = 1e9, 2e10
    assert law.loss(n, d) == pytest.approx(1.869 + 520.8 / n**0.353 + 1487.7 / d**0.353)
