"""ComfyUI's guidance for Z-Image: the uncond a graph feeds, and how cond and uncond reach the DiT.

- The uncond (`negative_conditioning`): "zeroed" is the official Z-Image-Turbo workflow's
  `ConditioningZeroOut` of the positive, zeros of the positive's shape with its mask kept; "encoded"
  is `CLIPTextEncode` of the negative prompt wired straight to the KSampler's negative.
- At cfg 1 `sampling_function` drops the uncond (`math.isclose(cfg, 1.0)`): one pass per step.
- `_calc_cond_batch` runs conds that `can_concat_cond` as one batch. Z-Image's conds
  (`Lumina2.extra_conds`) are `c_crossattn` (a `CONDRegular`: the same shape), `num_tokens` (a
  `CONDConstant`: the same count of attended tokens) and `attention_mask` (only for a mask with zeros,
  a `CONDRegular`): so captions of one length and one token count, masked alike, share a call, and a
  negative prompt of another length runs as its own call after the positive's. A batch is popped from
  the end of the list, so it is [uncond, cond]. (ComfyUI also requires its memory estimate to fit,
  assumed here as on any machine that runs the model; its `NextDiT` ignores the mask itself.)
- The combination is in x0 space: `uncond + (cond - uncond) * cfg` (`cfg_function`), each
  prediction `x - v * sigma` from the float32 model output (`calculate_denoised`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from implementations.comfyui_style.res_multistep import Denoiser
from parity.stages.denoise import DenoiseInputs
from parity.stages.embeddings import Embeddings

# velocity(x, t, caps, k, positive) -> the flow velocity of each sample of the batch: x (B, C, H, W),
# t (B,) the DiT's time input, caps (B, L, D), at step k; `positive` is the index of the positive's
# sample in the batch, None when the batch holds no positive.
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int | None], torch.Tensor]


def uncond_for(inputs: DenoiseInputs, cfg: float, wiring: str) -> Embeddings | None:
    """What the KSampler guides away from, or None when no uncond pass runs."""
    if math.isclose(cfg, 1.0):
        return None
    if wiring == "zeroed":
        return Embeddings(torch.zeros_like(inputs.positive.hidden), inputs.positive.mask)
    return inputs.negative


def _conds(embeddings: Embeddings) -> tuple[tuple[int, ...], int, tuple[int, ...] | None]:
    """What `can_concat_cond` compares: the caption's shape, `num_tokens`, the mask's shape if it is kept."""
    mask = embeddings.mask
    kept = None if bool(mask.all()) else tuple(mask.shape)
    return tuple(embeddings.hidden.shape), max(1, int(mask.sum())), kept


def batches_together(cond: Embeddings, uncond: Embeddings) -> bool:
    """Whether ComfyUI runs the two in one DiT call."""
    return _conds(cond) == _conds(uncond)


def guided_denoiser(
    velocity: Velocity, positive: Embeddings, uncond: Embeddings | None, cfg: float, sigmas: torch.Tensor
) -> Denoiser:
    """The x0 prediction the sampler steps with, over float32 `sigmas`: the positive's alone without
    an uncond, else the guided combination, from one batched call or two calls as ComfyUI makes them."""
    batched = uncond is not None and batches_together(positive, uncond)

    def denoised(x: torch.Tensor, k: int) -> torch.Tensor:
        sigma = sigmas[k]
        t = (1.0 - sigma).reshape(1)
        if uncond is None:
            return x - velocity(x, t, positive.hidden[None], k, 0).float() * sigma
        if batched:
            caps = torch.stack([uncond.hidden, positive.hidden])
            uncond_v, cond_v = velocity(torch.cat([x, x]), torch.cat([t, t]), caps, k, 1).float().chunk(2)
        else:
            cond_v = velocity(x, t, positive.hidden[None], k, 0).float()
            uncond_v = velocity(x, t, uncond.hidden[None], k, None).float()
        cond, unconditioned = x - cond_v * sigma, x - uncond_v * sigma
        return unconditioned + (cond - unconditioned) * cfg

    return denoised
