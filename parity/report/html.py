"""The self-contained HTML report: one file, inline CSS, no scripts, every user string escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from parity.outputs import atomic_write_bytes

STATUS_MARK = {
    "match": ("✓", "match"),
    "declared": ("≈", "declared divergence"),
    "unexpected": ("✗", "unexpected divergence"),
    "declared-but-matches": ("!", "declared divergence that no longer happens"),
    "unsupported": ("–", "not supported"),
}


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("parity.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["STATUS_MARK"] = STATUS_MARK
    return env


def render_html(data: dict[str, Any]) -> str:
    results = data["results"]
    cases = list(dict.fromkeys(r["case"] for r in results))
    cell: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        cell.setdefault((r["case"], r["adapter"]), []).append(r)
    first = {
        key: next((r for r in rows if r["status"] in ("declared", "unexpected")), None) for key, rows in cell.items()
    }
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return _environment().get_template("report.html.j2").render(
        data=data, cases=cases, cell=cell, first=first, counts=counts, nway=_nway(data.get("cross", []))
    )


def _nway(cross: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case: row names, reference columns, and (row, reference) -> [(stage, passed, summary)]."""
    views: dict[str, dict[str, Any]] = {}
    for c in cross:
        view = views.setdefault(c["case"], {"rows": [], "references": [], "cells": {}})
        if c["adapter"] not in view["rows"]:
            view["rows"].append(c["adapter"])
        if c["reference"] not in view["references"]:
            view["references"].append(c["reference"])
        view["cells"].setdefault((c["adapter"], c["reference"]), []).append(c)
    return views


def write_html(data: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(path, render_html(data).encode("utf-8"))
