"""A case as the pack's real nodes run it: which nodes, wired how, with which widget values.

The widget values are what a user sets, so they come from the same reading of a case as the
re-implementation's (`implementations/inhouse/workflow.py`: `encoder_fields`, the template's
auto-fill, the pairing of messages into turns); everything the nodes do with them is the pack's
own code:
- `full`: `ZImageTextEncoder.encode`, in direct mode, or raw mode with `raw_prompt`;
- `simple`: `ZImageTextEncoderSimple.encode`, with a `PromptKeyFilter` node on each text the case
  types in when it strips key quotes (the simple encoder has no such switch);
- a message list: `ZImageTextEncoder` for the first turn, then a `ZImageTurnBuilder` per later user
  turn, the last one wired to the CLIP (so it encodes), its conditioning the one sampled.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from implementations.inhouse.templates import PromptTemplate
from implementations.inhouse.workflow import encoder_fields, first_turn, simple_fields
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case

FILTER_PADDING_DEFAULT = True


def _filter_padding(case: Case) -> bool:
    return FILTER_PADDING_DEFAULT if case.filter_padding is None else case.filter_padding


def _full(nodes: SimpleNamespace, clip: Any, case: Case, fields: Any, template: PromptTemplate | None,
          raw: str = "") -> tuple[Any, dict]:
    conditioning, _, _, conversation = nodes.encoder.ZImageTextEncoder().encode(
        clip, fields.user_prompt, trigger_words=fields.trigger_words,
        template_preset=template.key if template else "none", system_prompt=fields.system_prompt,
        add_think_block=fields.add_think_block, thinking_content=fields.thinking_content,
        assistant_content=fields.assistant_content, raw_prompt=raw, strip_key_quotes=case.strip_key_quotes,
        filter_padding=_filter_padding(case),
    )
    return conditioning, conversation


def _conversation(nodes: SimpleNamespace, clip: Any, case: Case, template: PromptTemplate | None) -> Any:
    first, later = first_turn(case, template)
    conditioning, conversation = _full(nodes, clip, case, first, template)
    builder = nodes.encoder.ZImageTurnBuilder()
    for n, (user, reply) in enumerate(later, 1):
        conversation, conditioning, _, _ = builder.add_turn(
            conversation, user.content, clip=clip if n == len(later) else None,
            thinking_content=(reply.thinking if reply else None) or "",
            assistant_content=reply.content if reply else "", is_final=True,
            strip_key_quotes=case.strip_key_quotes, filter_padding=_filter_padding(case),
        )
    return conditioning


def run(nodes: SimpleNamespace, clip: Any, case: Case, template: PromptTemplate | None) -> Any:
    """The CONDITIONING the case's workflow hands the sampler."""
    if case.encoder == "simple":
        if case.messages is not None or case.raw_prompt:
            raise Unsupported("the simple encoder has no conversation input and no raw mode")
        fields = simple_fields(case, template, lambda text: nodes.encoder.PromptKeyFilter().filter_text(text)[0])
        conditioning, _, _ = nodes.encoder.ZImageTextEncoderSimple().encode(
            clip, fields.user_prompt, trigger_words=fields.trigger_words,
            template_preset=template.key if template else "none", system_prompt=fields.system_prompt,
            add_think_block=fields.add_think_block, thinking_content=fields.thinking_content,
            assistant_content=fields.assistant_content, filter_padding=_filter_padding(case),
        )
        return conditioning
    if case.messages is not None:
        return _conversation(nodes, clip, case, template)
    if case.encoder == "turns":
        raise Unsupported("the turn builder needs a message list")
    if case.raw_prompt:
        return _full(nodes, clip, case, replace(encoder_fields(case, template), user_prompt=""), template,
                     raw=case.user_text)[0]
    return _full(nodes, clip, case, encoder_fields(case, template), template)[0]
