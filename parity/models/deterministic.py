"""Weights that are bit-identical on every machine and every torch version.

`torch.manual_seed` streams are not promised stable across torch releases or devices, so the tiny
reference weights come from integer hashing we control: SplitMix64 over (seed, tensor name, index),
24 random bits per value, scaled in float64 and rounded once to float32. Every step is exact
integer arithmetic or a single IEEE rounding, so the bytes depend on nothing but the inputs.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    z = counter * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform(name: str, shape: tuple[int, ...], seed: int, low: float, high: float) -> torch.Tensor:
    """float32 values in [low, high), a pure function of (name, shape, seed)."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    count = math.prod(shape)
    with np.errstate(over="ignore"):
        counter = np.arange(count, dtype=np.uint64) + np.uint64(key)
        bits = _splitmix64(counter) >> np.uint64(40)
    unit = bits.astype(np.float64) / float(1 << 24)
    values = (low + (high - low) * unit).astype(np.float32)
    return torch.from_numpy(values.reshape(shape))


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in name order (what fixtures record)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
