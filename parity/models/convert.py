"""DiT key layouts: diffusers/DiffSynth <-> ComfyUI single file.

diffusers and DiffSynth share one layout (DiffSynth's own converter only strips ComfyUI's prefix).
A ComfyUI single file (checked against `comfy/utils.py:z_image_to_diffusers`, ComfyUI 4b1444f, and
diffusers' `convert_z_image_transformer_checkpoint_to_diffusers`) differs by:
- the prefix `model.diffusion_model.` on every key (files without it exist; both are read);
- `attention.qkv.weight` = to_q, to_k, to_v stacked on dim 0, in that order;
- `attention.out.*` for `attention.to_out.0.*`, `attention.q_norm`/`k_norm` for `norm_q`/`norm_k`;
- `x_embedder.*` and `final_layer.*` for `all_x_embedder.2-1.*` and `all_final_layer.2-1.*`;
- an extra `norm_final.weight` that nothing reads (a leftover of Lumina 2; ComfyUI's model has no
  such parameter and diffusers drops it, its values in real files are junk). Converting to ComfyUI
  does not invent it; converting from ComfyUI drops it.

Only fusing q, k, v makes new tensors; every other value is the same tensor object, and splitting
returns views of the fused tensor, so converting costs no copy of the weights beyond that one.
Keys that no rule names pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

COMFYUI_PREFIX = "model.diffusion_model."
UNUSED_COMFYUI_KEY = "norm_final.weight"
QKV = ("to_q", "to_k", "to_v")
# (diffusers, ComfyUI): whole leading pieces of a key, then pieces inside a block's key.
_LEADING = (("all_x_embedder.2-1.", "x_embedder."), ("all_final_layer.2-1.", "final_layer."))
_INSIDE = (
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_q.", ".attention.q_norm."),
    (".attention.norm_k.", ".attention.k_norm."),
)


def stacked_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(parts)` on dim 0, as a view (no copy) when the parts already lie back to back in
    one storage, as `split_qkv` leaves a fused weight."""
    first = parts[0]
    rows = sum(p.shape[0] for p in parts)
    offset = first.storage_offset()
    for part in parts:
        adjacent = (
            part.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
            and part.storage_offset() == offset
            and part.is_contiguous()
            and part.shape[1:] == first.shape[1:]
            and part.dtype == first.dtype
        )
        if not adjacent:
            return torch.cat(parts, dim=0)
        offset += part.numel()
    return first.as_strided((rows, *first.shape[1:]), first.stride())


def fuse_qkv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each block's to_q/to_k/to_v weights by one `attention.qkv.weight` (diffusers names otherwise)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block, _, leaf = key.rpartition(".attention.")
        if leaf == "to_q.weight":
            parts = [state[f"{block}.attention.{name}.weight"] for name in QKV]
            out[f"{block}.attention.qkv.weight"] = torch.cat(parts, dim=0)
        elif leaf not in ("to_k.weight", "to_v.weight"):
            out[key] = value
    return out


def split_qkv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `fuse_qkv`: q, k, v as views of the fused weight, in key order."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block, _, leaf = key.rpartition(".attention.")
        if leaf == "qkv.weight":
            for name, part in zip(QKV, value.chunk(3, dim=0), strict=True):
                out[f"{block}.attention.{name}.weight"] = part
        else:
            out[key] = value
    return out


def _rename(key: str, to_comfyui: bool) -> str:
    for diffusers, comfy in _LEADING:
        old, new = (diffusers, comfy) if to_comfyui else (comfy, diffusers)
        if key.startswith(old):
            key = new + key[len(old) :]
    for diffusers, comfy in _INSIDE:
        old, new = (diffusers, comfy) if to_comfyui else (comfy, diffusers)
        key = key.replace(old, new)
    return key


def diffusers_to_comfyui(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-layout DiT state dict in ComfyUI's single-file layout (with the prefix)."""
    return {COMFYUI_PREFIX + _rename(key, to_comfyui=True): value for key, value in fuse_qkv(state).items()}


def comfyui_to_diffusers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComfyUI single-file DiT state dict (prefixed or not) in diffusers' layout."""
    renamed = {}
    for key, value in state.items():
        bare = key.removeprefix(COMFYUI_PREFIX)
        if bare != UNUSED_COMFYUI_KEY:
            renamed[_rename(bare, to_comfyui=False)] = value
    return split_qkv(renamed)
