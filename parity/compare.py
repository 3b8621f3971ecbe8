"""Comparators: exact text and token ids, and numeric tensors under a tolerance.

Each comparator is a pure function returning a frozen record. A record says whether the two
sides agree, where they first differ and by how much, has a one-line `summary()` for the
console, and a `to_json()` made of plain Python types only (floats finite or None), so the
runner, the JSON output and the HTML report can all use it without knowing torch.

Records stay small whatever the input size: contexts, token spans, the alignment window and
per-row error lists are capped, and a record says when a cap cut something off.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from typing import Any

import torch

from parity.tolerances import Tolerance

__all__ = [
    "IdSpan",
    "IdsDiff",
    "NumericDiff",
    "TextDiff",
    "Tolerance",
    "compare_ids",
    "compare_numeric",
    "compare_text",
    "first_non_finite",
    "visible",
]

TEXT_CONTEXT_BEFORE = 20
TEXT_CONTEXT_AFTER = 30
# SequenceMatcher's cost is bounded by (matching id pairs) x (matching blocks); on repetitive
# ids (padding, "a b a b" runs) that is cubic in the window, so the window shrinks until the
# bound fits this budget (about a tenth of a second of pure Python in the worst case).
ALIGNMENT_BUDGET = 20_000_000
MAX_SPANS = 50
MAX_SPAN_IDS = 64
MAX_PER_ROW = 4096
SUMMARY_IDS = 8


def _plain(value: Any) -> Any:
    """Plain JSON types: tuples become lists, and non-finite floats become None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Record:
    def to_json(self) -> dict[str, Any]:
        return _plain(asdict(self))


# --- text --------------------------------------------------------------------------------------


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


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix of `a` and `b`."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@dataclass(frozen=True)
class TextDiff(_Record):
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
    i = _first_difference(obtained, expected)
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


# --- token ids ---------------------------------------------------------------------------------


def _show_ids(ids: tuple[int, ...], tokens: tuple[str, ...], total: int) -> str:
    more = f", … {total - SUMMARY_IDS} more" if total > SUMMARY_IDS else ""
    shown_ids = ", ".join(str(i) for i in ids[:SUMMARY_IDS])
    shown_tokens = ", ".join(repr(t) for t in tokens[:SUMMARY_IDS])
    return f"[{shown_ids}{more}] ({shown_tokens}{more})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass(frozen=True)
class IdSpan(_Record):
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
            return f"obtained has {_count(n_obt, 'extra token')} {obtained}"
        if self.op == "delete":
            return f"obtained lacks {_count(n_exp, 'token')} {expected}"
        return (
            f"obtained has {_count(n_obt, 'token')} {obtained} "
            f"where expected has {_count(n_exp, 'token')} {expected}"
        )


@dataclass(frozen=True)
class IdsDiff(_Record):
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
            return f"ids equal ({_count(self.expected_len, 'token')})"
        text = f"differs at position {self.first_diff}: {self.spans[0].summary()}"
        if len(self.spans) > 1:
            text += f"; {_count(len(self.spans) - 1, 'more differing span')}"
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
    prefix = _first_difference(obtained, expected)
    # The common suffix must not reach back into the common prefix (e.g. "a b" vs "a b b").
    limit = min(len(obtained), len(expected)) - prefix
    suffix = _first_difference(obtained[::-1][:limit], expected[::-1][:limit])
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


# --- numeric -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericDiff(_Record):
    """Numeric comparison under torch.testing's rule `|o - e| <= atol + rtol * |e|`, in float64.

    Shapes that differ only along dim 0 (e.g. sequence length) are compared over the common
    leading rows, `compared_shape`; any other shape difference is reported and not compared
    (`compared_shape` None, metrics None). Either way a shape mismatch does not pass.

    The error metrics cover the elements finite on both sides. A non-finite value on either
    side is always a mismatch; the first one of each side is located. `max_rel` is relative to
    |expected| and skips elements where expected is 0: those that are not 0 in obtained have an
    infinite relative error and are counted in `rel_infinite` instead.

    `min_atol` is the smallest atol that passes at the given rtol, `min_rtol` the smallest rtol
    that passes at the given atol (Polygraphy's "minimum required tolerance"); None when no
    finite value would do (non-finite values, errors that overflow float64, or for `min_rtol`
    a miss where expected is 0).

    `per_row_max_abs` (2-D inputs only) is the max abs error of each row, None for a row holding
    a non-finite pair; over MAX_PER_ROW rows, each entry covers `rows_per_entry` rows.
    """

    tolerance: Tolerance
    obtained_shape: tuple[int, ...]
    expected_shape: tuple[int, ...]
    obtained_dtype: str
    expected_dtype: str
    shape_mismatch: bool
    compared_shape: tuple[int, ...] | None
    numel: int
    mismatched: int
    mismatched_fraction: float
    max_abs: float | None
    max_rel: float | None
    rel_infinite: int
    mean_abs: float | None
    cosine: float | None
    worst_index: tuple[int, ...] | None
    worst_obtained: float | None
    worst_expected: float | None
    min_atol: float | None
    min_rtol: float | None
    nonfinite_obtained: int
    nonfinite_expected: int
    first_nonfinite_obtained: tuple[int, ...] | None
    first_nonfinite_expected: tuple[int, ...] | None
    per_row_max_abs: tuple[float | None, ...] | None
    rows_per_entry: int
    passed: bool

    def summary(self) -> str:
        tol = f"atol={self.tolerance.atol:.3g} rtol={self.tolerance.rtol:.3g}"
        shapes = f"shape {self.obtained_shape} vs expected {self.expected_shape}"
        if self.compared_shape is None:
            return f"FAIL: {shapes}, not compared"
        if self.passed:
            head = f"pass: {_count(self.numel, 'element')} within {tol}"
            if not self.numel:
                return head
            return f"{head}; max abs {self.max_abs:.3e}, {self._rel_text()}, {_cosine_text(self.cosine)}"
        parts = []
        if self.shape_mismatch:
            parts.append(f"{shapes}, compared the first {self.compared_shape[0]} rows")
        for side, count, first in (
            ("obtained", self.nonfinite_obtained, self.first_nonfinite_obtained),
            ("expected", self.nonfinite_expected, self.first_nonfinite_expected),
        ):
            if count:
                parts.append(f"{side} has {_count(count, 'non-finite value')} (first at {first})")
        parts.append(f"{self.mismatched}/{self.numel} ({self.mismatched_fraction:.2%}) outside {tol}")
        if self.max_abs is not None:
            parts.append(
                f"max abs {self.max_abs:.3e} at {self.worst_index} "
                f"(obtained {self.worst_obtained:.6g}, expected {self.worst_expected:.6g})"
            )
            parts.append(f"{self._rel_text()}, mean abs {self.mean_abs:.3e}, {_cosine_text(self.cosine)}")
        if self.mismatched and not self.shape_mismatch and self.min_atol is not None:
            rtol_part = f" or rtol>={self.min_rtol:.3g}" if self.min_rtol is not None else ""
            parts.append(f"would pass with atol>={self.min_atol:.3g}{rtol_part}")
        return "FAIL: " + "; ".join(parts)

    def _rel_text(self) -> str:
        rel = f"max rel {self.max_rel:.3e}" if self.max_rel is not None else "max rel n/a"
        return rel + (f" (+{self.rel_infinite} nonzero where expected is 0)" if self.rel_infinite else "")


def _cosine_text(cosine: float) -> str:
    # Near-identical tensors all print as 0.99999999; the distance from 1 is what tells them apart.
    if cosine == 1.0:
        return "cos 1"
    return f"cos 1-{1 - cosine:.1e}" if cosine >= 0.999 else f"cos {cosine:.6f}"


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index tuple of flat position `flat` in a row-major tensor of `shape`."""
    index = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        index.append(i)
    return tuple(reversed(index))


def _first_false(flags: torch.Tensor, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return None if bool(flags.all()) else _index(int((~flags).int().argmax()), shape)


def _smallest_passing(candidate: float, passes: Callable[[float], bool]) -> float | None:
    """`candidate` nudged up ulp by ulp until it passes: recomputing `atol + rtol*|e|` can round
    just below |o - e|, and a reported minimum that fails when rerun would be worse than none.
    None when the candidate is not finite (errors overflowed float64)."""
    if not math.isfinite(candidate):
        return None
    candidate = max(0.0, candidate)
    while not passes(candidate):
        candidate = math.nextafter(candidate, math.inf)
    return candidate


def _cosine(o: torch.Tensor, e: torch.Tensor) -> float:
    # Scaling each side by its largest magnitude keeps the norms finite for huge float64 values;
    # cosine does not depend on scale.
    o_max, e_max = float(o.abs().max()), float(e.abs().max())
    if o_max == 0.0 and e_max == 0.0:
        return 1.0
    if o_max == 0.0 or e_max == 0.0:
        return 0.0
    o, e = o / o_max, e / e_max
    value = float(torch.dot(o, e) / (torch.linalg.vector_norm(o) * torch.linalg.vector_norm(e)))
    return min(1.0, max(-1.0, value))


def _per_row(err: torch.Tensor, pair_finite: torch.Tensor) -> tuple[tuple[float | None, ...], int]:
    """Max abs error per row; rows are grouped (max over each group) to keep MAX_PER_ROW entries."""
    rows, cols = err.shape
    step = max(1, math.ceil(rows / MAX_PER_ROW))
    # NaN marks a row holding a non-finite pair: amax propagates it, and it becomes None.
    row_max = torch.where(pair_finite, err, torch.nan).amax(dim=1) if cols else torch.zeros(rows)
    pad = (-rows) % step
    grouped = torch.nn.functional.pad(row_max, (0, pad), value=0.0).reshape(-1, step).amax(dim=1)
    return tuple(float(v) if math.isfinite(v) else None for v in grouped.tolist()), step


def compare_numeric(obtained: torch.Tensor, expected: torch.Tensor, tol: Tolerance) -> NumericDiff:
    """Both sides upcast to float64 on the CPU; see NumericDiff for what is measured and how."""
    if not (tol.atol >= 0 and tol.rtol >= 0 and math.isfinite(tol.atol) and math.isfinite(tol.rtol)):
        raise ValueError(f"tolerances must be finite and >= 0, got atol={tol.atol} rtol={tol.rtol}")
    o_shape, e_shape = tuple(obtained.shape), tuple(expected.shape)
    shape_mismatch = o_shape != e_shape
    comparable = len(o_shape) == len(e_shape) and o_shape[1:] == e_shape[1:]
    header = {
        "tolerance": tol,
        "obtained_shape": o_shape,
        "expected_shape": e_shape,
        "obtained_dtype": str(obtained.dtype).removeprefix("torch."),
        "expected_dtype": str(expected.dtype).removeprefix("torch."),
        "shape_mismatch": shape_mismatch,
    }
    if not comparable:
        return NumericDiff(
            **header, compared_shape=None, numel=0, mismatched=0, mismatched_fraction=0.0, max_abs=None,
            max_rel=None, rel_infinite=0, mean_abs=None, cosine=None, worst_index=None, worst_obtained=None,
            worst_expected=None, min_atol=None, min_rtol=None, nonfinite_obtained=0, nonfinite_expected=0,
            first_nonfinite_obtained=None, first_nonfinite_expected=None, per_row_max_abs=None,
            rows_per_entry=1, passed=False,
        )  # fmt: skip
    o = obtained.detach().cpu().to(torch.float64)
    e = expected.detach().cpu().to(torch.float64)
    if shape_mismatch:
        rows = min(o_shape[0], e_shape[0])
        o, e = o[:rows], e[:rows]
    shape = tuple(o.shape)
    o_flat, e_flat = o.reshape(-1), e.reshape(-1)
    o_finite, e_finite = torch.isfinite(o_flat), torch.isfinite(e_flat)
    pair_finite = o_finite & e_finite
    n_finite = int(pair_finite.sum())
    err = torch.where(pair_finite, (o_flat - e_flat).abs(), 0.0)
    e_abs = torch.where(pair_finite, e_flat.abs(), 0.0)

    def mismatches(atol: float, rtol: float) -> int:
        return int((~pair_finite | (err > atol + rtol * e_abs)).sum())

    mismatched = mismatches(tol.atol, tol.rtol)
    numel = o_flat.numel()
    nonzero_e = pair_finite & (e_abs > 0)
    rel_infinite = int((pair_finite & (e_abs == 0) & (err > 0)).sum())
    metrics: dict[str, Any] = dict.fromkeys(
        ("max_abs", "max_rel", "mean_abs", "cosine", "worst_index", "worst_obtained", "worst_expected")
    )
    if n_finite:
        worst = int(err.argmax())
        metrics = {
            "max_abs": float(err[worst]),
            "max_rel": float((err[nonzero_e] / e_abs[nonzero_e]).max()) if bool(nonzero_e.any()) else None,
            "mean_abs": float(err.sum()) / n_finite,
            "cosine": _cosine(o_flat[pair_finite], e_flat[pair_finite]),
            "worst_index": _index(worst, shape),
            "worst_obtained": float(o_flat[worst]),
            "worst_expected": float(e_flat[worst]),
        }
    min_atol = min_rtol = None
    if n_finite == numel:
        min_atol = _smallest_passing(
            float((err - tol.rtol * e_abs).max()) if numel else 0.0, lambda a: mismatches(a, tol.rtol) == 0
        )
        over = err > tol.atol
        if not bool((over & (e_abs == 0)).any()):
            need = float(((err[over] - tol.atol) / e_abs[over]).max()) if bool(over.any()) else 0.0
            min_rtol = _smallest_passing(need, lambda r: mismatches(tol.atol, r) == 0)
    per_row, rows_per_entry = (
        _per_row(err.reshape(shape), pair_finite.reshape(shape)) if len(shape) == 2 else (None, 1)
    )
    return NumericDiff(
        **header,
        compared_shape=shape,
        numel=numel,
        mismatched=mismatched,
        mismatched_fraction=mismatched / numel if numel else 0.0,
        rel_infinite=rel_infinite,
        **metrics,
        min_atol=min_atol,
        min_rtol=min_rtol,
        nonfinite_obtained=int((~o_finite).sum()),
        nonfinite_expected=int((~e_finite).sum()),
        first_nonfinite_obtained=_first_false(o_finite, shape),
        first_nonfinite_expected=_first_false(e_finite, shape),
        per_row_max_abs=per_row,
        rows_per_entry=rows_per_entry,
        passed=not shape_mismatch and mismatched == 0,
    )


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The first name, in the mapping's order, whose tensor holds a NaN or an infinity."""
    return next((name for name, value in tensors.items() if not bool(torch.isfinite(value).all())), None)
