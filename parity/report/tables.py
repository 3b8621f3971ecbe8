"""Metric tables for the HTML report (pandas), one per case: every numeric comparison an adapter made.

Columns: max abs and max rel error, cosine similarity, how many elements lie outside the
tolerance, the tolerance, and the smallest atol (at the tolerance's rtol) and smallest rtol (at
its atol) that would have passed. Cells are formatted here and escaped by pandas.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from markupsafe import Markup

COLUMNS = [
    "adapter", "compared", "status", "shape", "outside tol.", "max abs", "max rel", "cosine",
    "tolerance", "min atol to pass", "min rtol to pass",
]

# Pipeline order, then adapter.
ORDER = [
    "embeddings (valid rows)", "schedule: sigmas", "schedule: model_t",
    "denoise: worst step (velocity or latent)", "denoise: final latent",
]


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return "0" if value == 0 else f"{value:.3g}"


def _cosine(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 1.0:
        return "1"
    return f"1−{1 - value:.1e}" if value >= 0.999 else f"{value:.6f}"


def _tolerance(tol: dict[str, Any] | None) -> str:
    return f"atol {tol['atol']:g}, rtol {tol['rtol']:g}" if tol else "–"


def _numeric_row(adapter: str, what: str, status: str, diff: dict[str, Any]) -> dict[str, str]:
    shape = diff.get("compared_shape")
    if diff.get("shape_mismatch"):
        shape_text = f"{tuple(diff['obtained_shape'])} vs {tuple(diff['expected_shape'])}"
    else:
        shape_text = str(tuple(shape)) if shape is not None else "–"
    outside = f"{diff.get('mismatched', 0)}/{diff.get('numel', 0)}" if shape is not None else "not compared"
    return {
        "adapter": adapter,
        "compared": what,
        "status": status,
        "shape": shape_text,
        "outside tol.": outside,
        "max abs": _num(diff.get("max_abs")),
        "max rel": _num(diff.get("max_rel")),
        "cosine": _cosine(diff.get("cosine")),
        "tolerance": _tolerance(diff.get("tolerance")),
        "min atol to pass": _num(diff.get("min_atol")),
        "min rtol to pass": _num(diff.get("min_rtol")),
    }


def _denoise_rows(adapter: str, status: str, detail: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    tol = (detail.get("tolerance_evidence") or {}).get("tolerance")
    steps = [v for key in ("model_out_max_abs", "latents_max_abs") for v in detail.get(key) or []]
    if steps:
        finite = all(v is not None for v in steps)
        worst = max((v for v in steps if v is not None), default=None)
        # Per step the rule is atol + rtol*|e|; with rtol 0 (the denoise tolerances) the smallest
        # passing atol is exactly the worst step's max abs error.
        min_atol = worst if finite and tol and tol.get("rtol") == 0 else None
        first = detail.get("first_divergent_step")
        rows.append({
            "adapter": adapter,
            "compared": "denoise: worst step (velocity or latent)",
            "status": status,
            "shape": f"{detail.get('steps')} steps",
            "outside tol.": f"from step {first}" if first is not None else "none",
            "max abs": _num(worst) if finite else "non-finite",
            "max rel": "–",
            "cosine": "–",
            "tolerance": _tolerance(tol),
            "min atol to pass": _num(min_atol),
            "min rtol to pass": "–",
        })
    if detail.get("final_latent"):
        rows.append(_numeric_row(adapter, "denoise: final latent", status, detail["final_latent"]))
    return rows


def metric_rows(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One row per numeric comparison in `results` (one case's StageResult JSON objects)."""
    rows: list[dict[str, str]] = []
    for r in results:
        detail, status, adapter = r.get("detail") or {}, r["status"], r["adapter"]
        if status == "unsupported" or not detail:
            continue
        if r["stage"] == "embeddings" and "max_abs" in detail:
            rows.append(_numeric_row(adapter, "embeddings (valid rows)", status, detail))
        elif r["stage"] == "schedule":
            for key in ("sigmas", "model_t"):
                if detail.get(key):
                    rows.append(_numeric_row(adapter, f"schedule: {key}", status, detail[key]))
        elif r["stage"] == "denoise":
            rows.extend(_denoise_rows(adapter, status, detail))
    return sorted(rows, key=lambda row: (ORDER.index(row["compared"]), row["adapter"]))


def metrics_table(results: list[dict[str, Any]]) -> Markup | None:
    """The case's metric table as escaped HTML, or None when the case has no numeric comparison."""
    rows = metric_rows(results)
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=COLUMNS)
    # pandas escaped every cell (escape=True), so the HTML can go into the page as it is.
    return Markup(frame.to_html(escape=True, index=False, border=0, classes="metrics", na_rep="–"))
