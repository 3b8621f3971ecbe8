"""GitHub-flavoured Markdown: cells built from escaped pieces, and tables that stay one line per row.

Cells hold template bytes (`<|im_start|>`, `<think>`, newlines), so two helpers build them:
`code` shows text exactly, control characters escaped, inside a code span; `plain` escapes what
would otherwise start HTML or end the cell. A pipe is escaped everywhere, code spans included
(GitHub splits cells on it even there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def _escape_controls(text: str) -> str:
    out = []
    for ch in text:
        if ch in _CONTROL:
            out.append(_CONTROL[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def code(text: object) -> str:
    """`text` exactly (newlines shown as \\n) in a code span, safe inside a table cell."""
    shown = _escape_controls(str(text)).replace("|", "\\|")
    fence = "``" if "`" in shown else "`"
    pad = " " if shown.startswith("`") or shown.endswith("`") or not shown else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def plain(text: object) -> str:
    """Prose for a cell: one line, no HTML, no cell break."""
    shown = re.sub(r"\s+", " ", str(text))
    return shown.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def prose(text: object) -> str:
    """Prose whose `backticked` parts are exact bytes: those become code spans, the rest `plain`."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no spans
        return plain(text)
    return "".join(code(part) if i % 2 else plain(part) for i, part in enumerate(parts))


def num(value: float, digits: int = 6) -> str:
    """A number as short as it can be at `digits` decimals: 1, 0.954545, 45.4545."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def numbers(values: Iterable[float], digits: int = 6) -> str:
    return "[" + ", ".join(num(v, digits) for v in values) + "]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub table; every cell must already be escaped (`code`, `plain`)."""
    width = len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        if len(row) != width:
            raise ValueError(f"row has {len(row)} cells, the header {width}: {row!r}")
        if any("\n" in cell for cell in row):
            raise ValueError(f"a cell spans lines: {row!r}")
        lines.append("| " + " | ".join(cell or " " for cell in row) + " |")
    return "\n".join(lines)
