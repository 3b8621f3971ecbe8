"""The tokens stage: the ids and attention mask an implementation hands its text encoder.

Compared: the attended ids, exactly. Padding is reported but not compared: a padded and an
unpadded implementation hand the DiT the same rows when the padding is filtered out. Stored as
`tokens.input_ids` and `tokens.attention_mask` (int64, 1-D, the same length).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import PreTrainedTokenizerBase

from parity.compare.ids import IdsDiff, compare_ids
from parity.compare.records import Count, Record, optional
from parity.drawing import diffs
from parity.models.context import Context
from parity.stages.base import Page, Records, Stage, StageCheck, TensorRule
from parity.stages.template import Template

ALIGNED_CONTEXT = 3  # equal tokens shown around each differing span
MAX_ALIGNED_ROWS = 200


@dataclass(frozen=True)
class Tokens:
    """Token ids and attention mask for one prompt (batch of one, so 1-D)."""

    input_ids: list[int]
    attention_mask: list[int]

    @property
    def attended(self) -> list[int]:
        """The ids the mask keeps: what the encoder's output rows stand for."""
        return [i for i, m in zip(self.input_ids, self.attention_mask, strict=True) if m]


@dataclass(frozen=True)
class AlignedRow(Record):
    """One row of the token-aligned diff: `op` and each side's (position, id, token), or a run of
    `skipped` equal tokens left out (op "gap")."""

    op: str
    expected: tuple[int, int, str] | None = None
    obtained: tuple[int, int, str] | None = None
    skipped: Count | None = None

    def to_json(self) -> dict[str, Any]:
        if self.op == "gap":
            return {"op": "gap", "skipped": self.skipped}
        return {"op": self.op, "expected": _side(self.expected), "obtained": _side(self.obtained)}


def _side(token: tuple[int, int, str] | None) -> list[Any] | None:
    return list(token) if token is not None else None


@dataclass(frozen=True)
class TokensDetail(IdsDiff):
    """The id comparison, each side's padding, and for a divergence the aligned rows around it."""

    obtained_padding: int
    expected_padding: int
    aligned: tuple[AlignedRow, ...] | None = optional()
    aligned_truncated: bool | None = optional()


def aligned_rows(
    obtained: list[int], expected: list[int], diff: IdsDiff, decode: Callable[[int], str]
) -> tuple[list[AlignedRow], bool]:
    """The token-aligned diff as rows: each differing span with ALIGNED_CONTEXT equal tokens around
    it. Returns the rows and whether MAX_ALIGNED_ROWS cut them short."""
    rows: list[AlignedRow] = []

    def side(ids: list[int], pos: int) -> tuple[int, int, str]:
        return (pos, ids[pos], decode(ids[pos]))

    def same(e0: int, o0: int, n: int, lead: bool, trail: bool) -> None:
        """n aligned tokens from e0/o0; `lead`: a span follows, `trail`: a span precedes."""
        keep = [k for k in range(n) if (trail and k < ALIGNED_CONTEXT) or (lead and k >= n - ALIGNED_CONTEXT)]
        last = -1
        for k in keep:
            if k > last + 1:
                rows.append(AlignedRow("gap", skipped=k - last - 1))
            e, o = e0 + k, o0 + k
            op = "equal" if expected[e] == obtained[o] else "unaligned"
            rows.append(AlignedRow(op, side(expected, e), side(obtained, o)))
            last = k
        if n > last + 1:
            rows.append(AlignedRow("gap", skipped=n - last - 1))

    e_at = o_at = 0
    for n, span in enumerate(diff.spans):
        same(e_at, o_at, span.expected_start - e_at, True, n > 0)
        e_len = min(span.expected_end - span.expected_start, len(span.expected_ids))
        o_len = min(span.obtained_end - span.obtained_start, len(span.obtained_ids))
        for k in range(max(e_len, o_len)):
            e = span.expected_start + k if k < e_len else None
            o = span.obtained_start + k if k < o_len else None
            rows.append(AlignedRow(
                span.op,
                side(expected, e) if e is not None else None,
                side(obtained, o) if o is not None else None,
            ))
        cut = (span.expected_end - span.expected_start - e_len, span.obtained_end - span.obtained_start - o_len)
        if any(cut):
            rows.append(AlignedRow("gap", skipped=max(cut)))
        e_at, o_at = span.expected_end, span.obtained_end
    if diff.spans:
        same(e_at, o_at, min(len(expected) - e_at, len(obtained) - o_at), False, True)
    return rows[:MAX_ALIGNED_ROWS], len(rows) > MAX_ALIGNED_ROWS


@dataclass(frozen=True)
class Truncation:
    total: int
    kept: int

    @property
    def dropped(self) -> int:
        return self.total - self.kept

    def describe(self) -> str:
        return f"the template is {self.total:,} tokens, {self.kept:,} kept: {self.dropped:,} dropped from the end"


def truncation(tokenizer: PreTrainedTokenizerBase, template: Template, tokens: Tokens) -> Truncation | None:
    """How `tokens` cut `template` short, or None when every template token was kept (or the two
    differ in some other way: escapes, dropped references, another tokenizer)."""
    kept = tokens.attended
    full = tokenizer(template.text)["input_ids"]
    if len(kept) < len(full) and full[: len(kept)] == kept:
        return Truncation(len(full), len(kept))
    return None


class TokensStage(Stage):
    name = "tokens"
    path = "text"
    inputs = ("template",)
    records = ("tokens",)
    detail = TokensDetail
    tensors: ClassVar[Mapping[str, TensorRule]] = {
        "tokens.input_ids": TensorRule(torch.int64, 1, "tokens.attention_mask"),
        "tokens.attention_mask": TensorRule(torch.int64, 1, "tokens.input_ids"),
    }
    partial = "stages/tokens.html.j2"
    drawn = frozenset({"aligned", "spans"})

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        return {"tokens": adapter.tokens(case, given.get("template"))}

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tokens = outputs.get("tokens")
        if tokens is None:
            return {}, {}
        return {
            "tokens.input_ids": torch.tensor(tokens.input_ids, dtype=torch.int64),
            "tokens.attention_mask": torch.tensor(tokens.attention_mask, dtype=torch.int64),
        }, {}

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        if "tokens.input_ids" not in tensors:
            return {}
        return {"tokens": Tokens(tensors["tokens.input_ids"].tolist(), tensors["tokens.attention_mask"].tolist())}

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        if "tokens.input_ids" in tensors:
            ids, mask = tensors["tokens.input_ids"], tensors["tokens.attention_mask"]
            n = ids.shape[0]
            if mask.shape[0] != n:
                return f"tokens.attention_mask is {mask.shape[0]} long where tokens.input_ids ({n}) needs {n}"
        return None

    def notice(self, tokenizer: PreTrainedTokenizerBase, outputs: Records) -> str | None:
        """A prompt cut short. diffusers and DiffSynth stop at 512 tokens, template included, and every
        implementation that does the same agrees with them, so a comparison alone never shows the cut.
        What does show it: the attended tokens are a proper prefix of the template's full tokenization."""
        template, tokens = outputs.get("template"), outputs.get("tokens")
        if template is None or tokens is None:
            return None
        cut = truncation(tokenizer, template, tokens)
        return None if cut is None else f"truncates the prompt: {cut.describe()}"

    def check(self, obtained: Tokens, expected: Tokens, context: Context, dtype: str) -> StageCheck:
        def decode(i: int) -> str:
            return context.tokenizer.decode([i])

        ours, theirs = obtained.attended, expected.attended
        diff = compare_ids(ours, theirs, decode)
        padding = {
            "obtained_padding": len(obtained.input_ids) - len(ours),
            "expected_padding": len(expected.input_ids) - len(theirs),
        }
        aligned = {}
        if not diff.equal:
            rows, truncated = aligned_rows(ours, theirs, diff, decode)
            aligned = {"aligned": tuple(rows), "aligned_truncated": truncated}
        return StageCheck(diff.equal, diff.summary(), TokensDetail(**vars(diff), **padding, **aligned))

    def view(self, rows: list[tuple[str, str, TokensDetail]], page: Page) -> dict[str, Any] | None:
        groups = diffs.grouped(rows, diffs.token_rows)
        return {"diffs": groups} if groups else None


TOKENS = TokensStage()
