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
from typing import Any

from parity.core.errors import InputError
from parity.core.files import read_toml
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
    unknown = sorted(set(data) - {"divergence"})
    if unknown:
        raise InputError(
            f"{path.name}: unknown top-level key {unknown[0]!r} (divergences go in [[divergence]] tables)"
        )
    tables = data.get("divergence", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{path.name}: 'divergence' must be an array of tables, each one written [[divergence]]")
    return Expectations(tuple(_divergence(raw, f"{path.name}: divergence #{i + 1}") for i, raw in enumerate(tables)))


def _divergence(raw: dict[str, Any], where: str) -> Divergence:
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    missing = sorted({"adapter", "cases", "stages", "reason"} - set(raw))
    if missing:
        raise InputError(f"{where}: missing key {missing[0]!r}")
    adapters = (
        (raw["adapter"],) if isinstance(raw["adapter"], str)
        else _strings(raw, "adapter", where, "a string or a list of strings")
    )
    cases = _strings(raw, "cases", where, "a list of strings (globs over case ids)")
    stages = _strings(raw, "stages", where, "a list of strings")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise InputError(f"{where}: unknown stage {bad[0]!r}")
    mode = raw.get("mode")
    if mode not in (None, "free", "forced"):
        raise InputError(f"{where}: mode must be 'free' or 'forced', not {mode!r}")
    reason = raw["reason"]
    if not isinstance(reason, str):
        raise InputError(f"{where}: 'reason' must be a string, got {_kind(reason)}")
    if not reason.strip():
        raise InputError(f"{where}: a declared divergence needs a reason")
    return Divergence(adapters, cases, stages, reason, mode)


def _strings(raw: dict[str, Any], key: str, where: str, what: str) -> tuple[str, ...]:
    """`raw[key]` as a tuple of strings. A string where a list belongs is refused, not iterated: `cases =
    "short"` would be the globs s, h, o, r, t, a declaration that covers nothing."""
    value = raw[key]
    if not isinstance(value, list):
        raise InputError(f"{where}: {key!r} must be {what}, got {_kind(value)}")
    odd = next((v for v in value if not isinstance(v, str)), None)
    if odd is not None:
        raise InputError(f"{where}: {key!r} must be {what}, but it holds {_kind(odd)}")
    if not value:
        raise InputError(f"{where}: {key!r} is empty: the declaration would cover nothing")
    return tuple(value)


def _kind(value: object) -> str:
    """A TOML value's type, in words."""
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "a list", dict: "a table"}
    return kinds.get(type(value), f"a {type(value).__name__}")
