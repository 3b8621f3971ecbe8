"""DiffSynth-Studio's prompt path, re-implemented (`diffsynth/pipelines/z_image.py`).

What it does, top to bottom, and how that compares with diffusers:
- one user turn, no system prompt, `apply_chat_template(..., enable_thinking=True)`: no think block;
- `padding="max_length", max_length=512, truncation=True`, right padding;
- `hidden_states[-2]` with the attention mask, then only masked-in rows are kept.
For the text stages that is the diffusers path exactly; its differences begin at the sampler.
DiffSynth takes a batch of one prompt and nothing else, so anything richer is unsupported.
"""

from __future__ import annotations

from typing import ClassVar

from implementations.zimage.chat import render_chat, tokenize_padded
from implementations.zimage.text_encoding import gathered, penultimate_hidden
from parity.adapter import Adapter, Unsupported
from parity.cases import Case
from parity.stages import Embeddings, Template, Tokens


class DiffSynthStyleAdapter(Adapter):
    name: ClassVar[str] = "diffsynth_style"
    summary: ClassVar[str] = "DiffSynth-Studio's semantics, re-implemented"

    def check_supported(self, case: Case) -> None:
        if not case.is_plain_prompt:
            raise Unsupported("DiffSynth encodes a single user prompt only")

    def template(self, case: Case) -> Template:
        messages = [{"role": "user", "content": case.user_text}]
        return Template(render_chat(self.context.tokenizer, messages, enable_thinking=True))

    def tokens(self, case: Case, template: Template) -> Tokens:
        return tokenize_padded(self.context.tokenizer, template.text)

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        return gathered(penultimate_hidden(self.context.text_encoder, tokens), tokens)
