"""Noticing a prompt an implementation cut short, so the cut is said out loud rather than matched.

diffusers and DiffSynth stop at 512 tokens, template included, and every implementation that does
the same agrees with them, so a comparison alone never shows the cut. What does show it: the
tokens an implementation attends are a proper prefix of its template's full tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from parity.checks import attended
from parity.outputs import StageOutputs
from parity.stages import Template, Tokens


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
    kept = attended(tokens)
    full = tokenizer(template.text)["input_ids"]
    if len(kept) < len(full) and full[: len(kept)] == kept:
        return Truncation(len(full), len(kept))
    return None


def truncation_warning(
    tokenizer: PreTrainedTokenizerBase, case: str, adapter: str, outputs: StageOutputs
) -> str | None:
    """The line that says `adapter` cut `case`'s prompt short, or None when it did not (or did not
    get as far as tokens)."""
    if outputs.template is None or outputs.tokens is None:
        return None
    cut = truncation(tokenizer, outputs.template, outputs.tokens)
    return None if cut is None else f"case {case!r}: {adapter} truncates the prompt: {cut.describe()}"
