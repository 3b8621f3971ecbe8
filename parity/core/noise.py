"""The shared initial noise: drawn exactly as diffusers draws it for the case seed.

`ZImagePipeline.prepare_latents` draws float32 `(B, 16, 2*(H//16), 2*(W//16))` from a CPU
generator seeded with the user's seed, so the `diffusers` rows reproduce a real pipeline call bit
for bit. Implementations that draw their own way (shape, dtype, generator) expose that through
`Adapter.noise`, and a case with `noise = "own"` compares those draws as a finding of its own.
"""

from __future__ import annotations

import torch

LATENT_CHANNELS = 16


def shared_noise(seed: int, height: int, width: int) -> torch.Tensor:
    shape = (1, LATENT_CHANNELS, 2 * (height // 16), 2 * (width // 16))
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
