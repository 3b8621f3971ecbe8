"""Reading the text files users write (cases, expectations, claims, templates) with one clear error."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from parity.errors import InputError


def read_text(path: Path, what: str) -> str:
    """The file's UTF-8 text; InputError naming the file when it is missing, unreadable (a folder,
    a symlink loop, no permission: the OS's reason is given) or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path.name}: not UTF-8 (byte {e.start})") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file; InputError for a missing, non-UTF-8 or malformed file."""
    try:
        return tomllib.loads(read_text(path, what))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path.name}: malformed TOML: {e}") from None
