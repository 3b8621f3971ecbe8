"""VAE key layouts: diffusers -> the original (ldm) layout a ComfyUI VAE file has.

Reading goes the other way through the installed diffusers' own `convert_ldm_vae_checkpoint`
(`parity.models.vae_weights`); this is its inverse, for writing ComfyUI files and for checking a
file's names and shapes before anything is converted. The layouts differ by:
- `down_blocks.i.resnets.j` / `up_blocks.i.resnets.j` for `down.i.block.j` / `up.n-1-i.block.j`:
  the original numbers the decoder's levels from the narrowest (last) up, as the encoder's;
- `downsamplers.0` / `upsamplers.0` for `downsample` / `upsample`, `conv_shortcut` for `nin_shortcut`;
- `mid_block.resnets.0`/`.1` for `mid.block_1`/`_2`, `mid_block.attentions.0` for `mid.attn_1`, whose
  `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0` are `norm`, `q`, `k`, `v`, `proj_out`, the
  projections 1x1 convolutions (C, C, 1, 1) where diffusers has linear weights (C, C);
- `conv_norm_out` for `norm_out`.
Every value is the same tensor, or a view of it (the attention weights), so nothing is copied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_UP_BLOCK = re.compile(r"^decoder\.up_blocks\.(\d+)\.")
_MID_RESNET = re.compile(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.")
_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_ATTENTION_KEY = re.compile(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.")


def _ldm_key(key: str, up_blocks: int) -> str:
    if match := _ATTENTION_KEY.match(key):
        return f"{match[1]}.mid.attn_1.{_ATTENTION[match[2]]}." + key[match.end() :]
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    key = _MID_RESNET.sub(lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", key)
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    if match := _UP_BLOCK.match(key):
        rest = key[match.end() :].replace("resnets.", "block.", 1).replace("upsamplers.0.", "upsample.", 1)
        key = f"decoder.up.{up_blocks - 1 - int(match[1])}.{rest}"
    return key.replace(".conv_shortcut.", ".nin_shortcut.")


def diffusers_vae_to_comfyui(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-layout AutoencoderKL state dict (encoder, decoder or both) in the original layout."""
    up_blocks = 1 + max((int(m[1]) for key in state if (m := _UP_BLOCK.match(key))), default=-1)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        attention = _ATTENTION_KEY.match(key)
        if attention and attention[2] != "group_norm" and key.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[_ldm_key(key, up_blocks)] = value
    return out
