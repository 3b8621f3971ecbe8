"""Paths built from user input: what a case id may be, and joins that provably stay inside their root.

A case id becomes a folder name under `fixtures/golden/`, `--dump DIR` and `--save-images DIR`, so
it is held to a portable file-name rule at load: 1 to 64 characters of lowercase ASCII letters,
digits, `-`, `_` and `.`, starting and ending with a letter or digit. That excludes separators,
`..`, empty and absolute ids, control characters (which would reach the terminal raw), names two
case-insensitive file systems would merge, and names too long for any file system. Every writer
still joins through `inside`, which resolves the result and refuses anything outside the root, so
a rule missed somewhere cannot become a write elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from parity.core.errors import InputError, shown

CASE_ID_RULE = (
    "1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"
)
_CASE_ID = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
def is_case_id(text: str) -> bool:
    return _CASE_ID.fullmatch(text) is not None


def check_case_id(case_id: str, where: str) -> None:
    """InputError naming `where` unless `case_id` follows CASE_ID_RULE."""
    if not is_case_id(case_id):
        raise InputError(f"{where}: case id {shown(case_id)} is not allowed: a case id is {CASE_ID_RULE}")


def inside(root: Path, *parts: str) -> Path:
    """`root / parts...`, refused with InputError if it resolves outside `root` (`..`, an absolute
    part, a symlink pointing away)."""
    path = root.joinpath(*parts)
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise InputError(f"refusing to write {shown(str(path))}: it is outside {root}")
    return path
