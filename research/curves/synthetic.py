"""Loss curves drawn from a known Multi-Power Law, for tests, benchmarks and the docs' example.

Noise is multiplicative and correlated from step to step (an AR(1) process), as on real
curves where consecutive batches' losses move together.
"""

from __future__ import annotations

import numpy as np

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
