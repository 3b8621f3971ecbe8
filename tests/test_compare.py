"""Comparators: the numbers they report are the true ones, and the records stay small and plain."""

import json
import math
import random
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity.compare.ids import compare_ids
from parity.compare.numeric import MAX_PER_ROW, compare_numeric
from parity.compare.records import common_prefix, common_suffix
from parity.compare.text import compare_text, visible
from parity.compare.tolerances import Tolerance

VOCAB = {
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151667: "<think>",
    151668: "</think>",
    77091: "assistant",
    872: "user",
    271: "\n\n",
    198: "\n",
    32: "A",
}


def decode(token_id: int) -> str:
    return VOCAB.get(token_id, f"<{token_id}>")


def plain_json(record) -> dict:
    """The record's JSON, proven plain: no NaN/Inf and nothing json cannot write."""
    data = record.to_json()
    json.dumps(data, allow_nan=False)
    return data


TOL = Tolerance(atol=1e-5, rtol=1e-5)

# float32 values as the pipelines produce them, with many exact zeros to provoke 0/0.
values = st.one_of(st.just(0.0), st.floats(-1e3, 1e3, width=32, allow_subnormal=False))
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6)
tolerances = st.builds(
    Tolerance, atol=st.sampled_from([0.0, 1e-6, 1e-3, 0.5]), rtol=st.sampled_from([0.0, 1e-5, 1e-2, 1.0])
)


# torch's first call of an op can take far longer than hypothesis's default 200 ms deadline.
torch_settings = settings(deadline=None)


@st.composite
def tensor_pairs(draw):
    shape = draw(shapes)
    obtained = draw(hnp.arrays(np.float32, shape, elements=values))
    expected = draw(hnp.arrays(np.float32, shape, elements=values))
    return torch.from_numpy(obtained), torch.from_numpy(expected)


# --- numeric ---------------------------------------------------------------------------------------


@torch_settings
@given(pair=tensor_pairs(), tol=tolerances)
def test_a_tensor_compared_with_itself_passes_with_zero_error(pair, tol):
    x, _ = pair
    diff = compare_numeric(x, x.clone(), tol)
    assert diff.passed and diff.mismatched == 0 and not diff.shape_mismatch
    assert diff.min_atol == 0.0 and diff.min_rtol == 0.0
    if x.numel():
        assert diff.max_abs == 0.0 and diff.mean_abs == 0.0
        assert diff.max_rel in (0.0, None)
        assert diff.cosine == pytest.approx(1.0, abs=1e-12)
    plain_json(diff)


@torch_settings
@given(pair=tensor_pairs(), tol=tolerances)
def test_max_abs_error_is_the_independently_computed_value(pair, tol):
    obtained, expected = pair
    diff = compare_numeric(obtained, expected, tol)
    assert diff.numel == obtained.numel()
    if obtained.numel():
        err = np.abs(obtained.numpy().astype(np.float64) - expected.numpy().astype(np.float64))
        assert diff.max_abs == err.max()
        assert diff.mean_abs == pytest.approx(err.mean())
        assert diff.worst_index is not None
        assert abs(diff.worst_obtained - diff.worst_expected) == diff.max_abs
        assert diff.mismatched == int(
            (err > tol.atol + tol.rtol * np.abs(expected.numpy().astype(np.float64))).sum()
        )


@torch_settings
@given(pair=tensor_pairs(), tol=tolerances)
def test_the_reported_minimum_atol_passes_and_anything_clearly_smaller_fails(pair, tol):
    obtained, expected = pair
    diff = compare_numeric(obtained, expected, tol)
    assert compare_numeric(obtained, expected, Tolerance(diff.min_atol, tol.rtol)).passed
    if diff.min_atol > 0:
        # "Clearly" smaller: a step above float64 rounding of atol + rtol*|e|.
        scale = diff.min_atol + tol.rtol * float(expected.abs().max())
        smaller = max(0.0, diff.min_atol - 1e-9 * scale)
        if smaller < diff.min_atol:
            assert not compare_numeric(obtained, expected, Tolerance(smaller, tol.rtol)).passed


@torch_settings
@given(pair=tensor_pairs(), tol=tolerances)
def test_the_reported_minimum_rtol_passes_and_anything_clearly_smaller_fails(pair, tol):
    obtained, expected = pair
    diff = compare_numeric(obtained, expected, tol)
    if diff.min_rtol is None:
        # Only an element that misses atol where expected is 0 makes every rtol fail.
        err = (obtained.double() - expected.double()).abs()
        assert bool(((err > tol.atol) & (expected == 0)).any())
        return
    assert compare_numeric(obtained, expected, Tolerance(tol.atol, diff.min_rtol)).passed
    if diff.min_rtol > 0:
        smaller = diff.min_rtol * (1 - 1e-9)
        assert not compare_numeric(obtained, expected, Tolerance(tol.atol, smaller)).passed


@torch_settings
@given(shape=shapes, data=st.data())
def test_zero_over_zero_never_produces_nan(shape, data):
    sparse = st.sampled_from([0.0, 0.0, 0.0, 1.0, -2.5])
    obtained = torch.from_numpy(data.draw(hnp.arrays(np.float32, shape, elements=sparse)))
    expected = torch.from_numpy(data.draw(hnp.arrays(np.float32, shape, elements=sparse)))
    diff = compare_numeric(obtained, expected, TOL)
    for value in (diff.max_abs, diff.max_rel, diff.mean_abs, diff.cosine, diff.min_atol):
        assert value is None or math.isfinite(value)
    both_zero = (obtained == 0) & (expected == 0)
    assert diff.rel_infinite == int(((expected == 0) & (obtained != 0)).sum())
    if obtained.numel() and bool(both_zero.all()):
        assert diff.passed and diff.max_rel is None and diff.cosine == 1.0
    plain_json(diff)


def test_cosine_is_the_flattened_cosine_and_zero_against_an_all_zero_side():
    obtained = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    expected = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert compare_numeric(obtained, expected, TOL).cosine == pytest.approx(1 / math.sqrt(2))
    assert compare_numeric(obtained, torch.zeros(2, 2), TOL).cosine == 0.0


def test_a_longer_sequence_is_compared_over_the_common_rows_and_fails():
    expected = torch.randn(9, 8, generator=torch.Generator().manual_seed(0))
    obtained = torch.cat([expected, torch.randn(4, 8)])
    diff = compare_numeric(obtained, expected, TOL)
    assert diff.shape_mismatch and not diff.passed
    assert diff.compared_shape == (9, 8) and diff.numel == 72
    assert diff.max_abs == 0.0 and diff.mismatched == 0
    assert diff.per_row_max_abs == (0.0,) * 9
    assert "(13, 8) vs expected (9, 8), compared the first 9 rows" in diff.summary()
    assert compare_numeric(expected, obtained, TOL).compared_shape == (9, 8)


@pytest.mark.parametrize(
    ("obtained_shape", "expected_shape"), [((9, 4), (9, 8)), ((9, 8), (9, 8, 1)), ((), (1,))]
)
def test_a_shape_difference_beyond_dim_0_is_reported_and_not_compared(obtained_shape, expected_shape):
    diff = compare_numeric(torch.zeros(obtained_shape), torch.zeros(expected_shape), TOL)
    assert diff.shape_mismatch and not diff.passed and diff.compared_shape is None
    assert diff.numel == 0 and diff.max_abs is None
    assert diff.summary() == f"FAIL: shape {obtained_shape} vs expected {expected_shape}, not compared"
    plain_json(diff)


@torch_settings
@given(pair=tensor_pairs(), bad=st.sampled_from([math.nan, math.inf, -math.inf]), data=st.data())
def test_a_non_finite_value_in_obtained_fails_and_is_located(pair, bad, data):
    _, expected = pair
    if not expected.numel():
        return
    flat = data.draw(st.integers(0, expected.numel() - 1))
    obtained = expected.clone().reshape(-1)
    obtained[flat] = bad
    obtained = obtained.reshape(expected.shape)
    index = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
    diff = compare_numeric(obtained, expected, Tolerance(atol=1e30, rtol=1e30))
    assert not diff.passed and diff.mismatched == 1
    assert diff.nonfinite_obtained == 1 and diff.first_nonfinite_obtained == index
    assert diff.min_atol is None and diff.min_rtol is None
    assert f"obtained has 1 non-finite value (first at {index})" in diff.summary()
    plain_json(diff)


def test_matching_infinities_still_fail():
    x = torch.tensor([1.0, math.inf])
    diff = compare_numeric(x, x.clone(), TOL)
    assert not diff.passed and diff.nonfinite_obtained == diff.nonfinite_expected == 1
    assert diff.first_nonfinite_expected == (1,) and diff.max_abs == 0.0


def test_per_row_errors_are_capped_without_hiding_the_worst_row():
    expected = torch.zeros(10_000, 3)
    obtained = expected.clone()
    obtained[7777, 1] = 0.5
    obtained[42, 0] = math.nan
    diff = compare_numeric(obtained, expected, TOL)
    assert len(diff.per_row_max_abs) <= MAX_PER_ROW and diff.rows_per_entry == 3
    assert diff.per_row_max_abs[7777 // 3] == 0.5 and diff.per_row_max_abs[42 // 3] is None
    assert max(v for v in diff.per_row_max_abs if v is not None) == diff.max_abs
    assert compare_numeric(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2), TOL).per_row_max_abs is None


def test_mixed_dtypes_are_compared_in_float64_and_recorded():
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    diff = compare_numeric(expected.to(torch.bfloat16), expected, TOL)
    assert diff.passed and (diff.obtained_dtype, diff.expected_dtype) == ("bfloat16", "float64")


def test_negative_or_nan_tolerances_are_rejected():
    for bad in (Tolerance(-1.0, 0.0), Tolerance(0.0, math.nan)):
        with pytest.raises(ValueError, match="tolerances must be finite"):
            compare_numeric(torch.zeros(1), torch.zeros(1), bad)


def test_numeric_summary_reads_as_one_line():
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    obtained = expected.clone()
    obtained[1, 0] = 3.5
    summary = compare_numeric(obtained, expected, TOL).summary()
    assert summary.startswith("FAIL: 1/4 (25.00%) outside atol=1e-05 rtol=1e-05; max abs 5.000e-01 at (1, 0)")
    assert "would pass with atol>=0.5" in summary and "\n" not in summary
    assert compare_numeric(expected, expected, TOL).summary().startswith("pass: 4 elements within")


# --- token ids -------------------------------------------------------------------------------------

CHAT = [151644, 872, 198, 32, 151645, 198, 151644, 77091, 198]
THINK = [151667, 271, 151668, 271]


def test_an_appended_think_block_is_one_insert_span_with_exactly_its_ids():
    diff = compare_ids(CHAT + THINK, CHAT, decode)
    assert not diff.equal and diff.first_diff == 9 and not diff.capped
    (span,) = diff.spans
    assert span.op == "insert" and span.obtained_ids == tuple(THINK) and span.expected_ids == ()
    assert (span.obtained_start, span.obtained_end, span.expected_start, span.expected_end) == (9, 13, 9, 9)
    assert span.obtained_tokens == ("<think>", "\n\n", "</think>", "\n\n")
    assert diff.summary() == (
        "differs at position 9: obtained has 4 extra tokens [151667, 271, 151668, 271] "
        "('<think>', '\\n\\n', '</think>', '\\n\\n')"
    )
    assert plain_json(diff)["spans"][0]["obtained_ids"] == THINK


def test_a_missing_think_block_is_one_delete_span():
    (span,) = compare_ids(CHAT, CHAT + THINK, decode).spans
    assert span.op == "delete" and span.expected_ids == tuple(THINK) and span.obtained_ids == ()
    assert "obtained lacks 4 tokens [151667" in compare_ids(CHAT, CHAT + THINK, decode).summary()


def test_a_replaced_token_is_one_replace_span_with_both_sides():
    obtained = [*CHAT[:3], 33, *CHAT[4:]]
    diff = compare_ids(obtained, CHAT, decode)
    (span,) = diff.spans
    assert span.op == "replace" and span.obtained_ids == (33,) and span.expected_ids == (32,)
    assert span.expected_tokens == ("A",) and span.obtained_tokens == ("<33>",)
    assert diff.summary() == (
        "differs at position 3: obtained has 1 token [33] ('<33>') where expected has 1 token [32] ('A')"
    )


def test_equal_ids_and_a_repeated_tail_that_overlaps_the_prefix():
    assert compare_ids(CHAT, list(CHAT), decode).summary() == "ids equal (9 tokens)"
    (span,) = compare_ids([5, 6, 6], [5, 6], decode).spans
    assert (span.op, span.obtained_start, span.obtained_end, span.obtained_ids) == ("insert", 2, 3, (6,))


def apply_spans(expected: list[int], obtained: list[int], spans) -> list[int]:
    """Rebuild obtained from expected and the spans (ids outside spans come from expected)."""
    out, at = [], 0
    for span in spans:
        out += expected[at : span.expected_start]
        out += obtained[span.obtained_start : span.obtained_end]
        at = span.expected_end
    return out + expected[at:]


@given(
    expected=st.lists(st.integers(0, 4), max_size=40),
    obtained=st.lists(st.integers(0, 4), max_size=40),
)
def test_spans_are_a_complete_alignment(expected, obtained):
    diff = compare_ids(obtained, expected, decode)
    assert diff.equal == (obtained == expected)
    assert not diff.capped
    assert apply_spans(expected, obtained, diff.spans) == obtained
    if not diff.equal:
        assert diff.first_diff == diff.spans[0].expected_start == diff.spans[0].obtained_start
        assert obtained[: diff.first_diff] == expected[: diff.first_diff]
    plain_json(diff)


def test_two_long_lists_differing_in_the_middle_compare_fast():
    rng = random.Random(0)
    expected = [rng.randrange(151_000) for _ in range(100_000)]
    obtained = [*expected[:50_000], 7, 8, 9, *expected[50_010:]]
    start = time.perf_counter()
    diff = compare_ids(obtained, expected, decode)
    assert time.perf_counter() - start < 1.0
    (span,) = diff.spans
    assert (span.op, span.expected_start, span.expected_end, span.obtained_ids) == (
        "replace", 50_000, 50_010, (7, 8, 9),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("obtained", "expected"),
    [
        ([1] * 200_000, [1, 2] * 100_000),  # one repeated id against a two-id run: cubic for difflib
        ([1, 2, 3] * 60_000, [1, 2] * 90_000),
        ([random.Random(1).randrange(151_000) for _ in range(100_000)], list(range(100_000))),
    ],
    ids=["repeated", "runs", "unrelated"],
)
def test_pathological_long_lists_stay_bounded_and_say_they_were_capped(obtained, expected):
    start = time.perf_counter()
    diff = compare_ids(obtained, expected, decode)
    assert time.perf_counter() - start < 1.0
    assert diff.capped and "alignment capped" in diff.summary()
    assert 0 < len(diff.spans) <= 50
    assert all(len(s.obtained_ids) <= 64 and len(s.expected_ids) <= 64 for s in diff.spans)
    assert len(json.dumps(plain_json(diff))) < 200_000


def test_a_long_insertion_is_one_span_with_true_bounds_and_truncated_ids():
    diff = compare_ids(CHAT + [271] * 100_000, CHAT, decode)
    (span,) = diff.spans
    assert not diff.capped and span.truncated
    assert (span.obtained_start, span.obtained_end, len(span.obtained_ids)) == (9, 100_009, 64)
    shown = "obtained has 100000 extra tokens [271, 271, 271, 271, 271, 271, 271, 271, … 99992 more]"
    assert shown in diff.summary()


# --- text --------------------------------------------------------------------------------------------


def test_text_diff_finds_the_first_differing_character_with_line_and_column():
    expected = "<|im_start|>user\nhi\n<|im_end|>\n"
    obtained = "<|im_start|>user\nhi \n<|im_end|>\n"
    diff = compare_text(obtained, expected)
    assert not diff.equal and diff.first_diff == 19 and (diff.line, diff.column) == (2, 3)
    assert (diff.obtained_len, diff.expected_len) == (32, 31)
    assert diff.obtained_context == obtained[diff.context_start : diff.context_start + 50]
    assert diff.summary() == (
        "text differs at char 19 (line 2, col 3): obtained '<|im_start|>user↵hi·↵<|im_end|>↵' "
        "vs expected '<|im_start|>user↵hi↵<|im_end|>↵' (lengths 32 vs 31)"
    )
    plain_json(diff)


def test_text_diff_when_one_side_is_a_prefix_and_when_equal():
    diff = compare_text("abc", "abcdef")
    assert diff.first_diff == 3 and diff.obtained_context == "abc" and diff.expected_context == "abcdef"
    same = compare_text("x\ny", "x\ny")
    assert same.equal and same.first_diff is None and same.summary() == "text equal (3 chars)"


def test_text_context_is_a_window_marked_with_ellipses():
    expected = "a" * 100 + "b" + "c" * 100
    diff = compare_text(expected.replace("b", "B"), expected)
    assert diff.first_diff == 100 and diff.context_start == 80
    assert diff.expected_context == "a" * 20 + "b" + "c" * 29
    assert f"obtained '…{'a' * 20}B{'c' * 29}…'" in diff.summary()


@given(obtained=st.text(max_size=30), expected=st.text(max_size=30))
def test_text_first_diff_is_the_common_prefix_length(obtained, expected):
    diff = compare_text(obtained, expected)
    assert diff.equal == (obtained == expected)
    if not diff.equal:
        i = diff.first_diff
        assert obtained[:i] == expected[:i] and (obtained[i : i + 1] != expected[i : i + 1])
    plain_json(diff)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\nb", "a↵\nb"),
        ("a\tb", "a→b"),
        ("end  \nnext ", "end··↵\nnext·"),
        ("in the middle", "in the middle"),
        ("crlf\r\n", "crlf␍↵\n"),
        ("nbsp\u00a0zwsp\u200bbom\ufeffnul\x00", "nbsp⟨U+00A0⟩zwsp⟨U+200B⟩bom⟨U+FEFF⟩nul⟨U+0000⟩"),
    ],
)
def test_visible_shows_whitespace_and_invisible_characters(raw, shown):
    assert visible(raw) == shown
    assert visible(raw, newlines=False) == shown.replace("↵\n", "↵")


@settings(max_examples=50)
@given(st.text())
def test_visible_keeps_the_line_structure(text):
    assert visible(text).count("\n") == text.count("\n")
    assert "\n" not in visible(text, newlines=False)


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.integers(0, 2), max_size=8), b=st.lists(st.integers(0, 2), max_size=8))
def test_common_prefix_and_suffix_are_the_longest_that_do_not_overlap(a, b):
    prefix = common_prefix(a, b)
    suffix = common_suffix(a, b, prefix)
    assert a[:prefix] == b[:prefix] and prefix + suffix <= min(len(a), len(b))
    assert a[len(a) - suffix :] == b[len(b) - suffix :]
    assert prefix == min(len(a), len(b)) or a[prefix] != b[prefix]
    assert prefix + suffix == min(len(a), len(b)) or a[-1 - suffix] != b[-1 - suffix]
