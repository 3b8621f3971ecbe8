"""The 'Capabilities' table: what each adapter can run at all, found by running it.

Each row runs a probe: a case that needs the capability (text stages, or sampling), or the
adapter's own denoise with an input it must honour (forced latents, block capture). A cell says
`yes` (with what was seen), `accepted, no effect` (the case runs but the option changes nothing
observable: the implementation has no such option), or `not supported: <reason>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from parity.analysis import sampling_observations as sampling
from parity.analysis import text_observations as text
from parity.analysis.probe_runner import ProbeRunner
from parity.core.errors import InputError
from parity.stages import TEXT_STAGES
from parity.stages.denoise import DenoiseInputs
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case, Message

from .differences import cell
from .markdown import plain

Row = Callable[[ProbeRunner, str], str]
NO_EFFECT = "accepted, no effect"


def _case(id: str, **fields) -> Case:
    return Case(id=f"probe.capability.{id}", stages=TEXT_STAGES, **fields)


THINKING = _case("thinking", prompt=text.PROMPT, thinking="Soft morning light.")
ASSISTANT = _case("assistant", prompt=text.PROMPT, assistant="A tabby asleep on a blanket.")
TURNS = _case(
    "turns",
    encoder="turns",
    messages=(
        Message("user", text.PROMPT),
        Message("assistant", "A tabby asleep on a windowsill."),
        Message("user", "Now at night."),
    ),
)
SIMPLE = _case("simple", prompt=text.PROMPT, encoder="simple")
THINK_ON = _case("think-on", prompt=text.PROMPT, add_think_block=True)
THINK_OFF = _case("think-off", prompt=text.PROMPT, add_think_block=False)
FILTER_ON = replace(text.PAD_IN_PROMPT, id="probe.capability.filter-on", filter_padding=True)
FILTER_OFF = replace(text.PAD_IN_PROMPT, id="probe.capability.filter-off", filter_padding=False)
RAW = _case("raw", prompt="<|im_start|>user\nA cat sleeping<|im_end|>", raw_prompt=True)
TRIGGER = _case("trigger", prompt=text.PROMPT, trigger_words="ohwx")
KEY_QUOTES = _case("key-quotes", prompt='{"subject": "a cat"}', strip_key_quotes=True)
KEY_QUOTES_OFF = _case("key-quotes-off", prompt='{"subject": "a cat"}')
PROMPT_TEMPLATE = _case("prompt-template", prompt=text.PROMPT, template="photographic")

GUIDED2 = replace(sampling.GUIDED, id="probe.capability.guided-2", steps=2)
NORMALIZED = replace(GUIDED2, id="probe.capability.cfg-normalization", cfg_normalization=0.5)
TRUNCATED = replace(GUIDED2, id="probe.capability.cfg-truncation", cfg_truncation=0.1)
STRENGTH = replace(sampling.schedule_case(8), id="probe.capability.denoise-0.5", denoise=0.5)
FORCED = sampling.sampling_case("capability.forced", steps=2)


def _texts(lab: ProbeRunner, name: str, *cases: Case) -> list[str]:
    return [lab.run(name, case, "template").template.text for case in cases]


def _yes_if_differs(first, second, what: str) -> str:
    return plain(f"yes ({what})") if first != second else plain(NO_EFFECT)


def one_prompt(lab: ProbeRunner, name: str) -> str:
    rows = lab.run(name, text.SHORT, "embeddings").embeddings.hidden.shape[0]
    return plain(f"yes ({rows} rows)")


def _renders(case: Case) -> Row:
    def row(lab: ProbeRunner, name: str) -> str:
        lab.run(name, case, "embeddings")
        return "yes"

    return row


def think_switch(lab: ProbeRunner, name: str) -> str:
    on, off = _texts(lab, name, THINK_ON, THINK_OFF)
    return _yes_if_differs(on, off, "on and off render differently")


def filter_switch(lab: ProbeRunner, name: str) -> str:
    on, off = (lab.run(name, case, "embeddings").embeddings for case in (FILTER_ON, FILTER_OFF))
    return _yes_if_differs(on.hidden.shape, off.hidden.shape, f"{on.hidden.shape[0]} rows vs {off.hidden.shape[0]}")


def _changes_template(case: Case, plain_case: Case) -> Row:
    def row(lab: ProbeRunner, name: str) -> str:
        given, without = _texts(lab, name, case, plain_case)
        return _yes_if_differs(given, without, "changes the template")

    return row


def prompt_template(lab: ProbeRunner, name: str) -> str:
    try:
        given, without = _texts(lab, name, PROMPT_TEMPLATE, text.SHORT)
    except InputError as e:
        raise Unsupported(str(e)) from None
    if given == without:
        return plain(NO_EFFECT)
    source = lab.adapter(name).templates_source()
    return plain(f"yes (changes the template; {source})" if source else "yes (changes the template)")


def sampling_in(dtype: str) -> Row:
    def row(lab: ProbeRunner, name: str) -> str:
        case = sampling.SAMPLE[dtype]
        outputs, _ = lab.watched_run(name, case)
        return plain(f"yes ({outputs.denoise.model_out.shape[0]} steps){lab.caveat(name, case, 'denoise')}")

    return row


def guided(lab: ProbeRunner, name: str) -> str:
    seen = sampling.guidance(lab, name)
    return plain(f"yes ({seen.samples_guided} passes per step)")


def _guided_option(case: Case) -> Row:
    def row(lab: ProbeRunner, name: str) -> str:
        base = lab.run(name, GUIDED2, "denoise").denoise.model_out
        given = lab.run(name, case, "denoise").denoise.model_out
        return plain(NO_EFFECT) if torch.equal(base, given) else plain("yes (changes the velocity)")

    return row


def strength(lab: ProbeRunner, name: str) -> str:
    full = sampling.sigmas(lab, name, 8)
    partial = lab.run(name, STRENGTH, "schedule").schedule.sigmas.tolist()
    return _yes_if_differs(full, partial, f"starts at sigma {partial[0]:.4f}")


def _forced_inputs(lab: ProbeRunner, name: str, **extra) -> DenoiseInputs:
    free = lab.run(name, FORCED, "denoise")
    return DenoiseInputs(free.embeddings, None, free.schedule, free.denoise.latents[0:1], **extra)


def teacher_forcing(lab: ProbeRunner, name: str) -> str:
    free = lab.run(name, FORCED, "denoise").denoise
    # Forced onto its own free-running trajectory it must reproduce it: the inputs are honoured.
    forced, _ = lab.watched_denoise(
        name, FORCED, "forced", lambda: _forced_inputs(lab, name, forced_latents=free.latents)
    )
    same = torch.allclose(forced.latents, free.latents, atol=1e-5, rtol=1e-4)
    return plain("yes" if same else "yes, but forced onto its own trajectory it departs from it")


def block_capture(lab: ProbeRunner, name: str) -> str:
    result, _ = lab.watched_denoise(name, FORCED, "blocks", lambda: _forced_inputs(lab, name, capture_blocks=(0,)))
    if not result.blocks:
        return plain("accepted, nothing captured")
    return plain(f"yes ({len(result.blocks)} blocks at step 0)")


def own_noise(lab: ProbeRunner, name: str) -> str:
    draw = sampling.noise_draw(lab, name, 128, "fp32")
    return plain(f"yes ({draw.shape} at 128²)")


def off_grid_size(lab: ProbeRunner, name: str) -> str:
    outcome = sampling.size_outcome(lab, name, sampling.ALIGNMENT_SIZES[8])
    if outcome.refused is not None:
        raise Unsupported(outcome.refused)
    return plain(f"yes ({outcome.side} px: latent {outcome.latent[0]}x{outcome.latent[1]})")


ROWS: dict[str, Row] = {
    "one user prompt": one_prompt,
    "system prompt": _renders(text.WITH_SYSTEM),
    "thinking content": _renders(THINKING),
    "assistant content": _renders(ASSISTANT),
    "message list (turns)": _renders(TURNS),
    "simple encoder": _renders(SIMPLE),
    "think block switch (add_think_block)": think_switch,
    "padding filter switch (filter_padding)": filter_switch,
    "raw prompt": _changes_template(RAW, replace(RAW, id="probe.capability.raw-off", raw_prompt=False)),
    "trigger words": _changes_template(TRIGGER, text.SHORT),
    "key-quote filter": _changes_template(KEY_QUOTES, KEY_QUOTES_OFF),
    "prompt templates": prompt_template,
    "sampling in fp32": sampling_in("fp32"),
    "sampling in bf16": sampling_in("bf16"),
    "guidance (cfg > 1)": guided,
    "cfg_normalization": _guided_option(NORMALIZED),
    "cfg_truncation": _guided_option(TRUNCATED),
    "denoise strength < 1": strength,
    "teacher forcing": teacher_forcing,
    "per-block capture": block_capture,
    "own noise draw": own_noise,
    f"size not a multiple of 16 ({sampling.ALIGNMENT_SIZES[8]} px)": off_grid_size,
}


def capabilities(lab: ProbeRunner, names: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["capability", *names]
    rows = [[plain(label), *(cell(row, lab, name) for name in names)] for label, row in ROWS.items()]
    return header, rows
