"""DiT modules over the run's one shared copy of the weights, one per layout."""

from __future__ import annotations

from implementations.zimage.dit import DiTConfig, DiTVariant, ZImageDiT
from parity.context import Context
from parity.models.convert import fuse_qkv


def shared_dit(context: Context, variant: DiTVariant) -> ZImageDiT:
    """A `ZImageDiT` for `variant` whose parameters are the context's tensors (fused once if needed)."""
    config = DiTConfig.from_diffusers(context.dit_config)
    if variant.fused_qkv:
        state = context.shared("dit.fused_qkv", lambda: fuse_qkv(context.dit_state_dict))
    else:
        state = context.dit_state_dict
    return ZImageDiT.from_state_dict(state, config, variant)
