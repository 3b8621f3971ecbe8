"""DiffSynth-Studio's Z-Image DiT (`diffsynth/models/z_image_dit.py`) as a `DiTVariant` of the shared DiT.

Its layout is diffusers' (same keys, joint order, RoPE and norms); the one difference is that its
`TimestepEmbedder` casts the sinusoid to bf16 and runs the time MLP in bf16 whatever the model's dtype.
"""

from __future__ import annotations

from implementations.zimage.dit import DiTVariant

DIFFSYNTH = DiTVariant(time_embedder_bf16=True)
