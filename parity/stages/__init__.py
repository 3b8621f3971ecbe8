"""The stage registry: every stage of the pipeline, in pipeline order, each one module of this package.

A stage's module declares everything about it (parity/stages/base.py says what); the rest of the
harness iterates `STAGES`, looks a name up with `stage`, and never names a stage itself.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from parity.core.errors import InputError
from parity.models.context import Context
from parity.stages.base import Records, Stage, StageCheck
from parity.stages.decode import DECODE
from parity.stages.denoise import DENOISE
from parity.stages.embeddings import EMBEDDINGS
from parity.stages.schedule import SCHEDULE
from parity.stages.template import TEMPLATE
from parity.stages.tokens import TOKENS

REGISTRY: tuple[Stage, ...] = (TEMPLATE, TOKENS, EMBEDDINGS, SCHEDULE, DENOISE, DECODE)
STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY)
# What a text-only case exercises.
TEXT_STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.path == "text")


def _phases() -> tuple[tuple[str, ...], ...]:
    """The registry cut into runs of consecutive stages that need at most one model between them."""
    phases: list[tuple[str | None, list[str]]] = []
    for s in REGISTRY:
        if phases and s.model in (None, phases[-1][0]):
            phases[-1][1].append(s.name)
        elif phases and phases[-1][0] is None:
            phases[-1] = (s.model, [*phases[-1][1], s.name])
        else:
            phases.append((s.model, [s.name]))
    return tuple(tuple(names) for _, names in phases)


# The stages in pipeline order, cut where the next model is needed: the runner runs each phase for
# every case before the next, so a model is needed only during its own phase (the text stages,
# then the DiT's, then the VAE's).
PHASES = _phases()


def stage(name: str) -> Stage:
    """The stage called `name`; InputError naming it when the registry has none."""
    for s in REGISTRY:
        if s.name == name:
            return s
    raise InputError(f"unknown stage {name!r} (known: {', '.join(STAGES)})")


def upstream(name: str) -> tuple[str, ...]:
    """Every stage `name` consumes, directly or through another, in pipeline order: a divergence in
    one of them flows into it."""
    found: set[str] = set()
    todo = list(stage(name).inputs)
    while todo:
        s = todo.pop()
        if s not in found:
            found.add(s)
            todo.extend(stage(s).inputs)
    return tuple(s for s in STAGES if s in found)


def notices(
    tokenizer: PreTrainedTokenizerBase, case: str, adapter: str, records: Records, stages: tuple[str, ...] = STAGES
) -> list[str]:
    """The notices of `stages` (default: every stage) about `adapter`'s records for `case`, as warning lines."""
    found = (s.notice(tokenizer, records) for s in REGISTRY if s.name in stages)
    return [f"case {case!r}: {adapter} {line}" for line in found if line is not None]


def check(name: str, obtained: object, expected: object, context: Context, dtype: str) -> StageCheck:
    """Stage `name`'s comparison of two outputs, or a failed check saying which side has none."""
    if expected is None:
        return StageCheck(False, f"the golden fixture has no {name} output", None)
    if obtained is None:
        return StageCheck(False, f"no {name} output to compare with the fixture's", None)
    return stage(name).check(obtained, expected, context, dtype)
