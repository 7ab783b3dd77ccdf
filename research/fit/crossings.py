"""Approach 1's estimate from the envelope's crossings (both sources: end points and training curves).

With a ladder of a few sizes the envelope (the lowest loss at each compute value) is a staircase:
one size wins over a range of compute, then the next. A least-squares line through the staircase's
winners is not an estimate of N_opt(C): every step sits at a size actually trained, the first and
last steps are cut short wherever the data's coverage ends, and a size whose token range starts or
ends inside the grid changes the winner where nothing crosses. On noise-free data from a known law,
over the study's design, the staircase gives a = 0.518 for a true 0.557, and 0.40 for a true 0.60
whose optimum leaves the sizes' token ranges (where it should give nothing).

A crossing is where two sizes' losses tie: adjacent grid values C_g, C_g+1 where the winner passes
from one size to another and both sizes are measured at both values. There the compute-optimal size
lies between the two: N_opt ~ sqrt(N_left·N_right) at C_x = sqrt(C_g·C_g+1). This is exact for an
IsoFLOP curve symmetric in ln N; a law's curve is skewed, which shifts every crossing's N_opt by
the same factor where neighbouring sizes keep one ratio (the IsoFLOP curve keeps its shape in ln N
as C grows), so the exponent is unaffected. A winner changing where a profile starts or ends is not a
crossing and is left out.

The exponent: N_opt = k_N·C^a fitted through the crossings by least squares in log-log, the same
regression as Approach 2's through its parabolas' minima (`research.fit.powerlaw.fit_allocation`), and
D_opt = C / f(N_opt) at each crossing in the table's FLOP convention (b = 1 - a exactly under 6n).
Chosen by simulation (200 noisy copies of the study's design from its own law, a = 0.557, with its
measured noise of 0.006 per run and 0.0085 per trunk in ln L): this regression gives a mean of 0.570
(median 0.558, sd 0.132); regressing ln C on ln N and inverting, which treats the crossings' compute as
the noisy coordinate, 0.603 (median 0.588; 1/slope has a heavy tail); the staircase 0.477 (sd 0.097: a
bias that more seeds do not remove; its root-mean-square error, 0.125, is no worse than this
regression's 0.133 only because it scatters less). With independent noise only (0.006 per run), both
crossing regressions lie within 0.01 of the truth (rms error 0.049) and the staircase 0.05 below it
(0.075). `benchmarks/approach1_estimators.py` runs the simulation
(`results/bench/approach1_estimators_study-cpu*.json`).
"""

from __future__ import annotations

import numpy as np

from research.fit.powerlaw import fit_allocation

SAME_SIZE_REL = 1e-6


def crossings(N_R, L_RG, C_G) -> dict[str, np.ndarray]:
    """The crossings of rows (sizes or trials with parameters N_R) whose losses at compute values C_G are
    L_RG (+inf where a row is not measured): flops, n_left, n_right and n_opt = sqrt(n_left·n_right)."""
    N_R, C_G = np.asarray(N_R, float), np.asarray(C_G, float)
    covered = np.isfinite(L_RG)
    win = np.argmin(np.where(covered, L_RG, np.inf), axis=0)
    g = np.arange(L_RG.shape[1] - 1)
    left, right = win[:-1], win[1:]
    changes = np.abs(np.log(N_R[left] / N_R[right])) > SAME_SIZE_REL
    both = covered[left, g] & covered[left, g + 1] & covered[right, g] & covered[right, g + 1]
    k = np.flatnonzero(changes & both)
    n_l, n_r = N_R[left[k]], N_R[right[k]]
    return {"flops": np.sqrt(C_G[k] * C_G[k + 1]), "n_left": n_l, "n_right": n_r, "n_opt": np.sqrt(n_l * n_r)}


def fit_crossings(x: dict, per_token) -> dict | None:
    """{"k_N", "a", "k_D", "b"} from crossings (see the module docstring), or None where they cannot give a
    rising N_opt(C): fewer than two distinct crossing sizes, or N_opt not rising with compute."""
    C_X, N_X = np.asarray(x["flops"], float), np.asarray(x["n_opt"], float)
    if len(np.unique(np.round(np.log(N_X), 9))) < 2:
        return None
    fitted = fit_allocation(C_X, N_X, C_X / per_token(N_X))
    return fitted if fitted["a"] > 0 else None


def crossing_rows(x: dict) -> list[dict]:
    """The crossings as fit.json rows."""
    return [{"flops": float(c), "n_left": float(l), "n_right": float(r), "n_opt": float(n)}
            for c, l, r, n in zip(x["flops"], x["n_left"], x["n_right"], x["n_opt"])]


def refusal(x: dict, what: str) -> str:
    """Why crossings cannot give an exponent, in one line."""
    pairs = len({(float(l), float(r)) for l, r in zip(x["n_left"], x["n_right"])})
    return (f"Approach 1: the {what} has {len(x['flops'])} crossing(s) between sizes measured on both sides "
            f"({pairs} size pair(s)); an exponent needs crossings at >= 2 size pairs with N_opt rising with "
            "compute. Elsewhere the winner changes only where a size's token range starts or ends, which is "
            "not an optimum: widen the sizes' token ranges so neighbouring sizes overlap around the optimum, "
            "or use Approach 2")
