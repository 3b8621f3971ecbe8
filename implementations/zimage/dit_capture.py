"""Per-block activations of one DiT forward, in one canonical token order, from any implementation.

Blocks are named as diffusers names its modules, which `ZImageDiT` shares: `noise_refiner.{i}`
(image tokens), `context_refiner.{i}` (caption tokens), `layers.{i}` and `all_final_layer.{p}-{f}`
(the joint sequence). Joint outputs are stored as [image tokens, caption tokens], diffusers' order,
pad tokens included and the batch dimension dropped, so the same name holds the same tensor layout
whether it came from the installed `diffusers.ZImageTransformer2DModel` or from a `ZImageDiT` that
joins [caption, image] as ComfyUI does.

The hooks are forward hooks on the named modules; nothing in the model changes. A capture covers
one forward of one sample: a second forward inside it raises rather than mix samples, and so does a
batch, unless the capture is told which of its samples to keep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from implementations.zimage.dit import JointOrder, ZImageDiT, padded_length

BLOCK_NAME = re.compile(r"^(noise_refiner|context_refiner|layers)\.\d+$|^all_final_layer\.[^.]+$")
JOINT_PREFIXES = ("layers.", "all_final_layer.")


def _joint_order(model: nn.Module) -> JointOrder:
    # diffusers' basic (non-omni) forward always joins [image, caption].
    return model.variant.joint_order if isinstance(model, ZImageDiT) else "image_caption"


@contextmanager
def capture_blocks(model: nn.Module, sample: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that the next forward fills with each block's output, in execution order.

    Works on a `ZImageDiT` and on the installed `diffusers.ZImageTransformer2DModel` alike. With
    `sample`, the forward may be a batch and that sample of it is kept.
    """
    order = _joint_order(model)
    captured: dict[str, torch.Tensor] = {}
    caption_len: list[int] = []

    def on_caption(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        # diffusers embeds the caption rows already padded, ZImageDiT before padding; either way the
        # joint sequence splits at that count rounded up to the padding multiple.
        caption_len.append(padded_length(output.shape[-2]))

    def on_block(name: str):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            if sample is None and output.shape[0] != 1:
                raise ValueError(f"{name}: block capture covers one sample, got a batch of {output.shape[0]}")
            if name in captured:
                raise RuntimeError(f"{name} ran twice inside one capture; capture one forward at a time")
            tokens = output.detach()[sample or 0]
            if order == "caption_image" and name.startswith(JOINT_PREFIXES):
                split = caption_len[-1]
                tokens = torch.cat([tokens[split:], tokens[:split]])
            captured[name] = tokens

        return hook

    modules = dict(model.named_modules())
    handles = [modules["cap_embedder"].register_forward_hook(on_caption)]
    handles += [m.register_forward_hook(on_block(n)) for n, m in modules.items() if BLOCK_NAME.match(n)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
