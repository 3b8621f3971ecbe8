"""The fixture changelog a regen writes: which fixtures moved, which tensors, by how much."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity.core.files import atomic_write_bytes
from parity.golden.store import FixtureWrite
from parity.stages.outputs import StageOutputs


def _moves(old: StageOutputs, new: StageOutputs) -> list[str]:
    (old_t, old_s), (new_t, new_s) = old.stored(), new.stored()
    keys = sorted((set(old_s) | set(new_s)) - {"meta"})
    lines = [f"{key} changed" for key in keys if old_s.get(key) != new_s.get(key)]
    for key in sorted(set(old_t) | set(new_t)):
        a, b = old_t.get(key), new_t.get(key)
        if a is None or b is None:
            lines.append(f"{key}: {'added' if a is None else 'removed'}")
        elif a.shape != b.shape:
            lines.append(f"{key}: shape {tuple(a.shape)} -> {tuple(b.shape)}")
        elif a.dtype != b.dtype:
            lines.append(f"{key}: dtype {a.dtype} -> {b.dtype}")
        else:
            diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            if diff:
                lines.append(f"{key}: max abs change {diff:.3e}")
    old_v, new_v = old.meta.get("versions"), new.meta.get("versions")
    if old_v != new_v:
        lines.append(f"versions {old_v} -> {new_v}")
    return lines or ["bytes changed, values equal (metadata only)"]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def _provenance_moves(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    if old is None:
        return []
    before, after = _flatten(old), _flatten(new)
    return [
        f"provenance {key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def write_changelog(path: Path, written: list[tuple[FixtureWrite, StageOutputs]]) -> None:
    changed = [(w, new) for w, new in written if w.changed]
    lines = ["# Fixture changelog", "", f"{len(changed)} of {len(written)} fixture(s) changed.", ""]
    for w, new in changed:
        lines.append(f"## {w.key}")
        if w.previous is None:
            lines.append("- new fixture")
        else:
            lines.extend(f"- {m}" for m in _moves(w.previous, new))
        lines.extend(f"- {m}" for m in _provenance_moves(w.previous_provenance, w.provenance))
        lines.append("")
    atomic_write_bytes(path, "\n".join(lines).encode())
