"""Reading a checkpoint component's safetensors files: one file, or shards named by an index.

Headers are read without loading tensors, so a missing shard, a truncated header or a wrong tensor
is one clear line before any weight is loaded, whichever loader (ours or transformers') then loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from parity.core.errors import InputError, first_line


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header (no tensor is loaded)."""
    try:
        with safe_open(path, framework="pt") as f:
            names = f.keys()
            return {k: tuple(f.get_slice(k).get_shape()) for k in names}
    except (OSError, SafetensorError) as e:
        raise InputError(f"cannot read {path}: {first_line(e)}") from None


def read_tensors(path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a memory-mapped safetensors file (all of them, or `names`)."""
    try:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in (f.keys() if names is None else names)}
    except (OSError, SafetensorError) as e:
        raise InputError(f"cannot read {path}: {first_line(e)}") from None


def weight_files(folder: Path, single: str) -> dict[str, Path]:
    """Which file holds each tensor: `single`, or the shards its `<single>.index.json` names (each
    checked to exist; the tensors each shard header lists checked against the index)."""
    index = folder / f"{single}.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = {str(name): folder / str(shard) for name, shard in weight_map.items()}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise InputError(f"cannot read the shard index {index}: {first_line(e)}") from None
        for shard, names in _held(files).items():
            if not shard.is_file():
                raise InputError(f"{index} names the shard {shard.name}, which is missing from {folder}")
            held = read_shapes(shard)
            absent = sorted(name for name in names if name not in held)
            if absent:
                raise InputError(f"{index} places {absent[0]} in {shard.name}, which does not hold it")
        return files
    path = folder / single
    if not path.is_file():
        raise InputError(f"{folder} has neither {single} nor {index.name}")
    return dict.fromkeys(read_shapes(path), path)


def _held(files: dict[str, Path]) -> dict[Path, list[str]]:
    """The names each file holds, by file, in file order."""
    return {path: [name for name, where in files.items() if where == path] for path in sorted(set(files.values()))}


def shapes_of(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor `weight_files` found, from the headers."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path, names in _held(files).items():
        header = read_shapes(path)
        shapes.update({name: header[name] for name in names})
    return shapes


def tensors_of(files: dict[str, Path]) -> dict[Path, dict[str, torch.Tensor]]:
    """Every tensor `weight_files` found, memory-mapped, by the file that holds it."""
    return {path: read_tensors(path, names) for path, names in _held(files).items()}
