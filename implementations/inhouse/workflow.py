"""How a Case becomes a ComfyUI workflow of the pack's nodes, and the string that workflow renders.

A case field left unset (None) means what a user gets by not touching the widget: the shipped UI
defaults (think block on). Picking a template is what the pack's UI does on selection: it fills the
system prompt with the template body, turns the think block on, and fills (or clears) thinking and
assistant content from the template; a case field that is set is the user's edit after that.

Encoders:
- `full`: `ZImageTextEncoder`. A prompt renders in direct mode (or raw mode with `raw_prompt`); a
  message list can only enter it through `conversation_override`, so it renders as a conversation.
- `simple`: `ZImageTextEncoderSimple`. It has no raw mode, no conversation input and no key-quote
  switch; `strip_key_quotes` is a `PromptKeyFilter` node on each text the case types in.
- `turns`: `ZImageTextEncoder` for the first turn, then one `ZImageTurnBuilder` per later user turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from implementations.inhouse.conversation import (
    Conversation,
    add_turn,
    encoder_conversation,
    render_conversation,
)
from implementations.inhouse.key_quotes import strip_key_quotes
from implementations.inhouse.prompt import ADD_THINK_BLOCK_DEFAULT, EncoderFields, render_full, render_simple
from implementations.inhouse.templates import PromptTemplate
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case, Message


def _or(value: str | None, fallback: str) -> str:
    return fallback if value is None else value


def encoder_fields(case: Case, template: PromptTemplate | None) -> EncoderFields:
    """The widgets of a single-turn encoder for a prompt case."""
    return EncoderFields(
        user_prompt=case.user_text,
        system_prompt=_or(case.system_prompt, template.system_prompt if template else ""),
        # Both the widget default and a template pick leave the box ticked.
        add_think_block=ADD_THINK_BLOCK_DEFAULT if case.add_think_block is None else case.add_think_block,
        thinking_content=_or(case.thinking, template.thinking_content if template else ""),
        assistant_content=_or(case.assistant, template.assistant_content if template else ""),
        trigger_words=case.trigger_words or "",
    )


def turns(messages: Sequence[Message]) -> list[tuple[Message, Message | None]]:
    """(user, assistant-or-None) pairs: the only shapes an encoder plus turn builders can make."""
    pairs: list[tuple[Message, Message | None]] = []
    for message in messages:
        if message.role == "system":
            raise Unsupported("the pack takes a system prompt only before the first user turn")
        if message.role == "user":
            if message.thinking is not None:
                raise Unsupported("the pack has no thinking field for user messages")
            if pairs and pairs[-1][1] is None:
                raise Unsupported("the pack puts an assistant message after every user message but the last")
            pairs.append((message, None))
        elif not pairs or pairs[-1][1] is not None:
            raise Unsupported("the pack builds user/assistant turns: an assistant must follow a user")
        else:
            pairs[-1] = (pairs[-1][0], message)
    if not pairs:
        raise Unsupported("the pack's conversation needs a user message")
    return pairs


def first_turn(
    case: Case, template: PromptTemplate | None
) -> tuple[EncoderFields, list[tuple[Message, Message | None]]]:
    """For a message-list case: the first encoder's widgets (its system prompt and first exchange),
    and the later (user, assistant-or-None) turns, one turn builder each."""
    if case.raw_prompt:
        raise Unsupported("raw mode sends one string; it cannot carry a message list")
    if case.thinking is not None or case.assistant is not None:
        raise Unsupported("with a message list, thinking and assistant content belong on the messages")
    messages = list(case.messages or ())
    system = messages.pop(0) if messages and messages[0].role == "system" else None
    if system is not None and case.system_prompt is not None:
        raise Unsupported("the case gives two system prompts (system_prompt and a system message)")
    if system is not None and system.thinking is not None:
        raise Unsupported("the pack has no thinking field for system messages")
    pairs = turns(messages)
    (user, reply), later = pairs[0], pairs[1:]
    first = encoder_fields(case, template)
    first = replace(
        first,
        user_prompt=user.content,
        system_prompt=system.content if system is not None else first.system_prompt,
        thinking_content=_or(reply.thinking if reply else None, first.thinking_content),
        assistant_content=reply.content if reply else first.assistant_content,
    )
    return first, later


def case_conversation(case: Case, template: PromptTemplate | None) -> Conversation:
    """The conversation an encoder plus turn builders produce for a message-list case."""
    first, later = first_turn(case, template)
    conversation = encoder_conversation(first, case.strip_key_quotes)
    for user, reply in later:
        thinking = (reply.thinking if reply else None) or ""
        if thinking.strip() and not conversation.enable_thinking:
            raise Unsupported("the turn builder drops thinking when the first turn's think block is off")
        conversation = add_turn(
            conversation,
            user.content,
            thinking,
            reply.content if reply else "",
            strip_quotes=case.strip_key_quotes,
        )
    return conversation


def simple_fields(
    case: Case, template: PromptTemplate | None, key_filter: Callable[[str], str] = strip_key_quotes
) -> EncoderFields:
    """The simple encoder's widgets; with `strip_key_quotes`, each text the case types in has gone
    through a `PromptKeyFilter` node (`key_filter`) first."""
    fields = encoder_fields(case, template)
    if not case.strip_key_quotes:
        return fields
    # Template-filled widgets are not wired through the filter. Being upstream of the encoder, it
    # runs before trigger words are prepended.
    return replace(
        fields,
        user_prompt=key_filter(fields.user_prompt),
        thinking_content=fields.thinking_content if case.thinking is None else key_filter(case.thinking),
        assistant_content=fields.assistant_content if case.assistant is None else key_filter(case.assistant),
    )


def render_case(case: Case, template: PromptTemplate | None) -> str:
    """The exact string the pack's workflow hands to ComfyUI's tokenizer for `case`."""
    if case.encoder == "simple":
        if case.messages is not None:
            raise Unsupported("the simple encoder has no conversation input")
        if case.raw_prompt:
            raise Unsupported("the simple encoder has no raw mode")
        return render_simple(simple_fields(case, template))
    if case.messages is not None:
        return render_conversation(case_conversation(case, template))
    if case.encoder == "turns":
        raise Unsupported("the turn builder needs a message list")
    if case.raw_prompt:
        # The raw text goes into `raw_prompt` and `user_prompt` stays empty; if the raw text is
        # blank the node falls back to direct mode with the other widgets.
        fields = replace(encoder_fields(case, template), user_prompt="")
        return render_full(fields, raw_prompt=case.user_text, strip_quotes=case.strip_key_quotes)
    return render_full(encoder_fields(case, template), strip_quotes=case.strip_key_quotes)
