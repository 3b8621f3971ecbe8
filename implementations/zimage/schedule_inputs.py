"""The checks every schedule function makes on its inputs, written once."""

from __future__ import annotations

import math

from parity.core.errors import InputError


def check_schedule_inputs(steps: int, shift: float, denoise: float = 1.0) -> None:
    """InputError, naming the parameter, for a step count, shift or strength no sampler accepts."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if not 0 < shift < math.inf:
        raise InputError(f"shift must be a finite number greater than 0, got {shift}")
    if not 0 < denoise <= 1:
        raise InputError(f"denoise must be in (0, 1], got {denoise}")
