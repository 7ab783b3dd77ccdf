"""Dense bf16 peak FLOP/s per device, keyed by the `device_kind` string JAX reports.

Every figure is the DENSE bf16 tensor/matrix-unit peak of ONE JAX device (never the
2:4-sparsity number vendors print next to it; those are exactly twice these):

    H100 SXM   989 TFLOP/s   NVIDIA H100 datasheet (1,979 with sparsity)
    H100 PCIe  756           NVIDIA H100 datasheet (1,513 with sparsity)
    H100 NVL   835           NVIDIA H100 NVL datasheet, per GPU (1,671 with sparsity)
    H200 / GH200  989        NVIDIA H200 / GH200 datasheets (same tensor cores as H100 SXM)
    H200 NVL   835           NVIDIA H200 NVL datasheet (1,671 with sparsity)
    B200     2,250           NVIDIA HGX B200 datasheet (4.5 PFLOP/s with sparsity)
    A100       312           NVIDIA A100 datasheet, SXM and PCIe, 40 and 80 GB (624 with sparsity)
    L4         121           NVIDIA L4 datasheet (242 with sparsity)
    TPU v4     275           Google Cloud TPU v4 docs, per chip (one JAX device per chip)
    TPU v5e    197           Google Cloud TPU v5e docs ("TPU v5 lite" in JAX)
    TPU v5p    459           Google Cloud TPU v5p docs ("TPU v5" or "TPU v5p" in JAX)
    TPU v6e    918           Google Cloud TPU v6e (Trillium) docs ("TPU v6 lite" in JAX)

Anything else (CPUs, older GPUs without bf16 tensor cores, new names) is unknown:
MFU is then reported as unknown rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    name: str  # canonical name, e.g. "H100 SXM"
    bf16_flops: float  # dense bf16 FLOP/s of one JAX device


# (pattern on the normalised device kind, Peak); the first match wins, so specific before general.
_TABLE: list[tuple[str, Peak]] = [
    (r"\bgh200\b", Peak("GH200", 989e12)),
    (r"\bh200\b.*\bnvl\b", Peak("H200 NVL", 835e12)),
    (r"\bh200\b", Peak("H200", 989e12)),
    (r"\bh100\b.*\bpcie\b", Peak("H100 PCIe", 756e12)),
    (r"\bh100\b.*\bnvl\b", Peak("H100 NVL", 835e12)),
    (r"\bh100\b", Peak("H100 SXM", 989e12)),
    (r"\bb200\b", Peak("B200", 2250e12)),
    (r"\ba100\b", Peak("A100", 312e12)),
    (r"\bl4\b", Peak("L4", 121e12)),
    (r"\btpu v4\b(?! lite)", Peak("TPU v4", 275e12)),
    (r"\btpu v5 ?(lite|e)\b", Peak("TPU v5e", 197e12)),
    (r"\btpu v5 ?p?$", Peak("TPU v5p", 459e12)),
    (r"\btpu v6 ?(lite|e)\b", Peak("TPU v6e", 918e12)),
]


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
