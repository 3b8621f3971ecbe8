"""The schedule the installed diffusers `ZImagePipeline` samples with, obtained by calling it.

Nothing here restates a diffusers formula: the installed scheduler class and the pipeline module's
own helpers (`get_default_z_image_sigmas`, `calculate_shift`, `retrieve_timesteps`) are called in
the order `ZImagePipeline.__call__` calls them, so a diffusers upgrade that changes the schedule
changes what this returns.

`legacy=True` reproduces diffusers 0.36.0-0.38.0 (tags v0.36.0 9380e58, v0.37.0, v0.37.1, v0.38.0
275869d), whose pipeline set `scheduler.sigma_min = 0.0` and passed no sigmas, so the scheduler
spaced `N` timesteps from 1000 down to 0 inclusive: the last step starts at sigma 0 and does
nothing. v0.39.0 (a3608b5, diffusers PR #13730) replaced that with `get_default_z_image_sigmas`.
The scheduler's no-sigmas path is numerically unchanged since v0.36.0, so driving the installed
scheduler that way gives the old numbers.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.z_image.pipeline_z_image import (
    calculate_shift,
    get_default_z_image_sigmas,
    retrieve_timesteps,
)

from implementations.zimage.schedule_inputs import check_schedule_inputs
from parity.stages.schedule import Schedule

# The pipeline derives mu from the latent size; with `use_dynamic_shifting=False` (the Turbo
# scheduler config) the scheduler ignores it, so any size gives the same schedule. 1024x1024 is
# the pipeline's default size: latents 128x128, packed 2x2, 64*64 tokens.
_IMAGE_SEQ_LEN = 64 * 64


def diffusers_schedule(steps: int, shift: float = 3.0, legacy: bool = False) -> Schedule:
    """The sigmas and DiT time input of `ZImagePipeline(num_inference_steps=steps)`.

    `legacy` gives what diffusers 0.36-0.38 computed (see the module docstring).
    """
    check_schedule_inputs(steps, shift)
    # Z-Image-Turbo's scheduler/scheduler_config.json, with the shift made a parameter.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)
    config = scheduler.config
    mu = calculate_shift(
        _IMAGE_SEQ_LEN,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    if legacy:
        scheduler.sigma_min = 0.0
        sigmas = None
    else:
        sigmas = get_default_z_image_sigmas(steps)
    timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", sigmas=sigmas, mu=mu)
    # The pipeline's loop, one step at a time and in the timesteps' own dtype (float32).
    model_t = torch.cat([(1000 - t.expand(1)) / 1000 for t in timesteps])
    return Schedule(sigmas=scheduler.sigmas.to(torch.float64), model_t=model_t.to(torch.float64))
