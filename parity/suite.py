"""Turning command-line choices into runnable pieces: contexts, adapters, references.

Cases may ask for different dtypes; each dtype gets its own context (and so its own text
encoder), and every adapter in that group shares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parity.adapter import Adapter, registered_adapters, select_adapters
from parity.cases import Case
from parity.context import Context


@dataclass(frozen=True)
class Options:
    checkpoint: Path | None = None
    device: str = "cpu"
    dtype: str | None = None


@dataclass
class Group:
    context: Context
    cases: list[Case]
    adapters: dict[str, Adapter]
    references: dict[str, Adapter]


def groups(cases: list[Case], adapter_names: list[str] | None, options: Options) -> list[Group]:
    """Cases grouped by effective dtype, each group with its own context and adapter instances."""
    chosen = select_adapters(adapter_names)
    reference_classes = {n: c for n, c in registered_adapters().items() if c.is_reference()}
    by_dtype: dict[str, list[Case]] = {}
    for case in cases:
        by_dtype.setdefault(options.dtype or case.dtype, []).append(case)
    out = []
    for dtype, members in by_dtype.items():
        context = Context(checkpoint=options.checkpoint, device=options.device, dtype=dtype)
        adapters = {n: c(context) for n, c in chosen.items()}
        references = {n: adapters.get(n) or c(context) for n, c in reference_classes.items()}
        out.append(Group(context, members, adapters, references))
    return out
