"""One stage's verdict: which comparator applies to it, and what counts as the same.

- template: the exact string.
- tokens: the attended ids, exactly. Padding is reported but not compared: a padded and an
  unpadded implementation hand the DiT the same rows when the padding is filtered out.
- embeddings: the masked-in rows, numerically (dtype-aware tolerance); and the number of rows
  handed to the DiT, since handing padding on changes what the DiT attends to.
- schedule: sigmas and the DiT's time input, in float64.
- denoise: step by step. The first step whose velocity or result leaves the tolerance is the
  first divergent step; a different starting latent is reported as a noise finding of its own;
  with per-block capture, the first divergent block at that step is named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from parity.compare import IdsDiff, compare_ids, compare_numeric, compare_text
from parity.context import Context
from parity.stages import Denoise, Embeddings, Schedule, Template, Tokens
from parity.tolerances import Tolerance, tolerance_for

# What the HTML report shows of a divergence, kept small whatever the input size.
TEMPLATE_WINDOW_BEFORE = 1000  # characters of common text kept before the first difference
TEMPLATE_WINDOW = 4000  # characters kept of each side, from the window start
ALIGNED_CONTEXT = 3  # equal tokens shown around each differing span
MAX_ALIGNED_ROWS = 200
HEATMAP_MAX = 64  # the |obtained - expected| heatmap is max-pooled to at most this many rows and columns


@dataclass(frozen=True)
class StageCheck:
    passed: bool
    summary: str
    detail: dict[str, Any]


def attended(tokens: Tokens) -> list[int]:
    return [i for i, m in zip(tokens.input_ids, tokens.attention_mask, strict=True) if m]


def _template_window(obtained: str, expected: str, first_diff: int) -> dict[str, Any]:
    """Both texts around their first difference, from a line start where one is near, for a side-by-side diff."""
    start = max(0, first_diff - TEMPLATE_WINDOW_BEFORE)
    newline = expected.find("\n", start, first_diff)
    if start > 0 and newline != -1:
        start = newline + 1
    return {
        "window_start": start,
        "obtained_text": obtained[start : start + TEMPLATE_WINDOW],
        "expected_text": expected[start : start + TEMPLATE_WINDOW],
        "window_truncated": start > 0 or max(len(obtained), len(expected)) > start + TEMPLATE_WINDOW,
    }


def check_template(obtained: Template, expected: Template) -> StageCheck:
    diff = compare_text(obtained.text, expected.text)
    detail = diff.to_json()
    if not diff.equal and diff.first_diff is not None:
        detail |= _template_window(obtained.text, expected.text, diff.first_diff)
    return StageCheck(diff.equal, diff.summary(), detail)


def _aligned_rows(
    obtained: list[int], expected: list[int], diff: IdsDiff, decode: Callable[[int], str]
) -> tuple[list[dict[str, Any]], bool]:
    """The token-aligned diff as rows: each differing span with ALIGNED_CONTEXT equal tokens around it.

    A row is {"op", "expected": [pos, id, token] or None, "obtained": [pos, id, token] or None};
    a run of equal tokens left out is {"op": "gap", "skipped": n}. Returns the rows and whether
    MAX_ALIGNED_ROWS cut them short.
    """
    rows: list[dict[str, Any]] = []

    def side(ids: list[int], pos: int) -> list[Any]:
        return [pos, ids[pos], decode(ids[pos])]

    def same(e0: int, o0: int, n: int, lead: bool, trail: bool) -> None:
        """n aligned tokens from e0/o0; `lead`: a span follows, `trail`: a span precedes."""
        keep = [k for k in range(n) if (trail and k < ALIGNED_CONTEXT) or (lead and k >= n - ALIGNED_CONTEXT)]
        last = -1
        for k in keep:
            if k > last + 1:
                rows.append({"op": "gap", "skipped": k - last - 1})
            e, o = e0 + k, o0 + k
            op = "equal" if expected[e] == obtained[o] else "unaligned"
            rows.append({"op": op, "expected": side(expected, e), "obtained": side(obtained, o)})
            last = k
        if n > last + 1:
            rows.append({"op": "gap", "skipped": n - last - 1})

    e_at = o_at = 0
    for n, span in enumerate(diff.spans):
        same(e_at, o_at, span.expected_start - e_at, True, n > 0)
        e_len = min(span.expected_end - span.expected_start, len(span.expected_ids))
        o_len = min(span.obtained_end - span.obtained_start, len(span.obtained_ids))
        for k in range(max(e_len, o_len)):
            e = span.expected_start + k if k < e_len else None
            o = span.obtained_start + k if k < o_len else None
            rows.append({
                "op": span.op,
                "expected": side(expected, e) if e is not None else None,
                "obtained": side(obtained, o) if o is not None else None,
            })
        cut = (span.expected_end - span.expected_start - e_len, span.obtained_end - span.obtained_start - o_len)
        if any(cut):
            rows.append({"op": "gap", "skipped": max(cut)})
        e_at, o_at = span.expected_end, span.obtained_end
    if diff.spans:
        same(e_at, o_at, min(len(expected) - e_at, len(obtained) - o_at), False, True)
    truncated = len(rows) > MAX_ALIGNED_ROWS
    return rows[:MAX_ALIGNED_ROWS], truncated


def check_tokens(obtained: Tokens, expected: Tokens, context: Context) -> StageCheck:
    tokenizer = context.tokenizer
    ours, theirs = attended(obtained), attended(expected)
    diff = compare_ids(ours, theirs, lambda i: tokenizer.decode([i]))
    padding = {
        "obtained_padding": len(obtained.input_ids) - len(ours),
        "expected_padding": len(expected.input_ids) - len(theirs),
    }
    detail = diff.to_json() | padding
    if not diff.equal:
        rows, truncated = _aligned_rows(ours, theirs, diff, lambda i: tokenizer.decode([i]))
        detail |= {"aligned": rows, "aligned_truncated": truncated}
    return StageCheck(diff.equal, diff.summary(), detail)


def _diff_heatmap(obtained: torch.Tensor, expected: torch.Tensor) -> dict[str, Any] | None:
    """|obtained - expected| over the common rows, max-pooled to at most HEATMAP_MAX x HEATMAP_MAX cells
    (only kept when values lie outside the tolerance, to keep the results small).

    Values keep 3 significant digits; a cell holding a non-finite pair is None. None when the two
    sides cannot be compared or agree exactly.
    """
    if obtained.dim() != 2 or obtained.shape[1:] != expected.shape[1:]:
        return None
    rows = min(obtained.shape[0], expected.shape[0])
    cols = obtained.shape[1]
    if rows == 0 or cols == 0:
        return None
    err = (obtained[:rows].detach().cpu().double() - expected[:rows].detach().cpu().double()).abs()
    err = torch.where(torch.isfinite(err), err, torch.nan)
    if bool((err == 0).all()):
        return None
    row_step, col_step = math.ceil(rows / HEATMAP_MAX), math.ceil(cols / HEATMAP_MAX)
    # |diff| >= 0, so zero padding never wins the max; NaN (a non-finite pair) propagates.
    padded = torch.nn.functional.pad(err, (0, (-cols) % col_step, 0, (-rows) % row_step), value=0.0)
    r, c = padded.shape[0] // row_step, padded.shape[1] // col_step
    pooled = padded.reshape(r, row_step, c, col_step).amax(dim=(1, 3))
    values = [[float(f"{v:.3g}") if math.isfinite(v) else None for v in row] for row in pooled.tolist()]
    return {"rows": rows, "cols": cols, "rows_per_cell": row_step, "cols_per_cell": col_step, "values": values}


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
    detail = diff.to_json() | handed | {"tolerance_evidence": tolerance.to_json()}
    heatmap = _diff_heatmap(obtained.valid, expected.valid) if diff.mismatched else None
    if heatmap is not None:
        detail["diff_heatmap"] = heatmap
    return StageCheck(passed, summary, detail)


def check_schedule(obtained: Schedule, expected: Schedule) -> StageCheck:
    tolerance = tolerance_for("schedule", "fp32")
    sigmas = compare_numeric(obtained.sigmas, expected.sigmas, tolerance.tolerance)
    model_t = compare_numeric(obtained.model_t, expected.model_t, tolerance.tolerance)
    parts = [f"sigmas: {sigmas.summary()}"]
    if not model_t.passed or sigmas.passed:
        parts.append(f"model_t: {model_t.summary()}")
    detail = {
        "sigmas": sigmas.to_json(),
        "model_t": model_t.to_json(),
        "obtained_sigmas": obtained.sigmas.tolist(),
        "expected_sigmas": expected.sigmas.tolist(),
        "obtained_model_t": obtained.model_t.tolist(),
        "expected_model_t": expected.model_t.tolist(),
    }
    return StageCheck(sigmas.passed and model_t.passed, "; ".join(parts), detail)


def _per_step(obtained: torch.Tensor, expected: torch.Tensor) -> list[float | None]:
    steps = min(obtained.shape[0], expected.shape[0])
    out = []
    for k in range(steps):
        diff = (obtained[k].double() - expected[k].double()).abs()
        out.append(diff.max().item() if bool(torch.isfinite(diff).all()) else None)
    return out


def _first_nonfinite_step(values: torch.Tensor) -> int | None:
    bad = [k for k in range(values.shape[0]) if not bool(torch.isfinite(values[k]).all())]
    return bad[0] if bad else None


def check_denoise(obtained: Denoise, expected: Denoise, dtype: str) -> StageCheck:
    tol = tolerance_for("denoise", dtype)
    if obtained.latents.shape[1:] != expected.latents.shape[1:]:
        summary = f"latent shape {tuple(obtained.latents.shape[1:])} vs reference {tuple(expected.latents.shape[1:])}"
        return StageCheck(False, summary, {"shape_mismatch": True})
    nonfinite = _first_nonfinite_step(obtained.model_out)
    # The starting latent is data, not arithmetic: any difference at all is a different draw.
    noise = compare_numeric(obtained.latents[0], expected.latents[0], Tolerance(atol=0.0, rtol=0.0))
    steps = min(obtained.model_out.shape[0], expected.model_out.shape[0])
    per_step = [
        compare_numeric(obtained.model_out[k], expected.model_out[k], tol.tolerance) for k in range(steps)
    ]
    results = [
        compare_numeric(obtained.latents[k + 1], expected.latents[k + 1], tol.tolerance) for k in range(steps)
    ]
    first = next((k for k in range(steps) if not (per_step[k].passed and results[k].passed)), None)
    final = compare_numeric(obtained.latents[-1], expected.latents[-1], tol.tolerance)
    detail: dict[str, Any] = {
        "steps": steps,
        "first_divergent_step": first,
        "first_nonfinite_step": nonfinite,
        "noise_matches": noise.passed,
        "model_out_max_abs": _per_step(obtained.model_out, expected.model_out),
        "latents_max_abs": _per_step(obtained.latents, expected.latents),
        "final_latent": final.to_json(),
        "tolerance_evidence": tol.to_json(),
    }
    if obtained.blocks and expected.blocks:
        detail["blocks"] = {
            name: compare_numeric(obtained.blocks[name], expected.blocks[name], tol.tolerance).to_json()
            for name in expected.blocks
            if name in obtained.blocks
        }
        detail["first_divergent_block"] = next(
            (name for name, d in detail["blocks"].items() if not d["passed"]), None
        )
    passed = first is None and noise.passed and obtained.model_out.shape[0] == expected.model_out.shape[0]
    if nonfinite is not None:
        summary = f"non-finite model output at step {nonfinite}"
    elif not noise.passed:
        summary = f"initial noise differs ({noise.summary()}); final latent: {final.summary()}"
    elif first is not None:
        which = per_step[first] if not per_step[first].passed else results[first]
        what = "velocity" if not per_step[first].passed else "step result"
        summary = (
            f"diverges from step {first}: {what} {which.summary()}; final latent max abs "
            f"{final.max_abs:.3e}, cos {final.cosine:.6f}"
        )
    elif obtained.model_out.shape[0] != expected.model_out.shape[0]:
        summary = f"{obtained.model_out.shape[0]} steps vs the reference's {expected.model_out.shape[0]}"
    else:
        bounds = f"atol={tol.tolerance.atol:g} rtol={tol.tolerance.rtol:g}"
        summary = f"all {steps} steps within {bounds}; final latent {final.summary()}"
    if detail.get("first_divergent_block"):
        summary += f"; first divergent block: {detail['first_divergent_block']}"
    return StageCheck(passed, summary, detail)


def check_stage(stage: str, obtained: Any, expected: Any, context: Context, dtype: str) -> StageCheck:
    if expected is None:
        return StageCheck(False, f"the golden fixture has no {stage} output", {})
    if stage == "template":
        return check_template(obtained, expected)
    if stage == "tokens":
        return check_tokens(obtained, expected, context)
    if stage == "embeddings":
        return check_embeddings(obtained, expected, dtype)
    if stage == "schedule":
        return check_schedule(obtained, expected)
    return check_denoise(obtained, expected, dtype)
