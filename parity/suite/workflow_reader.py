"""A case read out of another tool's workflow file (`parity case --from-workflow FILE`), and the case
file written from it.

A workflow names an implementation's own nodes, so its reader lives with that implementation and
registers under the `zimage_parity.workflow_readers` entry-point group, the way adapters do; this
module says what a reader returns and never names one. The file is untrusted: it is read up to a
size limit, parsed as plain JSON (no NaN or Infinity), and nothing in it is ever executed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from parity.core.errors import InputError

ENTRY_POINT_GROUP = "zimage_parity.workflow_readers"
# The official Z-Image workflow is 10 kB; a file 3000 times that is not a workflow a person made.
MAX_WORKFLOW_BYTES = 32 * 2**20
# A hostile file can hold thousands of unknown nodes: the list says how many it leaves out.
MAX_LISTED = 100


@dataclass(frozen=True)
class WorkflowCase:
    """What a reader made of a workflow. `fields`: `[[case]]` keys and values (no id, no
    description); `summary`: one line for the description; `not_understood`: every node it does not
    know, one entry each ("12 LoraLoaderModelOnly"); `notes`: what the workflow says that no case
    key holds (a scheduler, which latent node)."""

    fields: dict[str, Any]
    summary: str
    not_understood: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# A reader takes the parsed JSON and returns None when it is not a workflow of its kind; what it
# cannot turn into a case (no sampler, two samplers) is an InputError.
WorkflowReader = Callable[[Any], WorkflowCase | None]


def registered_readers() -> dict[str, WorkflowReader]:
    found: dict[str, WorkflowReader] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        reader = ep.load()
        if not callable(reader):
            raise TypeError(f"entry point {ep.name!r} is not a workflow reader")
        found[ep.name] = reader
    return found


def _no_constant(name: str) -> Any:
    raise InputError(f"{name} is not a JSON number")


def parse_json_file(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_WORKFLOW_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"workflow file not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read workflow file {path}: {e.strerror or e}") from None
    if len(data) > MAX_WORKFLOW_BYTES:
        raise InputError(f"{path.name}: larger than {MAX_WORKFLOW_BYTES // 2**20} MiB, more than a workflow holds")
    try:
        return json.loads(data.decode("utf-8-sig"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InputError(f"{path.name}: not JSON (not UTF-8 text)") from None
    except RecursionError:
        raise InputError(f"{path.name}: JSON nested too deeply to be a workflow") from None
    except ValueError as e:
        raise InputError(f"{path.name}: not JSON ({str(e).splitlines()[0]})") from None


def read_workflow_file(path: Path) -> WorkflowCase:
    """The case the first reader that knows the file's kind makes of it."""
    data = parse_json_file(path)
    readers = registered_readers()
    for reader in readers.values():
        found = reader(data)
        if found is not None:
            return found
    known = ", ".join(readers) or "none installed"
    raise InputError(f"{path.name}: not a workflow any reader knows (readers: {known})")


def case_id_for(path: Path) -> str:
    """A case id from the file's name: lowercased, each run of other characters one '-'."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("._-")
    return stem[:64].rstrip("._-") or "workflow"


def printable(text: str) -> str:
    """`text` on one line: control characters, line separators and lone surrogates escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def listed(entries: Iterable[str]) -> list[str]:
    entries = list(entries)
    shown = [printable(e)[:200] for e in entries[:MAX_LISTED]]
    if len(entries) > MAX_LISTED:
        shown.append(f"... and {len(entries) - MAX_LISTED} more")
    return shown


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str, key: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        elif "\ud800" <= ch <= "\udfff":
            raise InputError(f"{key}: a lone surrogate (U+{ord(ch):04X}) is not text; a case file cannot hold it")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Python's float spellings (1e-05, inf, nan) are TOML's.
        return repr(value)
    if isinstance(value, str):
        return _string(value, key)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v, f'{key}.{k}')}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        # One item a line: a message list reads as the conversation it is.
        return "[\n" + "".join(f"  {_value(v, f'{key}[{n}]')},\n" for n, v in enumerate(value)) + "]"
    raise TypeError(f"{key}: a case value cannot be a {type(value).__name__}")


def case_toml(fields: Mapping[str, Any], comments: Iterable[str] = ()) -> str:
    """One `[[case]]` table in the case files' format, after `comments` as `#` lines; the keys are
    case keys, so bare TOML keys, and the values scalars, or a message list (inline tables)."""
    lines = [f"# {printable(c)}".rstrip() for c in comments]
    lines.append("[[case]]")
    lines.extend(f"{key} = {_value(value, key)}" for key, value in fields.items())
    return "\n".join(lines) + "\n"


def case_comments(source: Path, found: WorkflowCase) -> list[str]:
    lines = [f"Read by `parity case --from-workflow` from {source.name}."]
    if found.notes:
        lines += ["What the workflow says that no case key holds:", *(f"  {n}" for n in listed(found.notes))]
    if found.not_understood:
        lines += ["Nodes not understood, not read into the case:", *(f"  {n}" for n in listed(found.not_understood))]
    else:
        lines.append("Every node in the workflow was understood.")
    return lines
