"""The strings the pack's two single-turn encoders hand to ComfyUI's tokenizer.

`ZImageTextEncoder` ("full") and `ZImageTextEncoderSimple` ("simple") take the same widgets but
assemble the assistant part differently, so they never produce the same bytes:

    full,   think on:  <|im_start|>assistant\\n<think>\\n{T}\\n</think>\\n\\n[{A}<|im_end|>]
    simple, think on:  <|im_start|>assistant\\n<think>\\n[{T}\\n]</think>\\n[\\n{A}\\n<|im_end|>]
    full,   think off: <|im_start|>assistant\\n[{A}<|im_end|>]
    simple, think off: <|im_start|>assistant[\\n{A}\\n<|im_end|>]

Both put `<|im_start|>system\\n{S}<|im_end|>` first when the system prompt is not blank, then
`<|im_start|>user\\n{U}<|im_end|>`, and join the parts with `\\n`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from implementations.inhouse.key_quotes import strip_key_quotes

SYSTEM = "<|im_start|>system\n{}<|im_end|>"
USER = "<|im_start|>user\n{}<|im_end|>"
ASSISTANT = "<|im_start|>assistant"
IM_END = "<|im_end|>"
# The shipped UI default; the Python signatures default to False, but the UI always passes a value.
ADD_THINK_BLOCK_DEFAULT = True


@dataclass(frozen=True)
class EncoderFields:
    """The widget values an encoder node runs with (after the UI's template auto-fill)."""

    user_prompt: str
    system_prompt: str = ""
    add_think_block: bool = ADD_THINK_BLOCK_DEFAULT
    thinking_content: str = ""
    assistant_content: str = ""
    trigger_words: str = ""


def with_trigger(user_prompt: str, trigger_words: str) -> str:
    """LoRA trigger words go in front of the user prompt, separated by one space."""
    if not trigger_words.strip():
        return user_prompt
    return f"{trigger_words.strip()} {user_prompt}"


def full_encoder_fields(fields: EncoderFields, strip_quotes: bool) -> EncoderFields:
    """What `ZImageTextEncoder` does to its widgets before rendering or building a conversation.

    Trigger words first, so the key-quote filter sees them too; the filter touches the user prompt,
    thinking and assistant content but never the system prompt. Non-blank thinking content turns
    the think block on whatever the checkbox says.
    """
    user = with_trigger(fields.user_prompt, fields.trigger_words)
    thinking, assistant = fields.thinking_content, fields.assistant_content
    if strip_quotes:
        user, thinking, assistant = (strip_key_quotes(t) for t in (user, thinking, assistant))
    return replace(
        fields,
        user_prompt=user,
        thinking_content=thinking,
        assistant_content=assistant,
        add_think_block=fields.add_think_block or bool(thinking.strip()),
        trigger_words="",
    )


def render_full(fields: EncoderFields, *, raw_prompt: str = "", strip_quotes: bool = False) -> str:
    """`ZImageTextEncoder` in direct or raw mode (its conversation mode is `render_conversation`)."""
    # Raw mode wins over every other widget, trigger words and the key-quote filter included.
    if raw_prompt.strip():
        return raw_prompt
    f = full_encoder_fields(fields, strip_quotes)
    parts = []
    if f.system_prompt.strip():
        parts.append(SYSTEM.format(f.system_prompt.strip()))
    # The full encoder is the one place the user prompt is not stripped.
    parts.append(USER.format(f.user_prompt))
    assistant = f.assistant_content.strip()
    closing = f"{assistant}{IM_END}" if assistant else ""
    if f.add_think_block:
        parts.append(f"{ASSISTANT}\n<think>\n{f.thinking_content.strip()}\n</think>\n\n{closing}")
    else:
        parts.append(f"{ASSISTANT}\n{closing}")
    return "\n".join(parts)


def render_simple(fields: EncoderFields) -> str:
    """`ZImageTextEncoderSimple`: no raw mode, no key-quote filter, no conversation."""
    user = with_trigger(fields.user_prompt, fields.trigger_words).strip()
    system = fields.system_prompt.strip()
    thinking = fields.thinking_content.strip()
    assistant = fields.assistant_content.strip()
    parts = []
    if system:
        parts.append(SYSTEM.format(system))
    parts.append(USER.format(user))
    # Every piece is its own line, so an empty think block is `<think>\n</think>` (one newline)
    # and the trailing "" leaves a single `\n` where the full encoder writes `\n\n`.
    parts.append(ASSISTANT)
    if fields.add_think_block or thinking:
        parts.append("<think>")
        if thinking:
            parts.append(thinking)
        parts.extend(["</think>", ""])
    if assistant:
        parts.extend([assistant, IM_END])
    return "\n".join(parts)
