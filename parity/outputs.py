"""One adapter's stage outputs for one case, and their on-disk form (dumps and fixtures alike).

`<name>.safetensors` holds the tensors under the DESIGN.md keys (`tokens.input_ids`,
`embeddings.hidden`, `schedule.sigmas`, `denoise.model_out`, ...; the negative prompt's embeddings
under `negative.*`, per-block activations under `denoise.blocks.*`); `<name>.json` holds the
strings and metadata (`template.text`, versions, options). Writes are
atomic: a reader sees the old pair or the new pair, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from parity.errors import InputError
from parity.paths import inside
from parity.stages import Denoise, Embeddings, Schedule, Template, Tokens


@dataclass
class StageOutputs:
    template: Template | None = None
    tokens: Tokens | None = None
    embeddings: Embeddings | None = None
    negative: Embeddings | None = None
    schedule: Schedule | None = None
    denoise: Denoise | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def get(self, stage: str) -> Template | Tokens | Embeddings | Schedule | Denoise | None:
        return getattr(self, stage)

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.tokens is not None:
            out["tokens.input_ids"] = torch.tensor(self.tokens.input_ids, dtype=torch.int64)
            out["tokens.attention_mask"] = torch.tensor(self.tokens.attention_mask, dtype=torch.int64)
        for name in ("embeddings", "negative"):
            rows = getattr(self, name)
            if rows is not None:
                out[f"{name}.hidden"] = rows.hidden.contiguous()
                out[f"{name}.mask"] = rows.mask.to(torch.bool).contiguous()
        if self.schedule is not None:
            out["schedule.sigmas"] = self.schedule.sigmas.to(torch.float64).contiguous()
            out["schedule.model_t"] = self.schedule.model_t.to(torch.float64).contiguous()
        if self.denoise is not None:
            out["denoise.model_out"] = self.denoise.model_out.contiguous()
            out["denoise.latents"] = self.denoise.latents.contiguous()
            for block, value in (self.denoise.blocks or {}).items():
                out[f"denoise.blocks.{block}"] = value.contiguous()
        return out

    def strings(self) -> dict[str, Any]:
        data: dict[str, Any] = {"meta": self.meta}
        if self.template is not None:
            data["template.text"] = self.template.text
        return data


def _unwritable(path: Path, error: OSError) -> InputError:
    # A file where a folder should be reads as "File exists" or "Not a directory": name the file.
    in_the_way = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    reason = f"{in_the_way} is a file, not a folder" if in_the_way is not None else error.strerror or str(error)
    return InputError(f"cannot write {path}: {reason}")


def refuse_to_replace(path: Path) -> None:
    """InputError unless `path` is absent or a regular file: what may be renamed over. Commands call it
    for their outputs before any work, so a long run is not refused only at its end."""
    try:
        kind = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise _unwritable(path, e) from None
    if not stat.S_ISREG(kind):
        raise InputError(
            f"cannot write {path}: it exists and is not a regular file (a device, folder, link or pipe); "
            "parity replaces only regular files"
        )


def atomic_write_bytes(path: Path, data: bytes, before_writing: Callable[[Path], None] | None = None) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    Readers (and a second run writing the same path) see the old file or a complete new one, never
    a mix; an unwritable destination is an InputError naming it. `before_writing` is told the
    temporary file's path before any byte goes into it (a regen journals it). Only a regular file is ever
    replaced: renaming over `/dev/null` (as root) or a symlink would put a file where a device or
    a link was, so an existing path of any other kind is refused.
    """
    refuse_to_replace(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        if before_writing is not None:
            before_writing(Path(tmp))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; reports and fixtures are meant to be read by others (CI artifacts).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _unwritable(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode(outputs: StageOutputs) -> tuple[bytes, bytes]:
    """The (safetensors, json) bytes of `outputs`."""
    tensors = save(outputs.tensors())
    strings = json.dumps(outputs.strings(), indent=1, sort_keys=True, ensure_ascii=False).encode()
    return tensors, strings + b"\n"


def write_outputs(directory: Path, name: str, outputs: StageOutputs) -> tuple[Path, Path]:
    tensors, strings = encode(outputs)
    st, js = inside(directory, f"{name}.safetensors"), inside(directory, f"{name}.json")
    atomic_write_bytes(st, tensors)
    atomic_write_bytes(js, strings)
    return st, js


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
    if "template.text" in strings:
        out.template = Template(strings["template.text"])
    if "tokens.input_ids" in tensors:
        out.tokens = Tokens(tensors["tokens.input_ids"].tolist(), tensors["tokens.attention_mask"].tolist())
    if "embeddings.hidden" in tensors:
        out.embeddings = Embeddings(tensors["embeddings.hidden"], tensors["embeddings.mask"])
    if "negative.hidden" in tensors:
        out.negative = Embeddings(tensors["negative.hidden"], tensors["negative.mask"])
    if "schedule.sigmas" in tensors:
        out.schedule = Schedule(tensors["schedule.sigmas"], tensors["schedule.model_t"])
    if "denoise.model_out" in tensors:
        blocks = {k.removeprefix(BLOCKS): v for k, v in tensors.items() if k.startswith(BLOCKS)}
        out.denoise = Denoise(tensors["denoise.model_out"], tensors["denoise.latents"], blocks or None)
    return out


def json_kind(value: Any) -> str:
    """A parsed JSON value's type in words, for messages: "a string", "null", "NaN"."""
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return {"nan": "NaN", "inf": "Infinity"}.get(str(value), "-Infinity")
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return kinds.get(type(value), "an object")


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
    """The JSON side: an object, its `template.text` a string, its `meta` an object whose keys the runner
    reads (adapter, case, skipped, versions) hold strings."""
    if not isinstance(strings, dict):
        raise InputError(f"{where}: must be an object, got {json_kind(strings)}")
    if "template.text" in strings and not _text(strings["template.text"]):
        raise InputError(f"{where}: template.text: must be a string, got {json_kind(strings['template.text'])}")
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


BLOCKS = "denoise.blocks."
# Each tensor `encode` writes: its dtype (None: any floating dtype, as the implementation computed
# it) and number of dimensions (None: any), and the tensor it comes with.
_TENSORS: dict[str, tuple[torch.dtype | None, int | None, str]] = {
    "tokens.input_ids": (torch.int64, 1, "tokens.attention_mask"),
    "tokens.attention_mask": (torch.int64, 1, "tokens.input_ids"),
    "embeddings.hidden": (None, 2, "embeddings.mask"),
    "embeddings.mask": (torch.bool, 1, "embeddings.hidden"),
    "negative.hidden": (None, 2, "negative.mask"),
    "negative.mask": (torch.bool, 1, "negative.hidden"),
    "schedule.sigmas": (torch.float64, 1, "schedule.model_t"),
    "schedule.model_t": (torch.float64, 1, "schedule.sigmas"),
    "denoise.model_out": (None, 4, "denoise.latents"),
    "denoise.latents": (None, 4, "denoise.model_out"),
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_tensors(tensors: dict[str, torch.Tensor], where: str) -> None:
    """The safetensors side: each key's dtype and dimensions, and the shapes that must agree (the
    stages read them together, and a forced run feeds them to every adapter)."""
    for key, value in tensors.items():
        if key.startswith(BLOCKS):
            dtype, dims, partner = None, None, "denoise.model_out"
        elif key in _TENSORS:
            dtype, dims, partner = _TENSORS[key]
        else:
            raise InputError(f"{where}: unknown tensor {key!r}")
        if partner not in tensors:
            raise InputError(f"{where}: {key} without {partner}")
        if dtype is None and not value.is_floating_point():
            raise InputError(f"{where}: {key}: must be a floating-point tensor, not {_dtype_name(value.dtype)}")
        if dtype is not None and value.dtype != dtype:
            raise InputError(f"{where}: {key}: must be {_dtype_name(dtype)}, not {_dtype_name(value.dtype)}")
        if dims is not None and value.dim() != dims:
            raise InputError(f"{where}: {key}: must be {dims}-D, not {value.dim()}-D (shape {tuple(value.shape)})")

    def rows(key: str) -> int:
        return tensors[key].shape[0]

    agree = [
        ("tokens.input_ids", "tokens.attention_mask", 0),
        ("embeddings.hidden", "embeddings.mask", 0),
        ("negative.hidden", "negative.mask", 0),
        ("schedule.model_t", "schedule.sigmas", 1),  # the terminal sigma
        ("denoise.model_out", "denoise.latents", 1),  # the initial noise
    ]
    for key, other, extra in agree:
        if key in tensors and rows(other) != rows(key) + extra:
            needs = rows(key) + extra
            raise InputError(f"{where}: {other} is {rows(other)} long where {key} ({rows(key)}) needs {needs}")
    if "denoise.model_out" in tensors:
        model_out, latents = tensors["denoise.model_out"], tensors["denoise.latents"]
        if model_out.shape[1:] != latents.shape[1:]:
            raise InputError(f"{where}: denoise.model_out is {tuple(model_out.shape)}, denoise.latents "
                             f"{tuple(latents.shape)}: one latent shape for both")
        if "schedule.model_t" in tensors and rows("schedule.model_t") != rows("denoise.model_out"):
            raise InputError(f"{where}: denoise.model_out has {rows('denoise.model_out')} steps, schedule.model_t "
                             f"{rows('schedule.model_t')}")
