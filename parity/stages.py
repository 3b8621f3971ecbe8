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


@dataclass(frozen=True)
class Schedule:
    """The sampler's noise levels and the time value each step feeds the DiT.

    `sigmas` is float64 (N+1,), ending with the terminal 0. `model_t` is float64 (N,): the value
    handed to the DiT's time embedder before its x1000 scale (`1 - sigma` for Z-Image), after any
    cast the implementation makes on the way.
    """

    sigmas: torch.Tensor
    model_t: torch.Tensor


@dataclass(frozen=True)
class Denoise:
    """The sampling trajectory: what each step's Euler update used, and where it went.

    `model_out` is (N, C, H, W): the velocity the step applied, `x_next = x + (sigma_next - sigma)
    * model_out`, after guidance and sign conventions. `latents` is (N+1, C, H, W): the initial
    noise, then every step's result. `blocks` maps "step.<k>.<module>" to that block's output at
    step k when per-block capture is on.
    """

    model_out: torch.Tensor
    latents: torch.Tensor
    blocks: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class DenoiseInputs:
    """What the denoise stage consumes: its own upstream outputs, or the reference's when forced.

    `noise` is the initial latent (1, C, H, W) in float32. `forced_latents`, when given, replaces
    the input latent of every step k with `forced_latents[k]` (teacher forcing per step), so each
    step's output shows only the error that step adds.
    """

    positive: Embeddings
    negative: Embeddings | None
    schedule: Schedule
    noise: torch.Tensor
    forced_latents: torch.Tensor | None = None
    capture_blocks: tuple[int, ...] = ()
