"""DiffSynth-Studio's Z-Image schedule and DiT time input, re-implemented.

Read from `diffsynth` 2.1.12 (the PyPI wheel): `FlowMatchScheduler.set_timesteps_z_image` in
`diffsynth/diffusion/flow_match.py`, the sampling loop of `ZImagePipeline.__call__` and
`model_fn_z_image_turbo` in `diffsynth/pipelines/z_image.py`. What changes numbers:
- the schedule is float32 (`torch.linspace` default dtype) and has no terminal entry; the Euler
  step (`FlowMatchScheduler.step`) uses 0 after the last sigma, which the record makes explicit;
- the loop casts each timestep to the pipeline dtype (bf16 by default) before the model function,
  and the Turbo model function feeds `1000 - t`, computed in that dtype, straight to the time
  embedder; the Euler step itself looks the step up in the float32 schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from implementations.zimage.schedule_inputs import check_schedule_inputs
from parity.core.errors import InputError
from parity.stages.schedule import Schedule

_NUM_TRAIN_TIMESTEPS = 1000


def set_timesteps_z_image(
    steps: int,
    denoising_strength: float = 1.0,
    shift: float = 3.0,
    target_timesteps: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffSynth's float32 `(sigmas, timesteps)`, each (N,), with no terminal entry."""
    sigma_min, sigma_max = 0.0, 1.0
    sigma_start = sigma_min + (sigma_max - sigma_min) * denoising_strength
    sigmas = torch.linspace(sigma_start, sigma_min, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    timesteps = sigmas * _NUM_TRAIN_TIMESTEPS
    if target_timesteps is not None:
        # Each target replaces the nearest scheduled timestep (first on a tie), and in 2.1.12 its
        # sigma too; DiffSynth 2.1.2 (git fed7b18) replaced the timestep only.
        for target in torch.tensor(target_timesteps, dtype=timesteps.dtype):
            index = torch.argmin((timesteps - target).abs())
            timesteps[index] = target
            sigmas[index] = target / _NUM_TRAIN_TIMESTEPS
    return sigmas, timesteps


def diffsynth_schedule(
    steps: int,
    shift: float = 3.0,
    denoise: float = 1.0,
    dtype: torch.dtype = torch.bfloat16,
    target_timesteps: Sequence[float] | None = None,
) -> Schedule:
    """The sigmas DiffSynth's Euler step uses and the time its Turbo model function embeds.

    `dtype` is the pipeline's `torch_dtype`, the dtype each timestep is cast to before the model
    function sees it. `model_t` is the embedder's input divided by 1000, to compare with the
    implementations that feed `1 - sigma` and scale inside the DiT.
    """
    check_schedule_inputs(steps, shift, denoise)
    # Nearest-entry replacement keeps the timesteps in order, but a target outside the training
    # range would give a sigma above 1 or below the terminal 0.
    if target_timesteps is not None and not all(0 <= t <= _NUM_TRAIN_TIMESTEPS for t in target_timesteps):
        raise InputError(f"target_timesteps must lie in [0, {_NUM_TRAIN_TIMESTEPS}], got {list(target_timesteps)}")
    sigmas, timesteps = set_timesteps_z_image(steps, denoise, shift, target_timesteps)
    embedded = torch.cat([_NUM_TRAIN_TIMESTEPS - t.unsqueeze(0).to(dtype) for t in timesteps])
    return Schedule(
        sigmas=torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float64),
        model_t=embedded.to(torch.float64) / _NUM_TRAIN_TIMESTEPS,
    )
