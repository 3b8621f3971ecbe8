"""What `--checkpoint DIR` holds, decided in one place: a diffusers folder or ComfyUI single files.

Two layouts are recognised (`detect`):
- diffusers: a Z-Image-Turbo checkpoint folder (`model_index.json`, `transformer/`, `text_encoder/`,
  `tokenizer/`, `vae/`; any but `vae/` marks the layout, each consumer needs only its own part).
- ComfyUI: a folder as `parity export --format comfyui` writes it, `diffusion_models/<name>.safetensors`
  (the DiT, fused qkv, keys under `model.diffusion_model.` or bare),
  `text_encoders/<name>.safetensors` (Qwen3 with HF key names under `model.`) and
  `vae/<name>.safetensors` (the Flux VAE in its original layout). A ComfyUI folder has no tokenizer:
  the reference Qwen3 tokenizer is used (ComfyUI bundles its own copy of the Qwen vocabulary,
  identical to Qwen3's since 2025-12-01; `layout.tokenizer` is None).

`vae/` marks neither layout: both have a `vae/` folder (diffusers' config and weights, or one ComfyUI
file), and a folder holding only a VAE is no checkpoint, since every run starts at the text encoder;
such a folder matches no layout.

Each part is read by the module of the model it holds, in either layout (`parity.models.dit_weights`,
`parity.models.text_encoder_weights`, `parity.models.vae_weights`), so this one knows no model.
Anything unusable is an InputError with one line naming the file and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from parity.core.errors import InputError

COMFYUI_DIT_FOLDER = "diffusion_models"
COMFYUI_TEXT_ENCODER_FOLDER = "text_encoders"
VAE_FOLDER = "vae"
COMFYUI_FOLDERS = {"dit": COMFYUI_DIT_FOLDER, "text_encoder": COMFYUI_TEXT_ENCODER_FOLDER, "vae": VAE_FOLDER}
DIFFUSERS_MARKERS = ("model_index.json", "transformer", "text_encoder", "tokenizer")


@dataclass(frozen=True)
class CheckpointLayout:
    """A checkpoint folder's layout and the parts it was found to hold (None: not there)."""

    folder: Path
    kind: Literal["diffusers", "comfyui"]
    dit: Path | None  # diffusers: transformer/ folder; ComfyUI: the DiT file
    text_encoder: Path | None  # diffusers: text_encoder/ folder; ComfyUI: the encoder file
    tokenizer: Path | None  # diffusers: tokenizer/ folder; ComfyUI: always None (reference tokenizer)
    vae: Path | None  # diffusers: vae/ folder; ComfyUI: the VAE file in vae/


def _single_file(folder: Path, what: str) -> Path | None:
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors"))
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise InputError(f"{folder} holds more than one {what} file ({names}); keep only one")
    return files[0] if files else None


def detect(folder: Path) -> CheckpointLayout:
    """Which layout `folder` has; an InputError naming what was looked for when it has neither."""
    folder = Path(folder)
    if folder.is_dir() and any((folder / m).exists() for m in DIFFUSERS_MARKERS):
        return CheckpointLayout(
            folder=folder,
            kind="diffusers",
            dit=folder / "transformer" if (folder / "transformer").is_dir() else None,
            text_encoder=folder / "text_encoder" if (folder / "text_encoder").is_dir() else None,
            tokenizer=folder / "tokenizer" if (folder / "tokenizer").is_dir() else None,
            vae=folder / VAE_FOLDER if (folder / VAE_FOLDER).is_dir() else None,
        )
    dit = _single_file(folder / COMFYUI_DIT_FOLDER, "DiT")
    text_encoder = _single_file(folder / COMFYUI_TEXT_ENCODER_FOLDER, "text-encoder")
    if dit is not None or text_encoder is not None:
        vae = _single_file(folder / VAE_FOLDER, "VAE")
        return CheckpointLayout(
            folder=folder, kind="comfyui", dit=dit, text_encoder=text_encoder, tokenizer=None, vae=vae
        )
    raise InputError(
        f"checkpoint {folder} matches no known layout: no transformer/, text_encoder/, tokenizer/ or "
        f"model_index.json (diffusers), no {COMFYUI_DIT_FOLDER}/*.safetensors or "
        f"{COMFYUI_TEXT_ENCODER_FOLDER}/*.safetensors (ComfyUI)"
    )


def comfyui_file(layout: CheckpointLayout, part: Literal["dit", "text_encoder", "vae"]) -> Path:
    """A ComfyUI layout's file for `part`; an InputError naming the folder when there is none."""
    path = getattr(layout, part)
    if path is None:
        raise InputError(f"checkpoint {layout.folder} has no {COMFYUI_FOLDERS[part]}/*.safetensors file")
    return path
