"""The text encoders a ComfyUI workflow may feed its sampler, as case fields: stock `CLIPTextEncode`
(a prompt and nothing else) and the node pack QwenImageWanBridge's `ZImageTextEncoder` and
`ZImageTextEncoderSimple`, whose widgets are the case's pack keys (`implementations/inhouse/` reads
those keys back into the same widgets), and the pack's conversations: a `ZImageTextEncoder` for the
first turn, then a chain of `ZImageTurnBuilder`s, the last of which encodes (a message-list case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from implementations.comfyui_style.workflow_graph import Node
from parity.core.errors import InputError, shown

# The pack's own widget names for the text it holds, and the case key each becomes.
TEXTS = {"trigger_words": "trigger_words", "system_prompt": "system_prompt",
         "thinking_content": "thinking", "assistant_content": "assistant"}
FLAGS = ("add_think_block", "strip_key_quotes", "filter_padding")
# What `Case.negative()` keeps of the positive's encoding: a negative the case can express has
# these the same and no other text than its prompt.
NEGATIVE_KEEPS = ("encoder", *FLAGS)


@dataclass(frozen=True)
class Encoder:
    widgets: tuple[str, ...]
    # The case's `encoder` key (None: stock ComfyUI, which has no such choice).
    case_encoder: str | None = None


_PACK = ("user_prompt", "trigger_words", "template_preset", "system_prompt", "add_think_block",
         "thinking_content", "assistant_content")
ENCODERS = {
    "CLIPTextEncode": Encoder(("text",)),
    "ZImageTextEncoder": Encoder((*_PACK, "raw_prompt", "strip_key_quotes", "filter_padding"), "full"),
    "ZImageTextEncoderSimple": Encoder((*_PACK, "filter_padding"), "simple"),
}


TURN_BUILDER = "ZImageTurnBuilder"
TURN_WIDGETS = ("user_prompt", "thinking_content", "assistant_content", "is_final", "strip_key_quotes",
                "filter_padding")


class Values(Protocol):
    notes: list[str]

    def value(self, node: Node, name: str, kind: type) -> Any: ...

    def source(self, node: Node, name: str) -> Node: ...


def encoder_fields(values: Values, node: Node) -> dict[str, Any]:
    """The case fields of the prompt `node` encodes."""
    encoder = ENCODERS[node.type]
    if encoder.case_encoder is None:
        return {"prompt": values.value(node, "text", str)}
    if "conversation_override" in node.links:
        raise InputError(f"{node.label}: its conversation comes from a turn builder; the reader reads one turn")
    fields: dict[str, Any] = {} if encoder.case_encoder == "full" else {"encoder": encoder.case_encoder}
    fields.update((flag, values.value(node, flag, bool)) for flag in FLAGS if flag in encoder.widgets)
    raw = values.value(node, "raw_prompt", str) if "raw_prompt" in encoder.widgets else ""
    # The node's own test for raw mode; in it every other text widget is ignored.
    if raw.strip():
        return {"prompt": raw, "raw_prompt": True, **fields}
    fields["prompt"] = values.value(node, "user_prompt", str)
    texts = {key: values.value(node, widget, str) for widget, key in TEXTS.items()}
    preset = values.value(node, "template_preset", str)
    if preset != "none" and not texts["system_prompt"]:
        # The node falls back to the preset's file for the system prompt alone; the case's template
        # would fill thinking and assistant too, so those are pinned to the widgets'.
        fields.update(template=preset, thinking=texts["thinking"], assistant=texts["assistant"])
        texts = {k: v for k, v in texts.items() if k not in ("thinking", "assistant")}
    elif preset != "none":
        values.notes.append(f"{node.label}: template_preset {shown(preset)}, whose text is in its system_prompt")
    fields.update((key, text) for key, text in texts.items() if text)
    return fields


def _turn_builders(values: Values, last: Node) -> tuple[Node, list[Node]]:
    """The encoder that starts the conversation `last` ends, and the turn builders in order."""
    chain = [last]
    while (previous := values.source(chain[-1], "previous")).type == TURN_BUILDER:
        if previous in chain:
            raise InputError(f"{previous.label}: its turn builders feed each other")
        chain.append(previous)
    if previous.type != "ZImageTextEncoder":
        raise InputError(f"{chain[-1].label}: its previous comes from {previous.label}; a conversation starts at a "
                         "ZImageTextEncoder")
    return previous, chain[::-1]


def conversation_fields(values: Values, last: Node) -> dict[str, Any]:
    """The message-list case of the conversation the turn builder `last` encodes (its CLIP connected)."""
    if "clip" not in last.links:
        raise InputError(f"{last.label}: its clip is not connected, so it encodes nothing")
    if not values.value(last, "is_final", bool):
        raise InputError(f"{last.label}: is_final is off; a case leaves the last message open for the model")
    first, builders = _turn_builders(values, last)
    fields = encoder_fields(values, first)
    if fields.get("raw_prompt"):
        raise InputError(f"{first.label}: raw mode sends one string; it starts no conversation")
    strips = {values.value(n, "strip_key_quotes", bool) for n in (first, *builders)}
    if len(strips) > 1:
        raise InputError(f"{first.label} and its turn builders strip key quotes differently; a case strips all or none")
    think = fields["add_think_block"]
    # The encoder's widgets, as typed: with a template picked, only its system prompt comes from the file.
    reply = {"role": "assistant", "content": values.value(first, "assistant_content", str)}
    thinking = values.value(first, "thinking_content", str)
    if thinking or "template" in fields:
        reply["thinking"] = thinking
    messages = [{"role": "user", "content": fields.pop("prompt")}, reply]
    for node in builders:
        messages.append({"role": "user", "content": values.value(node, "user_prompt", str)})
        reply = {"role": "assistant", "content": values.value(node, "assistant_content", str)}
        thinking = values.value(node, "thinking_content", str)
        if thinking.strip() and not think:
            values.notes.append(
                f"{node.label}: its thinking_content, which it drops (the first turn's think block is off)"
            )
        elif thinking:
            reply["thinking"] = thinking
        messages.append(reply)
    for key in ("thinking", "assistant"):
        fields.pop(key, None)
    return {**fields, "encoder": "turns", "messages": messages,
            "filter_padding": values.value(last, "filter_padding", bool)}
