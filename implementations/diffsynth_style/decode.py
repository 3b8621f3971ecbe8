"""DiffSynth-Studio's decode, re-implemented: `FluxVAEDecoder` and `vae_output_to_image`.

What differs from diffusers:
- the latent stays in the pipeline dtype and is unscaled inside the decoder, in that dtype, with
  factors the decoder hard-codes (`diffsynth/models/flux_vae.py`), whatever the VAE config says;
- the Z-Image VAE is built with `use_conv_attention=False`: linear attention, as diffusers';
- `vae_output_to_image` maps [-1, 1] to [0, 255] as `((x + 1) * (255 / 2)).clip(0, 255)` in the
  decoder's dtype (bf16 in a bf16 pipeline) and converts with `.to(torch.uint8)`: truncation.
The float image is those last float values over 255.
"""

from __future__ import annotations

import torch

from implementations.zimage.vae import FLUX_SCALE_FACTOR, FLUX_SHIFT_FACTOR, decode
from parity.models.context import Context
from parity.stages.decode import Decoded

LOW, HIGH = -1, 1  # vae_output_to_image's min_value, max_value


def diffsynth_decode(context: Context, latent: torch.Tensor) -> Decoded:
    z = latent.to(context.device, context.torch_dtype) / FLUX_SCALE_FACTOR + FLUX_SHIFT_FACTOR
    out = decode(context.vae_state_dict, context.vae_config, z, "linear")[0].permute(1, 2, 0).cpu()
    levels = ((out - LOW) * (255 / (HIGH - LOW))).clip(0, 255)
    return Decoded((levels.to(torch.float32) / 255).contiguous(), levels.to(torch.uint8).contiguous())
