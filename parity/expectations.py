"""Known, explained divergences (`fixtures/expectations.toml`).

A divergence declared here is reported but does not fail the run; one that is declared and no
longer happens does fail, so the file cannot silently outlive the behaviour it explains. Declare
the stage where a divergence starts: free-running, the stages it flows into inherit it.

    [[divergence]]
    adapter = "inhouse"                  # or a list of adapters
    cases = ["think-*", "short"]        # globs over case ids
    stages = ["template"]
    mode = "free"                        # optional: "free" or "forced"; both when absent
    reason = "the pack's shipped default adds an empty think block"
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from parity.errors import InputError
from parity.files import read_toml
from parity.stages import STAGES

_KEYS = {"adapter", "cases", "stages", "mode", "reason"}


@dataclass(frozen=True)
class Divergence:
    adapters: tuple[str, ...]
    cases: tuple[str, ...]
    stages: tuple[str, ...]
    reason: str
    mode: str | None = None

    def covers(self, case_id: str, adapter: str, stage: str, mode: str) -> bool:
        return (
            adapter in self.adapters
            and stage in self.stages
            and (self.mode is None or self.mode == mode)
            and any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.cases)
        )


@dataclass(frozen=True)
class Expectations:
    divergences: tuple[Divergence, ...] = ()

    def declared(self, case_id: str, adapter: str, stage: str, mode: str) -> Divergence | None:
        return next((d for d in self.divergences if d.covers(case_id, adapter, stage, mode)), None)


def load_expectations(path: Path) -> Expectations:
    if not path.is_file():
        return Expectations()
    data = read_toml(path, "expectations file")
    divergences = []
    for i, raw in enumerate(data.get("divergence", [])):
        where = f"{path.name}: divergence #{i + 1}"
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r}")
        missing = sorted({"adapter", "cases", "stages", "reason"} - set(raw))
        if missing:
            raise InputError(f"{where}: missing key {missing[0]!r}")
        bad = [s for s in raw["stages"] if s not in STAGES]
        if bad:
            raise InputError(f"{where}: unknown stage {bad[0]!r}")
        if raw.get("mode") not in (None, "free", "forced"):
            raise InputError(f"{where}: mode must be 'free' or 'forced'")
        if not raw["reason"].strip():
            raise InputError(f"{where}: a declared divergence needs a reason")
        adapters = (raw["adapter"],) if isinstance(raw["adapter"], str) else tuple(raw["adapter"])
        divergence = Divergence(adapters, tuple(raw["cases"]), tuple(raw["stages"]), raw["reason"], raw.get("mode"))
        divergences.append(divergence)
    return Expectations(tuple(divergences))
