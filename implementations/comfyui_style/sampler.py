"""ComfyUI's KSampler path for Z-Image (`comfy/samplers.py`, `comfy/k_diffusion/sampling.py`).

Stock ComfyUI and node packs built on it (the in-house encoder) sample the same way, so this is
written once. What differs from diffusers:
- noise: `randn` of the latent's own shape (1, 16, H//8, W//8), float32, from a CPU generator
  seeded with the seed; for sizes divisible by 16 that is diffusers' draw exactly; the sampler
  starts from it scaled by the first sigma (below 1 with denoise < 1);
- the model works in x0 space: the DiT's output v gives `denoised = x - sigma * v`, guidance
  combines denoised predictions, `uncond + s (cond - uncond)`, and is skipped at s = 1; the uncond
  is the zeroed positive or the encoded negative, batched with the cond when ComfyUI would
  (`guidance.py`);
- the sampler (the case's `sampler`): `euler` recovers the velocity as `d = (x - denoised) / sigma`
  before stepping, so the velocity it applies differs from the DiT's output by rounding;
  `res_multistep` is a second-order multistep method (`res_multistep.py`);
- a latent whose sides are not a multiple of the patch size is padded (circularly) for the DiT
  and the output cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from implementations.comfyui_style.dit_variant import COMFYUI
from implementations.comfyui_style.guidance import Velocity, guided_denoiser, uncond_for
from implementations.comfyui_style.res_multistep import res_multistep
from implementations.comfyui_style.schedule import comfyui_schedule
from implementations.zimage.sampling import BlockRecorder, euler, sampling_loop
from implementations.zimage.shared_dit import shared_dit
from parity.models.context import Context
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.suite.cases import Case

PATCH = 2


def comfy_noise(seed: int, height: int, width: int) -> torch.Tensor:
    """`prepare_noise`: the empty latent's shape, float32, CPU generator seeded with `seed`."""
    shape = (1, 16, height // 8, width // 8)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def padded_velocity(velocity: Velocity) -> Velocity:
    """Pad H and W to the patch size (circular, as `pad_to_patch_size`), then crop the output."""

    def run(x: torch.Tensor, t: torch.Tensor, caps: torch.Tensor, k: int, positive: int | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % PATCH, (-w) % PATCH
        if not (pad_h or pad_w):
            return velocity(x, t, caps, k, positive)
        return velocity(F.pad(x, (0, pad_w, 0, pad_h), mode="circular"), t, caps, k, positive)[..., :h, :w]

    return run


def comfy_sample(
    velocity: Velocity,
    inputs: DenoiseInputs,
    case: Case,
    recorder: BlockRecorder | None = None,
    device: torch.device | str = "cpu",
) -> Denoise:
    """The KSampler's loop: the case's cfg, negative wiring and sampler on `velocity` (the DiT)."""
    sigmas = inputs.schedule.sigmas.to(torch.float32)
    uncond = uncond_for(inputs, case.cfg, case.negative_conditioning)
    denoised = guided_denoiser(padded_velocity(velocity), inputs.positive, uncond, case.cfg, sigmas)
    steps = len(sigmas) - 1
    # The flow models' `noise_scaling`, `sigma * noise + (1 - sigma) * latent`, of the empty latent
    # (zeros, left unshifted): the noise itself only when the schedule starts at 1 (denoise 1).
    start = sigmas[0] * inputs.noise.to(torch.float32)
    if case.sampler == "res_multistep":
        advance = res_multistep(denoised, sigmas)
        return sampling_loop(advance, steps, start, torch.float32, inputs.forced_latents, recorder, device)

    def predict(x: torch.Tensor, k: int) -> torch.Tensor:
        return (x - denoised(x, k)) / sigmas[k]

    def step(x: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
        return x + d * (sigmas[k + 1] - sigmas[k])

    advance = euler(predict, step)
    return sampling_loop(advance, steps, start, torch.float32, inputs.forced_latents, recorder, device)


# ComfyUI picks bf16 for the DiT (`unet_dtype`) and the VAE (`vae_dtype`) only on a device that
# supports it; on a CPU both run in float32, so its bf16 numbers exist only on a GPU.
GPU_MODELLED = (
    "models ComfyUI on a GPU, unconfirmed: on a CPU ComfyUI samples and decodes in float32, and no GPU "
    "run has recorded these numbers yet"
)


class ComfySampler:
    """KSampler (the case's sampler, simple) on ComfyUI's Z-Image model: the sampling half of any
    ComfyUI adapter."""

    context: Context

    def caveats(self, case: Case) -> dict[str, str]:
        return dict.fromkeys(("denoise", "decode"), GPU_MODELLED) if case.dtype == "bf16" else {}

    def schedule(self, case: Case) -> Schedule:
        return comfyui_schedule(case.steps, case.shift, "simple", case.denoise)

    def noise(self, case: Case) -> torch.Tensor:
        return comfy_noise(case.seed, case.height, case.width)

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        dit = shared_dit(self.context, COMFYUI)
        recorder = BlockRecorder(dit, inputs.capture_blocks)

        def velocity(
            x: torch.Tensor, t: torch.Tensor, caps: torch.Tensor, k: int, positive: int | None
        ) -> torch.Tensor:
            # ComfyUI's Lumina model returns the negated DiT output: the flow velocity.
            if positive is None:
                return -dit(x, t, caps)
            return -recorder.forward(k, lambda: dit(x, t, caps), positive)

        return comfy_sample(velocity, inputs, case, recorder, dit.x_pad_token.device)
