"""A run's results: each (case, adapter, stage) verdict, the N-way view's cells, and the run around them.

What the judging loop (`parity.run.judge`) produces and everything after it reads: the results file
(`parity.run.results_file`), the report, the merge of a run's parts (dtype groups, `-j` workers, shards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from parity.compare.records import Record
from parity.core.status import FAILING
from parity.golden.store import FixtureStore
from parity.stages import stage as stage_named


@dataclass
class StageResult:
    case: str
    adapter: str
    stage: str
    status: str
    summary: str
    reason: str = ""
    # The stage's typed detail; None when nothing was compared (written as {}).
    detail: Record | None = None
    # What the verdict stands on that no run here has shown (`Adapter.caveats`); "" when nothing.
    caveat: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case, "adapter": self.adapter, "stage": self.stage, "status": self.status,
            "summary": self.summary, "reason": self.reason, "detail": self.detail.to_json() if self.detail else {},
            "caveat": self.caveat,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageResult:
        detail = stage_named(data["stage"]).detail.from_json(data["detail"], "detail") if data["detail"] else None
        return cls(
            data["case"], data["adapter"], data["stage"], data["status"], data["summary"], data["reason"], detail,
            data.get("caveat", ""),
        )


@dataclass
class CrossCheck:
    """One cell of the N-way view: an adapter's (or a stored reference's) stage against one reference."""

    case: str
    stage: str
    adapter: str
    reference: str
    passed: bool
    summary: str


@dataclass
class RunResult:
    mode: str
    references: dict[str, str]
    adapters: list[str]
    stages: list[str]
    results: list[StageResult]
    environment: dict[str, Any]
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    cross: list[CrossCheck] = field(default_factory=list)
    # The manifest entry (files, case hash, provenance) of each golden fixture compared against.
    fixtures: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[StageResult]:
        return [r for r in self.results if r.status in FAILING]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "references": self.references,
            "adapters": self.adapters,
            "stages": self.stages,
            "seconds": round(self.seconds, 3),
            "environment": self.environment,
            "warnings": self.warnings,
            "cross": [asdict(c) for c in self.cross],
            "fixtures": self.fixtures,
            "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """A result read back from `to_json` (a shard's results file, say): read it through
        `results_file.check_results` first, which refuses anything else with one line."""
        return cls(
            mode=data["mode"],
            references=data["references"],
            adapters=data["adapters"],
            stages=data["stages"],
            results=[StageResult.from_json(r) for r in data["results"]],
            environment=data["environment"],
            seconds=data["seconds"],
            warnings=data["warnings"],
            cross=[CrossCheck(**c) for c in data["cross"]],
            fixtures=data["fixtures"],
        )


def merge(runs: list[RunResult], order: Sequence[str]) -> RunResult:
    """One result from the parts of one run: its dtype groups, its parallel workers' cases, its shards.

    Each case's entries come from one part; `order` (every case id, as an unsharded run reports
    them) puts them back in that place. A part's environment names its dtype, or once merged a
    list of them, so merged results merge again. Seconds add up: the time spent, not the wall time.
    """
    place = {case: k for k, case in enumerate(order)}
    references = {case: name for r in runs for case, name in r.references.items()}
    cases = sorted(references, key=place.__getitem__)
    case_of_fixture = {FixtureStore.key(case, name): case for case, name in references.items()}
    fixtures = [item for r in runs for item in r.fixtures.items()]
    first = runs[0]
    return RunResult(
        mode=first.mode,
        references={case: references[case] for case in cases},
        adapters=list(dict.fromkeys(a for r in runs for a in r.adapters)),
        stages=first.stages,
        results=sorted((x for r in runs for x in r.results), key=lambda x: place[x.case]),
        environment=first.environment | {"dtype": sorted({d for r in runs for d in _dtypes(r.environment)})},
        seconds=sum(r.seconds for r in runs),
        warnings=sorted({w for r in runs for w in r.warnings}),
        cross=sorted((c for r in runs for c in r.cross), key=lambda c: place[c.case]),
        fixtures=dict(sorted(fixtures, key=lambda item: place[case_of_fixture[item[0]]])),
    )


def _dtypes(environment: dict[str, Any]) -> set[str]:
    dtype = environment["dtype"]
    return {dtype} if isinstance(dtype, str) else set(dtype)
