"""Training-cost estimates for a compute-optimal model: memory and device-hours.

Peaks are DENSE bf16 tensor-core FLOP/s (never the 2:4-sparse figures NVIDIA
also quotes): H100 SXM and H200 989 TFLOP/s, A100 312 TFLOP/s (as in the
project reference on MFU), L4 121 TFLOP/s (NVIDIA L4 datasheet: 242.5 with
sparsity, half of that dense). Memory sizes are per device.

Memory convention (mixed-precision AdamW, activations NOT included):
    4 B fp32 master weights + 8 B AdamW m and v (fp32)
    + 2 B bf16 working copy of the weights + 2 B bf16 gradients = 16 B/param.
Device-hours = C / (peak · MFU) / 3600.
"""

from __future__ import annotations

import math

from research.errors import UserError, closest

GPUS = {
    # name: (dense bf16 peak FLOP/s, memory bytes, description)
    "h100": (989e12, 80e9, "NVIDIA H100 SXM"),
    "h200": (989e12, 141e9, "NVIDIA H200"),
    "a100": (312e12, 80e9, "NVIDIA A100 80GB"),
    "l4": (121e12, 24e9, "NVIDIA L4"),
}

BYTES_PER_PARAM = {"fp32_master": 4, "adamw_m_v": 8, "bf16_weights": 2, "bf16_grads": 2}
TRAIN_BYTES_PER_PARAM = sum(BYTES_PER_PARAM.values())  # 16


def gpu_spec(name: str):
    key = name.lower().replace("-", "").replace(" ", "")
    key = {"h100sxm": "h100", "a10080gb": "a100"}.get(key, key)
    if key not in GPUS:
        raise UserError(f"unknown --gpu {name!r}{closest(key, GPUS)}; known: {', '.join(GPUS)} "
                        "(or give --peak-flops in FLOP/s)")
    return key, GPUS[key]


def training_cost(flops: float, n_params: float, gpu: str | None = None,
                  peak_flops: float | None = None, mfu: float = 0.4) -> dict:
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    mem_bytes = None
    desc = "custom peak"
    if gpu:
        key, (peak, mem_bytes, desc) = gpu_spec(gpu)
        if peak_flops is None:
            peak_flops = peak
    if peak_flops is None or not peak_flops > 0:
        raise UserError("need --gpu NAME or a positive --peak-flops to estimate device-hours")
    state = TRAIN_BYTES_PER_PARAM * n_params
    hours = flops / (peak_flops * mfu) / 3600.0
    out = {
        "device": desc,
        "peak_flops": peak_flops,
        "mfu": mfu,
        "device_hours": hours,
        "device_days": hours / 24.0,
        "train_state_bytes": state,
        "bytes_per_param": TRAIN_BYTES_PER_PARAM,
        "memory_convention": "16 B/param: fp32 master 4 + AdamW m,v 8 + bf16 weights 2 + bf16 grads 2; "
                             "activations excluded",
    }
    if mem_bytes:
        out["device_memory_bytes"] = mem_bytes
        out["min_devices_for_state"] = max(1, math.ceil(state / mem_bytes))
    return out
