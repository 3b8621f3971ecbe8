"""The installed diffusers package, driven as-is: `ZImagePipeline.encode_prompt`.

Nothing here re-implements diffusers. One real `encode_prompt` call renders the template,
tokenizes and encodes; the harness only observes it:
- the template: diffusers overwrites the caller's prompt list in place with the rendered string;
- the tokens: a forward hook on the text encoder records the ids and mask diffusers passes in;
- the embeddings: the list of masked-in rows `encode_prompt` returns.
Because the three stages happen in one call, this adapter cannot be teacher-forced with another
implementation's template or tokens; it says so instead of pretending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import diffusers
import torch
import transformers
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

from parity.adapter import Adapter, Unsupported
from parity.cases import Case
from parity.stages import Embeddings, Template, Tokens


@dataclass(frozen=True)
class _Observed:
    template: Template
    tokens: Tokens
    embeddings: Embeddings


class DiffusersAdapter(Adapter):
    name: ClassVar[str] = "diffusers"
    summary: ClassVar[str] = f"the installed diffusers {diffusers.__version__} ZImagePipeline (live)"
    reference_priority: ClassVar[int | None] = 0

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._observed: dict[str, _Observed] = {}
        self._pipe: ZImagePipeline | None = None

    def check_supported(self, case: Case) -> None:
        if not case.is_plain_prompt:
            raise Unsupported("ZImagePipeline takes a single user prompt only")

    def _pipeline(self) -> ZImagePipeline:
        if self._pipe is None:
            # Only the text path is exercised here: no VAE or transformer needed.
            self._pipe = ZImagePipeline(
                scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
                vae=None,
                text_encoder=self.context.text_encoder,
                tokenizer=self.context.tokenizer,
                transformer=None,
            )
        return self._pipe

    def _observe(self, case: Case) -> _Observed:
        if case.id in self._observed:
            return self._observed[case.id]
        pipe = self._pipeline()
        seen: dict[str, torch.Tensor] = {}

        def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            seen["input_ids"] = kwargs["input_ids"][0].cpu()
            seen["attention_mask"] = kwargs["attention_mask"][0].cpu()

        prompts = [case.user_text]
        hook = pipe.text_encoder.register_forward_pre_hook(record, with_kwargs=True)
        try:
            with torch.inference_mode():
                embeds, _ = pipe.encode_prompt(
                    prompt=prompts, device=torch.device(self.context.device), do_classifier_free_guidance=False
                )
        finally:
            hook.remove()
        rows = embeds[0].cpu()
        observed = _Observed(
            template=Template(prompts[0]),
            tokens=Tokens(seen["input_ids"].tolist(), seen["attention_mask"].long().tolist()),
            embeddings=Embeddings(rows, torch.ones(rows.shape[0], dtype=torch.bool)),
        )
        self._observed[case.id] = observed
        return observed

    def template(self, case: Case) -> Template:
        return self._observe(case).template

    def tokens(self, case: Case, template: Template) -> Tokens:
        observed = self._observe(case)
        if template != observed.template:
            raise Unsupported("encode_prompt renders its own template; it cannot tokenize another one")
        return observed.tokens

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        observed = self._observe(case)
        if tokens != observed.tokens:
            raise Unsupported("encode_prompt tokenizes its own template; it cannot encode other tokens")
        return observed.embeddings

    def versions(self) -> dict[str, str]:
        return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}
