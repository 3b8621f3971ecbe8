"""One adapter's stage outputs for one case, and their on-disk form (dumps and fixtures alike).

`<name>.safetensors` holds the tensors under the stages' storage keys (`tokens.input_ids`,
`embeddings.hidden`, `denoise.model_out`, ...: each stage module lists its own); `<name>.json`
holds the strings and metadata (`template.text`, versions, options). Writes are atomic: a reader
sees the old pair or the new pair, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from parity.compare.records import json_kind
from parity.core.errors import InputError
from parity.core.files import atomic_write_bytes
from parity.core.paths import inside
from parity.stages import REGISTRY
from parity.stages.base import TensorRule

RECORDS = tuple(r for s in REGISTRY for r in s.records)


class StageOutputs:
    """Records by name (each stage's, see `Stage.records`) and the run's metadata.

    `outputs.get("tokens")` and `outputs.tokens` are the same: None when the stage did not run;
    `outputs.tokens = ...` replaces the record.
    """

    def __init__(self, meta: dict[str, Any] | None = None, **records: Any) -> None:
        unknown = [name for name in records if name not in RECORDS]
        if unknown:
            raise TypeError(f"no stage produces a {unknown[0]!r} record (records: {', '.join(RECORDS)})")
        self.records: dict[str, Any] = {k: v for k, v in records.items() if v is not None}
        self.meta: dict[str, Any] = meta if meta is not None else {}

    def get(self, name: str) -> Any:
        if name not in RECORDS:
            raise KeyError(f"no stage produces a {name!r} record")
        return self.records.get(name)

    def __getattr__(self, name: str) -> Any:
        if name in RECORDS:
            return self.__dict__.get("records", {}).get(name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # `outputs.denoise = ...` replaces the record; as an attribute of its own it would hide it.
        if name not in RECORDS:
            super().__setattr__(name, value)
        elif value is None:
            self.records.pop(name, None)
        else:
            self.records[name] = value

    def put(self, records: dict[str, Any]) -> None:
        unknown = [name for name in records if name not in RECORDS]
        if unknown:
            raise TypeError(f"no stage produces a {unknown[0]!r} record (records: {', '.join(RECORDS)})")
        self.records.update({k: v for k, v in records.items() if v is not None})

    def copy(self) -> StageOutputs:
        return self.without()

    def with_meta(self, extra: dict[str, Any]) -> StageOutputs:
        """A copy with `extra` added to its metadata."""
        return StageOutputs(self.meta | extra, **self.records)

    def without(self, *stages: str) -> StageOutputs:
        """A copy without the records of `stages` (to resume a run into them again)."""
        dropped = {r for s in REGISTRY if s.name in stages for r in s.records}
        return StageOutputs(dict(self.meta), **{k: v for k, v in self.records.items() if k not in dropped})

    def stored(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The tensors and the strings (metadata included) every stage stores of these records."""
        tensors: dict[str, torch.Tensor] = {}
        strings: dict[str, Any] = {"meta": self.meta}
        for s in REGISTRY:
            t, j = s.store(self.records)
            tensors |= t
            strings |= j
        return tensors, strings


def encode(outputs: StageOutputs) -> tuple[bytes, bytes]:
    """The (safetensors, json) bytes of `outputs`."""
    tensors, strings = outputs.stored()
    text = json.dumps(strings, indent=1, sort_keys=True, ensure_ascii=False).encode()
    return save(tensors), text + b"\n"


def write_outputs(directory: Path, name: str, outputs: StageOutputs) -> tuple[Path, Path]:
    tensors, strings = encode(outputs)
    st, js = inside(directory, f"{name}.safetensors"), inside(directory, f"{name}.json")
    atomic_write_bytes(st, tensors)
    atomic_write_bytes(js, strings)
    return st, js


def save_files(directory: Path, name: str, outputs: StageOutputs) -> list[Path]:
    """Every file a stage makes of `outputs` for other programs (a decoded image's PNG), as `<name>.<ext>`."""
    written = []
    for s in REGISTRY:
        for extension, data in s.files(outputs.records).items():
            path = inside(directory, f"{name}.{extension}")
            atomic_write_bytes(path, data)
            written.append(path)
    return written


def decode(tensor_bytes: bytes, json_bytes: bytes, where: str) -> StageOutputs:
    """What `encode` wrote, back; InputError naming `where` for anything else, so that a hand-edited
    fixture (its manifest sha256 updated to match) is refused here and not a crash later."""
    try:
        tensors = load(tensor_bytes)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise InputError(f"{where}: unreadable safetensors ({e})") from None
    try:
        strings = json.loads(json_bytes.decode("utf-8"))
    except ValueError as e:  # malformed JSON, not UTF-8, or an integer too long to convert
        raise InputError(f"{where}: unreadable JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{where}: unreadable JSON (nested too deeply)") from None
    _check_strings(strings, f"{where} (JSON)")
    _check_tensors(tensors, f"{where} (safetensors)")
    out = StageOutputs(meta=strings.get("meta", {}))
    for s in REGISTRY:
        out.put(s.load(tensors, strings))
    return out


def _text(value: Any) -> bool:
    """A string that can be written out again (JSON's escapes can spell lone surrogates, which UTF-8 cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_strings(strings: Any, where: str) -> None:
    """The JSON side: an object, each string a stage stores a string, its `meta` an object whose keys the
    runner reads (adapter, case, skipped, versions) hold strings."""
    if not isinstance(strings, dict):
        raise InputError(f"{where}: must be an object, got {json_kind(strings)}")
    for key in (key for s in REGISTRY for key in s.strings):
        if key in strings and not _text(strings[key]):
            raise InputError(f"{where}: {key}: must be a string, got {json_kind(strings[key])}")
    meta = strings.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError(f"{where}: meta: must be an object, got {json_kind(meta)}")
    for key in ("adapter", "case"):
        if key in meta and not _text(meta[key]):
            raise InputError(f"{where}: meta.{key}: must be a string, got {json_kind(meta[key])}")
    for key in ("skipped", "versions"):
        value = meta.get(key, {})
        if not isinstance(value, dict) or not all(_text(k) and _text(v) for k, v in value.items()):
            got = json_kind(value) if not isinstance(value, dict) else "other values"
            raise InputError(f"{where}: meta.{key}: must be an object of strings, got {got}")


def _rule(key: str) -> TensorRule | None:
    """The rule its stage declares for a stored tensor; None for a key no stage stores."""
    for s in REGISTRY:
        if key in s.tensors:
            return s.tensors[key]
        family = next((rule for prefix, rule in s.tensor_families.items() if key.startswith(prefix)), None)
        if family is not None:
            return family
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_tensors(tensors: dict[str, torch.Tensor], where: str) -> None:
    """The safetensors side: each key's dtype and dimensions (as its stage declares them), and the
    shapes that must agree (the stages read them together, and a forced run feeds them to every adapter)."""
    for key, value in tensors.items():
        rule = _rule(key)
        if rule is None:
            raise InputError(f"{where}: unknown tensor {key!r}")
        if rule.partner not in tensors:
            raise InputError(f"{where}: {key} without {rule.partner}")
        if rule.dtype is None and not value.is_floating_point():
            raise InputError(f"{where}: {key}: must be a floating-point tensor, not {_dtype_name(value.dtype)}")
        if rule.dtype is not None and value.dtype != rule.dtype:
            raise InputError(f"{where}: {key}: must be {_dtype_name(rule.dtype)}, not {_dtype_name(value.dtype)}")
        if rule.dims is not None and value.dim() != rule.dims:
            raise InputError(f"{where}: {key}: must be {rule.dims}-D, not {value.dim()}-D (shape {tuple(value.shape)})")
    for s in REGISTRY:
        problem = s.check_stored(tensors)
        if problem is not None:
            raise InputError(f"{where}: {problem}")
