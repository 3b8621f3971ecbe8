"""What every stage declares: the contract between one stage module and the harness around it.

A stage module (template.py, tokens.py, ...) holds everything about its stage: the record an
adapter returns, how the adapter is called, the tensors and strings it is stored as (dumps and
fixtures alike), its check with a typed detail record, its tolerance and its report view. The
runner, the fixture store, the regen, the results file and the report iterate the registry
(parity/stages/__init__.py) and call these methods; none of them names a stage. (The analysis
probes do: each observes one stage on purpose.)

A stage is called with an adapter (`parity.suite.adapter.Adapter`) and a case (`parity.suite.cases.Case`),
typed `Any` here: both are built on this package (the adapter interface returns the stages' records,
a case names its stages), so naming them would make the imports run in a circle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from transformers import PreTrainedTokenizerBase

from parity.compare.metrics import MetricRow
from parity.compare.records import Record
from parity.compare.tolerances import StageTolerance
from parity.models.context import Context

D = TypeVar("D", bound=Record)
# An execution's records by name (`StageOutputs.records`): what a stage reads of its upstream and stores.
Records = Mapping[str, Any]


@dataclass(frozen=True)
class StageCheck(Generic[D]):
    """One comparison's verdict: passed, a one-line summary, and the typed detail the report draws
    (None when there was nothing to compare)."""

    passed: bool
    summary: str
    detail: D | None


@dataclass(frozen=True)
class TensorRule:
    """One stored tensor: its dtype (None: any floating dtype, as the implementation computed it), its
    number of dimensions (None: any), and the tensor it is always stored with."""

    dtype: torch.dtype | None
    dims: int | None
    partner: str


class Tracer(Protocol):
    """Reruns the judge offers a stage's `trace` hook: the adapter's run as it went, or the adapter and
    the reference both teacher-forced, each capturing per-block outputs at `steps`."""

    def own(self, steps: tuple[int, ...]) -> Any: ...

    def pair(self, steps: tuple[int, ...]) -> tuple[Any, Any] | None: ...


@dataclass(frozen=True)
class Page:
    """What a stage's report view knows of the case around it."""

    adapters: list[str]
    mode: str
    # (adapter) -> this stage's detail from a run in the other mode, where the results hold one.
    companion: Mapping[str, Record]
    # The reference whose golden fixture the case was compared with.
    reference: str


class Stage(ABC):
    name: ClassVar[str]
    # "text" (prompt to embeddings) or "sampling" (schedule onwards): text-only cases and probes run
    # the text path alone.
    path: ClassVar[str]
    # The stages whose outputs this one consumes directly.
    inputs: ClassVar[tuple[str, ...]] = ()
    # The records an adapter's run of this stage leaves in StageOutputs: its own, and any it brings
    # along (the embeddings stage's negative prompt).
    records: ClassVar[tuple[str, ...]]
    detail: ClassVar[type[Record]]
    # Stored tensors by key, and key prefixes of tensor families (per-block captures).
    tensors: ClassVar[Mapping[str, TensorRule]] = {}
    tensor_families: ClassVar[Mapping[str, TensorRule]] = {}
    # Stored strings (in the JSON beside the tensors), each checked to be one.
    strings: ClassVar[tuple[str, ...]] = ()
    # The report partial under parity/report/templates/, and the detail fields it draws (the raw
    # view leaves them out).
    partial: ClassVar[str | None] = None
    drawn: ClassVar[frozenset[str]] = frozenset()
    # The model this stage runs ("text_encoder", "dit", "vae"; None: none). The runner runs every
    # case's stages of one model before the next model's (`parity.stages.PHASES`), so that each
    # model can make way for the next when memory is short.
    model: ClassVar[str | None] = None
    # Whether `parity run --blocks` adds anything to this stage's reproduce command.
    traces_blocks: ClassVar[bool] = False

    # The numeric tolerance per dtype, each with its evidence; none for an exact stage.
    tolerances: ClassVar[Mapping[str, StageTolerance]] = {}

    def tolerance(self, dtype: str) -> StageTolerance | None:
        return self.tolerances[dtype] if self.tolerances else None

    @abstractmethod
    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        """The adapter's output records for this stage, by record name, from `given`'s upstream
        outputs (`feed`, teacher-forced, is the reference's outputs: the denoise stage reads its
        latents)."""

    @abstractmethod
    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """This stage's tensors and strings in `outputs`, under its storage keys (none when absent)."""

    @abstractmethod
    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        """The records `store` wrote, back (already checked against `tensors` and `check_stored`)."""

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        """What is inconsistent between this stage's stored tensors, in words, or None."""
        return None

    @abstractmethod
    def check(self, obtained: Any, expected: Any, context: Context, dtype: str) -> StageCheck:
        """`obtained` against `expected` (both this stage's records)."""

    def trace(self, check: StageCheck, tracer: Tracer) -> StageCheck:
        """A check refined by reruns (the denoise stage names the block a divergence starts in)."""
        return check

    def notice(self, tokenizer: PreTrainedTokenizerBase, outputs: Records) -> str | None:
        """What a comparison cannot show about this stage's outputs (a prompt cut short, the same way by
        every implementation), in a few words; None when there is nothing to say."""
        return None

    def describe(self, record: Any) -> str:
        """An output nobody can compare, in a few words."""
        return "nothing to compare with"

    def files(self, outputs: Records) -> dict[str, bytes]:
        """Files of `outputs` a user opens in another program (`parity run --save-images`), by extension."""
        return {}

    def evidence(self, detail: Record) -> StageTolerance | None:
        """The tolerance a detail was judged under, for the report's provenance table."""
        return None

    def metric_rows(self, detail: Record) -> list[MetricRow]:
        """The detail's numeric comparisons, as rows of the report's metric table."""
        return []

    def view(self, rows: list[tuple[str, str, Record]], page: Page) -> dict[str, Any] | None:
        """What this stage's report partial draws for one case, from (adapter, status, detail) of every
        adapter that ran it; None when there is nothing to draw."""
        return None
