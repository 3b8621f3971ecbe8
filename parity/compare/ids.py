"""Exact token-id comparison with a token-aligned diff of the stretches that differ.

An `IdsDiff` stays small whatever the input size: spans, the ids kept per span and the alignment
window are capped, and the record says when a cap cut something off.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from parity.compare.records import Record, common_prefix, common_suffix, count

# SequenceMatcher's cost is bounded by (matching id pairs) x (matching blocks); on repetitive
# ids (padding, "a b a b" runs) that is cubic in the window, so the window shrinks until the
# bound fits this budget (about a tenth of a second of pure Python in the worst case).
ALIGNMENT_BUDGET = 20_000_000
MAX_SPANS = 50
MAX_SPAN_IDS = 64
SUMMARY_IDS = 8


def _show_ids(ids: tuple[int, ...], tokens: tuple[str, ...], total: int) -> str:
    more = f", … {total - SUMMARY_IDS} more" if total > SUMMARY_IDS else ""
    shown_ids = ", ".join(str(i) for i in ids[:SUMMARY_IDS])
    shown_tokens = ", ".join(repr(t) for t in tokens[:SUMMARY_IDS])
    return f"[{shown_ids}{more}] ({shown_tokens}{more})"


@dataclass(frozen=True)
class IdSpan(Record):
    """One non-equal stretch of the alignment, read from expected to obtained.

    `op` is "insert" (ids only obtained has), "delete" (ids only expected has) or "replace".
    Start and end are positions in the full lists. The ids and decoded tokens of each side are
    kept for at most MAX_SPAN_IDS ids; `truncated` says when a side was longer.
    """

    op: str
    expected_start: int
    expected_end: int
    obtained_start: int
    obtained_end: int
    expected_ids: tuple[int, ...]
    obtained_ids: tuple[int, ...]
    expected_tokens: tuple[str, ...]
    obtained_tokens: tuple[str, ...]
    truncated: bool

    def summary(self) -> str:
        n_obt = self.obtained_end - self.obtained_start
        n_exp = self.expected_end - self.expected_start
        obtained = _show_ids(self.obtained_ids, self.obtained_tokens, n_obt)
        expected = _show_ids(self.expected_ids, self.expected_tokens, n_exp)
        if self.op == "insert":
            return f"obtained has {count(n_obt, 'extra token')} {obtained}"
        if self.op == "delete":
            return f"obtained lacks {count(n_exp, 'token')} {expected}"
        return (
            f"obtained has {count(n_obt, 'token')} {obtained} "
            f"where expected has {count(n_exp, 'token')} {expected}"
        )


@dataclass(frozen=True)
class IdsDiff(Record):
    """Exact token-id comparison with a token-aligned diff.

    `spans` are the non-equal stretches of a SequenceMatcher alignment (at most MAX_SPANS).
    `capped` is True when the alignment does not cover the whole difference: very long or very
    repetitive differing stretches are aligned only over a leading window, so later spans are
    missing and the last one may be cut at the window's edge.
    """

    equal: bool
    obtained_len: int
    expected_len: int
    first_diff: int | None
    spans: tuple[IdSpan, ...]
    capped: bool

    def summary(self) -> str:
        if self.equal:
            return f"ids equal ({count(self.expected_len, 'token')})"
        text = f"differs at position {self.first_diff}: {self.spans[0].summary()}"
        if len(self.spans) > 1:
            text += f"; {count(len(self.spans) - 1, 'more differing span')}"
        if self.capped:
            text += "; alignment capped, later differences not shown"
        return text


def _alignment_window(expected: Sequence[int], obtained: Sequence[int]) -> tuple[int, int]:
    """How much of each side SequenceMatcher may align within ALIGNMENT_BUDGET."""
    n_exp, n_obt = len(expected), len(obtained)
    width = max(n_exp, n_obt)
    while True:
        w_exp, w_obt = min(n_exp, width), min(n_obt, width)
        counts = Counter(obtained[:w_obt])
        # find_longest_match walks every matching (expected, obtained) pair once per call,
        # and get_matching_blocks makes at most two calls per matching block found.
        pairs = sum(counts[x] for x in expected[:w_exp])
        if pairs * (2 * min(w_exp, w_obt) + 1) <= ALIGNMENT_BUDGET or width <= 1:
            return w_exp, w_obt
        width //= 2


def _span(
    op: str,
    offset: int,
    bounds: tuple[int, int, int, int],
    expected: Sequence[int],
    obtained: Sequence[int],
    decode: Callable[[int], str],
) -> IdSpan:
    e0, e1, o0, o1 = (offset + b for b in bounds)
    exp_ids = tuple(expected[e0 : min(e1, e0 + MAX_SPAN_IDS)])
    obt_ids = tuple(obtained[o0 : min(o1, o0 + MAX_SPAN_IDS)])
    return IdSpan(
        op=op,
        expected_start=e0,
        expected_end=e1,
        obtained_start=o0,
        obtained_end=o1,
        expected_ids=exp_ids,
        obtained_ids=obt_ids,
        expected_tokens=tuple(decode(i) for i in exp_ids),
        obtained_tokens=tuple(decode(i) for i in obt_ids),
        truncated=len(exp_ids) < e1 - e0 or len(obt_ids) < o1 - o0,
    )


def compare_ids(obtained: list[int], expected: list[int], decode: Callable[[int], str]) -> IdsDiff:
    """Exact comparison; `decode` maps one id to its token text and is called only for span ids."""
    if obtained == expected:
        return IdsDiff(True, len(obtained), len(expected), None, (), False)
    prefix = common_prefix(obtained, expected)
    suffix = common_suffix(obtained, expected, prefix)
    exp_mid = expected[prefix : len(expected) - suffix]
    obt_mid = obtained[prefix : len(obtained) - suffix]
    w_exp, w_obt = _alignment_window(exp_mid, obt_mid)
    matcher = SequenceMatcher(None, exp_mid[:w_exp], obt_mid[:w_obt], autojunk=False)
    opcodes = [op for op in matcher.get_opcodes() if op[0] != "equal"]
    spans = tuple(
        _span(tag, prefix, (e0, e1, o0, o1), expected, obtained, decode)
        for tag, e0, e1, o0, o1 in opcodes[:MAX_SPANS]
    )
    capped = (w_exp, w_obt) != (len(exp_mid), len(obt_mid)) or len(opcodes) > MAX_SPANS
    return IdsDiff(False, len(obtained), len(expected), prefix, spans, capped)

