"""A checkpoint's chat template, rendered bounded: whoever renders it, a failure is one line.

The template is user-supplied Jinja that transformers renders in jinja2's ImmutableSandboxedEnvironment.
The sandbox refuses unsafe access (SecurityError) and ranges over 100,000 (OverflowError), but bounds
neither time nor memory: three nested loops of its largest range run for years, and `'x' * 10**10`
asks for 10 GB (Jinja folds that constant while compiling, before any render has started). The
renders are not all ours: diffusers' `encode_prompt` and DiffSynth's prompt unit call the tokenizer's
`apply_chat_template` themselves. So `guard` replaces that method on the tokenizer object,
the one place every caller goes through (our implementations, the load-time probe, the live
libraries), with the library's own run under three bounds:

- time, RENDER_SECONDS: a SIGALRM timer. Every render happens on a main thread: the CLI's, or a
  `-j` worker's, a spawned process whose main thread runs its cases.
- memory, RENDER_MEMORY_BYTES more than the process holds: RLIMIT_DATA, lowered for the call (Linux
  counts private writable mappings against it; elsewhere there is no ceiling), so the kernel refuses
  the allocation itself and a huge string is never allocated, whichever Jinja operation asks for it.
  The limit is the process's, but nothing else allocates while a prompt is rendered.
- output, OWN_CHARACTERS more than the characters the template was given (its messages).

Whatever comes from the template (a syntax error, a sandbox refusal, `raise_exception`, an error
raised while its code ran, a bound) is a ChatTemplateError naming the template file, Jinja's reason
and, where Jinja knows it, the template line.
"""

from __future__ import annotations

import re
import resource
import signal
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from transformers import PreTrainedTokenizerBase

from parity.core.errors import InputError

# The official Qwen3 template compiles in about 75 ms and renders a 200,000-character prompt in
# 0.2 ms (2-core CPU); 5 s is 60x the compile and thousands of times any render, with room for a
# machine 10-30x slower under load, and short enough that a looping template costs one wait.
RENDER_SECONDS = 5.0
# A render within the output bound holds a few copies of a few MiB of text; 512 MiB is 100x that,
# and little to lend for a moment on a machine other jobs share.
RENDER_MEMORY_BYTES = 512 * 2**20
# The references keep 512 tokens (about 2,000 characters of English) and the official template adds
# under 100 characters per turn; templates with long tool instructions add tens of KB. 2**20 is ten
# times that and more than 500x what the references can use, yet tokenizes in seconds.
OWN_CHARACTERS = 2**20
REASON_CHARS = 300

# What chat templates branch on: a system turn, an assistant turn with its reasoning, a user turn.
_PROBE_CONVERSATION = (
    {"role": "system", "content": "probe"},
    {"role": "user", "content": "probe"},
    {"role": "assistant", "content": "probe", "reasoning_content": "probe"},
    {"role": "user", "content": "probe"},
)
# What every implementation renders: one user turn, thinking on (the references' call).
_ONE_TURN = ({"role": "user", "content": "probe"},)


class ChatTemplateError(InputError):
    """A checkpoint's chat template failed to render, or was stopped."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        # True when the sandbox or a bound stopped it, which no input excuses; False when the
        # template failed on what it was given (raise_exception, an error in its own code).
        self.refused = refused


class _Expired(BaseException):
    """Raised by the timer inside a render; not an Exception, so no `except Exception` on the way out swallows it."""


def _source(folder: Path) -> Path:
    """The file transformers reads a tokenizer folder's chat template from."""
    standalone = folder / "chat_template.jinja"
    return standalone if standalone.is_file() else folder / "tokenizer_config.json"


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    armed = True

    def expire(_signum: int, _frame: object) -> None:
        if armed:
            raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        # First, before any call lets the handler run: from here on an expiry does nothing.
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _data_bytes() -> int | None:
    """What the process holds against RLIMIT_DATA (None where the kernel does not say)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    found = re.search(r"^VmData:\s+(\d+) kB$", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


@contextmanager
def _memory_ceiling(extra: int) -> Iterator[None]:
    held = _data_bytes()
    if held is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    ceiling = min([held + extra] + [limit for limit in (soft, hard) if limit != resource.RLIM_INFINITY])
    resource.setrlimit(resource.RLIMIT_DATA, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _template_line(error: BaseException) -> int | None:
    """The template line `error` came from: Jinja's for a syntax error, else the innermost template frame's."""
    if isinstance(error, TemplateSyntaxError):
        return error.lineno
    line = None
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == "<template>":
            # Jinja rewrites an Exception's frames to template lines; an expiry's are still the
            # compiled code's, which the template maps back.
            template = frame.f_globals.get("__jinja_template__")
            line = tb.tb_lineno if template is None else template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return line


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if not isinstance(error, TemplateError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def _failure(source: Path, error: BaseException) -> ChatTemplateError | None:
    """The one-line error for a failure that came from the template; None for one that did not."""
    line = _template_line(error)
    at = f" at line {line}" if line is not None else ""
    if isinstance(error, _Expired):
        message = f"the chat template was still rendering after {RENDER_SECONDS:g} s{at}; stopped"
        return ChatTemplateError(f"{source}: {message} (a chat template renders in milliseconds)", refused=True)
    if isinstance(error, MemoryError):
        message = f"the chat template needed more than {RENDER_MEMORY_BYTES // 2**20} MiB{at}; stopped"
        return ChatTemplateError(f"{source}: {message}", refused=True)
    if isinstance(error, SecurityError):
        message = f"the chat template attempted unsafe access{at}; the Jinja sandbox refused it ({_reason(error)})"
        return ChatTemplateError(f"{source}: {message}", refused=True)
    if isinstance(error, TemplateSyntaxError):
        return ChatTemplateError(f"{source}: the chat template is not valid Jinja{at}: {_reason(error)}", refused=True)
    if isinstance(error, OverflowError) and line is not None:
        message = f"the Jinja sandbox refused the chat template{at}: {_reason(error)}"
        return ChatTemplateError(f"{source}: {message}", refused=True)
    if isinstance(error, TemplateError) or line is not None:
        return ChatTemplateError(f"{source}: the chat template failed{at}: {_reason(error)}", refused=False)
    return None


def _characters(value: Any) -> int:
    """The characters in every string of `value`, through lists, tuples and dicts (keys included)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_characters(k) + _characters(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(_characters(v) for v in value)
    return 0


def _bound_renders(tokenizer: PreTrainedTokenizerBase, source: Path) -> None:
    """Make every `apply_chat_template` call on `tokenizer` run bounded, any failure from the template
    one line naming `source`. Bound to the object, so a deep copy (with a template of its own) renders its own."""

    def bounded(self: PreTrainedTokenizerBase, *args: Any, **kwargs: Any) -> Any:
        try:
            # The deadline inside the ceiling: it is disarmed before the ceiling is lifted.
            with _memory_ceiling(RENDER_MEMORY_BYTES), _deadline(RENDER_SECONDS):
                rendered = type(self).apply_chat_template(self, *args, **kwargs)
        except (Exception, _Expired) as error:
            failure = _failure(source, error)
            if failure is None:
                raise
            raise failure from None
        given = _characters((args, kwargs))
        if isinstance(rendered, str) and len(rendered) > given + OWN_CHARACTERS:
            message = (
                f"the chat template rendered {len(rendered):,} characters, more than the {given:,} it was "
                f"given plus {OWN_CHARACTERS:,} of its own; refused"
            )
            raise ChatTemplateError(f"{source}: {message}", refused=True)
        return rendered

    tokenizer.apply_chat_template = types.MethodType(bounded, tokenizer)


def _probe(tokenizer: PreTrainedTokenizerBase) -> None:
    """Render the template before any implementation does, so that what no input excuses is refused
    up front: a failure on the one turn every implementation renders, and a refusal on any turn."""
    tokenizer.apply_chat_template(list(_ONE_TURN), tokenize=False, add_generation_prompt=True, enable_thinking=True)
    for thinking in (True, False):
        try:
            tokenizer.apply_chat_template(
                list(_PROBE_CONVERSATION), tokenize=False, add_generation_prompt=True, enable_thinking=thinking
            )
        except ChatTemplateError as e:
            if e.refused:
                raise
            # The template does not take this conversation; an implementation rendering one it does
            # not take fails there, with this same line.
            return


def guard(tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Bound every render of the chat template of `tokenizer` (loaded from `folder`), then probe it."""
    source = _source(folder)
    if tokenizer.chat_template is None:
        # Every implementation that renders one would stop on this with transformers' traceback.
        raise InputError(f"{source}: no chat template (tokenizer/chat_template.jinja, or chat_template here)")
    _bound_renders(tokenizer, source)
    _probe(tokenizer)
