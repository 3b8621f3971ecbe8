"""How much memory a device has left, for deciding whether two models fit at once.

A real Z-Image run holds a 4B text encoder, a 6B DiT and a VAE; on a machine that cannot hold the
next one beside the ones loaded, those are dropped when it loads (`Context._make_room_for`). Only
what the platform reports is used: Linux's MemAvailable for the CPU, the CUDA driver's free memory
for a GPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

MEMINFO = Path("/proc/meminfo")
# Room left beside the weights for activations, allocator slack and the rest of the process.
HEADROOM = 1.2


def available_bytes(device: str) -> int | None:
    """Free memory on `device` in bytes, or None where the platform does not say."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free
    if device != "cpu" or not MEMINFO.is_file():
        return None
    for line in MEMINFO.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def weight_bytes(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> int:
    """The size of tensors of these shapes in `dtype`."""
    return sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize


def is_short(needed: int, available: int | None) -> bool:
    """True when `needed` bytes (plus headroom) do not fit in what is `available` (unknown: they fit)."""
    return available is not None and needed * HEADROOM > available
