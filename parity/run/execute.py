"""Running one adapter through the stages, in pipeline order, on its own or the reference's inputs.

The runner (comparing) and the fixture regen (recording a reference) both go through here, so a
fixture is made by exactly the calls a comparison makes.
"""

from __future__ import annotations

import torch

from parity.stages import REGISTRY, STAGES, upstream
from parity.stages.outputs import StageOutputs
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case

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
        out, skipped = resume[0].copy(), dict(resume[1])
    source = feed or out
    forced = feed.records if feed is not None else None
    for stage in REGISTRY[: STAGES.index(upto) + 1]:
        if stage.name not in case.stages and not any(stage.name in upstream(s) for s in case.stages):
            continue
        if out.get(stage.name) is not None or stage.name in skipped:
            continue
        missing = [s for s in upstream(stage.name) if source.get(s) is None and (feed is not None or s in skipped)]
        if missing:
            who = "the reference" if feed is not None else adapter.name
            skipped[stage.name] = f"needs the {missing[0]} stage, which {who} could not produce"
            continue
        try:
            out.put(stage.run(adapter, case, source.records, forced, capture_blocks))
        except Unsupported as e:
            skipped[stage.name] = str(e)
    return out, skipped


def without(executed: Executed, stage: str) -> Executed:
    """An execution's outputs and skips with `stage` taken out, to resume into it again."""
    outputs, skipped = executed
    return outputs.without(stage), {s: why for s, why in skipped.items() if s != stage}
