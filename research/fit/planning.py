"""Planning beyond compute-optimal: inference demand (Sardana et al. 2024) and finite unique data
(Muennighoff et al. 2023), for any law of the form L(N, D) = E + A/N^α + B/D^β.

Inference-aware (`inference_optimal`), Sardana et al. 2024, "Beyond Chinchilla-Optimal: Accounting
for Inference in Language Model Scaling Laws": for the loss ℓ the compute-optimal model reaches at
budget C, and T tokens of expected inference demand, choose N and D to minimise

    training + inference = f(N)·D + 2·N·T      subject to  L(N, D) = ℓ,

with f(N) = k·N^p the law's training FLOPs per token (6·N in the 6n convention) and 2·N FLOPs per
inference token (one forward pass). Along the constraint D(N) = (B / (ℓ − E − A/N^α))^(1/β), defined
for N above N_min = (A/(ℓ − E))^(1/α); the cost is minimised over log N by bounded Brent
(scipy.optimize.minimize_scalar) between N_min and 10·N_opt (at T = 0 the answer is N_opt itself).

Data-constrained (`data_constrained`), Muennighoff et al. 2023, "Scaling Data-Constrained Language
Models": with U unique tokens seen D ≥ U times in total, the data term of the law sees the
effective data

    D' = U + U·R_D*·(1 − exp(−R_D / R_D*)),   R_D = D/U − 1 (repetitions beyond the first epoch),

R_D* = 15.4 (D' = D when D ≤ U). At budget C, N and D = C/f(N) are chosen to minimise
E + A/N^α + B/D'^β; no amount of repetition gives more than U·(1 + R_D*) effective tokens.
Muennighoff et al. fitted R_D* with their own L(N, D) (`muennighoff-2023`); with another law it is
an approximation, and the result says so. Their matching decay for excess parameters (R_N* ≈ 5.3)
is not applied.
"""

from __future__ import annotations

import math

import numpy as np

from research.errors import UserError

R_D_STAR = 15.4  # Muennighoff et al. 2023: decay constant of repeated data's value
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0  # one forward pass: 2·N FLOPs per token served
N_UPPER_FACTOR = 10.0  # search bracket's top: 10·N_opt


def _loss_law(law, what: str):
    if not all(hasattr(law, k) for k in ("E", "A", "B", "alpha", "beta")):
        raise UserError(f"{what} needs a law with a loss L(N, D) = E + A/N^alpha + B/D^beta; {law.name} is an "
                        "allocation N_opt(C) only: use chinchilla-approach3, epoch-2024, muennighoff-2023 or a fit's "
                        "approach3")
    return law


def tokens_for_loss(law, n, target: float):
    """D reaching loss `target` with N parameters under E + A/N^α + B/D^β (inf where unreachable)."""
    n = np.asarray(n, float)
    gap = target - law.E - law.A / n**law.alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (law.B / np.where(gap > 0, gap, 1.0)) ** (1.0 / law.beta), np.inf)


def inference_optimal(law, flops: float, inference_tokens: float) -> dict:
    """Sardana et al. 2024: the (N, D) reaching the compute-optimal loss at `flops` with the least
    training + inference FLOPs for `inference_tokens` tokens served."""
    from scipy.optimize import minimize_scalar

    law = _loss_law(law, "--inference-tokens")
    if not (inference_tokens >= 0 and math.isfinite(inference_tokens)):
        raise UserError(f"--inference-tokens must be a non-negative number of tokens, got {inference_tokens}")
    f = law.per_token
    n0, d0 = float(law.n_opt(flops)), float(law.d_opt(flops))
    target = float(law.loss(n0, d0))
    if not target > law.E:
        raise UserError(f"law {law.name} gives loss {target:.4g} <= E at C = {flops:.4g}; no inference trade-off")
    n_min = (law.A / (target - law.E)) ** (1.0 / law.alpha)

    def cost(log_n):
        n = math.exp(log_n)
        d = float(tokens_for_loss(law, n, target))
        return float(f(n)) * d + INFERENCE_FLOPS_PER_PARAM_TOKEN * n * inference_tokens

    lo, hi = math.log(n_min) + 1e-9, math.log(n0 * N_UPPER_FACTOR)
    res = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
    n = math.exp(res.x)
    d = float(tokens_for_loss(law, n, target))
    train, infer = float(f(n)) * d, INFERENCE_FLOPS_PER_PARAM_TOKEN * n * inference_tokens
    base_infer = INFERENCE_FLOPS_PER_PARAM_TOKEN * n0 * inference_tokens
    base_total = flops + base_infer
    return {
        "method": "Sardana et al. 2024: minimise f(N)*D + 2*N*T at the compute-optimal loss",
        "inference_tokens": float(inference_tokens),
        "target_loss": target,
        "n_params": n, "tokens": d, "tokens_per_param": d / n,
        "training_flops": train, "inference_flops": infer, "total_flops": train + infer,
        "chinchilla_optimal": {"n_params": n0, "tokens": d0, "training_flops": float(flops),
                               "inference_flops": base_infer, "total_flops": base_total},
        "flops_saved": base_total - (train + infer),
        "flops_saved_fraction": (base_total - (train + infer)) / base_total,
        "convention": f"training {f.describe()}; inference 2*N FLOPs per token",
    }


def effective_data(tokens, unique_tokens: float, r_star: float = R_D_STAR):
    """Muennighoff et al. 2023 effective data D' of D tokens drawn from U unique ones (D' = D for D <= U)."""
    d = np.asarray(tokens, float)
    u = float(unique_tokens)
    r = np.maximum(d / u - 1.0, 0.0)
    return np.where(d <= u, d, u + u * r_star * (1.0 - np.exp(-r / r_star)))


def data_constrained(law, flops: float, unique_tokens: float, r_star: float = R_D_STAR) -> dict:
    """The (N, D) minimising E + A/N^α + B/D'^β at `flops` when only `unique_tokens` are unique."""
    from scipy.optimize import minimize_scalar

    law = _loss_law(law, "--unique-tokens")
    if not (unique_tokens > 0 and math.isfinite(unique_tokens)):
        raise UserError(f"--unique-tokens must be a positive number of tokens, got {unique_tokens}")
    f = law.per_token
    n0, d0 = float(law.n_opt(flops)), float(law.d_opt(flops))
    loss0 = float(law.loss(n0, d0))

    def loss_at(log_n):
        n = math.exp(log_n)
        d = flops / float(f(n))
        return float(law.loss(n, float(effective_data(d, unique_tokens, r_star))))

    if d0 <= unique_tokens:
        n, d = n0, d0
    else:  # the bracket: from a model that sees the data once up to 1e4 x that size
        n_once = float((flops / (f.k * unique_tokens)) ** (1.0 / f.p))
        lo, hi = math.log(min(n0, n_once)) - 2.0, math.log(max(n0, n_once)) + 4.0
        res = minimize_scalar(loss_at, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        n = math.exp(res.x)
        d = flops / float(f(n))
    d_eff = float(effective_data(d, unique_tokens, r_star))
    notes = []
    if law.name != "muennighoff-2023":
        notes.append(f"R_D* = {r_star} was fitted by Muennighoff et al. with their own law; under {law.name} it is "
                     "an approximation")
    return {
        "method": f"Muennighoff et al. 2023: D' = U + U*R_D*(1 - exp(-(D/U - 1)/R_D*)), R_D* = {r_star}",
        "unique_tokens": float(unique_tokens),
        "n_params": n, "tokens": d, "tokens_per_param": d / n,
        "epochs": d / unique_tokens, "effective_tokens": d_eff,
        "loss": float(law.loss(n, d_eff)),
        "unconstrained": {"n_params": n0, "tokens": d0, "loss": loss0, "epochs": d0 / unique_tokens,
                          "loss_with_repeats": float(law.loss(n0, float(effective_data(d0, unique_tokens, r_star))))},
        "max_effective_tokens": unique_tokens * (1.0 + r_star),
        "notes": notes,
    }
