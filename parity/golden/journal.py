"""One regen at a time per fixture store, and the journal that says which files a regen wrote.

The lock is an exclusive `flock` on the fixture root folder itself, held for the whole regen (or
manifest rebuild); a second one is refused at once with one line. The lock goes with the process,
so a regen that is killed never leaves a stale lock.

The journal, `<root>/.regen-journal`, lists (one path per line, relative to the root) every file a
regen is about to write, fixture files and their temporary files alike, each line made durable
before the file is written. It is the only licence to delete a file the manifest does not list: a
regen removes, at its commit (after a kill, the next regen's commit), the journalled files the
manifest does not list, and nothing else. A file the manifest does not list and no journal names (a fixture
whose manifest entry was lost, a file someone put there) is reported by `parity fixtures check`
and never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from parity.core.errors import InputError
from parity.core.paths import inside

JOURNAL = ".regen-journal"


@contextlib.contextmanager
def regen_lock(root: Path, what: str) -> Iterator[None]:
    """Hold the store's lock for the block; InputError at once if another process holds it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, os.O_RDONLY)
    except OSError as e:
        raise InputError(f"cannot open the fixture root {root}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise InputError(
                f"another regen or rebuild is writing the fixtures in {root}: {what} waits for no one; "
                "run it again when that one has finished"
            ) from None
        yield
    finally:
        os.close(fd)


class Journal:
    """The files a regen of the store at `root` wrote or is writing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / JOURNAL

    def entries(self) -> list[Path]:
        """The journalled paths that lie inside the store (a line pointing elsewhere is ignored:
        the journal is a file on disk like any other, and deletes nothing outside the root)."""
        if not self.path.is_file():
            return []
        paths = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line or Path(line).is_absolute():
                continue
            try:
                paths.append(inside(self.root, line))
            except InputError:
                continue
        return paths

    def record(self, path: Path) -> None:
        """Make `path` durable in the journal before the caller writes it."""
        # Resolved both: the temporary file's path is absolute (mkstemp's) where the root may not be.
        line = str(path.resolve().relative_to(self.root.resolve())) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def leftovers(self, listed: set[Path]) -> list[Path]:
        """Journalled files that the manifest does not list."""
        return sorted({path for path in self.entries() if path not in listed and path.is_file()})

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
