"""Turning command-line choices into runnable pieces: contexts, adapters, references, runs.

Cases may ask for different dtypes; each dtype gets its own context (and so its own text
encoder), and every adapter in that group shares it. A run reports its cases group by group, in
the order the dtypes first appear, each group in case-file order: `run_order`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from parity.golden.expectations import load_expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.judge import Runner, to_stderr
from parity.run.results import RunResult, merge
from parity.suite.adapter import Adapter, registered_adapters, select_adapters
from parity.suite.cases import Case


@dataclass(frozen=True)
class Options:
    checkpoint: Path | None = None
    device: str = "cpu"
    dtype: str | None = None
    # (name, path) of each checkout given, already checked (`parity.suite.checkouts.resolve`).
    checkouts: tuple[tuple[str, Path], ...] = ()


@dataclass
class Group:
    context: Context
    cases: list[Case]
    adapters: dict[str, Adapter]
    references: dict[str, Adapter]


def by_dtype(cases: list[Case], options: Options) -> dict[str, list[Case]]:
    """Cases keyed by the dtype they run in, dtypes in order of first appearance."""
    out: dict[str, list[Case]] = {}
    for case in cases:
        out.setdefault(options.dtype or case.dtype, []).append(case)
    return out


def run_order(cases: list[Case], options: Options) -> list[str]:
    """The case ids in the order a run over `cases` reports them."""
    return [case.id for members in by_dtype(cases, options).values() for case in members]


def _group(
    dtype: str, cases: list[Case], adapter_names: list[str] | None, options: Options,
    say: Callable[[str], None] = to_stderr,
) -> Group:
    checkouts = dict(options.checkouts)
    chosen = select_adapters(adapter_names, checkouts)
    reference_classes = {n: c for n, c in registered_adapters(checkouts).items() if c.is_reference()}
    context = Context(
        checkpoint=options.checkpoint, device=options.device, dtype=dtype, say=say, checkouts=checkouts
    )
    adapters = {n: c(context) for n, c in chosen.items()}
    references = {n: adapters.get(n) or c(context) for n, c in reference_classes.items()}
    return Group(context, cases, adapters, references)


def groups(cases: list[Case], adapter_names: list[str] | None, options: Options) -> list[Group]:
    """Cases grouped by effective dtype, each group with its own context and adapter instances."""
    return [_group(dtype, members, adapter_names, options) for dtype, members in by_dtype(cases, options).items()]


@dataclass(frozen=True)
class RunPlan:
    """What `parity run` was asked to do, minus the cases; plain data, so worker processes get a copy."""

    fixtures: Path
    adapters: list[str] | None
    stages: tuple[str, ...]
    mode: str
    with_forced: bool
    reference: str | None
    dump: Path | None
    blocks: bool
    options: Options
    images: Path | None = None

    @property
    def modes(self) -> list[str]:
        """The modes to run, the asked-for one first (its result is the run's; the other rides along)."""
        return [self.mode] + (["forced"] if self.with_forced and self.mode == "free" else [])


class Suite:
    """A plan's contexts and adapters, built once per dtype and shared by every batch of cases and
    both modes, so running cases one at a time (a parallel worker) costs no more than all at once."""

    def __init__(self, plan: RunPlan, progress: Callable[[str], None] = to_stderr) -> None:
        self.plan, self.progress = plan, progress
        self.store = FixtureStore(plan.fixtures)
        self.expectations = load_expectations(plan.fixtures / "expectations.toml")
        self._groups: dict[str, Group] = {}

    def _runner(self, dtype: str, mode: str) -> Runner:
        group = self._groups.get(dtype)
        # A context whose text encoder made way for the DiT would load it again beside the DiT for
        # this batch's text stages; a fresh group (the old one's models go with it) holds one at a time.
        if group is None or group.context.released:
            group = self._groups[dtype] = _group(dtype, [], self.plan.adapters, self.plan.options, self.progress)
        return Runner(
            group.context, group.adapters, group.references, self.store, self.expectations,
            stages=self.plan.stages, mode=mode, reference=self.plan.reference,
            dump=self.plan.dump if mode == self.plan.mode else None, blocks=self.plan.blocks,
            images=self.plan.images if mode == self.plan.mode else None,
            progress=self.progress,
        )

    def run(self, cases: list[Case], mode: str) -> RunResult:
        groups_of_cases = by_dtype(cases, self.plan.options)
        if not groups_of_cases:
            # A shard may be dealt no case; its result still says what was asked (adapters, stages,
            # environment), so it merges with the others, and it names no dtype.
            empty = self._runner(self.plan.options.dtype or "fp32", mode).run([])
            empty.environment["dtype"] = []
            return empty
        runs = [self._runner(dtype, mode).run(members) for dtype, members in groups_of_cases.items()]
        return merge(runs, run_order(cases, self.plan.options))
