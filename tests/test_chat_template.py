"""The bounds on a checkpoint's chat template leave nothing behind: after a render is stopped, the
process's RLIMIT_DATA, SIGALRM handler and timer are what they were, and the same tokenizer renders
the next prompt. (The bad-input table, tests/test_bad_inputs.py, runs each bound through the CLI.)"""

from __future__ import annotations

import copy
import resource
import signal
from pathlib import Path

import pytest

from parity.core import chat_template
from parity.core.chat_template import ChatTemplateError, guard
from parity.core.tokenizer import load_tokenizer

TRAPPED = "trap"
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return load_tokenizer(cache_dir=tmp_path_factory.mktemp("tokenizer"))


def guarded(reference, folder: Path, trap: str):
    """The reference tokenizer with `trap` before its template, sprung by the prompt TRAPPED only."""
    tokenizer = copy.deepcopy(reference)
    sprung = f"{{% if messages[0].content == '{TRAPPED}' %}}{trap}{{% endif %}}"
    tokenizer.chat_template = sprung + reference.chat_template
    (folder / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    guard(tokenizer, folder)
    return tokenizer


def process_state() -> tuple:
    alarm = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    return resource.getrlimit(resource.RLIMIT_DATA), *alarm


def render(tokenizer, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize(
    ("trap", "message"),
    [
        (LOOPS, "still rendering after 0.2 s at line 1"),
        ("{{ messages[0].content * 10**10 }}", "needed more than 512 MiB at line 1"),
        ("{{ raise_exception('no') }}", "failed at line 1: no"),
    ],
    ids=["time", "memory", "raised"],
)
def test_a_stopped_render_leaves_the_process_as_it_was(reference, tmp_path, monkeypatch, trap, message):
    monkeypatch.setattr(chat_template, "RENDER_SECONDS", 0.2)
    tokenizer = guarded(reference, tmp_path, trap)
    before = process_state()
    with pytest.raises(ChatTemplateError, match=message):
        render(tokenizer, TRAPPED)
    assert process_state() == before
    assert render(tokenizer, "A cat") == render(reference, "A cat")


def test_an_error_outside_the_template_is_not_blamed_on_it(reference, tmp_path):
    tokenizer = guarded(reference, tmp_path, "")
    with pytest.raises(ValueError, match="empty conversation"):
        tokenizer.apply_chat_template([], tokenize=False)
