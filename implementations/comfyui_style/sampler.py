"""ComfyUI's KSampler path for Z-Image (`comfy/samplers.py`, `comfy/k_diffusion/sampling.py`).

Stock ComfyUI and node packs built on it (the in-house encoder) sample the same way, so this is
written once. What differs from diffusers:
- noise: `randn` of the latent's own shape (1, 16, H//8, W//8), float32, from a CPU generator
  seeded with the seed; for sizes divisible by 16 that is diffusers' draw exactly;
- the model works in x0 space: the DiT's output v gives `denoised = x - sigma * v`, guidance
  combines denoised predictions, `uncond + s (cond - uncond)`, and is skipped at s = 1;
- the Euler step recovers the velocity as `d = (x - denoised) / sigma` before stepping, so the
  velocity it applies differs from the DiT's output by rounding;
- a latent whose sides are not a multiple of the patch size is padded (circularly) for the DiT
  and the output cropped back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from implementations.comfyui_style.dit_variant import COMFYUI
from implementations.comfyui_style.schedule import comfyui_schedule
from implementations.zimage.sampling import BlockRecorder, euler_loop
from implementations.zimage.shared_dit import shared_dit
from parity.models.context import Context
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.suite.cases import Case

# velocity(x, t, cap) -> v, where t is the DiT's time input (1 - sigma).
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
PATCH = 2


def comfy_noise(seed: int, height: int, width: int) -> torch.Tensor:
    """`prepare_noise`: the empty latent's shape, float32, CPU generator seeded with `seed`."""
    shape = (1, 16, height // 8, width // 8)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def padded_velocity(velocity: Velocity) -> Velocity:
    """Pad H and W to the patch size (circular, as `pad_to_patch_size`), then crop the output."""

    def run(x: torch.Tensor, t: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
        if not (pad_h or pad_w):
            return velocity(x, t, cap)
        return velocity(F.pad(x, (0, pad_w, 0, pad_h), mode="circular"), t, cap)[..., :h, :w]

    return run


def comfy_sample(
    velocity: Velocity,
    inputs: DenoiseInputs,
    cfg: float,
    zero_negative: bool = True,
    recorder: BlockRecorder | None = None,
    device: torch.device | str = "cpu",
) -> Denoise:
    sigmas = inputs.schedule.sigmas.to(torch.float32)
    positive = inputs.positive.hidden
    negative = None
    if cfg != 1.0 and inputs.negative is not None:
        # The official workflow runs the negative through ConditioningZeroOut.
        negative = torch.zeros_like(inputs.negative.hidden) if zero_negative else inputs.negative.hidden
    model = padded_velocity(velocity)

    def denoised(x: torch.Tensor, k: int) -> torch.Tensor:
        sigma = sigmas[k]
        t = (1.0 - sigma).reshape(1)
        cond = x - sigma * model(x, t, positive).float()
        if negative is None:
            return cond
        uncond = x - sigma * model(x, t, negative).float()
        return uncond + (cond - uncond) * cfg

    def predict(x: torch.Tensor, k: int) -> torch.Tensor:
        return (x - denoised(x, k)) / sigmas[k]

    def step(x: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
        return x + d * (sigmas[k + 1] - sigmas[k])

    steps = len(sigmas) - 1
    return euler_loop(predict, step, steps, inputs.noise, torch.float32, inputs.forced_latents, recorder, device)


class ComfySampler:
    """KSampler (euler, simple) on ComfyUI's Z-Image model: the sampling half of any ComfyUI adapter."""

    context: Context

    def schedule(self, case: Case) -> Schedule:
        return comfyui_schedule(case.steps, case.shift, "simple", case.denoise)

    def noise(self, case: Case) -> torch.Tensor:
        return comfy_noise(case.seed, case.height, case.width)

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        dit = shared_dit(self.context, COMFYUI)
        recorder = BlockRecorder(dit, inputs.capture_blocks)
        sigmas = inputs.schedule.sigmas.to(torch.float32)

        def velocity(x: torch.Tensor, t: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
            # ComfyUI's Lumina model returns the negated DiT output: the flow velocity.
            k = int(torch.argmin((sigmas[:-1] - (1.0 - t)).abs()))
            return -recorder.forward(k, lambda: dit(x, t, cap)).unsqueeze(0)

        return comfy_sample(velocity, inputs, case.cfg, recorder=recorder, device=dit.x_pad_token.device)
