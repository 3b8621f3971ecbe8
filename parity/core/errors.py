"""The one exception type the CLI turns into a one-line message and exit status 2, and the two
pieces every such message is built from, so that a user's string or a library's error can neither
split the line nor fill the screen."""

from __future__ import annotations

# How much of a quoted value a message repeats: enough to find it, never a screenful.
SHOWN_CHARS = 60


class InputError(Exception):
    """Bad input from the user: a case file, a fixture, a flag, a checkpoint folder."""


def shown(value: object) -> str:
    """`value` quoted for a message: its repr (control characters escaped, one line), cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[: SHOWN_CHARS - 1]}… ({len(text)} characters)"


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
