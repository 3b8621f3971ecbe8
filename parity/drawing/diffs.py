"""Text views of a divergence for the HTML report: a side-by-side template diff and a token-aligned table.

Both work from a stage's typed detail (parity/stages/template.py, tokens.py): the template texts
around the first difference, and the aligned token rows. They return plain data (segments of text
with a "changed" flag); the Jinja template escapes every string when it writes them out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from difflib import SequenceMatcher
from typing import Any, Protocol

from parity.compare.ids import IdSpan
from parity.compare.records import common_prefix, common_suffix
from parity.compare.text import visible
from parity.drawing.marks import worst

CONTEXT_LINES = 3  # equal lines kept around a change
MAX_ROWS = 400  # rows of one side-by-side diff
CHAR_DIFF_LIMIT = 400  # a changed line pair is diffed by character up to this many differing characters
MAX_SPAN_ROWS = 16  # differing tokens listed in a row; the rest of that stretch is counted, not listed

Segment = tuple[str, bool]  # (text, changed)


class TemplateWindow(Protocol):
    """What the side-by-side diff reads of a template detail (parity/stages/template.py)."""

    expected_text: str | None
    obtained_text: str | None
    window_start: int | None
    first_diff: int | None
    line: int | None
    window_truncated: bool | None
    expected_len: int
    obtained_len: int


class AlignedToken(Protocol):
    op: str
    expected: tuple[int, int, str] | None
    obtained: tuple[int, int, str] | None
    skipped: int | None


class TokenAlignment(Protocol):
    """What the token table reads of a tokens detail (parity/stages/tokens.py)."""

    equal: bool
    aligned: Sequence[AlignedToken] | None
    aligned_truncated: bool | None
    spans: Sequence[IdSpan]
    capped: bool
    expected_len: int
    obtained_len: int
    expected_padding: int
    obtained_padding: int


def _mark_spaces(text: str) -> str:
    """Leading and trailing spaces of a changed segment as '␣', so a differing space shows."""
    body = text.strip(" ")
    if not body:
        return "␣" * len(text)
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" "))
    return "␣" * lead + body + "␣" * trail


def _segments(pieces: list[Segment]) -> list[Segment]:
    """Adjacent pieces with the same flag merged, empty ones dropped, changed spaces made visible."""
    out: list[Segment] = []
    for text, changed in pieces:
        if not text:
            continue
        if out and out[-1][1] == changed:
            out[-1] = (out[-1][0] + text, changed)
        else:
            out.append((text, changed))
    return [(_mark_spaces(t) if c else t, c) for t, c in out]


def char_diff(a: str, b: str) -> tuple[list[Segment], list[Segment]]:
    """Segments of `a` and `b` with what differs flagged; long differing middles are flagged whole."""
    prefix = common_prefix(a, b)
    suffix = common_suffix(a, b, prefix)
    a_mid, b_mid = a[prefix : len(a) - suffix], b[prefix : len(b) - suffix]
    head, tail_a, tail_b = a[:prefix], a[len(a) - suffix :], b[len(b) - suffix :]
    left: list[Segment] = [(head, False)]
    right: list[Segment] = [(head, False)]
    if max(len(a_mid), len(b_mid)) <= CHAR_DIFF_LIMIT:
        for tag, i0, i1, j0, j1 in SequenceMatcher(None, a_mid, b_mid, autojunk=False).get_opcodes():
            left.append((a_mid[i0:i1], tag != "equal"))
            right.append((b_mid[j0:j1], tag != "equal"))
    else:
        left.append((a_mid, True))
        right.append((b_mid, True))
    left.append((tail_a, False))
    right.append((tail_b, False))
    return _segments(left), _segments(right)


def _lines(text: str) -> list[str]:
    """`text` with whitespace made visible, one entry per line (each but the last ends in '↵')."""
    lines = visible(text).split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return lines


def template_diff(detail: TemplateWindow) -> dict[str, Any] | None:
    """Side-by-side rows (reference left, adapter right) for a template detail that has both texts.

    Each row: {"kind": "equal" | "change" | "gap", "left": (line_no, segments) or None,
    "right": (line_no, segments) or None}; a gap row has "skipped" (lines left out).
    """
    if detail.expected_text is None or detail.obtained_text is None:
        return None
    expected, obtained = detail.expected_text, detail.obtained_text
    start = detail.window_start or 0
    first = detail.first_diff or 0
    first_line = (detail.line or 1) - expected.count("\n", 0, max(0, first - start))
    left, right = _lines(expected), _lines(obtained)
    rows: list[dict[str, Any]] = []

    def side(lines: list[str], k: int | None, segments: list[Segment] | None = None):
        if k is None:
            return None
        return (first_line + k, segments if segments is not None else [(lines[k], False)])

    matcher = SequenceMatcher(None, left, right, autojunk=False)
    opcodes = matcher.get_opcodes()
    for n, (tag, i0, i1, j0, j1) in enumerate(opcodes):
        if tag == "equal":
            count = i1 - i0
            keep = [
                k for k in range(count)
                if (n > 0 and k < CONTEXT_LINES) or (n < len(opcodes) - 1 and k >= count - CONTEXT_LINES)
            ]
            last = -1
            for k in keep:
                if k > last + 1:
                    rows.append({"kind": "gap", "skipped": k - last - 1})
                rows.append({"kind": "equal", "left": side(left, i0 + k), "right": side(right, j0 + k)})
                last = k
            if count > last + 1:
                rows.append({"kind": "gap", "skipped": count - last - 1})
            continue
        for k in range(max(i1 - i0, j1 - j0)):
            i = i0 + k if i0 + k < i1 else None
            j = j0 + k if j0 + k < j1 else None
            if i is not None and j is not None:
                a, b = char_diff(left[i], right[j])
                rows.append({"kind": "change", "left": side(left, i, a), "right": side(right, j, b)})
            else:
                rows.append({
                    "kind": "change",
                    "left": side(left, i, [(left[i], True)]) if i is not None else None,
                    "right": side(right, j, [(right[j], True)]) if j is not None else None,
                })
    truncated = len(rows) > MAX_ROWS
    return {
        "rows": rows[:MAX_ROWS],
        "truncated": truncated or bool(detail.window_truncated),
        "window_start": start,
        "lengths": (detail.expected_len, detail.obtained_len),
    }


def _token(side: tuple[int, int, str] | None) -> dict[str, Any] | None:
    if side is None:
        return None
    pos, token_id, text = side
    # Spaces inside a token matter (' (' and '(' are different ids): all of them are shown.
    return {"pos": pos, "id": token_id, "text": visible(text.replace(" ", "␣"), newlines=False)}


def token_rows(detail: TokenAlignment) -> dict[str, Any] | None:
    """The token-aligned diff of a tokens detail: rows of reference and adapter tokens, gaps between."""
    if detail.equal:
        return None
    aligned: list[tuple[str, Any, Any, int | None]] = []
    if detail.aligned is not None:
        aligned = [(r.op, r.expected, r.obtained, r.skipped) for r in detail.aligned]
    else:  # results written before the aligned rows existed: the spans alone
        for span in detail.spans:
            e = list(zip(range(span.expected_start, span.expected_end), span.expected_ids, span.expected_tokens,
                         strict=False))
            o = list(zip(range(span.obtained_start, span.obtained_end), span.obtained_ids, span.obtained_tokens,
                         strict=False))
            for k in range(max(len(e), len(o))):
                aligned.append((span.op, e[k] if k < len(e) else None, o[k] if k < len(o) else None, None))
            aligned.append(("gap", None, None, None))
    rows: list[dict[str, Any]] = []
    run = hidden = 0  # length of the current stretch of differing rows, and how many of them are left out
    for op, expected, obtained, skipped in [*aligned, ("end", None, None, None)]:
        differing = op not in ("equal", "gap", "end")
        run = run + 1 if differing else 0
        if differing and run > MAX_SPAN_ROWS:
            hidden += 1
            continue
        if hidden:
            rows.append({"op": "gap", "skipped": hidden, "what": "differing"})
            hidden = 0
        if op == "gap":
            rows.append({"op": "gap", "skipped": skipped, "what": "equal"})
        elif op != "end":
            rows.append({"op": op, "expected": _token(expected), "obtained": _token(obtained)})
    return {
        "rows": rows,
        "truncated": bool(detail.aligned_truncated or detail.capped),
        "lengths": (detail.expected_len, detail.obtained_len),
        "padding": (detail.expected_padding, detail.obtained_padding),
    }


def grouped(
    rows: Iterable[tuple[str, str, Any]], view_of: Callable[[Any], dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """Each (adapter, status, detail)'s view, those with nothing to show left out and equal views merged:
    [{"adapters", "status", "view"}]."""
    groups: dict[str, dict[str, Any]] = {}
    for adapter, status, view in ((a, s, v) for a, s, d in rows if (v := view_of(d))):
        key = json.dumps(view, sort_keys=True, default=str)
        group = groups.setdefault(key, {"adapters": [], "statuses": [], "view": view})
        group["adapters"].append(adapter)
        group["statuses"].append(status)
    return [{"adapters": g["adapters"], "status": worst(g["statuses"]), "view": g["view"]} for g in groups.values()]
