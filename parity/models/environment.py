"""What the numbers depend on besides the code: recorded with every run and every fixture."""

from __future__ import annotations

import platform
from typing import Any

import torch

from parity.models.context import Context


def environment(context: Context) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "device": context.device,
        "dtype": context.dtype,
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "checkpoint": str(context.checkpoint) if context.checkpoint else None,
    }
