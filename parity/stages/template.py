"""The template stage: the exact string an implementation hands to its tokenizer, compared exactly.

Stored as the string `template.text`. A divergence keeps both texts around the first difference,
from a line start where one is near, for the report's side-by-side diff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from parity.compare.records import optional
from parity.compare.text import TextDiff, compare_text
from parity.drawing import diffs
from parity.models.context import Context
from parity.stages.base import Page, Records, Stage, StageCheck

# What the HTML report shows of a divergence, kept small whatever the input size.
WINDOW_BEFORE = 1000  # characters of common text kept before the first difference
WINDOW = 4000  # characters kept of each side, from the window start


@dataclass(frozen=True)
class Template:
    """The exact string an implementation hands to its tokenizer."""

    text: str


@dataclass(frozen=True)
class TemplateDetail(TextDiff):
    """The text comparison, and for a divergence both texts from `window_start` on."""

    window_start: int | None = optional()
    obtained_text: str | None = optional()
    expected_text: str | None = optional()
    window_truncated: bool | None = optional()

    comes_with = (("obtained_text", "expected_text"), ("expected_text", "obtained_text"))


def _window(obtained: str, expected: str, first_diff: int) -> dict[str, Any]:
    start = max(0, first_diff - WINDOW_BEFORE)
    newline = expected.find("\n", start, first_diff)
    if start > 0 and newline != -1:
        start = newline + 1
    return {
        "window_start": start,
        "obtained_text": obtained[start : start + WINDOW],
        "expected_text": expected[start : start + WINDOW],
        "window_truncated": start > 0 or max(len(obtained), len(expected)) > start + WINDOW,
    }


class TemplateStage(Stage):
    name = "template"
    path = "text"
    records = ("template",)
    strings = ("template.text",)
    detail = TemplateDetail
    partial = "stages/template.html.j2"
    drawn = frozenset({"obtained_text", "expected_text"})

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        return {"template": adapter.template(case)}

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        template = outputs.get("template")
        return {}, ({"template.text": template.text} if template is not None else {})

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        return {"template": Template(strings["template.text"])} if "template.text" in strings else {}

    def check(self, obtained: Template, expected: Template, context: Context, dtype: str) -> StageCheck:
        diff = compare_text(obtained.text, expected.text)
        window = {} if diff.equal or diff.first_diff is None else _window(obtained.text, expected.text, diff.first_diff)
        return StageCheck(diff.equal, diff.summary(), TemplateDetail(**vars(diff), **window))

    def view(self, rows: list[tuple[str, str, TemplateDetail]], page: Page) -> dict[str, Any] | None:
        groups = diffs.grouped(rows, diffs.template_diff)
        return {"diffs": groups} if groups else None


TEMPLATE = TemplateStage()
