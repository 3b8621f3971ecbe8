"""Shared, lazily built resources every adapter in one run uses: one tokenizer, one text encoder.

Building them once and handing the same objects to every adapter is what keeps K adapters from
costing K copies of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Context:
    checkpoint: Path | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    cache_dir: Path | None = field(default=None)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        from parity.tokenizer import load_tokenizer

        return load_tokenizer(self.checkpoint, cache_dir=self.cache_dir)

    @cached_property
    def text_encoder(self) -> torch.nn.Module:
        from parity.models.text_encoder import load_text_encoder

        return load_text_encoder(self.checkpoint, device=self.device, dtype=DTYPES[self.dtype])

    @cached_property
    def dit_config(self) -> dict:
        """The DiT's config in the diffusers `ZImageTransformer2DModel` format."""
        from parity.models.dit import load_dit_config

        return load_dit_config(self.checkpoint)

    @cached_property
    def dit_state_dict(self) -> dict[str, torch.Tensor]:
        """One copy of the DiT weights (diffusers key layout, run dtype) that every adapter shares."""
        from parity.models.dit import load_dit_state_dict

        state = load_dit_state_dict(self.checkpoint)
        return {k: v.to(device=self.device, dtype=DTYPES[self.dtype]) for k, v in state.items()}

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
