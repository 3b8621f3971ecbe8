"""The 'Implementation differences' table: one row per way implementations differ, one column per adapter.

Each row is a function (lab, adapter name) -> cell that renders an observation from `text_observations.py` or
`sampling_observations.py`. An adapter that cannot run the probe gets `not supported: <its reason>`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from parity.analysis import sampling_observations as sampling
from parity.analysis import text_observations as text
from parity.analysis.probe_runner import ProbeRunner
from parity.suite.adapter import Unsupported

from .markdown import code, num, numbers, plain

Row = Callable[[ProbeRunner, str], str]

_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def cell(row: Row, lab: ProbeRunner, name: str) -> str:
    try:
        return row(lab, name)
    except Unsupported as e:
        return plain(f"not supported: {e}")


def thinking_tokens(lab: ProbeRunner, name: str) -> str:
    seen = text.think_tokens(lab, name)
    ends = f"ends {code(seen.tail)}"
    if not seen.positions:
        return f"none ({ends})"
    at = ", ".join(str(p) for p in seen.positions)
    return (
        f"{code('<think>')} ({seen.think_id}) at position {at} of {len(seen.ids)} ids: {ends}, ids from it {seen.block}"
    )


def system_prompt(lab: ProbeRunner, name: str) -> str:
    seen = text.system_prompt(lab, name)
    if not seen.rendered:
        return plain("accepted, but no system turn is rendered")
    part = seen.template[: seen.template.find("<|im_start|>user")]
    same = seen.matches_official
    official = (
        "differs from the tokenizer's template"
        if same is None
        else f"= the tokenizer's template with enable_thinking={same}"
    )
    return f"yes: {code(part)} first; whole string {plain(official)}"


def template_source(lab: ProbeRunner, name: str) -> str:
    seen = text.template_source(lab, name)
    source = "the tokenizer's chat template (apply_chat_template)" if seen.uses_tokenizer_template else "hard-coded"
    thinking = seen.enable_thinking
    if thinking is not None:
        bytes_ = f"bytes = the official template with enable_thinking={thinking}"
    else:
        at = min(seen.first_difference(True), seen.first_difference(False))
        bytes_ = f"bytes differ from both official renderings from character {at}"
    return plain(f"{source}; {bytes_}")


def embedding_layer(lab: ProbeRunner, name: str) -> str:
    seen = text.embedding_layer(lab, name)
    match = "exact" if seen.max_abs_diff == 0.0 else f"closest, max abs diff {seen.max_abs_diff:.2e}"
    return f"{code(f'hidden_states[{seen.index}]')} of {seen.count} ({match}, {seen.rows} rows; {seen.decided_by})"


def padding(lab: ProbeRunner, name: str) -> str:
    seen = text.padding(lab, name)
    if seen.side == "none":
        pads = f"no padding ({seen.length} tokens)"
    else:
        pads = (
            f"pads to {seen.length} on the {seen.side} with {seen.pad_ids} ({seen.length - seen.attended} pad tokens)"
        )
    rows = f"hands on {seen.rows_handed} rows"
    if seen.rows_masked:
        rows += f", {seen.rows_masked} of them masked"
    elif seen.length > seen.attended:
        rows += " (padding dropped)"
    parts = [plain(pads), plain(rows)]
    pad = seen.pad_text
    if pad is not None:
        pad_id = text.token_id(lab, text.PAD_TEXT)
        if pad.pad_attended(pad_id):
            behaviour = "attended like text"
        else:
            behaviour = f"it and all after it masked ({len(pad.attended)} ids attended)"
            behaviour += (
                f", rows kept with the mask ({pad.rows_handed} rows, {pad.rows_masked} masked)"
                if pad.rows_masked
                else f", masked rows dropped ({pad.rows_handed} rows)"
            )
        parts.append(f"{code(text.PAD_TEXT)} in a prompt: {plain(behaviour)}")
    return "; ".join(parts)


def max_length(lab: ProbeRunner, name: str) -> str:
    seen = text.max_length(lab, name)
    closing = code(lab.tokenizer.decode(seen.closing))
    if seen.truncated:
        return (
            f"{seen.attended}: a {seen.prompt_tokens}-token prompt is cut at {seen.attended} tokens, template "
            f"included; the closing {closing} is lost"
        )
    return f"none: a {seen.prompt_tokens}-token prompt gives {seen.attended} tokens, closing {closing} kept"


def _size_text(outcome: sampling.SizeOutcome) -> str:
    if outcome.refused is not None:
        return f"refused ({outcome.refused})"
    h, w = outcome.latent
    said = f"latent {h}x{w}"
    if h * 8 > outcome.side:
        said += f" (rounded up to {h * 8})"
    elif h * 8 < outcome.side:
        said += f" (floored to {h * 8})"
    if outcome.dit is not None and outcome.dit != outcome.latent:
        said += f", handed to the DiT as {outcome.dit[0]}x{outcome.dit[1]}"
    return said


def alignment(lab: ProbeRunner, name: str) -> str:
    seen = sampling.alignment(lab, name)
    # Sizes with the same outcome share one description; a refusal that names its size counts as the same.
    grouped: dict[str, tuple[str, list[int]]] = {}
    for outcome in seen.outcomes:
        described = _size_text(outcome)
        key = described.replace(str(outcome.side), "<size>")
        grouped.setdefault(key, (described, []))[1].append(outcome.side)
    required = f"multiple of {seen.required}" if seen.required else "none of the probed sizes runs as is"
    details = "; ".join(f"{', '.join(map(str, sides))} px: {what}" for what, sides in grouped.values())
    return plain(f"{required}. {details}")


def schedule(lab: ProbeRunner, name: str) -> str:
    parts = []
    for steps in (8, 9):
        own = sampling.sigmas(lab, name, steps)
        reference, ref = sampling.reference_schedule(lab, steps)
        if name == reference:
            parts.append(f"{steps} steps: {numbers(own)}")
            continue
        diff = sampling.max_difference(own, ref)
        if diff is not None and diff <= sampling.SCHEDULE_ATOL:
            parts.append(f"{steps} steps: = {reference} (max abs diff {diff:.1e})")
        else:
            gap = "other length" if diff is None else f"max abs diff {diff:.1e}"
            parts.append(f"{steps} steps: ≠ {reference} ({gap}): {numbers(own)}")
    return plain("; ".join(parts))


def time_input(lab: ProbeRunner, name: str) -> str:
    seen = {dtype: sampling.time_input(lab, name, dtype) for dtype in ("fp32", "bf16")}
    shown = {dtype: numbers(t.values, 4) for dtype, t in seen.items()}
    if shown["fp32"] == shown["bf16"]:
        said = f"fp32 and bf16: {shown['fp32']}"
    else:
        said = f"fp32: {shown['fp32']}; bf16: {shown['bf16']}"
    if not all(t.watched for t in seen.values()):
        said += " (the schedule stage's model_t; the adapter does not sample)"
    return plain(said)


def guidance(lab: ProbeRunner, name: str) -> str:
    seen = sampling.guidance(lab, name)
    fit = seen.best
    u = "the negative prompt" if fit.uncond == "negative" else "zeros (the positive conditioning zeroed)"
    formula = (
        f"v = u + {num(fit.k + 1, 3)}·(pos − u) = pos + {num(fit.k, 3)}·(pos − u) at cfg {num(seen.cfg)}, u = {u} "
        f"(fit residual {fit.residual:.0e})"
    )
    calls = f"{seen.calls_guided} call" + ("s" if seen.calls_guided != 1 else "")
    passes = (
        f"{seen.samples_guided} DiT passes per step ({calls}); at cfg 1 with a negative given: {seen.samples_unguided}"
    )
    return plain(f"{formula}; {passes}")


def samplers(lab: ProbeRunner, name: str) -> str:
    runs = sampling.samplers(lab, name)
    parts = [runs[0].sampler]
    for run in runs[1:]:
        if run.refused is not None:
            parts.append(f"{run.sampler}: not supported ({run.refused})")
        else:
            parts.append(
                f"{run.sampler} (against {runs[0].sampler}, {sampling.SAMPLER_STEPS} steps from the same noise: "
                f"first step max abs diff {run.first_step:.1e}, final latent {run.final:.1e})"
            )
    return plain("; ".join(parts))


def noise(lab: ProbeRunner, name: str) -> str:
    parts = []
    for side, dtype in ((128, "fp32"), (128, "bf16"), (136, "fp32")):
        draw = sampling.noise_draw(lab, name, side, dtype)
        said = f"{side}² {dtype}: {draw.shape} {dtype_name(draw.returned_dtype)}"
        if draw.equal_to_shared:
            said += " = the shared draw"
        elif draw.max_abs_diff is None:
            said += f" ≠ the shared draw {draw.shared_shape}"
        else:
            rounded = "bf16-rounded, " if draw.bf16_values else ""
            said += f" ≠ the shared draw ({rounded}max abs diff {draw.max_abs_diff:.1e})"
        parts.append(said)
    return plain(f"seed {sampling.NOISE_SEED}: " + "; ".join(parts))


def dtype_casts(lab: ProbeRunner, name: str) -> str:
    parts = []
    for dtype in ("fp32", "bf16"):
        seen = sampling.dtype_casts(lab, name, dtype)
        mlp = "/".join(dtype_name(d) for d in seen.time_mlp) or "?"
        latents = "bf16" if seen.latents_bf16 else "fp32"
        caveat = lab.caveat(name, sampling.SAMPLE[dtype], "denoise")
        parts.append(f"{dtype} pipeline: time MLP in {mlp}, latents kept in {latents}{caveat}")
    return plain("; ".join(parts))


ROWS: dict[str, Row] = {
    "thinking tokens": thinking_tokens,
    "system prompt": system_prompt,
    "chat template source": template_source,
    "embedding layer": embedding_layer,
    "padding handling": padding,
    "max sequence length": max_length,
    "resolution alignment": alignment,
    "schedule (sigmas)": schedule,
    "time input (model_t × 1000, 8 steps)": time_input,
    "sampler": samplers,
    "guidance formula": guidance,
    "noise": noise,
    "dtype casts": dtype_casts,
}


def differences(lab: ProbeRunner, names: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table: `difference`, then one column per adapter."""
    header = ["difference", *names]
    rows = [[plain(label), *(cell(row, lab, name) for name in names)] for label, row in ROWS.items()]
    return header, rows
