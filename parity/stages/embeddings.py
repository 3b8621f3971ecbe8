"""The embeddings stage: the text encoder's `hidden_states[-2]` as the implementation hands it to the DiT.

Compared: the masked-in rows, numerically (dtype-aware tolerance), and the number of rows handed
to the DiT, since handing padding on changes what the DiT attends to. With guidance the negative
prompt is encoded too (free-running), and rides along as the `negative` record for the denoise
stage. Stored as `embeddings.hidden` (2-D, any float) with `embeddings.mask` (bool), the negative
prompt's as `negative.*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from parity.compare.metrics import MetricRow, numeric_row
from parity.compare.numeric import Heatmap, NumericDiff, compare_numeric, diff_heatmap
from parity.compare.records import Count, optional
from parity.compare.tolerances import PADDING_PROBE, Evidence, StageTolerance, Tolerance
from parity.models.context import Context
from parity.stages.base import Page, Records, Stage, StageCheck, TensorRule

# Evidence: the tiny reference text encoder (CPU, torch 2.13) encoding the same ids unpadded and
# right-padded to 512 with a mask, lengths 5-511: the largest legitimate difference two correct
# implementations of the text path show (sdpa with and without a mask).
TOLERANCES = {
    # Floor 5.4e-7 on values up to 2.7; 1e-5 leaves ~18x headroom and is still far below any
    # real divergence (a shifted token or a wrong layer moves rows by O(1)).
    "fp32": StageTolerance(Tolerance(atol=1e-5, rtol=1e-5), Evidence(5.4e-7, 18.0, PADDING_PROBE)),
    # Floor 0.0156 = one bf16 ulp at magnitude 2-4; allow four ulps there.
    "bf16": StageTolerance(Tolerance(atol=0.0625, rtol=1.6e-2), Evidence(0.015625, 4.0, PADDING_PROBE)),
}


@dataclass(frozen=True)
class Embeddings:
    """Text-encoder `hidden_states[-2]` as the implementation hands it to the DiT.

    `hidden` is (L, D). `mask` is (L,) bool: which rows are real tokens. An implementation that
    gathers masked-in rows hands an all-true mask; one that keeps padding hands zeros for it.
    """

    hidden: torch.Tensor
    mask: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """The masked-in rows only: what padding filtering keeps."""
        return self.hidden[self.mask]


@dataclass(frozen=True)
class EmbeddingsDetail(NumericDiff):
    """The valid rows' comparison, the rows each side hands the DiT, and where values lie outside
    the tolerance, their error heatmap."""

    obtained_rows_handed: Count
    expected_rows_handed: Count
    tolerance_evidence: StageTolerance
    diff_heatmap: Heatmap | None = optional()


def _pair(key: str) -> dict[str, TensorRule]:
    return {
        f"{key}.hidden": TensorRule(None, 2, f"{key}.mask"), f"{key}.mask": TensorRule(torch.bool, 1, f"{key}.hidden")
    }


class EmbeddingsStage(Stage):
    name = "embeddings"
    path = "text"
    model = "text_encoder"
    inputs = ("tokens",)
    records = ("embeddings", "negative")
    detail = EmbeddingsDetail
    tolerances = TOLERANCES
    tensors: ClassVar[Mapping[str, TensorRule]] = {**_pair("embeddings"), **_pair("negative")}
    partial = "stages/embeddings.html.j2"
    drawn = frozenset({"diff_heatmap", "per_row_max_abs"})

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        out = {"embeddings": adapter.embeddings(case, given.get("tokens"))}
        # Teacher-forced, the denoise stage reads the reference's negative; free-running, the adapter's own.
        if case.cfg > 1 and feed is None:
            negative = case.negative()
            out["negative"] = adapter.embeddings(negative, adapter.tokens(negative, adapter.template(negative)))
        return out

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for key in self.records:
            rows = outputs.get(key)
            if rows is not None:
                tensors[f"{key}.hidden"] = rows.hidden.contiguous()
                tensors[f"{key}.mask"] = rows.mask.to(torch.bool).contiguous()
        return tensors, {}

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        present = [k for k in self.records if f"{k}.hidden" in tensors]
        return {k: Embeddings(tensors[f"{k}.hidden"], tensors[f"{k}.mask"]) for k in present}

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        for key in self.records:
            if f"{key}.hidden" in tensors:
                rows, mask = tensors[f"{key}.hidden"].shape[0], tensors[f"{key}.mask"].shape[0]
                if mask != rows:
                    return f"{key}.mask is {mask} long where {key}.hidden ({rows}) needs {rows}"
        return None

    def check(self, obtained: Embeddings, expected: Embeddings, context: Context, dtype: str) -> StageCheck:
        tolerance = self.tolerance(dtype)
        diff = compare_numeric(obtained.valid, expected.valid, tolerance.tolerance)
        ours, theirs = obtained.hidden.shape[0], expected.hidden.shape[0]
        summary, passed = diff.summary(), diff.passed
        if ours != theirs and not diff.shape_mismatch:
            passed = False
            summary = (
                f"hands {ours} rows to the DiT ({ours - obtained.valid.shape[0]} masked) where the reference "
                f"hands {theirs}; valid rows: {summary}"
            )
        heatmap = diff_heatmap(obtained.valid, expected.valid) if diff.mismatched else None
        return StageCheck(passed, summary, EmbeddingsDetail(**vars(diff), obtained_rows_handed=ours,
                                                            expected_rows_handed=theirs,
                                                            tolerance_evidence=tolerance, diff_heatmap=heatmap))

    def evidence(self, detail: EmbeddingsDetail) -> StageTolerance:
        return detail.tolerance_evidence

    def metric_rows(self, detail: EmbeddingsDetail) -> list[MetricRow]:
        return [numeric_row("embeddings (valid rows)", detail)]

    def view(self, rows: list[tuple[str, str, EmbeddingsDetail]], page: Page) -> dict[str, Any] | None:
        from parity.drawing import plots  # matplotlib costs every command 0.4 s to import; only a report draws

        drawn = [(a, d) for a, _, d in rows if d.diff_heatmap is not None]
        if not drawn:
            return None
        return {"plot": plots.embeddings_figure(drawn, page.adapters), "adapters": [a for a, _ in drawn]}


EMBEDDINGS = EmbeddingsStage()
