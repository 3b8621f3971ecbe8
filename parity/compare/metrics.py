"""The numeric metrics the report shows, one entry each: adding one here adds its column everywhere.

A metric reads one value from a `NumericDiff` and says how to print it. Errors come before the
tolerance column, what would have passed after it. A stage turns each numeric comparison of its
detail into a `MetricRow` (most through `numeric_row`); the report's metric table is those rows
under these columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from parity.compare.numeric import NumericDiff
from parity.compare.tolerances import Tolerance


def number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return "0" if value == 0 else f"{value:.3g}"


def cosine(value: float | None) -> str:
    # Near-identical tensors all print as 0.99999999; the distance from 1 is what tells them apart.
    if value is None:
        return "–"
    if value == 1.0:
        return "1"
    return f"1−{1 - value:.1e}" if value >= 0.999 else f"{value:.6f}"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    of: Callable[[NumericDiff], float | None]
    shown: Callable[[float | None], str] = number
    # After the tolerance column: the smallest tolerance that would have passed.
    needed: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("max_abs", "max abs", lambda d: d.max_abs),
    Metric("max_rel", "max rel", lambda d: d.max_rel),
    Metric("cosine", "cosine", lambda d: d.cosine, cosine),
    Metric("min_atol", "min atol to pass", lambda d: d.min_atol, needed=True),
    Metric("min_rtol", "min rtol to pass", lambda d: d.min_rtol, needed=True),
)


@dataclass(frozen=True)
class MetricRow:
    """One numeric comparison: what was compared, its shape and misses, its metrics by key (a
    missing key prints "–"; `text` overrides a metric's printed value)."""

    compared: str
    shape: str
    outside: str
    tolerance: Tolerance | None
    values: dict[str, float | None] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)

    def cell(self, metric: Metric) -> str:
        return self.text.get(metric.key) or metric.shown(self.values.get(metric.key))


def numeric_row(compared: str, diff: NumericDiff) -> MetricRow:
    if diff.shape_mismatch:
        shape = f"{tuple(diff.obtained_shape)} vs {tuple(diff.expected_shape)}"
    else:
        shape = str(tuple(diff.compared_shape)) if diff.compared_shape is not None else "–"
    outside = f"{diff.mismatched}/{diff.numel}" if diff.compared_shape is not None else "not compared"
    return MetricRow(compared, shape, outside, diff.tolerance, {m.key: m.of(diff) for m in METRICS})
