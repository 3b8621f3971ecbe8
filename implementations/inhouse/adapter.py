"""The ComfyUI node pack `fblissjr/ComfyUI-QwenImageWanBridge` 2.9.12 (the "in-house" path), re-implemented.

What it does differently from the references (diffusers / DiffSynth), top to bottom:
- Template. It writes the chat string by hand instead of using the tokenizer's chat template, and
  with its shipped defaults (think block on) appends `<think>\\n\\n</think>\\n\\n` after
  `<|im_start|>assistant\\n`: the Qwen3 `enable_thinking=False` prompt, which no reference uses.
  Switched off, it equals the reference string. Beyond one user prompt it can express a system
  prompt, thinking and assistant content (non-blank thinking forces the think block on), a raw
  string sent as is, LoRA trigger words prepended to the user prompt, a key-quote filter for JSON
  prompts, Markdown prompt templates, and multi-turn conversations. Its simple encoder writes
  different bytes from its full one (`workflow.py`, `prompt.py`, `conversation.py`).
- Tokens. The string goes through ComfyUI's encode path (`comfyui_style/text.py`): `\\(` unescaped,
  ` embedding:` references split out, no padding, no truncation at 512.
- Sampling. The pack adds no sampler: its conditioning goes into ComfyUI's KSampler
  (`comfyui_style/sampler.py`) and its images through ComfyUI's `VAEDecode` and `SaveImage`
  (`comfyui_style/decode.py`), so from the schedule on it is stock ComfyUI, but for the latent it
  starts from: its `ZImageEmptyLatent` rounds each side to the nearest multiple of 16 pixels
  (`empty_latent.py`), where stock ComfyUI floors to a multiple of 8.
- Embeddings. The same `hidden_states[-2]`. With `filter_padding` (default on) it gathers the
  masked-in rows and drops the mask, as the references do; since ComfyUI never pads a single
  prompt, this changes no numbers, only the hand-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

# The pack runs on ComfyUI: its encode path and sampler are ComfyUI's.
from implementations.comfyui_style import text as comfyui_text
from implementations.comfyui_style.decode import ComfyDecoder
from implementations.comfyui_style.float32_compute import comfy_hidden
from implementations.comfyui_style.sampler import ComfySampler, comfy_noise
from implementations.inhouse.empty_latent import aligned_size
from implementations.inhouse.templates import TEMPLATES_DIR, PromptTemplate, select_template
from implementations.inhouse.workflow import render_case
from implementations.inhouse_live.checkout import PACK
from implementations.inhouse_live.checkout import TEMPLATES as PACK_TEMPLATES
from implementations.zimage.text_encoding import gathered, unfiltered
from parity.stages.embeddings import Embeddings
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Adapter
from parity.suite.cases import Case

FILTER_PADDING_DEFAULT = True


class InHouseAdapter(ComfySampler, ComfyDecoder, Adapter):
    name: ClassVar[str] = "inhouse"
    summary: ClassVar[str] = "the ComfyUI node pack QwenImageWanBridge 2.9.12, on ComfyUI's encode path"
    modelled_on: ClassVar[str | None] = "inhouse_live"

    @property
    def templates_dir(self) -> Path:
        """The pack's own templates when its checkout is given (`--inhouse-pack`); else the built-in
        stand-ins, which are this project's, not the pack's (its template bodies are its authors' prose)."""
        pack = self.context.checkouts.get(PACK.name)
        return TEMPLATES_DIR if pack is None else pack / PACK_TEMPLATES

    def templates_source(self) -> str:
        if self.templates_dir == TEMPLATES_DIR:
            return "this project's stand-ins for the pack's templates; --inhouse-pack DIR reads the pack's own"
        return f"the pack's own templates, {self.templates_dir}"

    def _template_for(self, case: Case) -> PromptTemplate | None:
        return None if case.template is None else select_template(case.template, self.templates_dir)

    def check_supported(self, case: Case) -> None:
        # Building the workflow is the test: it raises Unsupported for what the nodes cannot express.
        render_case(case, self._template_for(case))

    def template(self, case: Case) -> Template:
        return Template(render_case(case, self._template_for(case)))

    def tokens(self, case: Case, template: Template) -> Tokens:
        return comfyui_text.tokenize(self.context.tokenizer, template.text)

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        hidden = comfy_hidden(self.context.text_encoder, tokens)
        filter_padding = FILTER_PADDING_DEFAULT if case.filter_padding is None else case.filter_padding
        return gathered(hidden, tokens) if filter_padding else unfiltered(hidden, tokens)

    def noise(self, case: Case) -> torch.Tensor:
        # ComfyUI's `prepare_noise` over the latent ZImageEmptyLatent makes.
        return comfy_noise(case.seed, aligned_size(case.height), aligned_size(case.width))

    def versions(self) -> dict[str, str]:
        return {"node_pack": "2.9.12 (re-implemented)"}
