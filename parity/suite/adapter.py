"""The adapter interface every implementation fills in, and the registry that finds them.

An adapter maps a Case to its implementation's calls, one method per stage. Each stage method
takes the upstream stage's output as an argument, so the runner decides whose upstream it is: the
adapter's own (free-running) or the reference's (teacher-forced).

Adapters register under the `zimage_parity.adapters` entry-point group; this module never names one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import torch

from parity.core.errors import InputError
from parity.models.context import Context
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.cases import Case
from parity.suite.checkouts import Checkout

ENTRY_POINT_GROUP = "zimage_parity.adapters"


class Unsupported(Exception):
    """The implementation cannot express this case (reported as 'not supported', not a failure)."""


class Adapter(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    # References run real library code; only they produce golden fixtures. A case's reference is
    # the supporting reference with the lowest priority number.
    reference_priority: ClassVar[int | None] = None
    # Variants (an old tokenizer, say) run only when asked for by name.
    in_default_run: ClassVar[bool] = True
    # A re-implementation names the live adapter running the code it models: wherever that adapter's
    # fixture exists, it is judged against it too, stage by stage (`parity.run.judge`).
    modelled_on: ClassVar[str | None] = None
    # The source trees it imports from a path (`parity.suite.checkouts`), read from `context.checkouts`.
    checkouts: ClassVar[tuple[Checkout, ...]] = ()

    def __init__(self, context: Context) -> None:
        self.context = context

    @classmethod
    def is_reference(cls) -> bool:
        return cls.reference_priority is not None

    @classmethod
    def missing_requirement(cls, checkouts: Mapping[str, Path]) -> str | None:
        """Why this implementation cannot run in this environment (a package it drives is absent, a
        checkout it imports was not given)."""
        return next((c.missing() for c in cls.checkouts if c.name not in checkouts), None)

    def check_supported(self, case: Case) -> None:
        """Raise Unsupported with a reason when this implementation has no way to run `case`."""
        return None

    @abstractmethod
    def template(self, case: Case) -> Template: ...

    @abstractmethod
    def tokens(self, case: Case, template: Template) -> Tokens: ...

    @abstractmethod
    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings: ...

    def schedule(self, case: Case) -> Schedule:
        raise Unsupported(f"{self.name} has no sampler")

    def noise(self, case: Case) -> torch.Tensor:
        """The initial latent this implementation draws for the case's seed, its own way."""
        raise Unsupported(f"{self.name} draws no noise")

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        raise Unsupported(f"{self.name} has no sampler")

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        """The image this implementation makes of a final latent (1, C, h, w), float32: the VAE, then
        its conversion to uint8."""
        raise Unsupported(f"{self.name} has no VAE")

    def caveats(self, case: Case) -> dict[str, str]:
        """Stage -> what this adapter's numbers for `case` stand on that no run here shows (a
        behaviour the real code has only on another device, say), written beside each verdict."""
        return {}

    def templates_source(self) -> str | None:
        """Where the prompt templates a case can name come from, for the tables (None: not said)."""
        return None

    def versions(self) -> dict[str, str]:
        """Library versions that determine this adapter's numbers (recorded in fixtures)."""
        return {}


def _load_all(checkouts: Mapping[str, Path]) -> tuple[dict[str, type[Adapter]], dict[str, str]]:
    found: dict[str, type[Adapter]] = {}
    missing: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except ImportError as e:
            # A heavy reference (DiffSynth) lives only in its own environment; elsewhere it is absent.
            missing[ep.name] = str(e)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"entry point {ep.name!r} is not an Adapter subclass")
        reason = cls.missing_requirement(checkouts)
        if reason is not None:
            missing[ep.name] = reason
            continue
        found[ep.name] = cls
    return found, missing


def registered_adapters(checkouts: Mapping[str, Path] = MappingProxyType({})) -> dict[str, type[Adapter]]:
    """Every adapter that can run in this environment with these checkouts (`parity.suite.checkouts`)."""
    return _load_all(checkouts)[0]


def unavailable_adapters(checkouts: Mapping[str, Path] = MappingProxyType({})) -> dict[str, str]:
    """Registered adapters that cannot run here with these checkouts, with the reason."""
    return _load_all(checkouts)[1]


def select_adapters(names: list[str] | None, checkouts: Mapping[str, Path]) -> dict[str, type[Adapter]]:
    """The adapters to run: the named ones (in that order), or every default one."""
    available, missing = _load_all(checkouts)
    if names is None:
        return {n: c for n, c in sorted(available.items()) if c.in_default_run}
    for name in names:
        if name in missing:
            raise InputError(f"adapter {name!r} is not available here: {missing[name]}")
        if name not in available:
            raise InputError(f"unknown adapter {name!r} (known: {', '.join(sorted(available))})")
    return {n: available[n] for n in names}
