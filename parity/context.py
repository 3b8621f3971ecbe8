"""Shared, lazily built resources every adapter in one run uses: one tokenizer, one text encoder.

Building them once and handing the same objects to every adapter is what keeps K adapters from
costing K copies of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
T = TypeVar("T")


@dataclass
class Context:
    checkpoint: Path | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    cache_dir: Path | None = field(default=None)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def shared(self, key: str, build: Callable[[], T]) -> T:
        """One object per key for the whole run (say, a weight layout two adapters both need)."""
        if key not in self._shared:
            self._shared[key] = build()
        return self._shared[key]

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The checkpoint's `tokenizer/`, else the reference one (a ComfyUI checkpoint has none; ComfyUI
        bundles its own copy of the Qwen vocabulary, identical to the reference since 2025-12-01)."""
        from parity.tokenizer import load_tokenizer

        checkpoint = self.checkpoint
        if checkpoint is not None:
            from parity.models.checkpoint import detect

            if detect(checkpoint).kind == "comfyui":
                checkpoint = None
        return load_tokenizer(checkpoint, cache_dir=self.cache_dir)

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
