"""The results file `parity run --json` writes and `parity report` reads (plain or as shards to merge)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parity.errors import InputError
from parity.outputs import atomic_write_bytes
from parity.runner import RunResult


def results_json(results: list[RunResult]) -> dict[str, Any]:
    """A run's results file: its mode's result, with the other mode's riding along so the report can
    overlay its per-step curves."""
    data = results[0].to_json()
    data["companions"] = [r.to_json() for r in results[1:]]
    return data


def write_results(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, ensure_ascii=False).encode() + b"\n")


def read_results(path: Path, not_found: str) -> Any:
    """The parsed file; `not_found` is the whole message when there is no file."""
    if not path.is_file():
        raise InputError(not_found)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable results ({e})") from None
