"""ComfyUI's decode path for Z-Image, re-implemented: the sampler's last step, `VAEDecode`, `SaveImage`.

Stock ComfyUI and node packs built on it (the in-house encoder) decode the same way, so this is
written once. What differs from diffusers:
- the latent is unscaled by the sampler, in float32, before the VAE sees it
  (`process_latent_out(samples.to(torch.float32))`, `comfy/samplers.py`), with the Flux latent
  format's hard-coded factors, whatever the VAE's config says;
- `VAEDecode` casts that to the VAE's dtype and runs the original-layout decoder, whose attention
  projections are 1x1 convolutions (`comfy/ldm/modules/diffusionmodules/model.py`). The VAE's dtype
  is the run's here: `model_management.vae_dtype` picks bf16 on a device that supports it and
  float32 on a CPU, so the bf16 rows model a GPU run;
- the output is cast to float32 (`intermediate_dtype`) and mapped `(x + 1) / 2`, clamped to
  [0, 1]: the IMAGE tensor;
- `SaveImage` writes `np.clip(255. * image, 0, 255).astype(np.uint8)` (`nodes.py`): float32
  arithmetic, then truncation, where diffusers rounds.
"""

from __future__ import annotations

import numpy as np
import torch

from implementations.zimage.vae import FLUX_SCALE_FACTOR, FLUX_SHIFT_FACTOR, decode
from parity.models.context import Context
from parity.stages.decode import Decoded
from parity.suite.cases import Case


class ComfyDecoder:
    context: Context

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        unscaled = latent.to(torch.float32) / FLUX_SCALE_FACTOR + FLUX_SHIFT_FACTOR
        state = self.context.vae_state_dict
        out = decode(state, self.context.vae_config, unscaled.to(self.context.device, self.context.torch_dtype), "conv")
        image = out.to(torch.float32).add(1.0).div(2.0).clamp(0.0, 1.0)[0].permute(1, 2, 0).cpu()
        # A non-finite image (a NaN weight upstream) casts to undefined levels, as in ComfyUI, unwarned:
        # the float image carries the NaN to the check.
        with np.errstate(invalid="ignore"):
            saved = np.clip(255.0 * image.numpy(), 0, 255).astype(np.uint8)
        return Decoded(image.contiguous(), torch.from_numpy(saved))
