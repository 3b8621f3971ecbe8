"""Source trees an adapter imports from a path, because its code is not on the package registries.

An implementation that people run from a git checkout (an application, a node pack) is driven from
one: its adapter declares a `Checkout`, registered under the `zimage_parity.checkouts` entry-point
group, and every command that builds adapters takes `--<name> DIR` for it (or the environment
variable `ZIMAGE_PARITY_<NAME>`). Declarations live in light modules, so the command line can list
them without importing any adapter (or torch).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from parity.core.errors import InputError

ENTRY_POINT_GROUP = "zimage_parity.checkouts"


@dataclass(frozen=True)
class Checkout:
    """`name` is the option (`--name DIR`) and the key adapters read; `check` says why a path is not
    that kind of tree (None: it is)."""

    name: str
    what: str
    check: Callable[[Path], str | None]

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    @property
    def dest(self) -> str:
        """Where the parsed command line holds the option's value."""
        return f"checkout_{self.name}"

    @property
    def variable(self) -> str:
        return f"ZIMAGE_PARITY_{self.name.upper()}"

    def missing(self) -> str:
        """Why an adapter needing this checkout is not available."""
        return f"needs {self.what}: {self.option} DIR or {self.variable}=DIR"


def declared() -> dict[str, Checkout]:
    """Every checkout a registered adapter declares, by name."""
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        checkout = ep.load()
        if not isinstance(checkout, Checkout):
            raise TypeError(f"entry point {ep.name!r} is not a Checkout")
        found[checkout.name] = checkout
    return found


def resolve(given: Mapping[str, Path | None], environ: Mapping[str, str] = os.environ) -> dict[str, Path]:
    """The checkouts this run has: each given path, else its environment variable's, each checked."""
    found = {}
    for name, checkout in declared().items():
        path, source = given.get(name), checkout.option
        if path is None and environ.get(checkout.variable):
            path, source = Path(environ[checkout.variable]), checkout.variable
        if path is None:
            continue
        problem = checkout.check(path)
        if problem is not None:
            raise InputError(f"{source} {path}: {problem}")
        found[name] = path
    return found


def from_arguments(args: argparse.Namespace) -> dict[str, Path]:
    """The checkouts a parsed command line names (`--comfyui DIR`), else the environment's, each checked."""
    return resolve({name: getattr(args, checkout.dest, None) for name, checkout in declared().items()})
