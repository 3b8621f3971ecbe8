"""The pipeline's stages and the one typed output each stage produces.

Every adapter returns these types, so the runner and the comparators never need to know which
implementation produced a value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEXT_STAGES = ("template", "tokens", "embeddings")
STAGES = (*TEXT_STAGES, "schedule", "denoise")


@dataclass(frozen=True)
class Template:
    """The exact string an implementation hands to its tokenizer."""

    text: str


@dataclass(frozen=True)
class Tokens:
    """Token ids and attention mask for one prompt (batch of one, so 1-D)."""

    input_ids: list[int]
    attention_mask: list[int]


@dataclass(frozen=True)
class Embeddings:
    """Text-encoder `hidden_states[-2]` as the implementation hands it to the DiT.

    `hidden` is (L, D). `mask` is (L,) bool: which rows are real tokens. An implementation that
    gathers masked-in rows hands an all-true mask; one that keeps padding hands zeros for it.
    """

    hidden: torch.Tensor
    mask: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """The masked-in rows only: what padding filtering keeps."""
        return self.hidden[self.mask]
