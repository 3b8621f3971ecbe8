"""The schedule stage: the sampler's noise levels and the time value each step feeds the DiT.

Compared: sigmas and the DiT's time input, in float64. Stored as `schedule.sigmas` (N+1) and
`schedule.model_t` (N), both float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from parity.compare.metrics import MetricRow, numeric_row
from parity.compare.numeric import NumericDiff, compare_numeric
from parity.compare.records import Real, Record
from parity.compare.tolerances import Evidence, StageTolerance, Tolerance
from parity.models.context import DTYPES, Context
from parity.stages.base import Page, Records, Stage, StageCheck, TensorRule

# Schedules are float32 arithmetic on values in [0, 1] (one ulp <= 6e-8) recorded as float64;
# 1e-6 is ~16 ulps, far below the smallest real schedule difference (a bf16 cast: >= 1e-3). The
# same in every dtype: the schedule is computed before the model's dtype comes in.
TOLERANCE = StageTolerance(Tolerance(atol=1e-6, rtol=0.0), Evidence(6e-8, 16.0, "one float32 ulp at 1.0 (2**-24)"))
TOLERANCES = dict.fromkeys(DTYPES, TOLERANCE)


@dataclass(frozen=True)
class Schedule:
    """The sampler's noise levels and the time value each step feeds the DiT.

    `sigmas` is float64 (N+1,), ending with the terminal 0. `model_t` is float64 (N,): the value
    handed to the DiT's time embedder before its x1000 scale (`1 - sigma` for Z-Image), after any
    cast the implementation makes on the way.
    """

    sigmas: torch.Tensor
    model_t: torch.Tensor


# What an adapter computed is written as it came, NaN and infinities included.
_RAW = {"raw": True}


@dataclass(frozen=True)
class ScheduleDetail(Record):
    sigmas: NumericDiff
    model_t: NumericDiff
    obtained_sigmas: tuple[Real, ...] = field(metadata=_RAW)
    expected_sigmas: tuple[Real, ...] = field(metadata=_RAW)
    obtained_model_t: tuple[Real, ...] = field(metadata=_RAW)
    expected_model_t: tuple[Real, ...] = field(metadata=_RAW)


class ScheduleStage(Stage):
    name = "schedule"
    path = "sampling"
    records = ("schedule",)
    detail = ScheduleDetail
    tolerances = TOLERANCES
    tensors: ClassVar[Mapping[str, TensorRule]] = {
        "schedule.sigmas": TensorRule(torch.float64, 1, "schedule.model_t"),
        "schedule.model_t": TensorRule(torch.float64, 1, "schedule.sigmas"),
    }
    partial = "stages/schedule.html.j2"
    drawn = frozenset({"obtained_sigmas", "expected_sigmas", "obtained_model_t", "expected_model_t"})

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        return {"schedule": adapter.schedule(case)}

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        schedule = outputs.get("schedule")
        if schedule is None:
            return {}, {}
        return {
            "schedule.sigmas": schedule.sigmas.to(torch.float64).contiguous(),
            "schedule.model_t": schedule.model_t.to(torch.float64).contiguous(),
        }, {}

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        if "schedule.sigmas" not in tensors:
            return {}
        return {"schedule": Schedule(tensors["schedule.sigmas"], tensors["schedule.model_t"])}

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        if "schedule.sigmas" in tensors:
            steps, sigmas = tensors["schedule.model_t"].shape[0], tensors["schedule.sigmas"].shape[0]
            if sigmas != steps + 1:  # the terminal sigma
                return f"schedule.sigmas is {sigmas} long where schedule.model_t ({steps}) needs {steps + 1}"
        return None

    def check(self, obtained: Schedule, expected: Schedule, context: Context, dtype: str) -> StageCheck:
        tolerance = self.tolerance(dtype).tolerance
        sigmas = compare_numeric(obtained.sigmas, expected.sigmas, tolerance)
        model_t = compare_numeric(obtained.model_t, expected.model_t, tolerance)
        parts = [f"sigmas: {sigmas.summary()}"]
        if not model_t.passed or sigmas.passed:
            parts.append(f"model_t: {model_t.summary()}")
        detail = ScheduleDetail(
            sigmas, model_t,
            tuple(obtained.sigmas.tolist()), tuple(expected.sigmas.tolist()),
            tuple(obtained.model_t.tolist()), tuple(expected.model_t.tolist()),
        )
        return StageCheck(sigmas.passed and model_t.passed, "; ".join(parts), detail)

    def metric_rows(self, detail: ScheduleDetail) -> list[MetricRow]:
        return [numeric_row("schedule: sigmas", detail.sigmas), numeric_row("schedule: model_t", detail.model_t)]

    def view(self, rows: list[tuple[str, str, ScheduleDetail]], page: Page) -> dict[str, Any] | None:
        from parity.drawing import plots  # matplotlib costs every command 0.4 s to import; only a report draws

        rows = [r for r in rows if r[2].expected_sigmas]
        if not rows:
            return None
        expected = rows[0][2].expected_sigmas
        return {"plot": plots.schedule_figure(expected, [(a, d.obtained_sigmas) for a, _, d in rows], page.adapters)}


SCHEDULE = ScheduleStage()
