"""The metric table of the HTML report (pandas), one per case: every numeric comparison an adapter made.

Rows come from the stages (`Stage.metric_rows`), columns from the metric registry
(parity/compare/metrics.py): the errors, the tolerance, then the smallest tolerances that would have
passed. Cells are formatted here and escaped by pandas.
"""

from __future__ import annotations

import pandas as pd
from markupsafe import Markup

from parity.compare.metrics import METRICS, MetricRow

ERRORS = [m for m in METRICS if not m.needed]
NEEDED = [m for m in METRICS if m.needed]
COLUMNS = [
    "adapter", "compared", "status", "shape", "outside tol.", *(m.label for m in ERRORS), "tolerance",
    *(m.label for m in NEEDED),
]


def _cells(adapter: str, status: str, row: MetricRow) -> dict[str, str]:
    tolerance = f"atol {row.tolerance.atol:g}, rtol {row.tolerance.rtol:g}" if row.tolerance else "–"
    return {
        "adapter": adapter, "compared": row.compared, "status": status, "shape": row.shape,
        "outside tol.": row.outside, **{m.label: row.cell(m) for m in ERRORS}, "tolerance": tolerance,
        **{m.label: row.cell(m) for m in NEEDED},
    }


def metrics_table(rows: list[tuple[str, str, MetricRow]]) -> Markup | None:
    """(adapter, status, row) in the order to show, as escaped HTML; None when there is none."""
    if not rows:
        return None
    frame = pd.DataFrame([_cells(*r) for r in rows], columns=COLUMNS)
    # pandas escaped every cell (escape=True), so the HTML can go into the page as it is.
    return Markup(frame.to_html(escape=True, index=False, border=0, classes="metrics", na_rep="–"))
