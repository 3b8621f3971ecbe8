"""Reading the text files users write (cases, expectations, claims, templates) with one clear error,
and writing every file parity writes atomically."""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parity.core.errors import InputError


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


def _unwritable(path: Path, error: OSError) -> InputError:
    # A file where a folder should be reads as "File exists" or "Not a directory": name the file.
    in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{in_the_way} is a file, not a folder" if in_the_way is not None else error.strerror or str(error)
    return InputError(f"cannot write {path}: {reason}")


def refuse_to_replace(path: Path) -> None:
    """InputError unless `path` is absent or a regular file: what may be renamed over. Commands call it
    for their outputs before any work, so a long run is not refused only at its end."""
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise _unwritable(path, e) from None
    if not stat.S_ISREG(kind):
        raise InputError(
            f"cannot write {path}: it exists and is not a regular file (a device, folder, link or pipe); "
            "parity replaces only regular files"
        )


def atomic_write_bytes(path: Path, data: bytes, before_writing: Callable[[Path], None] | None = None) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    Readers (and a second run writing the same path) see the old file or a complete new one, never
    a mix; an unwritable destination is an InputError naming it. `before_writing` is told the
    temporary file's path before any byte goes into it (a regen journals it). Only a regular file is ever
    replaced: renaming over `/dev/null` (as root) or a symlink would put a file where a device or
    a link was, so an existing path of any other kind is refused.
    """
    refuse_to_replace(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        if before_writing is not None:
            before_writing(Path(tmp))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; reports and fixtures are meant to be read by others (CI artifacts).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
