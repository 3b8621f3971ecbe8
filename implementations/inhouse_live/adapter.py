"""The node pack QwenImageWanBridge from a checkout, driven live on the live ComfyUI.

Its Z-Image nodes (`pack.py`) run as a workflow of the case builds them (`workflow.py`), with
ComfyUI's own CLIP built around the shared weights (`comfyui_live/models.py`). One run of that
workflow per prompt is observed:
- template: the string the last encoding node hands ComfyUI's tokenizer (it passes
  `llama_template="{}"`, so that is the pack's own formatting);
- tokens: the ids ComfyUI's tokenizer made of it, and the mask ComfyUI's encoder builds from them;
- embeddings: the CONDITIONING the node outputs (with `filter_padding`, the pack's own filtering).
From the schedule on it is ComfyUI (`comfyui_live`), but for the latent it starts from: the pack's
`ZImageEmptyLatent`. Templates are the pack's own, from its checkout. The nodes print what they
format to stdout, which carries `--json` output, so that is dropped.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, ClassVar

import torch

from implementations.comfyui_live import models
from implementations.comfyui_live.adapter import ComfyUILiveAdapter, conditioning_rows, recording_tokenizer
from implementations.comfyui_live.checkout import COMFYUI
from implementations.comfyui_live.library import git_origin
from implementations.inhouse.templates import PromptTemplate, select_template
from implementations.inhouse_live import pack, workflow
from implementations.inhouse_live.checkout import PACK, TEMPLATES
from implementations.zimage.observed_text import ObservedText, ObservedTextStages
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case
from parity.suite.checkouts import Checkout


class InHouseLiveAdapter(ObservedTextStages, ComfyUILiveAdapter):
    name: ClassVar[str] = "inhouse_live"
    summary: ClassVar[str] = "the node pack QwenImageWanBridge from a checkout (--inhouse-pack), on the live ComfyUI"
    reference_priority: ClassVar[int | None] = 4
    checkouts: ClassVar[tuple[Checkout, ...]] = (COMFYUI, PACK)
    text_call: ClassVar[str] = "the pack's encoder node"

    @property
    def nodes(self) -> Any:
        checkouts = self.context.checkouts
        return pack.load(checkouts[PACK.name], checkouts[COMFYUI.name], torch.device(self.context.device).type)

    def versions(self) -> dict[str, str]:
        return super().versions() | git_origin(self.context.checkouts[PACK.name], "node_pack")

    def templates_source(self) -> str:
        return f"the pack's own templates, {self.context.checkouts[PACK.name] / TEMPLATES}"

    def _template_for(self, case: Case) -> PromptTemplate | None:
        folder = self.context.checkouts[PACK.name] / TEMPLATES
        if case.template is None:
            return None
        if not (folder / f"{case.template}.md").is_file():
            raise Unsupported(f"the pack has no template {case.template!r} in {folder}")
        return select_template(case.template, folder)

    def check_supported(self, case: Case) -> None:
        if case.encoder == "turns" and case.messages is None:
            raise Unsupported("the turn builder needs a message list")
        self._template_for(case)

    def observe_text(self, case: Case) -> ObservedText:
        clip = models.text_encoder(self.comfy, self.context)
        with recording_tokenizer(clip.tokenizer) as handed, contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            conditioning = workflow.run(self.nodes, clip, case, self._template_for(case))
        text, ids = handed[-1]
        cond, extra = conditioning[0]
        return ObservedText(Template(text), Tokens(ids, self._mask(clip, ids)), conditioning_rows(cond, extra))

    def noise(self, case: Case) -> torch.Tensor:
        latent = self.nodes.helpers.ZImageEmptyLatent().generate(case.width, case.height, 1)[0]
        return self.comfy.sample.prepare_noise(latent["samples"], case.seed).float()
