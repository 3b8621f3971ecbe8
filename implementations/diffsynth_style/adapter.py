"""DiffSynth-Studio's prompt path, re-implemented (`diffsynth/pipelines/z_image.py`).

What it does, top to bottom, and how that compares with diffusers:
- one user turn, no system prompt, `apply_chat_template(..., enable_thinking=True)`: no think block;
- `padding="max_length", max_length=512, truncation=True`, right padding;
- `hidden_states[-2]` with the attention mask, then only masked-in rows are kept.
For the text stages that is the diffusers path exactly; its differences begin at the sampler
(`schedule.py`, `sampler.py`): the timestep cast to the pipeline dtype before `1000 - t`, a time
embedder that always runs in bf16, its own noise, latents kept in the pipeline dtype; and at the
end its decoder's casts and a truncating uint8 conversion (`decode.py`).
DiffSynth takes a batch of one prompt and nothing else, so anything richer is unsupported.
`diffsynth_style_fp32_time` is the same path with the bf16 time embedder switched off, to show
that the cast is the whole difference.

In an fp32 pipeline the real DiffSynth 2.1.12 cannot sample at all: its time embedder's bf16 output
reaches the fp32 adaLN layers uncast and raises a dtype error (`diffsynth_live` reports that). The
fp32 rows here are what it computes with that one cast repaired (the embedding cast back to the
model dtype): against the live library patched that way they agree within 1.1e-5. Teacher-forced,
this adapter takes the reference's `model_t`, so the bf16 timestep cast (a schedule-stage finding)
is not counted again at the denoise stage.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from implementations.diffsynth_style.decode import diffsynth_decode
from implementations.diffsynth_style.dit_variant import DIFFSYNTH
from implementations.diffsynth_style.sampler import diffsynth_noise, diffsynth_sample
from implementations.diffsynth_style.schedule import diffsynth_schedule
from implementations.zimage.chat import render_chat, tokenize_padded
from implementations.zimage.dit import DiTVariant
from implementations.zimage.shared_dit import shared_dit
from implementations.zimage.text_encoding import gathered, penultimate_hidden
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case


class DiffSynthStyleAdapter(Adapter):
    name: ClassVar[str] = "diffsynth_style"
    summary: ClassVar[str] = "DiffSynth-Studio's semantics, re-implemented"
    variant: ClassVar[DiTVariant] = DIFFSYNTH

    def check_supported(self, case: Case) -> None:
        if not case.is_plain_prompt:
            raise Unsupported("DiffSynth encodes a single user prompt only")
        if case.sampler != "euler":
            raise Unsupported(f"DiffSynth's FlowMatchScheduler.step is an Euler step; it has no {case.sampler}")

    def template(self, case: Case) -> Template:
        messages = [{"role": "user", "content": case.user_text}]
        return Template(render_chat(self.context.tokenizer, messages, enable_thinking=True))

    def tokens(self, case: Case, template: Template) -> Tokens:
        return tokenize_padded(self.context.tokenizer, template.text)

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        return gathered(penultimate_hidden(self.context.text_encoder, tokens), tokens)

    def schedule(self, case: Case) -> Schedule:
        return diffsynth_schedule(case.steps, case.shift, case.denoise, dtype=self.context.torch_dtype)

    def noise(self, case: Case) -> torch.Tensor:
        return diffsynth_noise(case.seed, case.height, case.width, self.context.torch_dtype)

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        dit = shared_dit(self.context, self.variant)
        return diffsynth_sample(dit, inputs, case.cfg, self.context.torch_dtype)

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        return diffsynth_decode(self.context, latent)


class DiffSynthFp32TimeAdapter(DiffSynthStyleAdapter):
    name: ClassVar[str] = "diffsynth_style_fp32_time"
    summary: ClassVar[str] = "DiffSynth-style with its bf16 time embedder switched off"
    variant: ClassVar[DiTVariant] = DiTVariant()
