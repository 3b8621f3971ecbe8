"""DiffSynth-Studio's Turbo sampling loop, re-implemented (`diffsynth/pipelines/z_image.py`).

What differs from diffusers:
- its own noise: `randn((1, 16, H/8, W/8))` in the pipeline dtype from a CPU generator, after
  rounding H and W up to multiples of 16 (a float32 draw cast to bf16, in bf16 runs);
- the time the DiT embeds is `1000 - t` with t already cast to the pipeline dtype (the schedule's
  `model_t`), and its time embedder always runs in bf16 (the DiT variant);
- guidance `neg + s (pos - neg)`, both passes run separately;
- latents, the guidance combination and the Euler step stay in the pipeline dtype; the step reads
  its sigmas from the float32 schedule.
"""

from __future__ import annotations

import torch

from implementations.zimage.dit import ZImageDiT
from implementations.zimage.sampling import BlockRecorder, euler, sampling_loop
from parity.stages.denoise import Denoise, DenoiseInputs


def rounded_up(size: int, multiple: int = 16) -> int:
    return -(-size // multiple) * multiple


def diffsynth_noise(seed: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    shape = (1, 16, rounded_up(height) // 8, rounded_up(width) // 8)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)


def diffsynth_sample(dit: ZImageDiT, inputs: DenoiseInputs, cfg: float, dtype: torch.dtype) -> Denoise:
    sigmas = inputs.schedule.sigmas.to(torch.float32)
    model_t = inputs.schedule.model_t
    guided = cfg > 1 and inputs.negative is not None
    recorder = BlockRecorder(dit, inputs.capture_blocks)

    def velocity(x: torch.Tensor, k: int, caption: torch.Tensor) -> torch.Tensor:
        return -recorder.forward(k, lambda: dit(x, model_t[k], caption)).unsqueeze(0)

    def predict(x: torch.Tensor, k: int) -> torch.Tensor:
        pos = velocity(x, k, inputs.positive.hidden)
        if not guided:
            return pos
        neg = velocity(x, k, inputs.negative.hidden)
        return neg + cfg * (pos - neg)

    def step(x: torch.Tensor, v: torch.Tensor, k: int) -> torch.Tensor:
        return x + v * (sigmas[k + 1] - sigmas[k])

    device = dit.x_pad_token.device
    steps = len(sigmas) - 1
    return sampling_loop(euler(predict, step), steps, inputs.noise, dtype, inputs.forced_latents, recorder, device)
