"""The claims ledger (`fixtures/claims.toml`): statements about implementations, each tied to a check.

    [[claim]]
    id = "comfyui-pads-512"
    statement = "stock ComfyUI pads the prompt to 512 tokens"
    source = "design document"
    check = "pads_to"
    params = { adapter = "comfyui_style", length = 512 }
    expected = "refuted"          # optional: what the ledger says the verdict is
    note = "..."                  # optional

Each claim names a check of `claim_checks.py`, which runs the adapters and returns a verdict with its
evidence; an adapter that cannot run the probe makes the claim `inconclusive`, with its reason.
`parity tables --check` fails when a verdict differs from the ledger's `expected`, so the ledger is
itself regression-tested.

A bad ledger (unknown key, unknown check, unknown or missing parameter, a parameter of the wrong
type, an unknown adapter, a duplicate id) is an InputError naming the claim and the key.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from parity.analysis.probe_runner import ProbeRunner
from parity.core.errors import InputError
from parity.core.files import read_toml
from parity.suite.adapter import Unsupported

from .claim_checks import CHECKS, VALIDATORS, VERDICTS

# Not a check's verdict: the ledger's own, for a claim whose check an adapter cannot run.
INCONCLUSIVE = "inconclusive"

_FIELDS = {"id": str, "statement": str, "source": str, "check": str, "params": dict, "expected": str, "note": str}
_REQUIRED = ("id", "statement", "source", "check")
_ADAPTER_PARAMS = ("adapter", "adapters")


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    check: str
    params: dict[str, Any] = field(default_factory=dict)
    expected: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str
    evidence: str

    @property
    def unexpected(self) -> bool:
        return self.claim.expected is not None and self.verdict != self.claim.expected


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a check parameter's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, option) for option in args)
    if origin is list:
        return isinstance(value, list) and bool(value) and all(_type_ok(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _check_params(where: str, name: str, params: dict[str, Any], adapters: set[str]) -> None:
    signature = inspect.signature(CHECKS[name])
    hints = typing.get_type_hints(CHECKS[name])
    declared = {p.name: p for p in list(signature.parameters.values())[1:]}
    for key in params:
        if key not in declared:
            raise InputError(f"{where}: check {name!r} has no parameter {key!r} (it takes: {', '.join(declared)})")
    for key, p in declared.items():
        if key not in params:
            if p.default is inspect.Parameter.empty:
                raise InputError(f"{where}: check {name!r} needs the parameter {key!r}")
            continue
        if not _type_ok(params[key], hints[key]):
            raise InputError(f"{where}: parameter {key!r} must be {_describe(hints[key])}, got {params[key]!r}")
        if key in _ADAPTER_PARAMS:
            named = [params[key]] if isinstance(params[key], str) else params[key] or []
            unknown = [a for a in named if a not in adapters]
            if unknown:
                raise InputError(f"{where}: unknown adapter {unknown[0]!r} (known: {', '.join(sorted(adapters))})")
    if name in VALIDATORS:
        try:
            VALIDATORS[name](params)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None


def parse_claim(raw: Any, where: str, adapters: set[str]) -> Claim:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: each claim must be a [[claim]] table")
    where = f"{where} {raw.get('id', '?')!r}"
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    for key in _REQUIRED:
        if key not in raw:
            raise InputError(f"{where}: missing field {key!r}")
    for key, value in raw.items():
        if not isinstance(value, _FIELDS[key]):
            raise InputError(f"{where}: {key!r} must be {_FIELDS[key].__name__}, got {type(value).__name__}")
    if raw["check"] not in CHECKS:
        raise InputError(f"{where}: unknown check {raw['check']!r} (known: {', '.join(sorted(CHECKS))})")
    if "expected" in raw and raw["expected"] not in VERDICTS:
        raise InputError(f"{where}: expected must be one of {', '.join(VERDICTS)}, not {raw['expected']!r}")
    params = raw.get("params", {})
    _check_params(where, raw["check"], params, adapters)
    return Claim(
        raw["id"], raw["statement"], raw["source"], raw["check"], dict(params), raw.get("expected"), raw.get("note", "")
    )


def load_claims(path: Path, adapters: set[str]) -> list[Claim]:
    """Every claim of the ledger, validated; `adapters` are the names a claim may mention."""
    data = read_toml(path, "claims ledger")
    unknown = sorted(set(data) - {"claim"})
    if unknown:
        raise InputError(f"{path.name}: unknown top-level key {unknown[0]!r} (claims go in [[claim]] tables)")
    tables = data.get("claim", [])
    if not isinstance(tables, list):
        raise InputError(f"{path.name}: 'claim' must be [[claim]] tables (an array of tables), not a single [claim]")
    if not tables:
        raise InputError(f"{path.name}: no [[claim]] tables")
    claims, seen = [], set()
    for n, raw in enumerate(tables, 1):
        claim = parse_claim(raw, f"{path.name}: claim {n}", adapters)
        if claim.id in seen:
            raise InputError(f"{path.name}: duplicate claim id {claim.id!r}")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def evaluate(claim: Claim, lab: ProbeRunner) -> ClaimResult:
    """Run the claim's check; an adapter that cannot run it makes the claim inconclusive."""
    try:
        verdict, evidence = CHECKS[claim.check](lab, **claim.params)
    except Unsupported as e:
        return ClaimResult(claim, INCONCLUSIVE, f"not supported: {e}")
    except InputError as e:
        raise InputError(f"claim {claim.id!r}: {e}") from None
    return ClaimResult(claim, verdict, evidence)
