"""The model sizes `parity export` writes: the tiny reference model, and a mid-size one.

`mid` keeps the real Z-Image-Turbo and Qwen3-4B shapes' ratios and every constant (head_dim 128 with
RoPE axes 32/48/48, 4 query heads per KV head, RoPE and norm constants, tied embeddings) at widths
that make about 1.3 GiB of float32 weights: big enough that weight memory dominates a run, which is
what the memory benchmark measures, small enough to build and run on a laptop CPU. Its ComfyUI files
are read back with the real model's constants (`parity.models.dit_weights`, `.text_encoder`), which it shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parity.models.dit_weights import TINY_CONFIG as TINY_DIT_CONFIG
from parity.models.dit_weights import ZIMAGE_DIT_CONSTANTS
from parity.models.text_encoder_weights import QWEN3_4B_CONSTANTS
from parity.models.text_encoder_weights import TINY_CONFIG as TINY_TEXT_ENCODER_CONFIG


@dataclass(frozen=True)
class ModelSize:
    dit: dict[str, Any]  # a diffusers `ZImageTransformer2DModel` config
    text_encoder: dict[str, Any]  # a transformers `Qwen3Config`'s arguments


MID_HIDDEN = 640
SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(dit=TINY_DIT_CONFIG, text_encoder=TINY_TEXT_ENCODER_CONFIG),
    "mid": ModelSize(
        dit=dict(
            all_patch_size=[2],
            all_f_patch_size=[1],
            in_channels=16,
            dim=1024,
            n_layers=12,
            n_refiner_layers=2,
            n_heads=8,
            n_kv_heads=8,
            qk_norm=True,
            cap_feat_dim=MID_HIDDEN,
            axes_dims=[32, 48, 48],
            **ZIMAGE_DIT_CONSTANTS,
        ),
        text_encoder=dict(
            vocab_size=151936,
            hidden_size=MID_HIDDEN,
            intermediate_size=2432,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=2,
            head_dim=128,
            attention_bias=False,
            **QWEN3_4B_CONSTANTS,
        ),
    ),
}
