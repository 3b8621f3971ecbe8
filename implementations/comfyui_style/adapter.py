r"""Stock ComfyUI's Z-Image text path, re-implemented from `comfy/text_encoders/z_image.py` and `sd1_clip.py`.

What ComfyUI does differently from diffusers and DiffSynth, top to bottom:
- No chat template is rendered: the prompt goes into a hard-coded string,
  `<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n` (the official template's bytes with
  `enable_thinking=True`, no system prompt, no think block).
- Its tokenizer undoes `\(` and `\)` to `(` and `)`. Z-Image disables prompt weights, so
  `(soft light:1.2)` stays literal text, but the escapes are still undone.
- ` embedding:NAME` (after a space or newline) is a textual-inversion reference. The text is split
  there, losing that space or newline, and the pieces are tokenized one by one, so no token spans a
  split. This harness has no embeddings, so it does what ComfyUI does when the file is missing: it
  drops NAME and re-joins the rest of that piece with single spaces (later newlines collapse too).
- Tokenized with no BOS/EOS, no padding and no truncation: any length goes through, where the
  references cut at 512 tokens including the template.
- The mask is all ones, except that `<|endoftext|>` (151643, ComfyUI's pad id) ends the prompt: it
  and every token after it are masked, though still encoded.
- `hidden_states[-2]` with that mask (ComfyUI: `layer_idx=-2`, no final norm); the whole sequence
  and its mask are handed on and nothing is removed (the DiT receives the mask only if it has zeros).

The encode path is `text.py`. Sampling is ComfyUI's KSampler (euler, simple) on its own DiT layout:
`schedule.py`, `sampler.py`, `dit_variant.py`; decoding is `VAEDecode` and `SaveImage`: `decode.py`.

ComfyUI bundles its own Qwen vocabulary and config (`comfy/text_encoders/qwen25_tokenizer/`) rather
than a checkpoint's `tokenizer/`; since 2025-12-01 it matches Qwen3's, so the shared tokenizer
stands in for it. The `comfyui_style_pre20251201` variant restores the older config. Before
2026-02-02 (commit dd86b15) Z-Image's tokenizer was given no embeddings folder: references still
split the text but `embedding:NAME` was tokenized as text; this adapter follows the newer code.
Not modelled: the browser front end's dynamic-prompt syntax, resolved before the text reaches Python.
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

from transformers import PreTrainedTokenizerBase

from implementations.comfyui_style.decode import ComfyDecoder
from implementations.comfyui_style.float32_compute import comfy_hidden
from implementations.comfyui_style.legacy_tokenizer import legacy_tokenizer
from implementations.comfyui_style.sampler import ComfySampler
from implementations.comfyui_style.schedule import comfyui_schedule
from implementations.comfyui_style.text import tokenize
from implementations.zimage.text_encoding import unfiltered
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def richer_than_a_prompt(case: Case) -> str | None:
    """The first case field a single plain prompt cannot carry, if any."""
    fields = {
        "messages": case.messages is not None,
        "system_prompt": case.system_prompt is not None,
        "thinking": case.thinking is not None,
        "assistant": case.assistant is not None,
        "template": case.template is not None,
        "raw_prompt": case.raw_prompt,
        "trigger_words": case.trigger_words is not None,
        "strip_key_quotes": case.strip_key_quotes,
        "encoder": case.encoder != "full",
    }
    return next((name for name, is_set in fields.items() if is_set), None)


class ComfyUIStyleAdapter(ComfySampler, ComfyDecoder, Adapter):
    name: ClassVar[str] = "comfyui_style"
    summary: ClassVar[str] = "stock ComfyUI's Z-Image text path (CLIPTextEncode), re-implemented"
    modelled_on: ClassVar[str | None] = "comfyui_live"

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.context.tokenizer

    def check_supported(self, case: Case) -> None:
        extra = richer_than_a_prompt(case)
        if extra is not None:
            raise Unsupported(f"ComfyUI's text encode node takes one prompt; the case sets {extra}")

    def template(self, case: Case) -> Template:
        return Template(TEMPLATE.format(case.user_text))

    def tokens(self, case: Case, template: Template) -> Tokens:
        return tokenize(self.tokenizer, template.text)

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        return unfiltered(comfy_hidden(self.context.text_encoder, tokens), tokens)


class ComfyUILegacyTokenizerAdapter(ComfyUIStyleAdapter):
    name: ClassVar[str] = "comfyui_style_pre20251201"
    # Other settings than the live adapter runs with: no stored outputs to be judged against.
    modelled_on: ClassVar[str | None] = None
    summary: ClassVar[str] = "stock ComfyUI before 2025-12-01, when <think> was not a single token"
    in_default_run: ClassVar[bool] = False

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return legacy_tokenizer(self.context.tokenizer)


class ComfyUINormalSchedulerAdapter(ComfyUIStyleAdapter):
    name: ClassVar[str] = "comfyui_style_normal"
    # Other settings than the live adapter runs with: no stored outputs to be judged against.
    modelled_on: ClassVar[str | None] = None
    summary: ClassVar[str] = "stock ComfyUI with the KSampler's `normal` scheduler instead of `simple`"
    in_default_run: ClassVar[bool] = False

    def schedule(self, case: Case) -> Schedule:
        return comfyui_schedule(case.steps, case.shift, "normal", case.denoise)
