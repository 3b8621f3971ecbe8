"""The prompt path the references share: the official chat template, then pad/truncate to 512.

diffusers and DiffSynth both render one user turn with the tokenizer's own chat template and
`enable_thinking=True` (which, in the official Qwen3 template, adds no think block), then pad on the
right to 512 tokens and truncate there, so an over-long prompt loses its closing template tokens.
Shared by `diffsynth_style` and `qwen3_chat` (which feeds chat-shaped cases through the same path);
the live adapters run their library's own.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from parity.stages.tokens import Tokens

MAX_SEQUENCE_LENGTH = 512


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    enable_thinking: bool = True,
    add_generation_prompt: bool = True,
) -> str:
    # A checkpoint tokenizer's method is the bounded one (parity.core.chat_template): a failure is one line.
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking
    )


def tokenize_padded(
    tokenizer: PreTrainedTokenizerBase, text: str, max_length: int = MAX_SEQUENCE_LENGTH
) -> Tokens:
    enc = tokenizer(text, padding="max_length", max_length=max_length, truncation=True)
    return Tokens(input_ids=list(enc["input_ids"]), attention_mask=list(enc["attention_mask"]))

