"""Loss curves drawn from a known Multi-Power Law, for tests, benchmarks and the docs' example.

Noise is multiplicative and correlated from step to step (an AR(1) process), as on real
curves where consecutive batches' losses move together.
"""

from __future__ import annotations

import numpy as np

from research.curves.fitting import Curve
from research.curves.laws import MULTIPOWER, CurveSums, law_loss
from research.curves.schedules import schedule_lr

# Of the order Luo et al. report for their 25M-400M models (LR about 3e-4).
TRUTH = {"L0": 2.8, "A": 0.45, "alpha": 0.5, "B": 400.0, "C": 2.0, "beta": 0.6, "gamma": 0.55}
INIT_LOSS = float(np.log(32768))  # a fresh model's loss (uniform over a 32k vocabulary): the curve starts below it
SCHEDULE_SET = {  # name -> (kind, share of the horizon, options)
    "constant": ("constant", 1.0, {}),
    "cosine": ("cosine", 1.0, {}),
    "wsd-0.2": ("wsd", 1.0, {"cooldown_fraction": 0.2}),
    "wsd-0.1-linear": ("wsd", 1.0, {"cooldown_fraction": 0.1, "cooldown_shape": "linear"}),
    "cosine-half": ("cosine", 0.5, {}),
}


def ar1_noise(n: int, sd: float, rho: float, rng) -> np.ndarray:
    """Stationary AR(1) noise of standard deviation `sd` and lag-1 correlation `rho`."""
    from scipy.signal import lfilter

    shocks = rng.standard_normal(n) * sd * np.sqrt(1.0 - rho**2)
    shocks[0] = rng.standard_normal() * sd
    return lfilter([1.0], [1.0, -rho], shocks)


def synthetic_curves(steps: int = 3000, peak_lr: float = 3e-4, noise: float = 0.003, rho: float = 0.5,
                     seed: int = 0, truth: dict | None = None, names=tuple(SCHEDULE_SET), log_every: int = 1,
                     warmup_steps: int | None = None) -> list[dict]:
    """Rows {run, step, lr, loss} of each named schedule (loss given every `log_every` steps) and the truth."""
    truth = truth or TRUTH
    rng = np.random.default_rng(seed)
    rows = []
    for name in names:
        kind, share, options = SCHEDULE_SET[name]
        T = max(2, round(steps * share))
        lr = schedule_lr(kind, T, peak_lr, warmup_steps=warmup_steps or max(1, steps // 50), **options)
        step = np.arange(1, T + 1)
        clean = np.minimum(law_loss(MULTIPOWER, CurveSums.of(lr), step, truth), INIT_LOSS)
        loss = clean * (1.0 + ar1_noise(T, noise, rho, rng))
        for t in range(T):
            logged = (t + 1) % log_every == 0 or t + 1 == T
            rows.append({"run": name, "step": int(step[t]), "lr": float(lr[t]),
                         "loss": float(loss[t]) if logged else None, "true_loss": float(clean[t])})
    return rows


# Luo et al.'s Multi-Power Law fit of their 400M-parameter model (their repository's table).
LUO_400M = {"L0": 2.375, "A": 0.654, "alpha": 0.429, "B": 523.4, "C": 2.025, "beta": 0.594, "gamma": 0.635}


def published_like_curves(truth: dict, steps: int = 12000, peak: float = 3e-4, warmup: int = 1000,
                          noise: float = 0.002, seed: int = 0):
    """Loss curves of one size with the schedules Luo et al. publish: constant, cosine (to 10%), a
    two-stage step schedule (x0.3 at 80% of the post-warmup steps, x0.03 at 90%) and WSD (last 20%,
    1-sqrt), drawn from `truth` with AR(0.95) noise. Returns ({name: noisy Curve}, {name: noiseless
    Curve}), both measured from the end of the warmup on."""
    t = np.arange(1, steps + 1)
    u = np.clip((t - warmup) / (steps - warmup), 0.0, 1.0)
    lrs = {"constant": np.full(steps, peak), "cosine": peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * u))),
           "two-stage": peak * np.where(u < 0.8, 1.0, np.where(u < 0.9, 0.3, 0.03)),
           "wsd": peak * np.where(u < 0.8, 1.0, np.maximum(1 - np.sqrt(np.clip((u - 0.8) / 0.2, 0, 1)), 0.01))}
    rng = np.random.default_rng(seed)
    noisy, clean = {}, {}
    for name, lr in lrs.items():
        lr[:warmup] = peak * t[:warmup] / warmup
        loss = law_loss(MULTIPOWER, CurveSums.of(lr), t, truth)
        keep = t > warmup
        clean[name] = Curve(name, lr, t[keep], loss[keep])
        noisy[name] = Curve(name, lr, t[keep], (loss * (1 + ar1_noise(steps, noise, 0.95, rng)))[keep])
    return noisy, clean
