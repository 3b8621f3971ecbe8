"""The Flux VAE's decoder, written once as functions over the shared state dict (diffusers key layout).

Read top to bottom it is the model: `conv_in` takes the unscaled latent (16 channels) to the widest
width; the mid block is a resnet, one single-head self-attention over every position, and a second
resnet; each up block is `layers_per_block + 1` resnets and (all but the last) a nearest 2x upsample
and a 3x3 conv; then GroupNorm, SiLU and `conv_out` to RGB in about [-1, 1]. Every GroupNorm has
`norm_num_groups` groups and eps 1e-6.

What implementations vary is the attention's form (`Attention`): linear projections over the
flattened positions (diffusers; DiffSynth builds the Flux VAE with `use_conv_attention=False`), or
1x1 convolutions over the map (the original layout ComfyUI runs). Same weights, other kernels. The
unscale, the casts and the uint8 conversion around the decoder are each adapter's own.

Runs in the dtype of the weights; the latent is cast to it by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F

Attention = Literal["linear", "conv"]
EPS = 1e-6
# The latent's scale and shift, which ComfyUI's Flux latent format and DiffSynth's decoder hard-code
# whatever a VAE config says (diffusers reads them from the config): `latent / SCALE + SHIFT`.
FLUX_SCALE_FACTOR, FLUX_SHIFT_FACTOR = 0.3611, 0.1159
_MID_ATTENTION = "decoder.mid_block.attentions.0"


def _norm(x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, groups: int) -> torch.Tensor:
    return F.group_norm(x, groups, state[f"{prefix}.weight"], state[f"{prefix}.bias"], EPS)


def _conv(x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, padding: int = 1) -> torch.Tensor:
    return F.conv2d(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"], padding=padding)


def _resnet(x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, groups: int) -> torch.Tensor:
    h = _conv(F.silu(_norm(x, state, f"{prefix}.norm1", groups)), state, f"{prefix}.conv1")
    h = _conv(F.silu(_norm(h, state, f"{prefix}.norm2", groups)), state, f"{prefix}.conv2")
    if f"{prefix}.conv_shortcut.weight" in state:  # only where a block changes width
        x = _conv(x, state, f"{prefix}.conv_shortcut", padding=0)
    return x + h


def _attention(x: torch.Tensor, state: Mapping[str, torch.Tensor], groups: int, form: Attention) -> torch.Tensor:
    b, c, height, width = x.shape
    h = _norm(x, state, f"{_MID_ATTENTION}.group_norm", groups)
    names = (f"{_MID_ATTENTION}.{n}" for n in ("to_q", "to_k", "to_v"))
    weights = [(state[f"{n}.weight"], state[f"{n}.bias"]) for n in names]
    out_weight, out_bias = state[f"{_MID_ATTENTION}.to_out.0.weight"], state[f"{_MID_ATTENTION}.to_out.0.bias"]
    if form == "conv":
        q, k, v = (F.conv2d(h, w[:, :, None, None], bias) for w, bias in weights)
        q, k, v = (t.view(b, 1, c, -1).transpose(2, 3).contiguous() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, height, width)
        out = F.conv2d(out, out_weight[:, :, None, None], out_bias)
    else:
        tokens = h.view(b, c, height * width).transpose(1, 2)
        q, k, v = (F.linear(tokens, w, bias)[:, None] for w, bias in weights)
        out = F.linear(F.scaled_dot_product_attention(q, k, v)[:, 0], out_weight, out_bias)
        out = out.transpose(1, 2).reshape(b, c, height, width)
    return x + out


def decode(state: Mapping[str, torch.Tensor], config: Mapping, z: torch.Tensor, form: Attention) -> torch.Tensor:
    """The decoder's output (B, 3, 8h, 8w) for an unscaled latent `z` (B, C, h, w) in the weights' dtype."""
    groups, blocks = config["norm_num_groups"], len(config["block_out_channels"])
    x = _conv(z, state, "decoder.conv_in")
    x = _resnet(x, state, "decoder.mid_block.resnets.0", groups)
    x = _attention(x, state, groups, form)
    x = _resnet(x, state, "decoder.mid_block.resnets.1", groups)
    for i in range(blocks):
        for j in range(config["layers_per_block"] + 1):
            x = _resnet(x, state, f"decoder.up_blocks.{i}.resnets.{j}", groups)
        if i < blocks - 1:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = _conv(x, state, f"decoder.up_blocks.{i}.upsamplers.0.conv")
    x = F.silu(_norm(x, state, "decoder.conv_norm_out", groups))
    return _conv(x, state, "decoder.conv_out")
