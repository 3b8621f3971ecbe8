"""The self-contained HTML report: one file, inline CSS and PNGs, no scripts, every user string escaped.

Rendered from the results JSON alone (`RunResult.to_json`), so `parity report` rebuilds the same
bytes from a saved run. Top: the verdict, a cases x adapters matrix with one mark per stage, and
each adapter's first divergence grouped by cause. Per case: the stage table with the command that
reproduces each row, then each stage's own view in pipeline order (its partial under
templates/stages/, fed by `Stage.view` from the results' typed details: the template and token
diffs, embedding heatmaps, the sigma schedules, the per-step and per-block denoise errors), and a
metric table. Last: the environment, tolerances and warnings.

A run in the other mode can be overlaid on the per-step curves: pass its JSON in `companions`,
or store it in the results under "companions" (a list of run JSON objects).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from parity.compare.records import Record
from parity.core.files import atomic_write_bytes
from parity.core.labels import split_label
from parity.core.status import DIVERGENT, FAILING, MATCH, UNSUPPORTED
from parity.drawing.marks import SEVERITY, STATUS_MARK, worst
from parity.report.metrics_table import metrics_table
from parity.stages import REGISTRY, STAGES, stage
from parity.stages.base import Page


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("parity.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        # A value a partial reads that its view (or a record in it) lacks is an error, not a blank cell.
        undefined=StrictUndefined,
    )
    env.globals["STATUS_MARK"] = STATUS_MARK
    env.globals["SEVERITY"] = SEVERITY
    return env


def reproduce(data: dict[str, Any], case: str, adapter: str | None = None, stage: str | None = None,
              blocks: bool = False) -> str:
    """The `parity run` command that reproduces one row (or one case) of this report."""
    args = ["parity", "run", "--cases", case]
    adapter, modelled = split_label(adapter) if adapter else (None, None)
    if adapter:
        args += ["--adapters", adapter]
    if stage:
        args += ["--stages", stage]
    reference = modelled or (data.get("references") or {}).get(case)
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


def _raw(r: dict[str, Any]) -> str:
    """The detail without what the report draws, as indented JSON."""
    drawn = stage(r["stage"]).drawn
    detail = r["typed"].to_json()
    return json.dumps({k: v for k, v in detail.items() if k not in drawn}, indent=1, ensure_ascii=False)


def _typed(r: dict[str, Any]) -> Record | None:
    """A result's detail as its stage's record (None for a result that compared nothing)."""
    return stage(r["stage"]).detail.from_json(r["detail"], "detail") if r.get("detail") else None


def _companion_index(companions: Sequence[dict[str, Any]], mode: str) -> dict[tuple[str, str, str], Record]:
    """(case, adapter, stage) -> detail, from runs made in the other mode."""
    index: dict[tuple[str, str, str], Record] = {}
    for run in companions:
        if run.get("mode") == mode:
            continue
        for r in run.get("results", []):
            detail = _typed(r)
            if detail is not None:
                index[(r["case"], r["adapter"], r["stage"])] = detail
    return index


def _caveats(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each distinct caveat of these results, with the stages it is on: "denoise, decode: ..."."""
    stages: dict[str, list[str]] = {}
    for r in rows:
        if r.get("caveat"):
            stages.setdefault(r["caveat"], []).append(r["stage"])
    return [f"{', '.join(names)}: {caveat}" for caveat, names in stages.items()]


def _case_view(
    data: dict[str, Any], case: str, index: int, rows: dict[str, list[dict]],
    other: dict[tuple[str, str, str], Record],
) -> dict[str, Any]:
    adapters = data["adapters"]
    results = [r for a in adapters for r in rows.get(a, [])]
    table = []
    for a in adapters:
        mine = rows.get(a, [])
        if mine and all(r["status"] == UNSUPPORTED for r in mine):
            table.append({"adapter": a, "kind": "unsupported", "reason": mine[0].get("reason", ""),
                          "command": reproduce(data, case, a)})
            continue
        if mine and all(r["status"] == MATCH for r in mine):
            table.append({"adapter": a, "kind": "match", "stages": [r["stage"] for r in mine],
                          "caveats": _caveats(mine), "command": reproduce(data, case, a)})
            continue
        table.append({"adapter": a, "kind": "rows", "rows": [
            {
                **r,
                "raw": _raw(r) if r.get("detail") and r["status"] != MATCH else None,
                "command": reproduce(data, case, a, r["stage"],
                                     blocks=stage(r["stage"]).traces_blocks and r["status"] in DIVERGENT),
            }
            for r in mine
        ]})
    # (adapter, status, typed detail) of every result that compared something, by stage.
    live: dict[str, list[tuple[str, str, Record]]] = {}
    for r in results:
        detail = r["typed"] if r["status"] != UNSUPPORTED else None
        if detail is not None:
            live.setdefault(r["stage"], []).append((r["adapter"], r["status"], detail))
    stage_views = []
    metric_rows = []
    for s in REGISTRY:
        found = live.get(s.name, [])
        page = Page(adapters, data.get("mode", "free"),
                    {a: d for (c, a, name), d in other.items() if c == case and name == s.name},
                    data["references"].get(case, "the reference"))
        view = s.view(found, page)
        if view is not None:
            stage_views.append({"partial": s.partial, "view": view})
        metric_rows += [(a, status, row) for a, status, d in found for row in s.metric_rows(d)]
    # Pipeline order, then adapter; a stage's rows in the order it gives them.
    order: dict[str, int] = {}
    for _, _, row in metric_rows:
        order.setdefault(row.compared, len(order))
    metric_rows.sort(key=lambda item: (order[item[2].compared], item[0]))
    return {
        "id": case,
        "anchor": f"case-{index}",
        "reference": data["references"].get(case, "?"),
        "statuses": [r["status"] for r in results],
        "table": table,
        "stage_views": stage_views,
        "metrics": metrics_table(metric_rows),
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
                                                     else len(STAGES)))
    for g in ordered:
        g["references"] = sorted(g["references"])
    return ordered


def _tolerances(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        detail = r["typed"]
        evidence = stage(r["stage"]).evidence(detail) if detail is not None else None
        if evidence is not None:
            key = json.dumps([r["stage"], evidence.to_json()], sort_keys=True)
            seen.setdefault(key, {"stage": r["stage"], **evidence.to_json()})
    return sorted(seen.values(), key=lambda t: (t["stage"], t["tolerance"]["atol"]))


def render_html(data: dict[str, Any], companions: Sequence[dict[str, Any]] = ()) -> str:
    # Each detail read as its stage's record once; every view below reads that.
    results = [{**r, "typed": _typed(r)} for r in data["results"]]
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
        {**r, "command": reproduce(data, r["case"], r["adapter"], r["stage"], blocks=stage(r["stage"]).traces_blocks)}
        for r in results
        if r["status"] in FAILING
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
