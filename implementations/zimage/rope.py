"""Rotary position embedding for the Z-Image DiT: three position axes, two ways to write it.

Every token carries three integer positions (caption index or image frame, row, column). Each axis
owns a slice of the head dimension (`axes_dims`); inside a slice of width d, the pair
(x[2i], x[2i+1]) is rotated by the angle `pos * theta ** (-2i / d)`. The implementations agree on
that and differ only in how they round it:

- "complex" (diffusers, DiffSynth, the original Tongyi code): angles are computed in float64,
  rounded to float32, and turned into complex64 with float32 cos/sin (`torch.polar`); q and k are
  viewed as complex float32 numbers and multiplied. diffusers reads the angles from a table of
  `axes_lens` rows per axis, so a position past the table fails there; it fails here too.
- "rotation" (ComfyUI, via Flux): the frequencies come from a float64 `linspace`, the float32
  positions are promoted to float64 by `einsum`, cos/sin are taken in float64 and only the 2x2
  rotation matrices are rounded to float32; q and k in float32 are multiplied by those matrices.

ComfyUI's table is the more accurate one: diffusers rounds the angle before cos/sin, an error that
grows with the position (about 6e-8 x angle), so the two forms agree to float32 noise only for
short sequences and drift apart, still well below bf16 resolution, for long ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

RopeForm = Literal["complex", "rotation"]


@dataclass(frozen=True)
class Rotary:
    """The per-token rotations of one sequence, precomputed in the form they are applied in.

    `table` is complex64 (S, head_dim/2) for "complex" and float32 (S, head_dim/2, 2, 2) for
    "rotation", one row per token in sequence order.
    """

    form: RopeForm
    table: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, S, heads, head_dim); the arithmetic is float32, the result x's dtype."""
        if self.form == "complex":
            pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
            return torch.view_as_real(pairs * self.table[:, None]).flatten(-2).type_as(x)
        pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
        matrix = self.table[:, None]
        rotated = matrix[..., 0] * pairs[..., 0] + matrix[..., 1] * pairs[..., 1]
        return rotated.reshape(x.shape).type_as(x)


def _complex_table(positions: torch.Tensor, axes_dims: Sequence[int], axes_lens: Sequence[int], theta: float):
    parts = []
    for axis, (d, length) in enumerate(zip(axes_dims, axes_lens, strict=True)):
        pos = positions[:, axis]
        if pos.numel() and int(pos.max()) >= length:
            raise ValueError(f"RoPE position {int(pos.max())} on axis {axis} is past the table of {length} (axes_lens)")
        freqs = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        angles = (pos.to(torch.float64)[:, None] * freqs).float()
        parts.append(torch.polar(torch.ones_like(angles), angles))
    return torch.cat(parts, dim=-1)


def _rotation_table(positions: torch.Tensor, axes_dims: Sequence[int], theta: float):
    parts = []
    for axis, d in enumerate(axes_dims):
        omega = 1.0 / (theta ** torch.linspace(0, (d - 2) / d, steps=d // 2, dtype=torch.float64))
        angles = torch.einsum("n,d->nd", positions[:, axis].to(torch.float32), omega)
        cos, sin = torch.cos(angles), torch.sin(angles)
        parts.append(torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angles.shape, 2, 2).float())
    return torch.cat(parts, dim=-3)


def rotary(
    positions: torch.Tensor, axes_dims: Sequence[int], axes_lens: Sequence[int], theta: float, form: RopeForm
) -> Rotary:
    """The rotations for integer `positions` (S, n_axes), on the positions' device.

    `axes_lens` bounds the positions of the "complex" form only (diffusers' table size).
    """
    cpu = positions.cpu()
    if form == "complex":
        table = _complex_table(cpu, axes_dims, axes_lens, theta)
    else:
        table = _rotation_table(cpu, axes_dims, theta)
    return Rotary(form=form, table=table.to(positions.device))
