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
    held: dict[torch.nn.Module, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}

    def floating(tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        return {k: t for k, t in tensors.items() if t is not None and t.is_floating_point()}

    def float32_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        buffers = {k: b.float() for k, b in floating(module._buffers).items()}
        derived = [k for k in buffers if k in module._non_persistent_buffers_set]
        if derived and hasattr(module, "config"):
            # Values the model derives from its config (the rotary embedding's inverse frequencies)
            # were rounded when the encoder was cast; ComfyUI computes them in float32 from
            # rope_theta, so they are derived again, by the module's own class from the same config.
            with torch.device(buffers[derived[0]].device):
                fresh = type(module)(module.config)
            buffers |= {k: fresh._buffers[k].float() for k in derived}
        return buffers

    def upcast(module: torch.nn.Module, _args: tuple) -> None:
        held[module] = (floating(module._parameters), floating(module._buffers))
        parameters, _ = held[module]
        for name, parameter in parameters.items():
            module._parameters[name] = torch.nn.Parameter(parameter.float(), requires_grad=False)
        module._buffers.update(float32_buffers(module))

    def restore(module: torch.nn.Module, _args: tuple, _output: object) -> None:
        parameters, buffers = held.pop(module)
        module._parameters.update(parameters)
        module._buffers.update(buffers)

    owners = [m for m in model.modules() if floating(m._parameters) or floating(m._buffers)]
    handles = [h for m in owners for h in (m.register_forward_pre_hook(upcast), m.register_forward_hook(restore))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, (parameters, buffers) in held.items():
            module._parameters.update(parameters)
            module._buffers.update(buffers)


def comfy_hidden(text_encoder: torch.nn.Module, tokens: Tokens) -> torch.Tensor:
    """`hidden_states[-2]` as ComfyUI's encoder computes it, in float32 whatever the weights' dtype."""
    with computing_in_float32(text_encoder):
        return penultimate_hidden(text_encoder, tokens)
