"""Running the `parity` command in-process for tests, and what a bad-input outcome must look like."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from parity.cli import main


@dataclass
class Result:
    rc: int
    out: str
    err: str


def invoke(*args: object) -> Result:
    """`parity ARGS` in-process, with its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return Result(rc, out.getvalue(), err.getvalue())


def bad_input(res: Result, *fragments: str) -> str:
    """Assert exit 2 with exactly one `parity: error:` line on stderr, naming every fragment."""
    assert res.rc == 2, res
    assert "Traceback" not in res.err, res.err
    lines = res.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.err}"
    line = lines[0]
    assert line.startswith("parity: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line
