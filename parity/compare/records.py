"""Records: frozen dataclasses written as plain JSON and read back from it, checked against their types.

Every comparator result and every stage's detail is a `Record`. `to_json` gives plain JSON types
(tuples become lists, non-finite floats None unless the field is marked `raw`; an `optional` field
is left out while it is None).
`from_json` reads one back and checks each value against its field's annotation, so the results
file's schema is the records' own types: a hand-edited or foreign file is refused with the JSON path
of the first bad value (`Malformed`), never read half-way.

Annotations understood: `bool`, `int` (and `Count`, `Positive`), `float` (finite) and `Real` (any
float, NaN included: values an implementation computed, written as they came), `str`, `Any`,
`X | None`, `tuple[X, ...]`, fixed-length `tuple[X, Y, Z]`, `list[X]`, `dict[str, X]` and other records.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Annotated, Any, ClassVar, Self, Union, get_args, get_origin, get_type_hints

from parity.core.errors import SHOWN_CHARS, shown

Count = Annotated[int, "an integer >= 0"]
Positive = Annotated[int, "an integer >= 1"]
Real = Annotated[float, "a number"]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Malformed(Exception):
    """A JSON value that is not what its record says: where (a JSON path) and what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = where, problem


def at(where: str, key: str | int) -> str:
    """The JSON path of `key` inside `where`: results[3].status, fixtures['short/diffusers']."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if _NAME.fullmatch(key) and len(key) <= SHOWN_CHARS:
        return f"{where}.{key}" if where else key
    return f"{where}[{shown(key)}]"


def json_kind(value: Any) -> str:
    """A parsed JSON value's type in words, for messages: "a string", "null", "NaN"."""
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return {"nan": "NaN", "inf": "Infinity"}.get(str(value), "-Infinity")
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return kinds.get(type(value), "an object")


def optional() -> Any:
    """A field left out of the JSON while it is None (and read as None when absent)."""
    return field(default=None, metadata={"optional": True})


def plain(value: Any, keep_non_finite: bool = False) -> Any:
    """Plain JSON types: records their `to_json`, tuples lists, and non-finite floats None (unless kept)."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, dict):
        return {k: plain(v, keep_non_finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, keep_non_finite) for v in value]
    if isinstance(value, float) and not math.isfinite(value) and not keep_non_finite:
        return None
    return value


def _is_integer(value: Any) -> bool:
    # Bounded, so that every integer the report turns into a float (plot extents, say) is one.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


_SCALARS = {
    bool: ("a boolean", lambda v: isinstance(v, bool)),
    int: ("an integer", _is_integer),
    float: ("a finite number", lambda v: _is_integer(v) or (isinstance(v, float) and math.isfinite(v))),
    str: ("a string", lambda v: isinstance(v, str)),
}
_ANNOTATED = {
    "an integer >= 0": lambda v: _is_integer(v) and v >= 0,
    "an integer >= 1": lambda v: _is_integer(v) and v >= 1,
    "a number": lambda v: _is_integer(v) or isinstance(v, float),
}


def read(kind: Any, value: Any, where: str) -> Any:
    """`value` read as `kind` (an annotation), or Malformed naming `where`."""
    origin, args = get_origin(kind), get_args(kind)
    if kind is Any:
        return value
    if origin is Annotated:
        what = args[1]
        if not _ANNOTATED[what](value):
            raise Malformed(where, f"must be {what}, got {json_kind(value)}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"a record field may be one type or None, not {kind}")
        return read(rest[0], value, where)
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise Malformed(where, f"must be a list, got {json_kind(value)}")
        if origin is tuple and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise Malformed(where, f"must be a list of {len(args)} values, got {len(value)}")
            return tuple(read(a, item, at(where, i)) for i, (a, item) in enumerate(zip(args, value, strict=True)))
        items = [read(args[0], item, at(where, i)) for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise Malformed(where, f"must be an object, got {json_kind(value)}")
        return {key: read(args[1], item, at(where, key)) for key, item in value.items()}
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_json(value, where)
    what, ok = _SCALARS[kind]
    if not ok(value):
        raise Malformed(where, f"must be {what}, got {json_kind(value)}")
    return float(value) if kind is float else value


@dataclass(frozen=True)
class Record:
    """A frozen dataclass with a plain-JSON form (see the module docstring)."""

    # Pairs (a, b): when field a is in the JSON, field b must be too.
    comes_with: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: plain(getattr(self, f.name), keep_non_finite=f.metadata.get("raw", False))
            for f in fields(self)
            if not (f.metadata.get("optional") and getattr(self, f.name) is None)
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "") -> Self:
        if not isinstance(value, dict):
            raise Malformed(where, f"must be an object, got {json_kind(value)}")
        hints = _hints(cls)
        known = {f.name: f for f in fields(cls)}
        for key in value:
            if key not in known:
                raise Malformed(where, f"unknown key {shown(key)}")
        for a, b in cls.comes_with:
            if a in value and b not in value:
                raise Malformed(where, f"missing key {b!r} (it comes with {a!r})")
        given = {}
        for name, f in known.items():
            if name in value:
                given[name] = read(hints[name], value[name], at(where, name))
            elif f.default is MISSING and f.default_factory is MISSING:
                raise Malformed(where, f"missing key {name!r}")
        made = cls(**given)
        made.refuse_inconsistent(where)
        return made

    def refuse_inconsistent(self, where: str) -> None:
        """Malformed when values that each have the right type do not fit together (a record read from
        JSON is checked with this last)."""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def common_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix of `a` and `b`."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def common_suffix(a: Sequence[Any], b: Sequence[Any], after: int = 0) -> int:
    """Length of the common suffix of `a` and `b`, kept clear of their first `after` items (a common
    prefix already counted: "a b" and "a b b" share the prefix "a b" and then no suffix)."""
    limit = min(len(a), len(b)) - after
    return next((n for n in range(limit) if a[-1 - n] != b[-1 - n]), max(limit, 0))


def count(n: int, noun: str) -> str:
    """`n` and `noun`, plural unless n is 1: "1 token", "3 tokens"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
