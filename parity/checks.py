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

from dataclasses import dataclass
from typing import Any

import torch

from parity.compare import compare_ids, compare_numeric, compare_text
from parity.context import Context
from parity.stages import Denoise, Embeddings, Schedule, Template, Tokens
from parity.tolerances import Tolerance, tolerance_for


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
