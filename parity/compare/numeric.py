"""Numeric comparison of tensors under a tolerance, with the measurements that say by how much,
and the error heatmap of two 2-D tensors.

Records stay small whatever the input size: per-row errors are capped at MAX_PER_ROW entries, a
heatmap at HEATMAP_MAX cells a side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from parity.compare.records import Count, Malformed, Positive, Record, count
from parity.compare.tolerances import Tolerance

MAX_PER_ROW = 4096
HEATMAP_MAX = 64  # the |obtained - expected| heatmap is max-pooled to at most this many rows and columns


@dataclass(frozen=True)
class NumericDiff(Record):
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
    obtained_shape: tuple[Count, ...]
    expected_shape: tuple[Count, ...]
    obtained_dtype: str
    expected_dtype: str
    shape_mismatch: bool
    compared_shape: tuple[Count, ...] | None
    numel: Count
    mismatched: Count
    mismatched_fraction: float
    max_abs: float | None
    max_rel: float | None
    rel_infinite: Count
    mean_abs: float | None
    cosine: float | None
    worst_index: tuple[int, ...] | None
    worst_obtained: float | None
    worst_expected: float | None
    min_atol: float | None
    min_rtol: float | None
    nonfinite_obtained: Count
    nonfinite_expected: Count
    first_nonfinite_obtained: tuple[int, ...] | None
    first_nonfinite_expected: tuple[int, ...] | None
    per_row_max_abs: tuple[float | None, ...] | None
    rows_per_entry: Positive
    passed: bool

    def summary(self) -> str:
        tol = f"atol={self.tolerance.atol:.3g} rtol={self.tolerance.rtol:.3g}"
        shapes = f"shape {self.obtained_shape} vs expected {self.expected_shape}"
        if self.compared_shape is None:
            return f"FAIL: {shapes}, not compared"
        if self.passed:
            head = f"pass: {count(self.numel, 'element')} within {tol}"
            if not self.numel:
                return head
            return f"{head}; max abs {self.max_abs:.3e}, {self._rel_text()}, {_cosine_text(self.cosine)}"
        parts = []
        if self.shape_mismatch:
            parts.append(f"{shapes}, compared the first {self.compared_shape[0]} rows")
        for side, n, first in (
            ("obtained", self.nonfinite_obtained, self.first_nonfinite_obtained),
            ("expected", self.nonfinite_expected, self.first_nonfinite_expected),
        ):
            if n:
                parts.append(f"{side} has {count(n, 'non-finite value')} (first at {first})")
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


@dataclass(frozen=True)
class Heatmap(Record):
    """|obtained - expected| over the common rows, max-pooled into cells (None: a non-finite pair)."""

    rows: Count
    cols: Count
    rows_per_cell: Positive
    cols_per_cell: Positive
    values: tuple[tuple[float | None, ...], ...]

    def refuse_inconsistent(self, where: str) -> None:
        if len({len(row) for row in self.values}) > 1:
            raise Malformed(f"{where}.values", "rows of different lengths (a heatmap is a rectangle)")


def diff_heatmap(obtained: torch.Tensor, expected: torch.Tensor) -> Heatmap | None:
    """|obtained - expected| over the common rows, max-pooled to at most HEATMAP_MAX x HEATMAP_MAX
    cells, values to 3 significant digits. None when the two sides cannot be compared or agree exactly.
    """
    if obtained.dim() != 2 or obtained.shape[1:] != expected.shape[1:]:
        return None
    rows = min(obtained.shape[0], expected.shape[0])
    cols = obtained.shape[1]
    if rows == 0 or cols == 0:
        return None
    err = (obtained[:rows].detach().cpu().double() - expected[:rows].detach().cpu().double()).abs()
    err = torch.where(torch.isfinite(err), err, torch.nan)
    if bool((err == 0).all()):
        return None
    row_step, col_step = math.ceil(rows / HEATMAP_MAX), math.ceil(cols / HEATMAP_MAX)
    # |diff| >= 0, so zero padding never wins the max; NaN (a non-finite pair) propagates.
    padded = torch.nn.functional.pad(err, (0, (-cols) % col_step, 0, (-rows) % row_step), value=0.0)
    r, c = padded.shape[0] // row_step, padded.shape[1] // col_step
    pooled = padded.reshape(r, row_step, c, col_step).amax(dim=(1, 3))
    values = tuple(tuple(float(f"{v:.3g}") if math.isfinite(v) else None for v in row) for row in pooled.tolist())
    return Heatmap(rows, cols, row_step, col_step, values)
