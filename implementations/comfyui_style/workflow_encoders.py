"""The text encoders a ComfyUI workflow may feed its sampler, as case fields: stock `CLIPTextEncode`
(a prompt and nothing else) and the node pack QwenImageWanBridge's `ZImageTextEncoder` and
`ZImageTextEncoderSimple`, whose widgets are the case's pack keys (`implementations/inhouse/` reads
those keys back into the same widgets).
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


class Values(Protocol):
    notes: list[str]

    def value(self, node: Node, name: str, kind: type) -> Any: ...


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
