"""The checks a claim of the claims ledger (`claims.py`) can name: functions registered by name.

A check runs the adapters (through the observations in `text_observations.py` and
`sampling_observations.py`) and returns a verdict, `confirmed` or `refuted`, with the evidence: the
rendered bytes, the ids, the values it judged. An adapter that cannot run the probe raises
Unsupported, which makes the claim `inconclusive`, with its reason. A check's parameters after `lab`
are what a claim's `params` may hold: the ledger checks them against the type hints when it loads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from parity.analysis import sampling_observations as sampling
from parity.analysis import text_observations as text_path
from parity.analysis.probe_runner import ProbeRunner
from parity.core.errors import InputError
from parity.stages import TEXT_STAGES
from parity.suite.adapter import Unsupported
from parity.suite.cases import parse_case

from .differences import dtype_name
from .markdown import numbers

CONFIRMED, REFUTED = "confirmed", "refuted"
VERDICTS = (CONFIRMED, REFUTED)

Verdict = tuple[str, str]
Check = Callable[..., Verdict]
CHECKS: dict[str, Check] = {}
# Checks whose parameters need more than a type check register a validator (run when the ledger loads).
VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {}
PipelineDtype = Literal["fp32", "bf16"]
Dtype = Literal["fp32", "bf16", "fp16", "fp64"]


def check(func: Check) -> Check:
    """Register `func(lab, **params) -> (verdict, evidence)` under its own name."""
    CHECKS[func.__name__] = func
    return func


def _verdict(holds: bool) -> str:
    return CONFIRMED if holds else REFUTED


@check
def empty_think_block(lab: ProbeRunner, adapter: str) -> Verdict:
    """The adapter's template for a plain prompt holds a <think> block with nothing in it."""
    seen = text_path.think_tokens(lab, adapter)
    if seen.empty_block:
        found = f"an empty think block: ids from `<think>` {seen.block}"
    elif seen.positions:
        found = f"`<think>` ({seen.think_id}) with content `{seen.inner!r}`"
    else:
        found = f"no `<think>` ({seen.think_id}) among them"
    return _verdict(seen.empty_block), (
        f"{adapter} renders `{text_path.PROMPT!r}` as `{seen.template!r}`; attended ids {seen.ids}: {found}"
    )


@check
def template_ends_with(lab: ProbeRunner, adapter: str, suffix: str) -> Verdict:
    """The adapter's template for a plain prompt (its defaults) ends with `suffix`."""
    seen = text_path.think_tokens(lab, adapter)
    suffix_ids = lab.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return _verdict(seen.template.endswith(suffix)), (
        f"{adapter} renders `{text_path.PROMPT!r}` as `{seen.template!r}` (attended ids {seen.ids}); "
        f"`{suffix!r}` is {suffix_ids}"
    )


@check
def enable_thinking(lab: ProbeRunner, adapter: str, value: bool) -> Verdict:
    """The adapter's bytes are the tokenizer's chat template rendered with enable_thinking=`value`."""
    seen = text_path.template_source(lab, adapter)
    matched = seen.enable_thinking
    which = "neither" if matched is None else f"enable_thinking={matched}"
    source = "renders the tokenizer's chat template" if seen.uses_tokenizer_template else "writes its own string"
    return _verdict(matched is value), (
        f"{adapter} {source}: `{seen.template!r}`; the tokenizer's template gives `{seen.official[True]!r}` with "
        f"enable_thinking=True and `{seen.official[False]!r}` with False; the adapter's bytes equal {which}"
    )


@check
def pads_to(lab: ProbeRunner, adapter: str, length: int) -> Verdict:
    """A plain prompt's ids are padded to `length`."""
    seen = text_path.padding(lab, adapter)
    ids = text_path.think_tokens(lab, adapter).ids
    pads = (
        f"{seen.length - seen.attended} pad ids {seen.pad_ids} on the {seen.side}"
        if seen.side != "none"
        else "no padding"
    )
    return _verdict(seen.length == length and seen.attended < seen.length), (
        f"{adapter} hands the encoder {seen.length} ids for `{text_path.PROMPT!r}`: attended {ids}, {pads}; "
        f"{seen.rows_handed} embedding rows handed on"
    )


@check
def truncates_at(lab: ProbeRunner, adapter: str, length: int) -> Verdict:
    """A prompt longer than `length` tokens is cut at `length` tokens (template included)."""
    seen = text_path.max_length(lab, adapter)
    closing = "kept" if seen.closing_kept else "lost"
    return _verdict(seen.attended == length and seen.prompt_tokens > length), (
        f"{adapter}: a {seen.prompt_tokens}-token prompt gives {seen.attended} attended ids ending {seen.tail}; "
        f"the template's closing ids {seen.closing} (`{lab.tokenizer.decode(seen.closing)!r}`) are {closing}"
    )


@check
def single_token(lab: ProbeRunner, adapter: str, text: str) -> Verdict:
    """`text`, given as the prompt, becomes exactly one token id."""
    seen = text_path.tokenized_in_prompt(lab, adapter, text)
    return _verdict(len(seen.ids) == 1), f"{adapter} tokenizes `{text!r}` as {seen.ids} (`{seen.tokens}`)"


def _template_case(fields: dict[str, Any]):
    """A text-stage probe case from case-file fields (the probe prompt unless they give one)."""
    raw = {"prompt": text_path.PROMPT} if "prompt" not in fields and "messages" not in fields else {}
    raw |= fields
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
    return parse_case({"id": f"probe.claim.{digest}", "stages": list(TEXT_STAGES), **raw}, Path("claims.toml"))


@check
def same_template(lab: ProbeRunner, adapter: str, a: dict, b: dict) -> Verdict:
    """Two cases (case-file fields; the prompt defaults to the probe prompt) render the same bytes."""
    first, second = (lab.run(adapter, _template_case(f), "template").template.text for f in (a, b))
    return _verdict(first == second), f"{adapter}: {a} renders `{first!r}`; {b} renders `{second!r}`"


VALIDATORS["same_template"] = lambda params: [_template_case(params[k]) for k in ("a", "b")]


@check
def embedding_layer(lab: ProbeRunner, layer: int, adapters: list[str] | None = None) -> Verdict:
    """Every adapter hands on exactly the text encoder's `hidden_states[layer]` rows."""
    seen, skipped = [], []
    for name in adapters or lab.default_names():
        try:
            seen.append((name, text_path.embedding_layer(lab, name)))
        except Unsupported as e:
            skipped.append(f"{name}: {e}")
    if not seen:
        raise Unsupported("; ".join(skipped))
    holds = all(s.index == layer and s.agrees for _, s in seen)
    evidence = "; ".join(
        f"{name}: hidden_states[{s.index}] of {s.count} (max abs diff {s.max_abs_diff:.1e}, {s.rows} rows, "
        f"{s.decided_by})"
        for name, s in seen
    )
    if skipped:
        evidence += "; not run: " + "; ".join(skipped)
    return _verdict(holds), evidence


@check
def time_embedder_dtype(lab: ProbeRunner, adapter: str, pipeline_dtype: PipelineDtype, dtype: Dtype) -> Verdict:
    """In a `pipeline_dtype` pipeline the time embedder's linear layers compute in `dtype`."""
    seen = sampling.dtype_casts(lab, adapter, pipeline_dtype)
    names = [dtype_name(d) for d in seen.time_mlp]
    return _verdict(names == [dtype]), (
        f"{adapter} in a {pipeline_dtype} pipeline ({sampling.SAMPLE[pipeline_dtype].steps} steps): its time "
        f"embedder was handed {dtype_name(seen.time_input)} time values and its linear layers got {names} inputs; "
        f"latents kept in {'bf16' if seen.latents_bf16 else 'fp32'}"
    )


@check
def same_schedule(lab: ProbeRunner, adapters: list[str], steps: int, atol: float = sampling.SCHEDULE_ATOL) -> Verdict:
    """The adapters' sigmas for `steps` steps agree within `atol`."""
    found = {name: sampling.sigmas(lab, name, steps) for name in adapters}
    first = found[adapters[0]]
    diffs = {name: sampling.max_difference(first, s) for name, s in found.items()}
    holds = all(d is not None and d <= atol for d in diffs.values())
    shown = "; ".join(f"{name}: {numbers(s)}" for name, s in found.items())
    gaps = ", ".join(
        f"{name} {'other length' if d is None else f'{d:.1e}'}" for name, d in diffs.items() if name != adapters[0]
    )
    return _verdict(holds), f"{steps} steps, {shown}; max abs diff from {adapters[0]}: {gaps} (atol {atol:g})"


@check
def same_time_input(lab: ProbeRunner, adapters: list[str], dtype: PipelineDtype, atol: float = 1e-3) -> Verdict:
    """The adapters hand the DiT's time embedder the same values (8 steps) in a `dtype` pipeline."""
    found = {name: sampling.time_input(lab, name, dtype).values for name in adapters}
    first = found[adapters[0]]
    diffs = {name: sampling.max_difference(first, v) for name, v in found.items()}
    holds = all(d is not None and d <= atol for d in diffs.values())
    shown = "; ".join(f"{name}: {numbers(v, 4)}" for name, v in found.items())
    return _verdict(holds), f"time embedder input in a {dtype} pipeline, {shown} (atol {atol:g})"


@check
def same_noise(
    lab: ProbeRunner,
    dtype: PipelineDtype,
    side: int = 128,
    seed: int = sampling.NOISE_SEED,
    adapters: list[str] | None = None,
) -> Verdict:
    """Every adapter that draws noise draws the same initial latent for the seed."""
    draws, skipped = {}, []
    for name in adapters or lab.default_names():
        try:
            draws[name] = sampling.noise_draw(lab, name, side, dtype, seed)
        except Unsupported as e:
            skipped.append(f"{name}: {e}")
    if len(draws) < 2:
        raise Unsupported("fewer than two adapters draw noise: " + "; ".join(skipped))
    first_name, first = next(iter(draws.items()))
    parts, holds = [], True
    for name, draw in draws.items():
        same = draw.shape == first.shape and bool((draw.values == first.values).all())
        holds &= same
        head = numbers(draw.values.flatten()[:4].tolist(), 8)
        parts.append(
            f"{name}: {draw.shape} {dtype_name(draw.returned_dtype)} starting {head}"
            + ("" if name == first_name else (" (equal)" if same else " (differs)"))
        )
    evidence = f"seed {seed}, {side}x{side}, {dtype} pipeline: " + "; ".join(parts)
    if skipped:
        evidence += "; draws none: " + "; ".join(skipped)
    return _verdict(holds), evidence


@check
def dit_passes(lab: ProbeRunner, adapter: str, cfg: float, passes: int) -> Verdict:
    """At `cfg`, with a negative prompt given, each step runs the DiT on `passes` samples."""
    seen = sampling.passes(lab, adapter, cfg)
    per_step = seen.samples / seen.steps
    return _verdict(per_step == passes), (
        f"{adapter} at cfg {cfg:g} with a negative prompt's embeddings given: the time embedder embedded "
        f"{seen.samples} sample(s) in {seen.calls} call(s) over {seen.steps} step(s)"
    )


def _cfg_at_least_one(params: dict[str, Any]) -> None:
    if params["cfg"] < 1:
        raise InputError(f"cfg must be at least 1 (1.0 = guidance off), got {params['cfg']}")


VALIDATORS["dit_passes"] = _cfg_at_least_one


@check
def size_alignment(lab: ProbeRunner, adapter: str, multiple: int) -> Verdict:
    """The smallest pixel multiple the adapter samples as is (latent = size/8, handed to the DiT unchanged)."""
    seen = sampling.alignment(lab, adapter)
    sizes = []
    for o in seen.outcomes:
        if o.refused is not None:
            sizes.append(f"{o.side}x{o.side}: refused ({o.refused})")
        else:
            dit = "" if o.dit in (None, o.latent) else f", DiT handed {o.dit[0]}x{o.dit[1]}"
            sizes.append(f"{o.side}x{o.side}: latent {o.latent[0]}x{o.latent[1]}{dit}")
    return _verdict(seen.required == multiple), (
        f"{adapter}, one step: " + "; ".join(sizes) + f"; so it needs a multiple of {seen.required}"
    )


@check
def guidance_uncond(lab: ProbeRunner, adapter: str, uncond: Literal["negative", "zero"]) -> Verdict:
    """Guidance pushes away from `uncond`: "negative" (the encoded negative prompt) or "zero" (zeroed)."""
    seen = sampling.guidance(lab, adapter)
    fits = "; ".join(f"u = {f.uncond}: k = {f.k:.6f}, residual {f.residual:.1e}" for f in seen.fits)
    return _verdict(seen.best.uncond == uncond and seen.best.residual < 1e-3), (
        f"{adapter}, one step at cfg {seen.cfg:g}: the guided velocity fitted as pos + k (pos - u): {fits}"
    )
