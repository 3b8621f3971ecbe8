"""DiT modules over the run's one shared copy of the weights.

Shared by the re-implemented samplers, `comfyui_style` (and `inhouse` through it) and
`diffsynth_style`; the live adapters build their library's own DiT over the same tensors.
"""

from __future__ import annotations

from implementations.zimage.dit import DiTConfig, DiTVariant, ZImageDiT
from parity.models.context import Context


def shared_dit(context: Context, variant: DiTVariant) -> ZImageDiT:
    """A `ZImageDiT` for `variant` whose parameters are the context's tensors (every variant shares them)."""
    return ZImageDiT.from_state_dict(context.dit_state_dict, DiTConfig.from_diffusers(context.dit_config), variant)
