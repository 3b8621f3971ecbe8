"""The checks every weight loader makes before trusting a file: names present, none extra, shapes right.

Each names the first few offenders, so a wrong file is one clear line, not a stack trace from
`load_state_dict` halfway through loading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from parity.core.errors import InputError


def name_some(names: list[str], limit: int = 5) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_names(where: Path, expected: Iterable[str], found: Iterable[str], what: str, user: str) -> None:
    """InputError when `found` lacks any of `expected` or holds names `user` does not use."""
    expected, found = set(expected), set(found)
    missing = sorted(expected - found)
    if missing:
        raise InputError(f"{where} lacks {what} weights: {name_some(missing)}")
    unexpected = sorted(found - expected)
    if unexpected:
        raise InputError(f"{where} has weights {user} does not use: {name_some(unexpected)}")


def check_shapes(
    where: Path, expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], what: str
) -> None:
    wrong = sorted(name for name, shape in expected.items() if tuple(found[name]) != tuple(shape))
    if wrong:
        first = wrong[0]
        raise InputError(
            f"{where} has {what} weights of the wrong shape: {name_some(wrong)} "
            f"({first} is {tuple(found[first])}, expected {tuple(expected[first])})"
        )
