"""The text-encoder call every Z-Image implementation shares: Qwen3, `hidden_states[-2]`.

`hidden_states[-2]` is the output of the second-to-last decoder layer, before the final norm.
What differs between implementations is what they feed in (padding, mask) and what they keep.
Every re-implemented adapter calls it; the live adapters run their library's own call.
"""

from __future__ import annotations

import torch

from parity.stages.embeddings import Embeddings
from parity.stages.tokens import Tokens


@torch.inference_mode()
def penultimate_hidden(text_encoder: torch.nn.Module, tokens: Tokens) -> torch.Tensor:
    """(L, D) hidden states of the second-to-last layer for one prompt, padding rows included."""
    device = next(text_encoder.parameters()).device
    ids = torch.tensor([tokens.input_ids], dtype=torch.long, device=device)
    mask = torch.tensor([tokens.attention_mask], dtype=torch.long, device=device)
    out = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[-2][0].cpu()


def gathered(hidden: torch.Tensor, tokens: Tokens) -> Embeddings:
    """Keep only masked-in rows (the diffusers/DiffSynth hand-off); the mask becomes all true."""
    keep = torch.tensor(tokens.attention_mask, dtype=torch.bool)
    rows = hidden[keep]
    return Embeddings(hidden=rows, mask=torch.ones(rows.shape[0], dtype=torch.bool))


def unfiltered(hidden: torch.Tensor, tokens: Tokens) -> Embeddings:
    """The whole sequence plus its mask (the ComfyUI hand-off)."""
    return Embeddings(hidden=hidden, mask=torch.tensor(tokens.attention_mask, dtype=torch.bool))
