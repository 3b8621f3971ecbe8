"""DiffSynth's own `FluxVAEDecoder` holding the run's shared VAE decoder weights.

DiffSynth's constructor hard-codes the real Flux widths (512, 256, 128), so the decoder is built on
the meta device and its parameters are then set to the shared tensors (assigned, not copied), as
renamed by DiffSynth's own converter for a diffusers VAE file (`FluxVAEDecoderStateDictConverterDiffusers`,
the one its Z-Image model config names, with `use_conv_attention=False`). Its forward reads one
width from the constructor rather than from the weights: the attention's `head_dim` (a view to
(B, L, heads, head_dim)), set here to the weights' width. Everything else follows the tensors, so the
forward that runs is DiffSynth's own, at any width with the Flux VAE's depth and 32 groups.
"""

from __future__ import annotations

from typing import Any

import torch

from parity.models.context import Context


def diffsynth_vae_decoder(lib: Any, context: Context) -> torch.nn.Module:
    converted = lib.VAEDecoderConverter(dict(context.vae_state_dict))
    with torch.device("meta"):
        decoder = lib.FluxVAEDecoder(use_conv_attention=False)
    expected = set(decoder.state_dict())
    if set(converted) != expected:
        odd = sorted(set(converted) ^ expected)[0]
        raise RuntimeError(f"the VAE weights do not fit DiffSynth's FluxVAEDecoder: {odd}")
    for name, tensor in converted.items():
        owner, _, attribute = name.rpartition(".")
        setattr(decoder.get_submodule(owner), attribute, torch.nn.Parameter(tensor, requires_grad=False))
    for module in decoder.modules():
        if hasattr(module, "head_dim") and hasattr(module, "to_q"):
            module.head_dim = module.to_q.weight.shape[0] // module.num_heads
    return decoder.eval()
