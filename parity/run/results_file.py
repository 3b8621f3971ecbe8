"""The results file `parity run --json` writes and `parity report` reads (plain or as shards to merge).

Format 1: the run's `RunResult.to_json()` in its mode with a "format" key first, then "companions"
(the other mode's run, or none) and, for a shard, "shard" (`Shard.to_json`). A file is validated
whole before the report or the merge reads any of it: every key they read, with its type, and that
each result belongs to a case of its run. A damaged, foreign or hand-edited file is then one message
naming the file and the JSON path of the bad value, never a crash half-way through a report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from parity.compare.records import Malformed, Positive, at, json_kind, read
from parity.core.errors import InputError, shown
from parity.core.files import atomic_write_bytes
from parity.core.paths import CASE_ID_RULE, is_case_id
from parity.core.status import STATUSES
from parity.golden.store import FixtureStore
from parity.run.results import RunResult
from parity.stages import STAGES, stage

RESULTS_FORMAT = 1
# Far deeper than anything parity writes (about 8 levels), and far enough below the interpreter's
# recursion limit that the report's own JSON dumps of free-form values cannot reach it.
MAX_DEPTH = 100


def results_json(results: list[RunResult]) -> dict[str, Any]:
    """A run's results file: its mode's result, with the other mode's riding along so the report can
    overlay its per-step curves."""
    data = {"format": RESULTS_FORMAT, **results[0].to_json()}
    data["companions"] = [r.to_json() for r in results[1:]]
    return data


def write_results(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, ensure_ascii=False).encode() + b"\n")


def read_results(path: Path, not_found: str) -> dict[str, Any]:
    """The parsed and validated file; `not_found` is the whole message when there is no file."""
    if not path.is_file():
        raise InputError(not_found)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # malformed JSON, not UTF-8, or an integer too long to convert
        raise InputError(f"{path}: unreadable results ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: unreadable results (nested too deeply)") from None
    check_results(data, str(path))
    return data


def check_results(data: Any, source: str) -> None:
    """Refuse, with an InputError naming `source` and the JSON path of the bad value, anything that is
    not a results file of this format: what passes, the report renders and a merge reads."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: not a results file ({json_kind(data)}, where `parity run --json` "
                         "writes an object)")
    if "format" not in data:
        raise InputError(f"{source}: not a results file of format {RESULTS_FORMAT} (no 'format' key); "
                         "write it again with `parity run --json`")
    if type(data["format"]) is not int or data["format"] != RESULTS_FORMAT:
        raise InputError(f"{source}: results format {shown(data['format'])}, not {RESULTS_FORMAT}: written by "
                         "another version of parity; run it again with this one")
    unwritable = _unwritable_value(data)
    if unwritable is not None:
        where, problem = unwritable
        raise InputError(f"{source}: {where or 'the file'}: {problem}")
    try:
        _whole_file(data, "")
    except Malformed as e:
        raise InputError(f"{source}: {e.where or 'the file'}: {e.problem} (malformed results)") from None


Check = Callable[[Any, str], None]


def _unwritable_value(data: Any) -> tuple[str, str] | None:
    """(path, problem) for the first value nested deeper than MAX_DEPTH or a string that cannot be
    written back as UTF-8 (JSON's escapes can spell lone surrogates); walked without recursion."""
    stack: list[tuple[Any, int, tuple | None]] = [(data, 1, None)]
    while stack:
        value, depth, trail = stack.pop()
        problem = None
        if depth > MAX_DEPTH:
            problem = f"nested too deeply (more than {MAX_DEPTH} levels)"
        elif isinstance(value, str) and not _utf8(value):
            problem = "not valid Unicode (a lone surrogate)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _utf8(key):
                    return _path(trail), f"key {shown(key)} is not valid Unicode (a lone surrogate)"
                stack.append((item, depth + 1, (trail, key)))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, (trail, i)) for i, item in enumerate(value))
        if problem is not None:
            return _path(trail), problem
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path(trail: tuple | None) -> str:
    keys = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    where = ""
    for key in reversed(keys):
        where = at(where, key)
    return where


def _of(kind: Any) -> Check:
    """The check of a value read as the annotation `kind` (parity/compare/records.py)."""

    def check(value: Any, where: str) -> None:
        read(kind, value, where)

    return check


STRING, BOOLEAN, NUMBER, POSITIVE = _of(str), _of(bool), _of(float), _of(Positive)


def _anything(value: Any, where: str) -> None:
    """Free-form values (environment, fixture provenance) that the report only prints as JSON."""


def _list_of(check: Check) -> Check:
    def each(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Malformed(where, f"must be a list, got {json_kind(value)}")
        for i, item in enumerate(value):
            check(item, at(where, i))

    return each


def _object_of(check: Check) -> Check:
    def each(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(where, f"must be an object, got {json_kind(value)}")
        for key, item in value.items():
            check(item, at(where, key))

    return each


def _one_of(names: tuple[str, ...], what: str) -> Check:
    def check(value: Any, where: str) -> None:
        STRING(value, where)
        if value not in names:
            raise Malformed(where, f"unknown {what} {shown(value)}, not one of {', '.join(names)}")

    return check


def _record(
    required: Mapping[str, Check],
    optional: Mapping[str, Check] | None = None,
    closed: bool = False,
) -> Check:
    """An object with `required` keys and maybe `optional` ones, each value checked; `closed` refuses
    other keys."""
    optional = optional or {}

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Malformed(where, f"must be an object, got {json_kind(value)}")
        for key in required:
            if key not in value:
                raise Malformed(where, f"missing key {key!r}")
        for key, item in value.items():
            rule = required.get(key) or optional.get(key)
            if rule is not None:
                rule(item, at(where, key))
            elif closed:
                raise Malformed(where, f"unknown key {shown(key)}")

    return check


_STAGE_RESULT = _record({
    "case": STRING, "adapter": STRING, "stage": _one_of(STAGES, "stage"), "status": _one_of(STATUSES, "status"),
    "summary": STRING, "reason": STRING, "detail": _object_of(_anything),
}, {"caveat": STRING}, closed=True)


def _stage_result(value: Any, where: str) -> None:
    """A result, its detail read as its stage's typed record: the report reads nothing else of it."""
    _STAGE_RESULT(value, where)
    if value["detail"]:
        stage(value["stage"]).detail.from_json(value["detail"], at(where, "detail"))


def _dtype(value: Any, where: str) -> None:
    """One dtype, or once parts of a run are merged, the sorted list of them."""
    if not isinstance(value, str):
        _list_of(STRING)(value, where)


_RUN = {
    "mode": _one_of(("free", "forced"), "mode"),
    "references": _object_of(STRING),
    "adapters": _list_of(STRING),
    "stages": _list_of(_one_of(STAGES, "stage")),
    "seconds": NUMBER,
    "environment": _record({"dtype": _dtype}),
    "warnings": _list_of(STRING),
    "cross": _list_of(_record({
        "case": STRING, "stage": _one_of(STAGES, "stage"), "adapter": STRING, "reference": STRING,
        "passed": BOOLEAN, "summary": STRING,
    }, closed=True)),
    "fixtures": _object_of(_anything),
    "results": _list_of(_stage_result),
}


def _of_its_cases(run: dict[str, Any], where: str) -> None:
    """Every result, cross-check and fixture entry belongs to a case the run has a reference for (the
    report and the merge place them by it)."""
    cases = run["references"]
    for case in cases:
        if not is_case_id(case):
            raise Malformed(at(where, "references"), f"{shown(case)} is not a case id ({CASE_ID_RULE})")
    for what in ("results", "cross"):
        for i, entry in enumerate(run[what]):
            if entry["case"] not in cases:
                raise Malformed(at(at(at(where, what), i), "case"),
                                 f"{shown(entry['case'])} is not a case of this run (not in its references)")
    keys = {FixtureStore.key(case, reference) for case, reference in cases.items()}
    for key in run["fixtures"]:
        if key not in keys:
            raise Malformed(at(at(where, "fixtures"), key), "not the fixture of a case of this run")


_RUN_RECORD = _record(_RUN, closed=True)
_SHARD_RECORD = _record(
    {"index": POSITIVE, "count": POSITIVE, "cases": _list_of(STRING), "run": _object_of(_anything)}, closed=True
)


def _run(value: Any, where: str) -> None:
    _RUN_RECORD(value, where)
    _of_its_cases(value, where)


def _shard(value: Any, where: str) -> None:
    _SHARD_RECORD(value, where)
    if value["index"] > value["count"]:
        raise Malformed(at(where, "index"), f"shard {value['index']} of {value['count']}: needs index <= count")


_FILE_RECORD = _record({**_RUN, "format": _anything, "companions": _list_of(_run)}, {"shard": _shard}, closed=True)


def _whole_file(value: Any, where: str) -> None:
    _FILE_RECORD(value, where)
    _of_its_cases(value, where)
