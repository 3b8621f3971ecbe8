"""How the report marks a status, and which status a cell of several shows: the worst."""

from __future__ import annotations

from collections.abc import Sequence

from parity.core.status import DECLARED, MATCH, STALE, UNEXPECTED, UNSUPPORTED

STATUS_MARK = {
    MATCH: ("✓", "match"),
    DECLARED: ("≈", "declared divergence"),
    UNEXPECTED: ("✗", "unexpected divergence"),
    STALE: ("!", "declared divergence that no longer happens"),
    UNSUPPORTED: ("–", "not supported"),
}
# Worst first: what a matrix cell is coloured by.
SEVERITY = [UNEXPECTED, STALE, DECLARED, MATCH, UNSUPPORTED]


def worst(statuses: Sequence[str]) -> str:
    return min(statuses, key=SEVERITY.index) if statuses else UNSUPPORTED
