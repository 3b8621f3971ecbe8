"""Where `parity` reads and writes when the command line does not say.

A module of its own, free of heavy imports: the argument parser (`parity.cli`) gives these as
defaults and names them in its help, and `parity report` (`parity.commands`) falls back on the
results file when neither --json nor --merge is given; the parser must not import the commands.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_FIXTURES = Path("fixtures")
DEFAULT_RESULTS = Path("reports/parity.json")
