"""AdamW with global-norm clipping, and the learning-rate schedules.

Schedules (peak `lr`, linear warmup from 0 over `warmup_steps`, horizon = the run's own steps):
    cosine    cosine decay to min_lr_ratio * lr at the last step (Chinchilla's setting)
    constant  flat after warmup
    wsd       warmup-stable-decay: flat, then a cooldown over the last `decay_fraction`
              of steps to min_lr_ratio * lr, shaped "1-sqrt" (Hägele et al. 2024) or "linear"
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.config import RunConfig, cooldown_steps, total_steps, warmup_steps  # noqa: F401 (cooldown_steps: re-exported)


SCHEDULE_FIELDS = ("peak", "floor", "warmup", "steps", "decay_steps")


def schedule_numbers(config: RunConfig) -> np.ndarray:
    """The run's schedule as numbers (float32, in SCHEDULE_FIELDS order).

    The train step takes them as an argument rather than as constants baked into the
    compiled program, so runs that differ only in their horizon (the trials of one shape
    across the budgets of a sweep) compile to the same program and share one entry of
    the persistent compilation cache.
    """
    t = config.train
    steps = total_steps(config)
    return np.array([t.lr, t.lr * t.min_lr_ratio, warmup_steps(config), steps,
                     cooldown_steps(steps, t.decay_fraction)], np.float32)


def learning_rate_schedule(config: RunConfig, numbers=None):
    """step -> learning rate; `numbers` (traced or not) default to `schedule_numbers(config)`."""
    t = config.train
    numbers = schedule_numbers(config) if numbers is None else numbers
    peak, floor, warmup, steps, decay_steps = (numbers[i] for i in range(len(SCHEDULE_FIELDS)))

    def schedule(step):
        # `step` counts updates already applied, so the first update uses step 0.
        s = jnp.asarray(step, jnp.float32) + 1.0
        warm = peak * jnp.minimum(s / warmup, 1.0)
        if t.schedule == "constant":
            return warm
        if t.schedule == "cosine":
            frac = jnp.clip((s - warmup) / jnp.maximum(steps - warmup, 1.0), 0.0, 1.0)
            decayed = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
        else:  # wsd
            frac = jnp.clip((s - (steps - decay_steps)) / decay_steps, 0.0, 1.0)
            shape = 1.0 - jnp.sqrt(frac) if t.decay_shape == "1-sqrt" else 1.0 - frac
            decayed = floor + (peak - floor) * shape
        return jnp.where(s <= warmup, warm, decayed)

    return schedule


def _decay_mask(params):
    """Decay matrices (embeddings, projections), not norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: RunConfig, numbers=None) -> optax.GradientTransformation:
    """AdamW on `learning_rate_schedule(config, numbers)`; the state's structure does not depend on `numbers`."""
    t = config.train
    adamw = optax.adamw(learning_rate_schedule(config, numbers), b1=t.beta1, b2=t.beta2, eps=t.eps,
                        weight_decay=t.weight_decay, mask=_decay_mask)
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw) if t.grad_clip > 0 else adamw
