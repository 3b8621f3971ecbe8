"""Observations of the text path, each made by running one adapter on a probe case built here.

Every function takes the lab and an adapter name, runs the adapter (template, tokens, embeddings
as a comparison runs them), and returns what it saw as data: the bytes, the ids, the counts. The
tables render these; the claim checks judge them. `Unsupported` from the adapter propagates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parity.analysis.probe_runner import TEMPLATE_MARKER, ProbeRunner
from parity.compare.records import common_prefix, common_suffix
from parity.stages import TEXT_STAGES
from parity.stages.embeddings import EMBEDDINGS
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case

PROMPT = "A cat sleeping"
SYSTEM = "You are a photographer."
# ComfyUI's pad token written into a prompt: where implementations mask (or not) text after it.
PAD_TEXT = "<|endoftext|>"
LONG_PROMPT_TOKENS = 700


def _text_case(id: str, **fields) -> Case:
    return Case(id=f"probe.{id}", stages=TEXT_STAGES, **fields)


SHORT = _text_case("short", prompt=PROMPT)
EMPTY = _text_case("empty", prompt="")
WITH_SYSTEM = _text_case("system", prompt=PROMPT, system_prompt=SYSTEM)
PAD_IN_PROMPT = _text_case("pad-in-prompt", prompt=f"A cat{PAD_TEXT} sleeping")


def long_case(lab: ProbeRunner) -> tuple[Case, int]:
    """A prompt of LONG_PROMPT_TOKENS tokens (measured with the run's tokenizer) and that count."""

    def build() -> tuple[Case, int]:
        prompt = "cat" + " cat" * (LONG_PROMPT_TOKENS - 1)
        count = len(lab.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return _text_case("long", prompt=prompt), count

    return lab.memo(("long-case",), build)


def token_id(lab: ProbeRunner, text: str) -> int:
    ids = lab.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise Unsupported(f"{text!r} is not one token in this tokenizer: {ids}")
    return ids[0]


def tokens_of(lab: ProbeRunner, ids: list[int]) -> list[str]:
    return lab.tokenizer.convert_ids_to_tokens(ids)


def after_prompt(template: str, prompt: str) -> str:
    """The template bytes after the (last) copy of the prompt: the closing part of the template."""
    at = template.rfind(prompt)
    return template[at + len(prompt) :] if at >= 0 and prompt else template


# --- thinking tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class ThinkTokens:
    template: str
    ids: list[int]  # attended ids of the short prompt
    think_id: int
    positions: list[int]  # where <think> occurs in `ids`
    inner: str | None  # the text between the first <think> and the </think> after it (None: no pair)

    @property
    def tail(self) -> str:
        """The template bytes after the prompt."""
        return after_prompt(self.template, PROMPT)

    @property
    def block(self) -> list[int]:
        """The ids from the first <think> to the end."""
        return self.ids[self.positions[0] :] if self.positions else []

    @property
    def empty_block(self) -> bool:
        """A <think> ... </think> pair with nothing but whitespace between."""
        return self.inner is not None and not self.inner.strip()


def think_tokens(lab: ProbeRunner, name: str) -> ThinkTokens:
    def compute() -> ThinkTokens:
        out = lab.run(name, SHORT, "tokens")
        ids = out.tokens.attended
        think, end = token_id(lab, "<think>"), token_id(lab, "</think>")
        positions = [i for i, t in enumerate(ids) if t == think]
        inner = None
        if positions and end in ids[positions[0] :]:
            inside = ids[positions[0] + 1 : ids.index(end, positions[0])]
            inner = lab.tokenizer.decode(inside)
        return ThinkTokens(out.template.text, ids, think, positions, inner)

    return lab.memo(("think", name), compute)


# --- system prompt -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemPrompt:
    template: str
    official: dict[bool, str]  # the tokenizer's template with the same messages, per enable_thinking

    @property
    def rendered(self) -> bool:
        return "<|im_start|>system" in self.template

    @property
    def matches_official(self) -> bool | None:
        for thinking, text in self.official.items():
            if text == self.template:
                return thinking
        return None


def system_prompt(lab: ProbeRunner, name: str) -> SystemPrompt:
    def compute() -> SystemPrompt:
        out = lab.run(name, WITH_SYSTEM, "template")
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
        return SystemPrompt(out.template.text, official_renderings(lab, messages))

    return lab.memo(("system", name), compute)


# --- chat template source ----------------------------------------------------------------------


def official_renderings(lab: ProbeRunner, messages: list[dict[str, str]]) -> dict[bool, str]:
    """The tokenizer's own chat template, with a generation prompt, for enable_thinking True and False."""
    return {
        thinking: lab.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )
        for thinking in (True, False)
    }


@dataclass(frozen=True)
class TemplateSource:
    template: str
    uses_tokenizer_template: bool  # the marker put in front of the tokenizer's template came through
    official: dict[bool, str]

    @property
    def enable_thinking(self) -> bool | None:
        """Which official rendering the adapter's bytes equal (None: neither)."""
        for thinking, text in self.official.items():
            if text == self.template:
                return thinking
        return None

    def first_difference(self, thinking: bool) -> int:
        other = self.official[thinking]
        return next(
            (i for i, (a, b) in enumerate(zip(self.template, other, strict=False)) if a != b),
            min(len(self.template), len(other)),
        )


def template_source(lab: ProbeRunner, name: str) -> TemplateSource:
    def compute() -> TemplateSource:
        text = lab.run(name, SHORT, "template").template.text
        marked = lab.run(name, SHORT, "template", marked_template=True).template.text
        official = official_renderings(lab, [{"role": "user", "content": PROMPT}])
        return TemplateSource(text, TEMPLATE_MARKER in marked, official)

    return lab.memo(("template-source", name), compute)


# --- embedding layer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingLayer:
    index: int  # into hidden_states, negative (-2: the second to last entry)
    count: int  # len(hidden_states)
    max_abs_diff: float
    rows: int
    # Whose rows were compared: the adapter's own run, or the stored outputs of the real code it models.
    decided_by: str
    # What counts as the same rows: 0 for the adapter's own run (the same encoder, so exact), the
    # embeddings stage's fp32 tolerance for another implementation's encoder.
    tolerance: float = 0.0

    @property
    def agrees(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def embedding_layer(lab: ProbeRunner, name: str) -> EmbeddingLayer:
    """Which entry of the shared text encoder's `hidden_states` the adapter's handed rows are.

    The encoder is run here on the ids and mask of the rows compared; its masked-in rows at every
    index are compared with the rows handed on (those the mask marks as real). For a
    re-implementation of code whose stored outputs exist (`Adapter.modelled_on`), the rows are that
    code's own, from its fixture of the suite's `short` case (the same prompt): the claim is then
    decided by the real encoder, not by the harness's model of it.
    """

    def compute() -> EmbeddingLayer:
        real = lab.real_outputs(name, "short")
        if real is not None:
            source, out = real
            decided_by, tolerance = f"{source}'s stored output", EMBEDDINGS.tolerance("fp32").tolerance.atol
        else:
            out, decided_by, tolerance = lab.run(name, SHORT, "embeddings"), "its own run", 0.0
        tokens, emb = out.get("tokens"), out.get("embeddings")
        encoder = lab.context(SHORT.dtype).text_encoder
        device = next(encoder.parameters()).device
        ids = torch.tensor([tokens.input_ids], device=device)
        mask = torch.tensor([tokens.attention_mask], device=device)
        with torch.inference_mode():
            states = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        keep = torch.tensor(tokens.attention_mask, dtype=torch.bool)
        handed = emb.hidden[emb.mask.bool()].cpu().float()
        best: tuple[float, int] | None = None
        for index in range(-len(states), 0):
            rows = states[index][0].cpu()[keep].float()
            if rows.shape != handed.shape:
                continue
            diff = float((rows - handed).abs().max()) if rows.numel() else 0.0
            if best is None or diff < best[0]:
                best = (diff, index)
        if best is None:
            raise Unsupported(f"handed {tuple(handed.shape)} rows match no hidden_states entry's shape")
        return EmbeddingLayer(best[1], len(states), best[0], handed.shape[0], decided_by, tolerance)

    return lab.memo(("embedding-layer", name), compute)


# --- padding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PadText:
    """PAD_IN_PROMPT: the pad token's text inside a prompt."""

    attended: list[int]
    rows_handed: int
    rows_masked: int

    def pad_attended(self, pad_id: int) -> bool:
        return pad_id in self.attended


@dataclass(frozen=True)
class Padding:
    length: int  # tokens handed to the encoder
    attended: int
    side: str  # "right", "left", "none", "mixed"
    pad_ids: list[int]
    rows_handed: int  # embedding rows handed to the DiT
    rows_masked: int  # of which the handed mask marks padding
    pad_text: PadText | None  # None: the adapter cannot run that prompt


def _side(mask: list[int]) -> str:
    zeros = [i for i, m in enumerate(mask) if not m]
    if not zeros:
        return "none"
    if zeros == list(range(len(mask) - len(zeros), len(mask))):
        return "right"
    if zeros == list(range(len(zeros))):
        return "left"
    return "mixed"


def _masked_rows(mask: torch.Tensor) -> int:
    return int((~mask.bool()).sum())


def padding(lab: ProbeRunner, name: str) -> Padding:
    def compute() -> Padding:
        out = lab.run(name, SHORT, "embeddings")
        tokens, emb = out.tokens, out.embeddings
        pad_ids = sorted({i for i, m in zip(tokens.input_ids, tokens.attention_mask, strict=True) if not m})
        try:
            other = lab.run(name, PAD_IN_PROMPT, "embeddings")
            pad_text = PadText(
                other.tokens.attended, other.embeddings.hidden.shape[0], _masked_rows(other.embeddings.mask)
            )
        except Unsupported:
            pad_text = None
        return Padding(
            length=len(tokens.input_ids),
            attended=sum(tokens.attention_mask),
            side=_side(tokens.attention_mask),
            pad_ids=pad_ids,
            rows_handed=emb.hidden.shape[0],
            rows_masked=_masked_rows(emb.mask),
            pad_text=pad_text,
        )

    return lab.memo(("padding", name), compute)


# --- maximum sequence length -------------------------------------------------------------------


@dataclass(frozen=True)
class MaxLength:
    prompt_tokens: int
    attended: int
    closing: list[int]  # the template's closing ids (after the prompt)
    closing_kept: bool
    tail: list[int]  # the last attended ids

    @property
    def truncated(self) -> bool:
        return self.attended < self.prompt_tokens or not self.closing_kept


def max_length(lab: ProbeRunner, name: str) -> MaxLength:
    def compute() -> MaxLength:
        case, count = long_case(lab)
        ids = lab.run(name, case, "tokens").tokens.attended
        short = lab.run(name, SHORT, "tokens").tokens.attended
        empty = lab.run(name, EMPTY, "tokens").tokens.attended
        closing = short[len(short) - common_suffix(short, empty) :]
        kept = bool(closing) and ids[-len(closing) :] == closing
        return MaxLength(count, len(ids), closing, kept, ids[-8:])

    return lab.memo(("max-length", name), compute)


# --- how a piece of text tokenizes inside the template --------------------------------------------


@dataclass(frozen=True)
class Tokenized:
    text: str
    ids: list[int]
    tokens: list[str]


def tokenized_in_prompt(lab: ProbeRunner, name: str, text: str) -> Tokenized:
    """The ids `text` becomes as the whole prompt.

    The adapter's ids for that prompt, less the common prefix and suffix they share with its ids for
    the empty prompt: what remains is the prompt's own tokens, whatever the template around them.
    """

    def compute() -> Tokenized:
        case = _text_case(f"text:{text}", prompt=text)
        ids = lab.run(name, case, "tokens").tokens.attended
        empty = lab.run(name, EMPTY, "tokens").tokens.attended
        start = common_prefix(ids, empty)
        end = common_suffix(ids[start:], empty[start:])
        middle = ids[start : len(ids) - end]
        return Tokenized(text, middle, tokens_of(lab, middle))

    return lab.memo(("tokenized", name, text), compute)
