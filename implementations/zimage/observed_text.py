"""The text stages of a live library whose one call renders, tokenizes and encodes.

diffusers' `encode_prompt` and DiffSynth's prompt unit both do all three at once, so the harness
runs that call once per prompt and observes it: the template it rendered, the ids and mask its text
encoder received (a forward pre-hook), the rows it returned. Such a call cannot be handed another
implementation's template or tokens; fed any, it says so instead of pretending. Shared by the two
live adapters, `diffusers` and `diffsynth_live`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from parity.stages.embeddings import Embeddings
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case


@dataclass(frozen=True)
class ObservedText:
    template: Template
    tokens: Tokens
    embeddings: Embeddings

    @classmethod
    def of(cls, template: str, encoder_inputs: dict[str, torch.Tensor], rows: torch.Tensor) -> ObservedText:
        """From the rendered string, the recorded encoder inputs and the masked-in rows returned."""
        tokens = Tokens(encoder_inputs["input_ids"].tolist(), encoder_inputs["attention_mask"].long().tolist())
        return cls(Template(template), tokens, Embeddings(rows, torch.ones(rows.shape[0], dtype=torch.bool)))


@contextmanager
def recording_encoder_inputs(text_encoder: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict the encoder's next call fills with the ids and mask it was given (sample 0)."""
    seen: dict[str, torch.Tensor] = {}

    def record(_module: torch.nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        seen["input_ids"] = kwargs["input_ids"][0].cpu()
        seen["attention_mask"] = kwargs["attention_mask"][0].cpu()

    hook = text_encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        hook.remove()


class ObservedTextStages:
    """template / tokens / embeddings from one observed call per prompt (mixed into an Adapter)."""

    # How the library's call is named in the messages refusing foreign upstream.
    text_call: ClassVar[str]

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._observed_text: dict[tuple[str, str], ObservedText] = {}

    def observe_text(self, case: Case) -> ObservedText:
        raise NotImplementedError

    def _observed(self, case: Case) -> ObservedText:
        key = (case.id, case.user_text)
        if key not in self._observed_text:
            # The library renders the checkpoint's template itself, through the tokenizer's bounded
            # method (parity.core.chat_template): a failure there is already one line.
            self._observed_text[key] = self.observe_text(case)
        return self._observed_text[key]

    def template(self, case: Case) -> Template:
        return self._observed(case).template

    def tokens(self, case: Case, template: Template) -> Tokens:
        observed = self._observed(case)
        if template != observed.template:
            raise Unsupported(f"{self.text_call} renders its own template; it cannot tokenize another one")
        return observed.tokens

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        observed = self._observed(case)
        if tokens != observed.tokens:
            raise Unsupported(f"{self.text_call} tokenizes its own template; it cannot encode other tokens")
        return observed.embeddings
