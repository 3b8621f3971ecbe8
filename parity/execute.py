"""Running one adapter through the stages, in pipeline order, on its own or the reference's inputs.

The runner (comparing) and the fixture regen (recording a reference) both go through here, so a
fixture is made by exactly the calls a comparison makes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from parity.adapter import Adapter, Unsupported
from parity.cases import Case
from parity.noise import shared_noise
from parity.outputs import StageOutputs
from parity.stages import STAGES, DenoiseInputs

# What each stage consumes, transitively: a divergence there flows into it.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "template": (),
    "tokens": ("template",),
    "embeddings": ("template", "tokens"),
    "schedule": (),
    "denoise": ("template", "tokens", "embeddings", "schedule"),
}
_DIRECT = {"tokens": "template", "embeddings": "tokens"}


def _encode(adapter: Adapter, case: Case):
    template = adapter.template(case)
    return adapter.embeddings(case, adapter.tokens(case, template))


Executed = tuple[StageOutputs, dict[str, str]]


# Nothing here is ever differentiated; with autograd on, a forward keeps what a backward would
# need, such as each layer's fused qkv weight: a second copy of the attention weights per adapter.
@torch.no_grad()
def execute(
    adapter: Adapter,
    case: Case,
    upto: str,
    feed: StageOutputs | None = None,
    capture_blocks: tuple[int, ...] = (),
    resume: Executed | None = None,
) -> Executed:
    """Run every stage up to `upto`; return the outputs and, per stage it could not run, why.

    With `feed` (teacher forcing), each stage consumes `feed`'s upstream outputs, and the denoise
    stage starts every step from `feed`'s latent for that step. With `resume` (what an earlier call
    returned, say for the text stages), the stages it produced or skipped are not run again.
    """
    if resume is None:
        out = StageOutputs(meta={"adapter": adapter.name, "versions": adapter.versions(), "case": case.id})
        skipped: dict[str, str] = {}
    else:
        out, skipped = replace(resume[0], meta=dict(resume[0].meta)), dict(resume[1])
    source = feed or out
    for stage in STAGES[: STAGES.index(upto) + 1]:
        if stage not in case.stages and not any(stage in UPSTREAM[s] for s in case.stages):
            continue
        if out.get(stage) is not None or stage in skipped:
            continue
        missing = [s for s in UPSTREAM[stage] if source.get(s) is None and (feed is not None or s in skipped)]
        if missing:
            who = "the reference" if feed is not None else adapter.name
            skipped[stage] = f"needs the {missing[0]} stage, which {who} could not produce"
            continue
        try:
            if stage == "template":
                out.template = adapter.template(case)
            elif stage in _DIRECT:
                upstream = source.get(_DIRECT[stage])
                if stage == "tokens":
                    out.tokens = adapter.tokens(case, upstream)
                else:
                    out.embeddings = adapter.embeddings(case, upstream)
                    if case.cfg > 1 and feed is None:
                        out.negative = _encode(adapter, case.negative())
            elif stage == "schedule":
                out.schedule = adapter.schedule(case)
            else:
                noise = (
                    shared_noise(case.seed, case.height, case.width) if case.noise == "shared" else adapter.noise(case)
                )
                forced = feed.denoise.latents if feed is not None and feed.denoise is not None else None
                inputs = DenoiseInputs(
                    source.embeddings, source.negative, source.schedule, noise, forced, capture_blocks
                )
                out.denoise = adapter.denoise(case, inputs)
        except Unsupported as e:
            skipped[stage] = str(e)
    return out, skipped


def before_denoise(executed: Executed) -> Executed:
    """An execution's outputs and skips with the denoise stage taken out, to resume into it again."""
    outputs, skipped = executed
    return replace(outputs, denoise=None), {s: why for s, why in skipped.items() if s != "denoise"}
