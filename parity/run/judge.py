"""Cases x adapters x stages: run each adapter, compare each stage with the golden fixture.

Free-running: every adapter consumes its own upstream output, so errors accumulate as users see
them. Teacher-forced: every adapter consumes the reference's upstream output from the fixture,
so each stage shows only the error it adds itself. The first stage whose comparison fails is the
pair's first divergence.

Expectations declare where a divergence starts. Free-running, a stage that fails only because an
upstream stage diverged inherits that verdict (declared or not) and says so; teacher-forced,
every stage stands on its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from parity.core.errors import InputError
from parity.core.labels import fidelity_label
from parity.core.paths import inside
from parity.core.status import DECLARED, DIVERGENT, FAILING, MATCH, STALE, UNEXPECTED, UNSUPPORTED
from parity.golden.expectations import Expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.models.environment import environment
from parity.run.execute import Executed, execute, without
from parity.run.results import CrossCheck, RunResult, StageResult
from parity.stages import PHASES, REGISTRY, STAGES, check, notices, upstream
from parity.stages import stage as stage_named
from parity.stages.outputs import StageOutputs, save_files, write_outputs
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case

# What can move numbers between the machine that recorded a fixture and this one.
_COMPARED_ENVIRONMENT = ("torch", "machine", "device", "threads", "deterministic_algorithms")


def environment_differences(entry: dict[str, Any] | None, here: dict[str, Any]) -> list[str]:
    recorded = ((entry or {}).get("provenance") or {}).get("environment") or {}
    return [
        f"fixtures were recorded with {key}={recorded[key]!r}; this run has {key}={here.get(key)!r}"
        for key in _COMPARED_ENVIRONMENT
        if key in recorded and recorded[key] != here.get(key)
    ]


def to_stderr(line: str) -> None:
    """Where progress lines go unless a caller says otherwise."""
    print(line, file=sys.stderr)


def case_line(n: int, total: int, case: str, statuses: list[str], seconds: float) -> str:
    """The progress line a finished case prints."""
    return (
        f"[{n}/{total}] {case}: {statuses.count(MATCH)} match, {statuses.count(DECLARED)} declared, "
        f"{sum(s in FAILING for s in statuses)} unexpected ({seconds:.1f}s)"
    )


def pick_reference(case: Case, references: dict[str, Adapter], override: str | None) -> str:
    """The named reference, or the highest-priority reference that supports the case."""
    ranked = [override] if override else sorted(references, key=lambda n: type(references[n]).reference_priority)
    for name in ranked:
        try:
            references[name].check_supported(case)
        except Unsupported:
            continue
        return name
    raise InputError(f"case {case.id!r}: no reference implementation supports it ({', '.join(ranked)} tried)")


def produce(adapter: Adapter, case: Case) -> StageOutputs:
    """Every stage `adapter` can run on `case`, free-running: what a golden fixture stores."""
    outputs, skipped = execute(adapter, case, case.stages[-1])
    outputs.meta["skipped"] = skipped
    return outputs


class Runner:
    def __init__(
        self,
        context: Context,
        adapters: dict[str, Adapter],
        references: dict[str, Adapter],
        store: FixtureStore,
        expectations: Expectations,
        stages: tuple[str, ...] = STAGES,
        mode: str = "free",
        reference: str | None = None,
        dump: Path | None = None,
        blocks: bool = False,
        images: Path | None = None,
        progress: Callable[[str], None] = to_stderr,
    ) -> None:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise InputError(f"unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
        if mode not in ("free", "forced"):
            raise InputError(f"mode must be 'free' or 'forced', not {mode!r}")
        if reference is not None and reference not in references:
            raise InputError(f"unknown reference {reference!r} (references: {', '.join(sorted(references))})")
        self.context, self.adapters, self.references, self.store = context, adapters, references, store
        self.expectations, self.stages, self.mode = expectations, stages, mode
        self.reference, self.dump, self.progress = reference, dump, progress
        self.blocks, self.images = blocks, images

    def run(self, cases: list[Case]) -> RunResult:
        start = time.perf_counter()
        references = {c.id: pick_reference(c, self.references, self.reference) for c in cases}
        goldens = {c.id: self.store.load(c, references[c.id]) for c in cases}
        here = environment(self.context)
        warnings = sorted(
            {
                line
                for c in cases
                for line in environment_differences(self.store.entry(c.id, references[c.id]), here)
            }
        )
        for line in warnings:
            self.progress(f"warning: {line}")
        results: list[StageResult] = []
        cross: list[CrossCheck] = []
        unsupported = self._unsupported(cases)
        executed, truncated, spent = self._execute_phases(cases, goldens, unsupported)
        warnings = sorted({*warnings, *truncated})
        for n, case in enumerate(cases, 1):
            t = time.perf_counter()
            wanted = self._wanted(case)
            # The case's golden fixture is already read (and verified); the other references' are read here.
            stored = {
                r: goldens[case.id] if r == references[case.id] else self.store.load(case, r)
                for r in self.store.references_for(case.id)
            }
            cross.extend(self._fixtures_against_each_other(case, stored))
            if self.images is not None:
                golden = goldens[case.id].without(*(s for s in STAGES if s not in wanted))
                save_files(inside(self.images, case.id), f"{references[case.id]}.fixture", golden)
            for name, adapter in self.adapters.items():
                why = unsupported.get((case.id, name))
                if why is not None:
                    results.extend(StageResult(case.id, name, s, UNSUPPORTED, "not supported", why) for s in wanted)
                    continue
                # Taken out as each pair is judged, so the run lets go of what it no longer needs.
                done = executed.pop((case.id, name), None)
                if done is None:
                    continue
                results.extend(self._judge_pair(case, name, adapter, goldens[case.id], done))
                results.extend(self._judge_fidelity(case, name, adapter, references[case.id], stored, done))
                cross.extend(self._against_every_reference(case, name, done[0], stored))
            statuses = [r.status for r in results if r.case == case.id]
            seconds = spent.get(case.id, 0.0) + time.perf_counter() - t
            self.progress(case_line(n, len(cases), case.id, statuses, seconds))
        # Each re-implementation of live code has its column whatever the cases (a shard dealt none
        # lists the same columns as the others); a case without that code's fixture leaves it empty.
        modelled = [fidelity_label(n, type(a).modelled_on) for n, a in self.adapters.items() if type(a).modelled_on]
        return RunResult(
            mode=self.mode,
            references=references,
            adapters=[*self.adapters, *modelled],
            stages=list(self.stages),
            results=results,
            environment=here,
            seconds=time.perf_counter() - start,
            warnings=warnings,
            cross=cross,
            fixtures={
                self.store.key(c.id, references[c.id]): self.store.entry(c.id, references[c.id]) for c in cases
            },
        )

    def _wanted(self, case: Case) -> list[str]:
        return [s for s in self.stages if s in case.stages]

    def _unsupported(self, cases: list[Case]) -> dict[tuple[str, str], str]:
        """(case, adapter) -> why, for each pair the implementation has no way to run."""
        found = {}
        for case in cases:
            for name, adapter in self.adapters.items():
                try:
                    adapter.check_supported(case)
                except Unsupported as e:
                    found[(case.id, name)] = str(e)
        return found

    def _execute_phases(
        self, cases: list[Case], goldens: dict[str, StageOutputs], unsupported: dict[tuple[str, str], str]
    ) -> tuple[dict[tuple[str, str], Executed], list[str], dict[str, float]]:
        """Every wanted stage of every supported case and adapter, one phase (`PHASES`) at a time, so
        each model is needed only during its phase; the stages' notices (what a comparison cannot
        show: a prompt every implementation cuts alike compares equal), each printed as soon as the
        phase of its stage ends; and the seconds each case took."""
        executed: dict[tuple[str, str], Executed] = {}
        said: list[str] = []
        spent: dict[str, float] = {}
        last_wanted = {c.id: max(map(STAGES.index, self._wanted(c)), default=-1) for c in cases}
        # The files of every model a selected stage runs, checked before the first stage.
        running = REGISTRY[: max(last_wanted.values(), default=-1) + 1]
        self.context.check_files({s.model for s in running if s.model is not None})
        for names in PHASES:
            noticed: list[str] = []
            first, last = STAGES.index(names[0]), STAGES.index(names[-1])
            for case in (c for c in cases if last_wanted[c.id] >= first):
                t = time.perf_counter()
                upto = STAGES[min(last, last_wanted[case.id])]
                feed = goldens[case.id] if self.mode == "forced" else None
                for name, adapter in self.adapters.items():
                    if (case.id, name) not in unsupported:
                        key = (case.id, name)
                        executed[key] = execute(adapter, case, upto, feed, resume=executed.get(key))
                        noticed += notices(self.context.tokenizer, case.id, name, executed[key][0].records, names)
                spent[case.id] = spent.get(case.id, 0.0) + time.perf_counter() - t
                ran = [s for s in names[: STAGES.index(upto) - first + 1] if s in case.stages]
                self.progress(f"  {case.id}: {', '.join(ran)} ({time.perf_counter() - t:.1f}s)")
            for line in noticed:
                self.progress(f"warning: {line}")
            said += noticed
        return executed, said, spent

    def _cross(self, case: Case, name: str, outputs: StageOutputs, reference: str, stored: StageOutputs):
        for stage in self._wanted(case):
            if outputs.get(stage) is None or stored.get(stage) is None:
                continue
            found = check(stage, outputs.get(stage), stored.get(stage), self.context, case.dtype)
            yield CrossCheck(case.id, stage, name, reference, found.passed, found.summary)

    def _against_every_reference(
        self, case: Case, name: str, obtained: StageOutputs, stored: dict[str, StageOutputs]
    ) -> list[CrossCheck]:
        if self.mode == "forced":
            return []
        return [
            c for reference, fixture in stored.items() for c in self._cross(case, name, obtained, reference, fixture)
        ]

    def _fixtures_against_each_other(self, case: Case, stored: dict[str, StageOutputs]) -> list[CrossCheck]:
        """Stored references against each other, so a reference that drifts from the rest shows."""
        return [
            c
            for a, fixture in stored.items()
            for b, other in stored.items()
            if a != b
            for c in self._cross(case, f"{a} (fixture)", fixture, b, other)
        ]

    def _judge_fidelity(
        self, case: Case, name: str, adapter: Adapter, reference: str, stored: dict[str, StageOutputs],
        executed: Executed,
    ) -> list[StageResult]:
        """A re-implementation against the stored outputs of the real code it models, stage by stage,
        judged like any pair (declared under its `fidelity_label`), when that code's fixture exists.
        Free-running only: teacher-forced, it was fed the case reference's outputs, not that code's."""
        real = type(adapter).modelled_on
        if real is None or real == reference or real not in stored or self.mode == "forced":
            return []
        label = fidelity_label(name, real)
        return self._judge_pair(case, label, adapter, stored[real], executed, files=False)

    def _judge_pair(
        self, case: Case, name: str, adapter: Adapter, golden: StageOutputs, executed: Executed, files: bool = True
    ) -> list[StageResult]:
        wanted = self._wanted(case)
        last = max(wanted, key=STAGES.index)
        obtained, skipped = executed
        judged: dict[str, StageResult] = {}
        for current in REGISTRY[: STAGES.index(last) + 1]:
            stage = current.name
            if stage in skipped:
                judged[stage] = StageResult(case.id, name, stage, UNSUPPORTED, "not supported", skipped[stage])
                continue
            if golden.get(stage) is None:
                reference = golden.meta.get("adapter", "the reference")
                why = golden.meta.get("skipped", {}).get(stage, "no output recorded")
                mine = obtained.get(stage)
                shown = current.describe(mine) if mine is not None else "nothing to compare with"
                judged[stage] = StageResult(
                    case.id, name, stage, UNSUPPORTED, f"no reference: {shown}", f"{reference}: {why}",
                )
                continue
            diverged_upstream = None
            if self.mode == "free":
                diverged_upstream = next(
                    (judged[u] for u in upstream(stage) if u in judged and judged[u].status in DIVERGENT),
                    None,
                )
            tracer = _Tracer(self, case, adapter, golden, (obtained, skipped), stage)
            judged[stage] = self._judge(case, name, stage, obtained, golden, diverged_upstream, tracer)
        if self.dump is not None and files:
            write_outputs(inside(self.dump, case.id), name, obtained)
        if self.images is not None and files:
            save_files(inside(self.images, case.id), name, obtained)
        caveats = adapter.caveats(case)
        return [
            replace(judged[s], caveat=caveats[s]) if s in caveats and judged[s].status != UNSUPPORTED else judged[s]
            for s in STAGES
            if s in wanted
        ]

    def _judge(
        self, case: Case, name: str, stage: str, obtained: StageOutputs, golden: StageOutputs,
        diverged: StageResult | None, tracer: _Tracer,
    ) -> StageResult:
        found = check(stage, obtained.get(stage), golden.get(stage), self.context, case.dtype)
        found = stage_named(stage).trace(found, tracer)
        declared = self.expectations.declared(case.id, name, stage, self.mode)
        if not found.passed and declared is None and diverged is not None:
            reason = f"follows from the {diverged.stage} divergence"
            return StageResult(case.id, name, stage, diverged.status, found.summary, reason, found.detail)
        outcomes = {(True, False): MATCH, (True, True): STALE, (False, True): DECLARED, (False, False): UNEXPECTED}
        status = outcomes[(found.passed, declared is not None)]
        reason = declared.reason if declared else ""
        return StageResult(case.id, name, stage, status, found.summary, reason, found.detail)


class _Tracer:
    """The reruns a stage's `trace` hook may ask for, for one (case, adapter, stage): the stages before
    it are reused, not rerun.

    `own`: the adapter's run as it went (its own upstream, or the fixture's when forced). `pair`: the
    adapter and the live reference, both teacher-forced on the fixture (whose outputs stand in for
    the stages before), so the blocks compared saw identical inputs; None unless `--blocks` asked
    for it and the case's reference runs here and is not the adapter itself.
    """

    def __init__(
        self, runner: Runner, case: Case, adapter: Adapter, golden: StageOutputs, executed: Executed, stage: str
    ) -> None:
        self.runner, self.case, self.adapter, self.golden = runner, case, adapter, golden
        self.executed, self.stage = executed, stage

    def own(self, steps: tuple[int, ...]) -> Any:
        feed = self.golden if self.runner.mode == "forced" else None
        rerun, _ = execute(self.adapter, self.case, self.stage, feed, steps, without(self.executed, self.stage))
        return rerun.get(self.stage)

    def pair(self, steps: tuple[int, ...]) -> tuple[Any, Any] | None:
        reference = self.runner.references.get(str(self.golden.meta.get("adapter")))
        if not self.runner.blocks or reference is None or reference is self.adapter:
            return None
        start = without((self.golden, {}), self.stage)
        theirs, _ = execute(reference, self.case, self.stage, self.golden, steps, start)
        ours, _ = execute(self.adapter, self.case, self.stage, self.golden, steps, start)
        return ours.get(self.stage), theirs.get(self.stage)
