"""Multi-turn prompts: the pack's conversation record, how its nodes grow it, and how it renders.

`ZImageTextEncoder` emits the first turn as a conversation; each `ZImageTurnBuilder` appends one
user message and one assistant message (always, even an empty one); the text is rendered by the
last turn builder, or by an encoder whose `conversation_override` input receives it.

Thinking is a property of the whole conversation, fixed by the first encoder's think block: when
it is on, every assistant message gets a `<think>` block (empty if it has no thinking); when it is
off, thinking typed into a later turn builder is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from implementations.inhouse.key_quotes import strip_key_quotes
from implementations.inhouse.prompt import IM_END, EncoderFields, full_encoder_fields


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str
    thinking: str = ""


@dataclass(frozen=True)
class Conversation:
    enable_thinking: bool
    messages: tuple[ChatMessage, ...]
    # True (the default everywhere in the pack) leaves the last message open for the model.
    is_final: bool = True


def encoder_conversation(fields: EncoderFields, strip_quotes: bool = False) -> Conversation:
    """The `conversation` output of `ZImageTextEncoder` in direct mode."""
    f = full_encoder_fields(fields, strip_quotes)
    messages = []
    if f.system_prompt.strip():
        messages.append(ChatMessage("system", f.system_prompt.strip()))
    messages.append(ChatMessage("user", f.user_prompt.strip()))
    thinking = f.thinking_content.strip() if f.add_think_block else ""
    messages.append(ChatMessage("assistant", f.assistant_content.strip(), thinking))
    return Conversation(enable_thinking=f.add_think_block, messages=tuple(messages))


def add_turn(
    previous: Conversation,
    user_prompt: str,
    thinking_content: str = "",
    assistant_content: str = "",
    *,
    is_final: bool = True,
    strip_quotes: bool = False,
) -> Conversation:
    """`ZImageTurnBuilder`: one user message and one assistant message appended."""
    if strip_quotes:
        user_prompt, thinking_content, assistant_content = (
            strip_key_quotes(t) for t in (user_prompt, thinking_content, assistant_content)
        )
    thinking = thinking_content.strip() if previous.enable_thinking else ""
    added = (
        ChatMessage("user", user_prompt.strip()),
        ChatMessage("assistant", assistant_content.strip(), thinking),
    )
    return replace(previous, messages=previous.messages + added, is_final=is_final)


def render_conversation(conversation: Conversation) -> str:
    """Each message `<|im_start|>{role}\\n...`, closed with `<|im_end|>` unless it is the open last
    one, joined with `\\n`; a blank system message is left out."""
    parts = []
    last = len(conversation.messages) - 1
    for i, message in enumerate(conversation.messages):
        content = message.content.strip()
        if message.role == "system" and not content:
            continue
        if message.role == "assistant" and conversation.enable_thinking:
            content = f"<think>\n{message.thinking.strip()}\n</think>\n\n{content}"
        end = "" if i == last and conversation.is_final else IM_END
        parts.append(f"<|im_start|>{message.role}\n{content}{end}")
    return "\n".join(parts)
