"""Small inline PNG figures for the HTML report (matplotlib, Agg, no pyplot state).

Every function takes stages' typed details (parity/stages/) and returns a `data:image/png;base64,...` URI,
or None when there is nothing worth drawing. Figures are small (about 90 dpi, a few inches wide)
and their data already downsampled by the stages' checks, so the default suite's report stays a
few hundred kilobytes and renders in a few seconds. The PNG carries no metadata, so the same
results always give the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from PIL import Image

from parity.compare.numeric import Heatmap, NumericDiff
from parity.compare.tolerances import StageTolerance, Tolerance

DPI = 80
# Log axes span at most 10**-100 to 10**100, and what lies beyond is drawn at their edge: no error
# parity measures comes near (float32 errors stay within 1e-46..1e39), and matplotlib's log ticks and
# colour bars fail towards the ends of the float range.
LOG_DECADES = 100
LOG_RANGE = (10.0**-LOG_DECADES, 10.0**LOG_DECADES)
COLORS = 96  # palette size of the PNGs
PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
]
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def color(adapter: str, adapters: Sequence[str]) -> str:
    """One colour per adapter, the same in every figure of a report."""
    index = list(adapters).index(adapter) if adapter in adapters else len(adapters)
    return PALETTE[index % len(PALETTE)]


def _figure(width: float, height: float, left: float = 0.6, right: float = 0.15, bottom: float = 0.42,
            top: float = 0.25, wspace: float = 0.3, hspace: float = 0.6) -> Figure:
    """A figure with fixed margins in inches (a layout engine would cost most of the drawing time)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace, hspace=hspace)
    return fig


def _uri(fig: Figure) -> str:
    """The figure as a palette PNG data URI (a quarter of the bytes of an RGB one, same look at this size)."""
    canvas = fig.canvas
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    image = Image.fromarray(np.ascontiguousarray(rgb)).quantize(colors=COLORS, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    image.save(buf, format="png", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _log_scale(ax: Any, which: str, values: Sequence[float]) -> None:
    """A log axis from the decade below the smallest finite value to the decade above the largest,
    without minor ticks: at least two labelled decades whatever the data, and minor ticks' layout
    was a fifth of the report's drawing time."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return
    low, high = _decade(min(finite), math.floor), _decade(max(finite), math.ceil)
    axis = ax.yaxis if which == "y" else ax.xaxis
    # Limits first: bars start at 0, which a log scale set before them would warn about.
    (ax.set_ylim if which == "y" else ax.set_xlim)(10.0**low, 10.0 ** max(high, low + 1))
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_minor_locator(NullLocator())


def _decade(value: float, rounding: Callable[[float], int]) -> int:
    return max(-LOG_DECADES, min(LOG_DECADES, rounding(math.log10(value))))


def _on_log_axis(value: float) -> float:
    return min(max(value, LOG_RANGE[0]), LOG_RANGE[1])


def _linear(values: Sequence[float]) -> np.ndarray:
    """Values for a linear axis: those beyond 10**LOG_DECADES either way (a span matplotlib cannot scale
    an axis to) are not drawn."""
    array = np.array(values, dtype=float)
    return np.where(np.abs(array) <= LOG_RANGE[1], array, np.nan)


def _positive(values: Sequence[float | None]) -> np.ndarray:
    """Values for a log axis, within LOG_RANGE: zero and missing become NaN (not drawn)."""
    return np.array([_on_log_axis(v) if v is not None and v > 0 else np.nan for v in values], dtype=float)


class EmbeddingErrors(Protocol):
    """What the embeddings figure reads of an embeddings detail (parity/stages/embeddings.py)."""

    tolerance: Tolerance
    diff_heatmap: Heatmap | None
    per_row_max_abs: Sequence[float | None] | None
    rows_per_entry: int
    obtained_shape: Sequence[int]
    expected_shape: Sequence[int]


class StepErrors(Protocol):
    """What the denoise figures read of a denoise detail (parity/stages/denoise.py)."""

    model_out_max_abs: Sequence[float | None] | None
    latents_max_abs: Sequence[float | None] | None
    first_divergent_step: int | None
    tolerance_evidence: StageTolerance | None
    blocks: dict[str, NumericDiff] | None
    blocks_step: int | None
    first_divergent_block: str | None


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def embeddings_figure(entries: list[tuple[str, EmbeddingErrors]], adapters: Sequence[str]) -> str | None:
    """Per adapter: a |diff| heatmap (tokens x channels, max-pooled) and the per-token max abs error.

    `entries`: (adapter, embeddings detail) for the adapters to show.
    """
    shown = [(a, d) for a, d in entries if d.diff_heatmap or d.per_row_max_abs]
    if not shown:
        return None
    with matplotlib.rc_context(STYLE):
        fig = _figure(9.0, 1.9 * len(shown) + 0.3, wspace=0.3, hspace=0.75)
        axes = fig.subplots(len(shown), 2, squeeze=False, width_ratios=[1.2, 1])
        for (adapter, detail), (heat_ax, bar_ax) in zip(shown, axes, strict=True):
            atol = detail.tolerance.atol
            heat = detail.diff_heatmap
            if heat:
                values = np.array([[np.nan if v is None else v for v in row] for row in heat.values], dtype=float)
                positive = values[values > 0]
                if positive.size:
                    vmax = _on_log_axis(positive.max())
                    norm = LogNorm(vmin=_on_log_axis(max(positive.min(), vmax * 1e-6)), vmax=vmax)
                    image = heat_ax.imshow(
                        np.where(values > 0, values, np.nan), aspect="auto", interpolation="nearest",
                        cmap="magma", norm=norm,
                        extent=(0, heat.cols, heat.rows, 0),
                    )
                    fig.colorbar(image, ax=heat_ax, label="|obtained − expected|", fraction=0.05, pad=0.02)
                heat_ax.grid(False)
                heat_ax.set_xlabel(f"channel (max over {heat.cols_per_cell} per cell)")
                per_row = heat.rows_per_cell
                heat_ax.set_ylabel(f"token (max over {per_row})" if per_row > 1 else "token")
                heat_ax.set_title(f"{_short(adapter)}: |diff| over {heat.rows} x {heat.cols} compared values")
            else:
                heat_ax.axis("off")
                heat_ax.text(0.5, 0.5, f"{_short(adapter)}: no difference to map", ha="center", va="center")
            rows = detail.per_row_max_abs or ()
            step = detail.rows_per_entry
            if rows:
                x = np.arange(len(rows)) * step
                y = _positive(rows)
                bar_ax.bar(x, np.nan_to_num(y, nan=0.0), width=step * 0.9, align="edge",
                           color=color(adapter, adapters))
                _log_scale(bar_ax, "y", [*y, atol or math.nan])
                if atol:
                    bar_ax.axhline(_on_log_axis(atol), color="k", linestyle="--", linewidth=0.8, label=f"atol {atol:g}")
                    bar_ax.legend(loc="upper right")
                bar_ax.set_xlabel("token position" + (f" (max over {step})" if step > 1 else ""))
                bar_ax.set_ylabel("max abs error")
                ours, theirs = (shape or ("?",) for shape in (detail.obtained_shape, detail.expected_shape))
                shapes = f"{ours[0]} rows vs reference {theirs[0]}"
                bar_ax.set_title(f"per-token max abs error ({shapes})")
            else:
                bar_ax.axis("off")
        return _uri(fig)


def schedule_figure(
    expected: Sequence[float], obtained: list[tuple[str, Sequence[float]]], adapters: Sequence[str]
) -> str | None:
    """Sigma schedules overlaid (the reference's thick and grey), and each adapter's difference from it."""
    if not expected or not obtained:
        return None
    with matplotlib.rc_context(STYLE):
        fig = _figure(9.0, 2.6)
        left, right = fig.subplots(1, 2)
        ref = _linear(expected)
        left.plot(np.arange(len(ref)), ref, color="#999", linewidth=4, alpha=0.6, label="reference")
        markers = "os^vD<>px*"
        for n, (adapter, sigmas) in enumerate(obtained):
            values = _linear(sigmas)
            c = color(adapter, adapters)
            left.plot(np.arange(len(values)), values, marker=markers[n % len(markers)], markersize=3,
                      linewidth=1, color=c, label=_short(adapter))
            common = min(len(values), len(ref))
            right.plot(np.arange(common), values[:common] - ref[:common], marker=markers[n % len(markers)],
                       markersize=3, linewidth=1, color=c, label=_short(adapter))
        left.set_xlabel("step")
        left.set_ylabel("sigma")
        left.set_title("sigma schedules")
        left.legend(loc="lower left")
        right.axhline(0, color="k", linewidth=0.6)
        right.set_xlabel("step")
        right.set_ylabel("sigma − reference sigma")
        right.set_title("difference from the reference schedule")
        return _uri(fig)


def denoise_figure(
    entries: list[tuple[str, StepErrors, StepErrors | None]], adapters: Sequence[str], mode: str
) -> str | None:
    """Per-step max abs error of the velocity and of the latent, one line per adapter.

    `entries`: (adapter, detail from this run, detail from a run in the other mode or None). This
    run's lines are solid, the other mode's dashed.
    """
    drawn = [e for e in entries if e[1].model_out_max_abs is not None]
    if not drawn:
        return None
    other = "forced" if mode == "free" else "free"
    this = "free-running" if mode == "free" else "teacher-forced"
    with matplotlib.rc_context(STYLE):
        width, legend_width = 10.0, 2.3
        fig = _figure(width, 2.8, right=legend_width + 0.1)
        axes = fig.subplots(1, 2)
        atol = None
        for adapter, detail, companion in drawn:
            atol = detail.tolerance_evidence.tolerance.atol if detail.tolerance_evidence else atol
            c = color(adapter, adapters)
            for ax, key in ((axes[0], "model_out_max_abs"), (axes[1], "latents_max_abs")):
                for run, style, suffix in ((detail, "-", ""), (companion, "--", f" ({other})")):
                    if run is None or getattr(run, key) is None:
                        continue
                    values = _positive(getattr(run, key))
                    if not np.isfinite(values).any():
                        continue
                    ax.plot(np.arange(len(values)), values, style, marker="o", markersize=3, linewidth=1,
                            color=c, label=_short(adapter) + suffix)
            first = detail.first_divergent_step
            if first is not None:
                values = _positive(detail.model_out_max_abs)
                if first < len(values) and math.isfinite(values[first]):
                    axes[0].plot([first], [values[first]], marker="x", markersize=8, color=c)
        for ax, title, xlabel in (
            (axes[0], "velocity (model output) per step", "step"),
            (axes[1], "latent after each step (0 = initial noise)", "latent index"),
        ):
            _log_scale(ax, "y", [v for line in ax.get_lines() for v in line.get_ydata()] + [atol or math.nan])
            if atol:
                ax.axhline(_on_log_axis(atol), color="k", linestyle=":", linewidth=0.8, label=f"atol {atol:g}")
            ax.set_title(title if any(c for _, _, c in drawn) else f"{title}, {this}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("max abs error")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1 - legend_width / width, 0.5),
                       frameon=False)
        return _uri(fig)


def blocks_figure(entries: list[tuple[str, StepErrors]], adapters: Sequence[str]) -> str | None:
    """Per adapter: each DiT block's max abs error at the traced step, failing blocks in red."""
    shown = [(a, d) for a, d in entries if d.blocks]
    if not shown:
        return None
    with matplotlib.rc_context(STYLE):
        height = max(1.6, 0.22 * max(len(d.blocks) for _, d in shown) + 0.8)
        fig = _figure(min(9.0, 3.4 * len(shown) + 1.0), height, left=1.3, wspace=0.9)
        axes = fig.subplots(1, len(shown), squeeze=False)[0]
        for ax, (adapter, detail) in zip(axes, shown, strict=True):
            names = list(detail.blocks)
            values = _positive([detail.blocks[n].max_abs for n in names])
            colors = ["#d62728" if not detail.blocks[n].passed else "#2ca02c" for n in names]
            y = np.arange(len(names))
            ax.barh(y, np.nan_to_num(values, nan=0.0), color=colors)
            ax.set_yticks(y, [_short(n, 22) for n in names])
            ax.invert_yaxis()
            atol = detail.blocks[names[0]].tolerance.atol if names else None
            _log_scale(ax, "x", [*values, atol or math.nan])
            if atol:
                ax.axvline(_on_log_axis(atol), color="k", linestyle="--", linewidth=0.8)
            first = detail.first_divergent_block
            ax.set_title(f"{_short(adapter)}, step {detail.blocks_step}: " + (first or "all within"))
            ax.set_xlabel("max abs error (teacher-forced)")
        return _uri(fig)
