"""Stock ComfyUI's Z-Image schedule and DiT time input, re-implemented.

Read from ComfyUI at git 4b1444f (2026-04-05, the M1kep/ComfyUI mirror of upstream):
- `comfy/supported_models.py` `ZImage`: sampling settings shift 3.0, multiplier 1.0; `model_base.Lumina2`
  is a FLOW model, so `model_sampling` is `ModelSamplingDiscreteFlow` (`comfy/model_sampling.py`),
  whose float32 table is `shift(i / 1000 * multiplier)`, i = 1..1000, `time_snr_shift` skipping the
  arithmetic when shift is exactly 1; the node `ModelSamplingAuraFlow` rebuilds it with another shift.
- `comfy/samplers.py`: the `simple`, `normal` and `sgm_uniform` schedulers return float32
  (`torch.FloatTensor`) sigmas; `KSampler.set_steps` handles denoise < 1 by scheduling
  `int(steps / denoise)` steps and keeping the last `steps + 1` sigmas (denoise > 0.9999 counts as 1).
- the time input: the Euler sampler calls the model with the float32 sigma; `BaseModel._apply_model`
  passes `model_sampling.timestep(sigma).float()` (sigma * 1.0); `NextDiT._forward`
  (`comfy/ldm/lumina/model.py`) computes `t = 1.0 - timesteps` in float32 and embeds `t * time_scale`
  (1000 for Z-Image, set by `comfy/model_detection.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch

from implementations.zimage.schedule_inputs import check_schedule_inputs
from parity.core.errors import InputError
from parity.stages.schedule import Schedule

_TABLE_SIZE = 1000
_MULTIPLIER = 1.0


class _DiscreteFlow:
    """`ModelSamplingDiscreteFlow`: the sigma table and its timestep <-> sigma maps."""

    def __init__(self, shift: float) -> None:
        self.shift = shift
        self.sigmas = self.sigma((torch.arange(1, _TABLE_SIZE + 1, 1) / _TABLE_SIZE) * _MULTIPLIER)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma * _MULTIPLIER

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        t = timestep / _MULTIPLIER
        if self.shift == 1.0:
            return t
        return self.shift * t / (1 + (self.shift - 1) * t)


def _simple(sampling: _DiscreteFlow, steps: int) -> torch.Tensor:
    # The stride is a float, len/steps, multiplied by x: not x*len/steps, which can round differently.
    stride = len(sampling.sigmas) / steps
    picked = [float(sampling.sigmas[-(1 + int(x * stride))]) for x in range(steps)]
    return torch.tensor([*picked, 0.0], dtype=torch.float32)


def _normal(sampling: _DiscreteFlow, steps: int, sgm: bool = False) -> torch.Tensor:
    # Interpolates in timestep space between sigma_max and sigma_min and maps back through
    # `sigma()`, which shifts again: with shift != 1 the last sigma is shift(shift(1/1000)), not
    # the table's smallest entry.
    start = sampling.timestep(sampling.sigma_max)
    end = sampling.timestep(sampling.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        # A table whose re-shifted end is within 1e-5 of 0 (here: shift below about 0.1) gets one
        # more step and no appended zero, so its last sigma is that tiny value, not 0.
        if math.isclose(float(sampling.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    picked = [float(sampling.sigma(t)) for t in timesteps]
    return torch.tensor([*picked, 0.0] if append_zero else picked, dtype=torch.float32)


def _sgm_uniform(sampling: _DiscreteFlow, steps: int) -> torch.Tensor:
    return _normal(sampling, steps, sgm=True)


SCHEDULERS: Mapping[str, Callable[[_DiscreteFlow, int], torch.Tensor]] = MappingProxyType(
    {"simple": _simple, "normal": _normal, "sgm_uniform": _sgm_uniform}
)


def comfyui_schedule(steps: int, shift: float = 3.0, scheduler: str = "simple", denoise: float = 1.0) -> Schedule:
    """The sigmas a stock ComfyUI KSampler (euler) steps through and the time NextDiT embeds."""
    check_schedule_inputs(steps, shift, denoise)
    if scheduler not in SCHEDULERS:
        raise InputError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    sampling = _DiscreteFlow(shift)
    if denoise > 0.9999:
        sigmas = SCHEDULERS[scheduler](sampling, steps)
    else:
        sigmas = SCHEDULERS[scheduler](sampling, int(steps / denoise))[-(steps + 1) :]
    model_t = 1.0 - sampling.timestep(sigmas[:-1]).float()
    return Schedule(sigmas=sigmas.to(torch.float64), model_t=model_t.to(torch.float64))
