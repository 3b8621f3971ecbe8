"""The pack's `ZImageEmptyLatent` node (`nodes/qwen_vl_helpers.py`), which a pack workflow samples from.

Stock ComfyUI's `EmptySD3LatentImage` makes a (H // 8, W // 8) latent; this node first aligns each
side to 16 pixels with Python's `round(size / 16) * 16`, at least 16, then divides by 8. `round`
rounds halves to even, so 136 px (8.5 x 16) becomes 128 and 152 px (9.5 x 16) becomes 160; the
node's docstring example "1000 -> 1008" is not what its code does (62.5 rounds to 62: 992).
"""

from __future__ import annotations

ALIGNMENT = 16


def aligned_size(size: int) -> int:
    """The pixel size the node makes a latent for."""
    return max(ALIGNMENT, round(size / ALIGNMENT) * ALIGNMENT)
