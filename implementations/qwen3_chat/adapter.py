"""The official Qwen3 chat template applied by transformers: the reference for chat-shaped cases.

diffusers and DiffSynth accept one user prompt, so a case with a system prompt, prior turns or
assistant content has no Z-Image reference. What those cases claim to reproduce is the Qwen3 chat
format itself, fed through the references' encode path, so their reference is the real template
rendered by the real tokenizer: messages as given (thinking becomes `reasoning_content`; a case's
own thinking or assistant content becomes a final assistant message, rendered without a generation
prompt), `enable_thinking=True` unless the case turns the think block on; then exactly what
diffusers does next: pad/truncate to 512, `hidden_states[-2]`, keep the masked-in rows. On a plain
prompt this equals the diffusers path row for row.
"""

from __future__ import annotations

from typing import ClassVar

from implementations.zimage.chat import render_chat, tokenize_padded
from implementations.zimage.text_encoding import gathered, penultimate_hidden
from parity.stages.embeddings import Embeddings
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case


def chat_messages(case: Case) -> list[dict[str, str]]:
    """The case as chat messages, in the shape the official template reads."""
    if case.messages is not None:
        messages = []
        for m in case.messages:
            message = {"role": m.role, "content": m.content}
            if m.thinking is not None:
                message["reasoning_content"] = m.thinking
            messages.append(message)
        return messages
    messages = []
    if case.system_prompt:
        messages.append({"role": "system", "content": case.system_prompt})
    messages.append({"role": "user", "content": case.user_text})
    if case.thinking is not None or case.assistant is not None:
        reply = {"role": "assistant", "content": case.assistant or ""}
        if case.thinking is not None:
            reply["reasoning_content"] = case.thinking
        messages.append(reply)
    return messages


class Qwen3ChatAdapter(Adapter):
    name: ClassVar[str] = "qwen3_chat"
    summary: ClassVar[str] = "the official Qwen3 chat template, rendered by transformers"
    reference_priority: ClassVar[int | None] = 1

    def check_supported(self, case: Case) -> None:
        if case.raw_prompt or case.template is not None or case.trigger_words or case.strip_key_quotes:
            raise Unsupported("node-pack prompt options have no Qwen3 chat equivalent")

    def template(self, case: Case) -> Template:
        messages = chat_messages(case)
        open_turn = messages[-1]["role"] != "assistant"
        thinking = case.add_think_block is not True
        text = render_chat(self.context.tokenizer, messages, enable_thinking=thinking, add_generation_prompt=open_turn)
        return Template(text)

    def tokens(self, case: Case, template: Template) -> Tokens:
        return tokenize_padded(self.context.tokenizer, template.text)

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        return gathered(penultimate_hidden(self.context.text_encoder, tokens), tokens)
