"""Where probes run: every adapter, one instance per dtype, and a memo of everything observed.

One `Context` per dtype (fp32, bf16), as a run has; every adapter of that dtype shares it, so the
text encoder and DiT weights are built once per dtype and the tokenizer once in all. A probe is
run through `parity.run.execute.execute` (the calls a comparison makes) after `check_supported`; what
an adapter cannot express comes back as `Unsupported`, with its own reason. Results, and
`Unsupported` alike, are memoised for the life of the lab, so a table cell and a claim that need
the same observation run it once.

Adapters cache by case id (the live diffusers adapter does), so a probe id must name one case: the
lab refuses a second, different case under an id it has seen.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TypeVar

import torch

from parity.analysis.dit_watch import DiTLog, watch_dit
from parity.core.errors import InputError
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.execute import execute
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.outputs import StageOutputs
from parity.suite.adapter import Adapter, Unsupported, registered_adapters, unavailable_adapters
from parity.suite.cases import Case, load_cases

T = TypeVar("T")
# Put in front of the tokenizer's chat template in the "marked" context: an adapter whose template
# carries it rendered the tokenizer's template; one whose template does not wrote its own.
TEMPLATE_MARKER = "[tokenizer chat template]"


class ProbeRunner:
    def __init__(
        self, checkpoint: Path | None = None, device: str = "cpu", fixtures: Path | None = None,
        checkouts: Mapping[str, Path] | None = None,
    ) -> None:
        self.checkpoint, self.device, self.fixtures = checkpoint, device, fixtures
        self.checkouts = dict(checkouts or {})
        self._classes = registered_adapters(self.checkouts)
        self._missing = unavailable_adapters(self.checkouts)
        self._contexts: dict[tuple[str, bool], Context] = {}
        self._adapters: dict[tuple[str, str, bool], Adapter] = {}
        self._memo: dict[Hashable, tuple[object, Unsupported | None]] = {}
        self._case_ids: dict[str, Case] = {}

    # Adapters

    def names(self) -> list[str]:
        """Every registered adapter, importable here or not."""
        return sorted({*self._classes, *self._missing})

    def default_names(self) -> list[str]:
        return sorted(n for n, c in self._classes.items() if c.in_default_run)

    def check_names(self, names: list[str]) -> None:
        for name in names:
            if name not in self._classes and name not in self._missing:
                raise InputError(f"unknown adapter {name!r} (known: {', '.join(self.names())})")

    def summary(self, name: str) -> str:
        if name in self._missing:
            return f"not available here: {self._missing[name]}"
        return self._classes[name].summary

    def reference_names(self) -> list[str]:
        """Available references, highest priority (lowest number) first."""
        refs = [(c.reference_priority, n) for n, c in self._classes.items() if c.is_reference()]
        return [n for _, n in sorted(refs)]

    def context(self, dtype: str = "fp32", marked_template: bool = False) -> Context:
        key = (dtype, marked_template)
        if key not in self._contexts:
            context = Context(checkpoint=self.checkpoint, device=self.device, dtype=dtype, checkouts=self.checkouts)
            if key != ("fp32", False):
                base = self.context("fp32")
                context.tokenizer = base.tokenizer
                if marked_template:
                    context.tokenizer = _marked(base.tokenizer)
                    context.text_encoder = self.context(dtype).text_encoder
            self._contexts[key] = context
        return self._contexts[key]

    @property
    def tokenizer(self):
        return self.context("fp32").tokenizer

    def adapter(self, name: str, dtype: str = "fp32", marked_template: bool = False) -> Adapter:
        """The adapter instance for `dtype`; Unsupported when it is not available here."""
        self.check_names([name])
        if name in self._missing:
            raise Unsupported(f"{name} is not available here: {self._missing[name]}")
        key = (name, dtype, marked_template)
        if key not in self._adapters:
            self._adapters[key] = self._classes[name](self.context(dtype, marked_template))
        return self._adapters[key]

    def caveat(self, name: str, case: Case, stage: str) -> str:
        """What adapter `name`'s `stage` of `case` stands on that no run here shows (`Adapter.caveats`),
        as a cell's closing words: "" when nothing."""
        said = self.adapter(name, case.dtype).caveats(case).get(stage)
        return f" ({said})" if said else ""

    # Memo and runs

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()` once per key (no autograd); an Unsupported it raises is remembered and raised again."""
        if key not in self._memo:
            try:
                with torch.no_grad():
                    self._memo[key] = (compute(), None)
            except Unsupported as e:
                self._memo[key] = (None, e)
        value, unsupported = self._memo[key]
        if unsupported is not None:
            raise Unsupported(str(unsupported))
        return value  # type: ignore[return-value]

    def _register(self, case: Case) -> None:
        seen = self._case_ids.setdefault(case.id, case)
        if seen != case:
            raise RuntimeError(f"probe id {case.id!r} names two different cases")

    def real_outputs(self, name: str, case_id: str) -> tuple[str, StageOutputs] | None:
        """(the live adapter, its stored outputs for the suite case `case_id`) when adapter `name`
        re-implements code whose stored outputs exist: what a claim about that code is decided by.
        None without a fixture, or on a checkpoint (the fixtures are of the tiny model)."""
        cls = self._classes.get(name)
        real = cls.modelled_on if cls is not None else None
        if real is None or self.fixtures is None or self.checkpoint is not None:
            return None
        store = FixtureStore(self.fixtures)
        if store.entry(case_id, real) is None:
            return None
        case = next(c for c in load_cases(self.fixtures / "cases") if c.id == case_id)
        return real, self.memo(("stored", real, case_id), lambda: store.load(case, real))

    def run(self, name: str, case: Case, upto: str, marked_template: bool = False) -> StageOutputs:
        """Every stage of `case` up to `upto`, free-running, in the case's dtype; Unsupported if not."""
        self._register(case)

        def compute() -> StageOutputs:
            adapter = self.adapter(name, case.dtype, marked_template)
            adapter.check_supported(case)
            outputs, skipped = execute(adapter, case, upto)
            if skipped:
                stage, reason = next(iter(skipped.items()))
                raise Unsupported(reason if stage == upto else f"{stage}: {reason}")
            return outputs

        return self.memo(("run", name, case, upto, marked_template), compute)

    def watched_run(self, name: str, case: Case) -> tuple[StageOutputs, DiTLog]:
        """A free-running run of `case` through denoise, with the DiT watched from outside."""
        self._register(case)

        def compute() -> tuple[StageOutputs, DiTLog]:
            adapter = self.adapter(name, case.dtype)
            adapter.check_supported(case)
            with watch_dit() as log:
                outputs, skipped = execute(adapter, case, "denoise")
            if skipped:
                stage, reason = next(iter(skipped.items()))
                raise Unsupported(reason if stage == "denoise" else f"{stage}: {reason}")
            return outputs, log

        return self.memo(("watched", name, case), compute)

    def watched_denoise(
        self, name: str, case: Case, label: str, inputs: Callable[[], DenoiseInputs]
    ) -> tuple[Denoise, DiTLog]:
        """`adapter.denoise(case, inputs())` with the DiT watched; `label` names the inputs in the memo."""
        self._register(case)

        def compute() -> tuple[Denoise, DiTLog]:
            adapter = self.adapter(name, case.dtype)
            adapter.check_supported(case)
            given = inputs()
            with watch_dit() as log:
                result = adapter.denoise(case, given)
            return result, log

        return self.memo(("denoise", name, case, label), compute)

    def noise(self, name: str, case: Case) -> torch.Tensor:
        self._register(case)

        def compute() -> torch.Tensor:
            return self.adapter(name, case.dtype).noise(case).detach().cpu()

        return self.memo(("noise", name, case), compute)


def _marked(tokenizer):
    """A copy of `tokenizer` whose chat template writes TEMPLATE_MARKER before anything else."""
    marked = copy.deepcopy(tokenizer)
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise Unsupported("the tokenizer has no single chat template to mark")
    marked.chat_template = TEMPLATE_MARKER + template
    return marked
