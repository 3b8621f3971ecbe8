"""The claims ledger (`fixtures/claims.toml`): statements about implementations, each tied to a check.

    [[claim]]
    id = "comfyui-pads-512"
    statement = "stock ComfyUI pads the prompt to 512 tokens"
    source = "design document"
    check = "pads_to"
    params = { adapter = "comfyui_style", length = 512 }
    expected = "refuted"          # optional: what the ledger says the verdict is
    note = "..."                  # optional

A check is a function registered here by name. It runs the adapters (through the observations in
`text.py` and `sampling.py`) and returns a verdict, `confirmed` or `refuted`, with the evidence:
the rendered bytes, the ids, the values it judged. An adapter that cannot run the probe makes the
claim `inconclusive`, with its reason. `parity tables --check` fails when a verdict differs from
the ledger's `expected`, so the ledger is itself regression-tested.

A bad ledger (unknown key, unknown check, unknown or missing parameter, a parameter of the wrong
type, an unknown adapter, a duplicate id) is an InputError naming the claim and the key.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from parity.adapter import Unsupported
from parity.cases import parse_case
from parity.errors import InputError
from parity.files import read_toml
from parity.stages import TEXT_STAGES

from . import sampling
from . import text as text_path
from .differences import dtype_name
from .lab import Lab
from .markdown import numbers

CONFIRMED, REFUTED, INCONCLUSIVE = "confirmed", "refuted", "inconclusive"
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


# --- the checks -----------------------------------------------------------------------------------


@check
def empty_think_block(lab: Lab, adapter: str) -> Verdict:
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
def template_ends_with(lab: Lab, adapter: str, suffix: str) -> Verdict:
    """The adapter's template for a plain prompt (its defaults) ends with `suffix`."""
    seen = text_path.think_tokens(lab, adapter)
    suffix_ids = lab.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    return _verdict(seen.template.endswith(suffix)), (
        f"{adapter} renders `{text_path.PROMPT!r}` as `{seen.template!r}` (attended ids {seen.ids}); "
        f"`{suffix!r}` is {suffix_ids}"
    )


@check
def enable_thinking(lab: Lab, adapter: str, value: bool) -> Verdict:
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
def pads_to(lab: Lab, adapter: str, length: int) -> Verdict:
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
def truncates_at(lab: Lab, adapter: str, length: int) -> Verdict:
    """A prompt longer than `length` tokens is cut at `length` tokens (template included)."""
    seen = text_path.max_length(lab, adapter)
    closing = "kept" if seen.closing_kept else "lost"
    return _verdict(seen.attended == length and seen.prompt_tokens > length), (
        f"{adapter}: a {seen.prompt_tokens}-token prompt gives {seen.attended} attended ids ending {seen.tail}; "
        f"the template's closing ids {seen.closing} (`{lab.tokenizer.decode(seen.closing)!r}`) are {closing}"
    )


@check
def single_token(lab: Lab, adapter: str, text: str) -> Verdict:
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
def same_template(lab: Lab, adapter: str, a: dict, b: dict) -> Verdict:
    """Two cases (case-file fields; the prompt defaults to the probe prompt) render the same bytes."""
    first, second = (lab.run(adapter, _template_case(f), "template").template.text for f in (a, b))
    return _verdict(first == second), f"{adapter}: {a} renders `{first!r}`; {b} renders `{second!r}`"


VALIDATORS["same_template"] = lambda params: [_template_case(params[k]) for k in ("a", "b")]


@check
def embedding_layer(lab: Lab, layer: int, adapters: list[str] | None = None) -> Verdict:
    """Every adapter hands on exactly the text encoder's `hidden_states[layer]` rows."""
    seen, skipped = [], []
    for name in adapters or lab.default_names():
        try:
            seen.append((name, text_path.embedding_layer(lab, name)))
        except Unsupported as e:
            skipped.append(f"{name}: {e}")
    if not seen:
        raise Unsupported("; ".join(skipped))
    holds = all(s.index == layer and s.exact for _, s in seen)
    evidence = "; ".join(
        f"{name}: hidden_states[{s.index}] of {s.count} (max abs diff {s.max_abs_diff:.1e}, {s.rows} rows)"
        for name, s in seen
    )
    if skipped:
        evidence += "; not run: " + "; ".join(skipped)
    return _verdict(holds), evidence


@check
def time_embedder_dtype(lab: Lab, adapter: str, pipeline_dtype: PipelineDtype, dtype: Dtype) -> Verdict:
    """In a `pipeline_dtype` pipeline the time embedder's linear layers compute in `dtype`."""
    seen = sampling.dtype_casts(lab, adapter, pipeline_dtype)
    names = [dtype_name(d) for d in seen.time_mlp]
    return _verdict(names == [dtype]), (
        f"{adapter} in a {pipeline_dtype} pipeline ({sampling.SAMPLE[pipeline_dtype].steps} steps): its time "
        f"embedder was handed {dtype_name(seen.time_input)} time values and its linear layers got {names} inputs; "
        f"latents kept in {'bf16' if seen.latents_bf16 else 'fp32'}"
    )


@check
def same_schedule(lab: Lab, adapters: list[str], steps: int, atol: float = sampling.SCHEDULE_ATOL) -> Verdict:
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
def same_time_input(lab: Lab, adapters: list[str], dtype: PipelineDtype, atol: float = 1e-3) -> Verdict:
    """The adapters hand the DiT's time embedder the same values (8 steps) in a `dtype` pipeline."""
    found = {name: sampling.time_input(lab, name, dtype).values for name in adapters}
    first = found[adapters[0]]
    diffs = {name: sampling.max_difference(first, v) for name, v in found.items()}
    holds = all(d is not None and d <= atol for d in diffs.values())
    shown = "; ".join(f"{name}: {numbers(v, 4)}" for name, v in found.items())
    return _verdict(holds), f"time embedder input in a {dtype} pipeline, {shown} (atol {atol:g})"


@check
def same_noise(
    lab: Lab,
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
def dit_passes(lab: Lab, adapter: str, cfg: float, passes: int) -> Verdict:
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
def size_alignment(lab: Lab, adapter: str, multiple: int) -> Verdict:
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
def guidance_uncond(lab: Lab, adapter: str, uncond: Literal["negative", "zero"]) -> Verdict:
    """Guidance pushes away from `uncond`: "negative" (the encoded negative prompt) or "zero" (zeroed)."""
    seen = sampling.guidance(lab, adapter)
    fits = "; ".join(f"u = {f.uncond}: k = {f.k:.6f}, residual {f.residual:.1e}" for f in seen.fits)
    return _verdict(seen.best.uncond == uncond and seen.best.residual < 1e-3), (
        f"{adapter}, one step at cfg {seen.cfg:g}: the guided velocity fitted as pos + k (pos - u): {fits}"
    )


# --- the ledger -------------------------------------------------------------------------------------

_FIELDS = {"id": str, "statement": str, "source": str, "check": str, "params": dict, "expected": str, "note": str}
_REQUIRED = ("id", "statement", "source", "check")
_ADAPTER_PARAMS = ("adapter", "adapters")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    check: str
    params: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str
    evidence: str

    @property
    def unexpected(self) -> bool:
        return self.claim.expected is not None and self.verdict != self.claim.expected


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a check parameter's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, option) for option in args)
    if origin is list:
        return isinstance(value, list) and bool(value) and all(_type_ok(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _check_params(where: str, name: str, params: dict[str, Any], adapters: set[str]) -> None:
    signature = inspect.signature(CHECKS[name])
    hints = typing.get_type_hints(CHECKS[name])
    declared = {p.name: p for p in list(signature.parameters.values())[1:]}
    for key in params:
        if key not in declared:
            raise InputError(f"{where}: check {name!r} has no parameter {key!r} (it takes: {', '.join(declared)})")
    for key, p in declared.items():
        if key not in params:
            if p.default is inspect.Parameter.empty:
                raise InputError(f"{where}: check {name!r} needs the parameter {key!r}")
            continue
        if not _type_ok(params[key], hints[key]):
            raise InputError(f"{where}: parameter {key!r} must be {_describe(hints[key])}, got {params[key]!r}")
        if key in _ADAPTER_PARAMS:
            named = [params[key]] if isinstance(params[key], str) else params[key] or []
            unknown = [a for a in named if a not in adapters]
            if unknown:
                raise InputError(f"{where}: unknown adapter {unknown[0]!r} (known: {', '.join(sorted(adapters))})")
    if name in VALIDATORS:
        try:
            VALIDATORS[name](params)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None


def parse_claim(raw: Any, where: str, adapters: set[str]) -> Claim:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: each claim must be a [[claim]] table")
    where = f"{where} {raw.get('id', '?')!r}"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    for key in _REQUIRED:
        if key not in raw:
            raise InputError(f"{where}: missing field {key!r}")
    for key, value in raw.items():
        if not isinstance(value, _FIELDS[key]):
            raise InputError(f"{where}: {key!r} must be {_FIELDS[key].__name__}, got {type(value).__name__}")
    if raw["check"] not in CHECKS:
        raise InputError(f"{where}: unknown check {raw['check']!r} (known: {', '.join(sorted(CHECKS))})")
    if "expected" in raw and raw["expected"] not in VERDICTS:
        raise InputError(f"{where}: expected must be one of {', '.join(VERDICTS)}, not {raw['expected']!r}")
    params = raw.get("params", {})
    _check_params(where, raw["check"], params, adapters)
    return Claim(
        raw["id"], raw["statement"], raw["source"], raw["check"], dict(params), raw.get("expected"), raw.get("note", "")
    )


def load_claims(path: Path, adapters: set[str]) -> list[Claim]:
    """Every claim of the ledger, validated; `adapters` are the names a claim may mention."""
    data = read_toml(path, "claims ledger")
    unknown = sorted(set(data) - {"claim"})
    if unknown:
        raise InputError(f"{path.name}: unknown top-level key {unknown[0]!r} (claims go in [[claim]] tables)")
    tables = data.get("claim", [])
    if not isinstance(tables, list):
        raise InputError(f"{path.name}: 'claim' must be [[claim]] tables (an array of tables), not a single [claim]")
    if not tables:
        raise InputError(f"{path.name}: no [[claim]] tables")
    claims, seen = [], set()
    for n, raw in enumerate(tables, 1):
        claim = parse_claim(raw, f"{path.name}: claim {n}", adapters)
        if claim.id in seen:
            raise InputError(f"{path.name}: duplicate claim id {claim.id!r}")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def evaluate(claim: Claim, lab: Lab) -> ClaimResult:
    """Run the claim's check; an adapter that cannot run it makes the claim inconclusive."""
    try:
        verdict, evidence = CHECKS[claim.check](lab, **claim.params)
    except Unsupported as e:
        return ClaimResult(claim, INCONCLUSIVE, f"not supported: {e}")
    except InputError as e:
        raise InputError(f"claim {claim.id!r}: {e}") from None
    return ClaimResult(claim, verdict, evidence)
