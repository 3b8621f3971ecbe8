"""One stage's verdict: which comparator applies to it, and what counts as the same.

- template: the exact string.
- tokens: the attended ids, exactly. Padding is reported but not compared: a padded and an
  unpadded implementation hand the DiT the same rows when the padding is filtered out.
- embeddings: the masked-in rows, numerically (dtype-aware tolerance); and the number of rows
  handed to the DiT, since handing padding on changes what the DiT attends to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parity.compare import compare_ids, compare_numeric, compare_text
from parity.context import Context
from parity.stages import Embeddings, Template, Tokens
from parity.tolerances import tolerance_for


@dataclass(frozen=True)
class StageCheck:
    passed: bool
    summary: str
    detail: dict[str, Any]


def attended(tokens: Tokens) -> list[int]:
    return [i for i, m in zip(tokens.input_ids, tokens.attention_mask, strict=True) if m]


def check_template(obtained: Template, expected: Template) -> StageCheck:
    diff = compare_text(obtained.text, expected.text)
    return StageCheck(diff.equal, diff.summary(), diff.to_json())


def check_tokens(obtained: Tokens, expected: Tokens, context: Context) -> StageCheck:
    tokenizer = context.tokenizer
    diff = compare_ids(attended(obtained), attended(expected), lambda i: tokenizer.decode([i]))
    padding = {
        "obtained_padding": len(obtained.input_ids) - len(attended(obtained)),
        "expected_padding": len(expected.input_ids) - len(attended(expected)),
    }
    return StageCheck(diff.equal, diff.summary(), diff.to_json() | padding)


def check_embeddings(obtained: Embeddings, expected: Embeddings, dtype: str) -> StageCheck:
    tolerance = tolerance_for("embeddings", dtype)
    diff = compare_numeric(obtained.valid, expected.valid, tolerance.tolerance)
    handed = {"obtained_rows_handed": obtained.hidden.shape[0], "expected_rows_handed": expected.hidden.shape[0]}
    summary = diff.summary()
    passed = diff.passed
    if handed["obtained_rows_handed"] != handed["expected_rows_handed"] and not diff.shape_mismatch:
        passed = False
        summary = (
            f"hands {handed['obtained_rows_handed']} rows to the DiT "
            f"({handed['obtained_rows_handed'] - obtained.valid.shape[0]} masked) where the reference hands "
            f"{handed['expected_rows_handed']}; valid rows: {summary}"
        )
    return StageCheck(passed, summary, diff.to_json() | handed | {"tolerance_evidence": tolerance.to_json()})


def check_stage(stage: str, obtained: Any, expected: Any, context: Context, dtype: str) -> StageCheck:
    if expected is None:
        return StageCheck(False, f"the golden fixture has no {stage} output", {})
    if stage == "template":
        return check_template(obtained, expected)
    if stage == "tokens":
        return check_tokens(obtained, expected, context)
    return check_embeddings(obtained, expected, dtype)
