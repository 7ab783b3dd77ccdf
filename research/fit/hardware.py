"""Training-cost estimates for a compute-optimal model: memory and device-hours.

Peaks and device memories come from the one device table, `research.train.devices`
(DENSE bf16 tensor-core FLOP/s, never the 2:4-sparse figures; sources there); `--gpu`
takes its short names (h100, h200, a100, l4, b200, tpu-v5p, ...).

Memory convention: `research.model.accounting.TRAINING_BYTES_PER_PARAM["bf16_mixed"]`
(mixed-precision AdamW, activations NOT included):
    4 B fp32 master weights + 8 B AdamW m and v (fp32)
    + 2 B bf16 working copy of the weights + 2 B bf16 gradients = 16 B/param.
Device-hours = C / (peak · MFU) / 3600.
"""

from __future__ import annotations

import math

from research.train.devices import PEAKS, Peak, peak_for_name
from research.errors import UserError, closest
from research.model.accounting import bytes_per_param, memory_convention

PRECISION = "bf16_mixed"  # what a large run on these devices trains in


def gpu_spec(name: str) -> Peak:
    peak = peak_for_name(name)
    if peak is None:
        raise UserError(f"unknown --gpu {name!r}{closest(name.lower(), PEAKS)}; known: {', '.join(PEAKS)} "
                        "(or give --peak-flops in FLOP/s)")
    return peak


def training_cost(flops: float, n_params: float, gpu: str | None = None,
                  peak_flops: float | None = None, mfu: float = 0.4) -> dict:
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    mem_bytes = None
    desc = "custom peak"
    if gpu:
        spec = gpu_spec(gpu)
        mem_bytes, desc = spec.memory_bytes, spec.name
        if peak_flops is None:
            peak_flops = spec.bf16_flops
    if peak_flops is None or not peak_flops > 0:
        raise UserError("need --gpu NAME or a positive --peak-flops to estimate device-hours")
    state = bytes_per_param(PRECISION) * n_params
    hours = flops / (peak_flops * mfu) / 3600.0
    out = {
        "device": desc,
        "peak_flops": peak_flops,
        "mfu": mfu,
        "device_hours": hours,
        "device_days": hours / 24.0,
        "train_state_bytes": state,
        "bytes_per_param": bytes_per_param(PRECISION),
        "memory_convention": memory_convention(PRECISION),
    }
    if mem_bytes:
        out["device_memory_bytes"] = mem_bytes
        out["min_devices_for_state"] = max(1, math.ceil(state / mem_bytes))
    return out
