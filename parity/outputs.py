"""One adapter's stage outputs for one case, and their on-disk form (dumps and fixtures alike).

`<name>.safetensors` holds the tensors under the DESIGN.md keys (`tokens.input_ids`,
`embeddings.hidden`, `schedule.sigmas`, `denoise.model_out`, ...; the negative prompt's embeddings
under `negative.*`, per-block activations under `denoise.blocks.*`); `<name>.json` holds the
strings and metadata (`template.text`, versions, options). Writes are
atomic: a reader sees the old pair or the new pair, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from parity.errors import InputError
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    Readers (and a second run writing the same path) see the old file or a complete new one, never
    a mix; an unwritable destination is an InputError naming it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
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
    st, js = directory / f"{name}.safetensors", directory / f"{name}.json"
    atomic_write_bytes(st, tensors)
    atomic_write_bytes(js, strings)
    return st, js


def decode(tensor_bytes: bytes, json_bytes: bytes, where: str) -> StageOutputs:
    try:
        tensors = load(tensor_bytes)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise InputError(f"{where}: unreadable safetensors ({e})") from None
    try:
        strings = json.loads(json_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{where}: unreadable JSON ({e})") from None
    out = StageOutputs(meta=strings.get("meta", {}))
    if "template.text" in strings:
        out.template = Template(strings["template.text"])
    if "tokens.input_ids" in tensors:
        out.tokens = Tokens(tensors["tokens.input_ids"].tolist(), tensors["tokens.attention_mask"].tolist())
    if "embeddings.hidden" in tensors:
        out.embeddings = Embeddings(tensors["embeddings.hidden"], tensors["embeddings.mask"].to(torch.bool))
    if "negative.hidden" in tensors:
        out.negative = Embeddings(tensors["negative.hidden"], tensors["negative.mask"].to(torch.bool))
    if "schedule.sigmas" in tensors:
        out.schedule = Schedule(tensors["schedule.sigmas"], tensors["schedule.model_t"])
    if "denoise.model_out" in tensors:
        prefix = "denoise.blocks."
        blocks = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        out.denoise = Denoise(tensors["denoise.model_out"], tensors["denoise.latents"], blocks or None)
    return out
