"""The one table of accelerators: dense bf16 peak FLOP/s and memory per device.

Used everywhere a peak or a device memory is needed: MFU in `scaling bench` and in the
training metrics (matched on the `device_kind` string JAX reports), and device-hours in
`scaling optimal --gpu NAME` (matched on the table's short names).

Every figure is the DENSE bf16 tensor/matrix-unit peak of ONE JAX device (never the
2:4-sparsity number vendors print next to it; those are exactly twice these):

    H100 SXM   989 TFLOP/s   80 GB    NVIDIA H100 datasheet (1,979 with sparsity)
    H100 PCIe  756           80 GB    NVIDIA H100 datasheet (1,513 with sparsity)
    H100 NVL   835           94 GB    NVIDIA H100 NVL datasheet, per GPU (1,671 with sparsity)
    H200       989          141 GB    NVIDIA H200 datasheet (same tensor cores as H100 SXM)
    GH200      989                    NVIDIA GH200 datasheet (memory differs by model: unknown)
    H200 NVL   835          141 GB    NVIDIA H200 NVL datasheet (1,671 with sparsity)
    B200     2,250          180 GB    NVIDIA HGX B200 datasheet (4.5 PFLOP/s with sparsity)
    A100       312       80 / 40 GB   NVIDIA A100 datasheet, SXM and PCIe (624 with sparsity)
    L4         121           24 GB    NVIDIA L4 datasheet (242 with sparsity)
    TPU v4     275           32 GiB   Google Cloud TPU v4 docs, per chip (one JAX device per chip)
    TPU v5e    197           16 GiB   Google Cloud TPU v5e docs ("TPU v5 lite" in JAX)
    TPU v5p    459           95 GiB   Google Cloud TPU v5p docs ("TPU v5" or "TPU v5p" in JAX)
    TPU v6e    918           32 GiB   Google Cloud TPU v6e (Trillium) docs ("TPU v6 lite" in JAX)

Anything else (CPUs, older GPUs without bf16 tensor cores, new names) is unknown:
MFU is then reported as unknown rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from research.model.accounting import ModelCounts

GiB = 2**30


@dataclass(frozen=True)
class Peak:
    name: str  # canonical name, e.g. "H100 SXM"
    bf16_flops: float  # dense bf16 FLOP/s of one JAX device
    memory_bytes: float | None = None  # memory of one device; None where models differ
    key: str = ""  # short name for `--gpu` (lower case)


# (pattern on the normalised device kind, Peak); the first match wins, so specific before general.
_TABLE: list[tuple[str, Peak]] = [
    (r"\bgh200\b", Peak("GH200", 989e12, None, "gh200")),
    (r"\bh200\b.*\bnvl\b", Peak("H200 NVL", 835e12, 141e9, "h200-nvl")),
    (r"\bh200\b", Peak("H200", 989e12, 141e9, "h200")),
    (r"\bh100\b.*\bpcie\b", Peak("H100 PCIe", 756e12, 80e9, "h100-pcie")),
    (r"\bh100\b.*\bnvl\b", Peak("H100 NVL", 835e12, 94e9, "h100-nvl")),
    (r"\bh100\b", Peak("H100 SXM", 989e12, 80e9, "h100")),
    (r"\bb200\b", Peak("B200", 2250e12, 180e9, "b200")),
    (r"\ba100\b.*\b40gb\b", Peak("A100 40GB", 312e12, 40e9, "a100-40gb")),
    (r"\ba100\b", Peak("A100 80GB", 312e12, 80e9, "a100")),
    (r"\bl4\b", Peak("L4", 121e12, 24e9, "l4")),
    (r"\btpu v4\b(?! lite)", Peak("TPU v4", 275e12, 32 * GiB, "tpu-v4")),
    (r"\btpu v5 ?(lite|e)\b", Peak("TPU v5e", 197e12, 16 * GiB, "tpu-v5e")),
    (r"\btpu v5 ?p?$", Peak("TPU v5p", 459e12, 95 * GiB, "tpu-v5p")),
    (r"\btpu v6 ?(lite|e)\b", Peak("TPU v6e", 918e12, 32 * GiB, "tpu-v6e")),
]
PEAKS: dict[str, Peak] = {peak.key: peak for _, peak in _TABLE}  # by short name
ALIASES = {"h100sxm": "h100", "a10080gb": "a100", "a10040gb": "a100-40gb"}


def normalise_kind(device_kind: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'nvidia a100 sxm4 80gb'; 'TPU v5 lite' -> 'tpu v5 lite'."""
    return re.sub(r"[\s_\-]+", " ", device_kind.strip().lower())


def peak_for_kind(device_kind: str) -> Peak | None:
    """The dense bf16 peak of a device kind as JAX reports it, or None when unknown."""
    kind = normalise_kind(device_kind)
    for pattern, peak in _TABLE:
        if re.search(pattern, kind):
            return peak
    return None


def peak_for_name(name: str) -> Peak | None:
    """The table's entry for a short name ('h100', 'A100-40GB', 'tpu v5e'), or None."""
    squash = lambda s: re.sub(r"[\s_\-]+", "", s.lower())  # noqa: E731
    key = squash(name)
    key = squash({squash(a): k for a, k in ALIASES.items()}.get(key, key))
    return next((p for k, p in PEAKS.items() if squash(k) == key), None)


def peak_flops_of(devices) -> float | None:
    """Summed dense bf16 peak of these JAX devices; None when any kind is unknown."""
    total = 0.0
    for device in devices:
        peak = peak_for_kind(device.device_kind)
        if peak is None:
            return None
        total += peak.bf16_flops
    return total


def mfu_fields(counts: ModelCounts, tokens_per_s: float, devices) -> dict:
    """{"mfu": model FLOPs/s ÷ the devices' summed peak} for a metrics row, or {} when the
    peak of a device is unknown (a CPU). Model FLOPs: `counts.flops_per_token_model`."""
    peak = peak_flops_of(devices)
    if peak is None:
        return {}
    return {"mfu": counts.flops_per_token_model * tokens_per_s / peak}
