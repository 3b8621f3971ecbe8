"""ComfyUI's text encoder: the weights in the checkpoint's dtype, the arithmetic in float32.

`CLIP` sets its patcher's compute dtype to float32 (`comfy/sd.py`, "Match torch.float32 hardcode
upcast in TE implemention") and builds the encoder with `comfy.ops.manual_cast` layers, which cast
each layer's weights to the input's dtype as the layer runs (`comfy/ops.py`). So a bf16 encoder
holds bf16 weights but computes in float32: what a float32 encoder of the bf16-rounded weights
computes. The shared encoder is modelled the same way: each module runs with float32 copies of its
own parameters, made as it runs and dropped after, so one layer's copy is held at a time. Stock
ComfyUI and the node pack (which encodes with ComfyUI's CLIP) both encode so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from implementations.zimage.text_encoding import penultimate_hidden
from parity.stages.tokens import Tokens


@contextmanager
def computing_in_float32(model: torch.nn.Module) -> Iterator[None]:
    """Within: every module of `model` computes with float32 copies of its parameters."""
    held: dict[torch.nn.Module, dict[str, torch.nn.Parameter]] = {}

    def upcast(module: torch.nn.Module, _args: tuple) -> None:
        held[module] = {k: p for k, p in module._parameters.items() if p is not None}
        for name, parameter in held[module].items():
            module._parameters[name] = torch.nn.Parameter(parameter.float(), requires_grad=False)

    def restore(module: torch.nn.Module, _args: tuple, _output: object) -> None:
        module._parameters.update(held.pop(module))

    owners = [m for m in model.modules() if any(p is not None for p in m._parameters.values())]
    handles = [h for m in owners for h in (m.register_forward_pre_hook(upcast), m.register_forward_hook(restore))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, parameters in held.items():
            module._parameters.update(parameters)


def comfy_hidden(text_encoder: torch.nn.Module, tokens: Tokens) -> torch.Tensor:
    """`hidden_states[-2]` as ComfyUI's encoder computes it, in float32 whatever the weights' dtype."""
    with computing_in_float32(text_encoder):
        return penultimate_hidden(text_encoder, tokens)
