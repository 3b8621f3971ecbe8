"""Result columns: an adapter's name, or an adapter judged against the real code it models.

A re-implementation is judged against its case's reference like every adapter, and also against the
stored outputs of the live adapter running the code it models (`Adapter.modelled_on`). Those rows
form a column of their own, named `<adapter>@<reference>`, so the matrix, the expectations, the
results file and the reproduce command treat it as any other column.
"""

from __future__ import annotations

FIDELITY_MARK = "@"


def fidelity_label(adapter: str, reference: str) -> str:
    """The column name of `adapter` judged against the stored outputs of `reference`."""
    return f"{adapter}{FIDELITY_MARK}{reference}"


def split_label(label: str) -> tuple[str, str | None]:
    """(adapter, the reference it is judged against, or None for the case's own)."""
    adapter, _, reference = label.partition(FIDELITY_MARK)
    return adapter, reference or None


