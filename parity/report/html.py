"""The self-contained HTML report: one file, inline CSS and PNGs, no scripts, every user string escaped.

Rendered from the results JSON alone (`RunResult.to_json`), so `parity report` rebuilds the same
bytes from a saved run. Top: the verdict, a cases x adapters matrix with one mark per stage, and
each adapter's first divergence grouped by cause. Per case: the stage table with the command that
reproduces each row, the template and token diffs, embedding heatmaps and per-token errors, the
sigma schedules, the per-step (and per-block) denoise errors, and a metric table. Last: the
environment, tolerances and warnings.

A run in the other mode can be overlaid on the per-step curves: pass its JSON in `companions`,
or store it in the results under "companions" (a list of run JSON objects).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from parity.outputs import atomic_write_bytes
from parity.report import diffs, plots, tables

STATUS_MARK = {
    "match": ("✓", "match"),
    "declared": ("≈", "declared divergence"),
    "unexpected": ("✗", "unexpected divergence"),
    "declared-but-matches": ("!", "declared divergence that no longer happens"),
    "unsupported": ("–", "not supported"),
}
# Worst first: what a matrix cell is coloured by.
SEVERITY = ["unexpected", "declared-but-matches", "declared", "match", "unsupported"]
DIVERGENT = ("declared", "unexpected")
# Detail keys the report draws instead of dumping (and that would bloat the raw view).
DRAWN_KEYS = {
    "aligned", "diff_heatmap", "obtained_text", "expected_text", "per_row_max_abs", "blocks",
    "model_out_max_abs", "latents_max_abs", "obtained_sigmas", "expected_sigmas", "obtained_model_t",
    "expected_model_t", "spans",
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


def worst(statuses: Sequence[str]) -> str:
    return min(statuses, key=SEVERITY.index) if statuses else "unsupported"


def reproduce(data: dict[str, Any], case: str, adapter: str | None = None, stage: str | None = None,
              blocks: bool = False) -> str:
    """The `parity run` command that reproduces one row (or one case) of this report."""
    args = ["parity", "run", "--cases", case]
    if adapter:
        args += ["--adapters", adapter]
    if stage:
        args += ["--stages", stage]
    reference = (data.get("references") or {}).get(case)
    if reference:
        args += ["--reference", reference]
    args += ["--mode", data.get("mode", "free")]
    env = data.get("environment") or {}
    if env.get("checkpoint"):
        args += ["--checkpoint", str(env["checkpoint"])]
    if env.get("device") not in (None, "cpu"):
        args += ["--device", str(env["device"])]
    if blocks:
        args.append("--blocks")
    return shlex.join(args)


def _raw(detail: dict[str, Any]) -> str:
    """The detail without what the report draws, as indented JSON."""
    return json.dumps({k: v for k, v in detail.items() if k not in DRAWN_KEYS}, indent=1, ensure_ascii=False)


def _grouped(items: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    """(adapter, status, view) items with equal views merged: [{"adapters", "status", "view"}]."""
    groups: dict[str, dict[str, Any]] = {}
    for adapter, status, view in items:
        key = json.dumps(view, sort_keys=True, default=str)
        group = groups.setdefault(key, {"adapters": [], "statuses": [], "view": view})
        group["adapters"].append(adapter)
        group["statuses"].append(status)
    return [{"adapters": g["adapters"], "status": worst(g["statuses"]), "view": g["view"]} for g in groups.values()]


def _companion_index(companions: Sequence[dict[str, Any]], mode: str) -> dict[tuple[str, str, str], dict]:
    """(case, adapter, stage) -> detail, from runs made in the other mode."""
    index: dict[tuple[str, str, str], dict] = {}
    for run in companions:
        if run.get("mode") == mode:
            continue
        for r in run.get("results", []):
            if r.get("detail"):
                index[(r["case"], r["adapter"], r["stage"])] = r["detail"]
    return index


def _case_view(
    data: dict[str, Any], case: str, index: int, rows: dict[str, list[dict]], other: dict[tuple[str, str, str], dict]
) -> dict[str, Any]:
    adapters = data["adapters"]
    results = [r for a in adapters for r in rows.get(a, [])]
    by_stage: dict[str, list[dict]] = {}
    for r in results:
        by_stage.setdefault(r["stage"], []).append(r)

    table = []
    for a in adapters:
        mine = rows.get(a, [])
        if mine and all(r["status"] == "unsupported" for r in mine):
            table.append({"adapter": a, "kind": "unsupported", "reason": mine[0].get("reason", ""),
                          "command": reproduce(data, case, a)})
            continue
        if mine and all(r["status"] == "match" for r in mine):
            table.append({"adapter": a, "kind": "match", "stages": [r["stage"] for r in mine],
                          "command": reproduce(data, case, a)})
            continue
        table.append({"adapter": a, "kind": "rows", "rows": [
            {
                **r,
                "raw": _raw(r["detail"]) if r.get("detail") and r["status"] != "match" else None,
                "command": reproduce(data, case, a, r["stage"],
                                     blocks=r["stage"] == "denoise" and r["status"] in DIVERGENT),
            }
            for r in mine
        ]})

    def live(stage: str) -> list[dict]:
        return [r for r in by_stage.get(stage, []) if r["status"] != "unsupported" and r.get("detail")]

    template_diffs = _grouped([
        (r["adapter"], r["status"], view) for r in live("template") if (view := diffs.template_diff(r["detail"]))
    ])
    token_diffs = _grouped([
        (r["adapter"], r["status"], view) for r in live("tokens") if (view := diffs.token_rows(r["detail"]))
    ])
    embedded = [(r["adapter"], r["detail"]) for r in live("embeddings") if r["detail"].get("diff_heatmap")]
    schedules = [r for r in live("schedule") if r["detail"].get("expected_sigmas")]
    schedule_plot = None
    if schedules:
        schedule_plot = plots.schedule_figure(
            schedules[0]["detail"]["expected_sigmas"],
            [(r["adapter"], r["detail"]["obtained_sigmas"]) for r in schedules],
            adapters,
        )
    denoise = [
        (r["adapter"], r["detail"], other.get((case, r["adapter"], "denoise")))
        for r in live("denoise") if r["detail"].get("model_out_max_abs") is not None
    ]
    blocks = [(r["adapter"], r["detail"]) for r in live("denoise") if r["detail"].get("blocks")]
    blocks_unavailable = [r["adapter"] for r in live("denoise") if r["detail"].get("blocks_unavailable")]
    return {
        "id": case,
        "anchor": f"case-{index}",
        "reference": data["references"].get(case, "?"),
        "statuses": [r["status"] for r in results],
        "table": table,
        "template_diffs": template_diffs,
        "token_diffs": token_diffs,
        "embeddings_plot": plots.embeddings_figure(embedded, adapters) if embedded else None,
        "embedded": [a for a, _ in embedded],
        "schedule_plot": schedule_plot,
        "denoise_plot": plots.denoise_figure(denoise, adapters, data.get("mode", "free")) if denoise else None,
        "denoise_has_companion": any(c is not None for _, _, c in denoise),
        "blocks_plot": plots.blocks_figure(blocks, adapters) if blocks else None,
        "blocks_unavailable": blocks_unavailable,
        "denoise_divergent": [r["adapter"] for r in live("denoise") if r["status"] in DIVERGENT],
        "metrics": tables.metrics_table(results),
        "command": reproduce(data, case),
    }


def _first_divergences(data: dict[str, Any], first: dict[tuple[str, str], dict | None],
                       anchors: dict[str, str]) -> list[dict[str, Any]]:
    """Each adapter's first divergent stage per case, cases with the same cause merged."""
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for (case, adapter), r in first.items():
        if r is None:
            continue
        key = (r["status"], adapter, r["stage"], r.get("reason", ""))
        group = groups.setdefault(key, {
            "status": r["status"], "adapter": adapter, "stage": r["stage"], "reason": r.get("reason", ""),
            "cases": [], "references": set(),
        })
        group["cases"].append((case, anchors[case]))
        group["references"].add(data["references"].get(case, "?"))
    ordered = sorted(groups.values(), key=lambda g: (SEVERITY.index(g["status"]), g["adapter"],
                                                     data["stages"].index(g["stage"]) if g["stage"] in data["stages"]
                                                     else 99))
    for g in ordered:
        g["references"] = sorted(g["references"])
    return ordered


def _tolerances(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        evidence = (r.get("detail") or {}).get("tolerance_evidence")
        if evidence:
            key = json.dumps([r["stage"], evidence], sort_keys=True)
            seen.setdefault(key, {"stage": r["stage"], **evidence})
    return sorted(seen.values(), key=lambda t: (t["stage"], t["tolerance"]["atol"]))


def render_html(data: dict[str, Any], companions: Sequence[dict[str, Any]] = ()) -> str:
    results = data["results"]
    cases = list(dict.fromkeys(r["case"] for r in results))
    anchors = {case: f"case-{n}" for n, case in enumerate(cases, 1)}
    cell: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        cell.setdefault((r["case"], r["adapter"]), []).append(r)
    first = {key: next((r for r in rows if r["status"] in DIVERGENT), None) for key, rows in cell.items()}
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    other = _companion_index([*companions, *data.get("companions", [])], data.get("mode", "free"))
    views = [
        _case_view(data, case, n, {a: cell.get((case, a), []) for a in data["adapters"]}, other)
        for n, case in enumerate(cases, 1)
    ]
    failures = [
        {**r, "command": reproduce(data, r["case"], r["adapter"], r["stage"], blocks=r["stage"] == "denoise")}
        for r in results
        if r["status"] in ("unexpected", "declared-but-matches")
    ]
    return _environment().get_template("report.html.j2").render(
        data=data,
        cases=cases,
        anchors=anchors,
        cell=cell,
        first=first,
        worst=worst,
        counts=counts,
        failures=failures,
        divergences=_first_divergences(data, first, anchors),
        views=views,
        nway=_nway(data.get("cross", [])),
        tolerances=_tolerances(results),
        run_command=shlex.join(["parity", "run", "--mode", data.get("mode", "free"),
                                "--report", "reports/parity.html", "--json", "reports/parity.json"]),
        companion_modes=sorted({run.get("mode", "?") for run in [*companions, *data.get("companions", [])]}),
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


def write_html(data: dict[str, Any], path: Path, companions: Sequence[dict[str, Any]] = ()) -> None:
    atomic_write_bytes(path, render_html(data, companions).encode("utf-8"))
