"""Exact string comparison: where two templates first differ, with invisible characters made visible.

A `TextDiff` stays small whatever the input size: it keeps a short context of each side around
the first difference.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from parity.compare.records import Record, common_prefix

TEXT_CONTEXT_BEFORE = 20
TEXT_CONTEXT_AFTER = 30


def visible(s: str, newlines: bool = True) -> str:
    """`s` with its invisible characters made visible.

    Newlines become `↵` (followed by a real newline unless `newlines` is False, which gives a
    one-line form for summaries), tabs `→`, carriage returns `␍`, spaces at line ends `·`, and
    every other control, format or non-ASCII space character its code point, e.g. `⟨U+00A0⟩`.
    These are exactly the characters that make two templates differ while looking the same.
    """
    out = []
    for line_no, line in enumerate(s.split("\n")):
        if line_no:
            out.append("↵\n" if newlines else "↵")
        body = line.rstrip(" ")
        for ch in body:
            if ch == "\t":
                out.append("→")
            elif ch == "\r":
                out.append("␍")
            elif ch != " " and unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"):
                out.append(f"⟨U+{ord(ch):04X}⟩")
            else:
                out.append(ch)
        out.append("·" * (len(line) - len(body)))
    return "".join(out)


@dataclass(frozen=True)
class TextDiff(Record):
    """Exact string comparison.

    `first_diff` is the first differing character index (None when equal; the shorter length
    when one string is a prefix of the other), at 1-based `line` and `column`. The contexts
    are the raw substrings of each side starting at `context_start`, a little before the
    difference; pass them through `visible` to show whitespace.
    """

    equal: bool
    obtained_len: int
    expected_len: int
    first_diff: int | None
    line: int | None
    column: int | None
    context_start: int | None
    obtained_context: str
    expected_context: str

    def summary(self) -> str:
        if self.equal:
            return f"text equal ({self.expected_len} chars)"
        assert self.first_diff is not None and self.context_start is not None
        lead = "…" if self.context_start > 0 else ""

        def show(context: str, total: int) -> str:
            tail = "…" if self.context_start + len(context) < total else ""
            return f"'{lead}{visible(context, newlines=False)}{tail}'"

        return (
            f"text differs at char {self.first_diff} (line {self.line}, col {self.column}): "
            f"obtained {show(self.obtained_context, self.obtained_len)} vs "
            f"expected {show(self.expected_context, self.expected_len)} "
            f"(lengths {self.obtained_len} vs {self.expected_len})"
        )


def compare_text(obtained: str, expected: str) -> TextDiff:
    if obtained == expected:
        return TextDiff(True, len(obtained), len(expected), None, None, None, None, "", "")
    i = common_prefix(obtained, expected)
    start = max(0, i - TEXT_CONTEXT_BEFORE)
    end = i + TEXT_CONTEXT_AFTER
    # The prefix before `i` is common, so line and column are the same on both sides.
    line_start = expected.rfind("\n", 0, i) + 1
    return TextDiff(
        equal=False,
        obtained_len=len(obtained),
        expected_len=len(expected),
        first_diff=i,
        line=expected.count("\n", 0, i) + 1,
        column=i - line_start + 1,
        context_start=start,
        obtained_context=obtained[start:end],
        expected_context=expected[start:end],
    )

