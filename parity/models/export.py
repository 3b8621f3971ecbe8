"""The synthetic models (`parity.models.sizes`: the tiny reference model, or the mid-size one) as
checkpoints the real libraries load: a diffusers folder, ComfyUI files.

`export_diffusers` writes the folder layout of a real Z-Image-Turbo checkpoint (model_index.json,
scheduler/, text_encoder/, tokenizer/, transformer/, vae/), each component saved by its own
library's `save_pretrained`, so `ZImagePipeline.from_pretrained(out_dir)` loads it offline. Every
size has the tiny VAE (`parity.models.vae_weights`: the Flux VAE at a quarter of its widths), its
decoder the weights `load_vae_state_dict(None)` gives, its encoder deterministic weights too. With
`max_shard_size` the transformer and text encoder are split into shards with their
`*.safetensors.index.json`, as the real checkpoint's are. The scheduler config is the real
checkpoint's three settings and nothing else, so the installed diffusers fills in its own defaults
exactly as it does for the real file.

`export_comfyui` writes the three single files a ComfyUI Z-Image workflow loads:
- `diffusion_models/<name>.safetensors`: the DiT in ComfyUI's layout (`parity.models.convert`),
  with the unused `norm_final.weight` real files carry (ones here; ComfyUI and diffusers skip it);
- `text_encoders/<name>.safetensors`: the Qwen3 encoder with HF key names under `model.`
  (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`, ..., `model.norm.weight`),
  which is what ComfyUI's `Qwen3_4B` module (`self.model = Llama2_(...)`) loads and what
  `comfy/sd.py:detect_te_model` inspects;
- `vae/<name>.safetensors`: the same VAE as the diffusers folder's, encoder and decoder, in the
  original (ldm) layout with bare keys (`decoder.up.N.block.M...`, attention as 1x1 convs), as the
  Flux VAE file ComfyUI loads (`parity.models.vae_convert`).
Stock ComfyUI picks the model class from tensor widths (a DiT of dim 3840, an encoder of hidden size
2560), so it recognises these tiny files by layout only: they test key handling, not a ComfyUI run.

Both write into a temporary sibling folder and rename it into place, so a failure leaves nothing
half-written; an existing non-empty `out_dir` is refused.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, ZImageTransformer2DModel
from safetensors.torch import save_file
from transformers import Qwen3Config

from parity.core.errors import InputError
from parity.core.tokenizer import load_tokenizer
from parity.models.convert import COMFYUI_PREFIX, UNUSED_COMFYUI_KEY, diffusers_to_comfyui
from parity.models.dit_weights import synthetic_dit_state_dict
from parity.models.sizes import SIZES, ModelSize
from parity.models.text_encoder_weights import LM_PREFIX, build_synthetic_text_encoder
from parity.models.vae_convert import diffusers_vae_to_comfyui
from parity.models.vae_weights import TINY_VAE_CONFIG, synthetic_vae_state_dict

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}
# The sizes save_pretrained takes as text (diffusers and transformers both hand them to
# huggingface_hub's parse_size_to_int): a number and a decimal unit; it refuses MiB and the like.
SHARD_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SHARD_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]{2})\s*")


@dataclass(frozen=True)
class ComfyUIExport:
    """Where `export_comfyui` puts each file: relative to its `out_dir` (`comfyui_files`), or inside it
    (what `export_comfyui` returns)."""

    dit: Path
    text_encoder: Path
    vae: Path


def comfyui_files(size: str) -> ComfyUIExport:
    """Where `export_comfyui` puts the DiT, the text encoder and the VAE of `size`, relative to its folder."""
    return ComfyUIExport(
        dit=Path("diffusion_models") / f"zimage_parity_{size}.safetensors",
        text_encoder=Path("text_encoders") / f"zimage_parity_{size}_qwen3.safetensors",
        vae=Path("vae") / f"zimage_parity_{size}_vae.safetensors",
    )


def tiny_vae() -> AutoencoderKL:
    """The installed diffusers AutoencoderKL holding the tiny VAE, encoder and decoder."""
    with torch.device("meta"):
        # A copy: the model keeps its config, and the module's lists must not be shared with it.
        vae = AutoencoderKL(**copy.deepcopy(TINY_VAE_CONFIG))
    vae.load_state_dict(synthetic_vae_state_dict(TINY_VAE_CONFIG), assign=True)
    return vae.eval()


def _transformer(size: ModelSize) -> ZImageTransformer2DModel:
    """The installed diffusers transformer class holding a synthetic model's DiT weights."""
    with torch.device("meta"):
        # A copy: the model keeps its config, and the size's lists must not be shared with it.
        model = ZImageTransformer2DModel(**copy.deepcopy(size.dit))
    model.load_state_dict(synthetic_dit_state_dict(size.dit), assign=True)
    return model.eval()


def tiny_transformer() -> ZImageTransformer2DModel:
    """The installed diffusers transformer class holding the tiny DiT weights."""
    return _transformer(SIZES["tiny"])


def _size(name: str) -> ModelSize:
    if name not in SIZES:
        raise InputError(f"unknown model size {name!r} (known: {', '.join(SIZES)})")
    return SIZES[name]


@contextmanager
def _atomic_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `out_dir` that becomes `out_dir` if the block completes."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir} exists and is not an empty folder; export will not overwrite it")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # mkdir (not mkdtemp, which makes it private) so the result gets the user's usual permissions.
        staging = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(8)}.tmp"
        staging.mkdir()
    except OSError as e:
        raise InputError(f"cannot write beside {out_dir}: {e.strerror}") from None
    try:
        yield staging
        # Renaming onto an empty folder replaces it; a folder that filled up meanwhile makes this fail.
        staging.replace(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _class_entry(obj: object) -> list[str]:
    # model_index.json names each component's library and class, as diffusers records them.
    return [type(obj).__module__.split(".")[0], type(obj).__name__]


def parse_shard_size(text: str) -> int:
    """`--max-shard-size` in bytes ("200MB", "1.5gb"), read as save_pretrained reads it; checked before
    anything is built, where save_pretrained would refuse it only after the models are."""
    match = _SHARD_SIZE.fullmatch(text)
    unit = SHARD_SIZE_UNITS.get(match[2].upper()) if match else None
    size = int(float(match[1]) * unit) if match and unit else 0
    if size < 1:
        raise InputError(
            f"--max-shard-size {text!r}: give a positive number and a unit, KB, MB, GB or TB "
            "(decimal: 1MB = 1,000,000 bytes), such as 200MB or 1.5GB"
        )
    return size


def export_diffusers(out_dir: Path, size: str = "tiny", max_shard_size: str | None = None) -> Path:
    """Write a synthetic model as a diffusers Z-Image checkpoint folder; returns `out_dir`.

    `max_shard_size` (such as "200MB") shards the transformer and the text encoder.
    """
    out_dir, model = Path(out_dir), _size(size)
    shard_size = parse_shard_size(max_shard_size) if max_shard_size is not None else None
    with _atomic_folder(out_dir) as staging:
        components = {
            "text_encoder": build_synthetic_text_encoder(Qwen3Config(**model.text_encoder)),
            "tokenizer": load_tokenizer(),
            "transformer": _transformer(model),
            "vae": tiny_vae(),
        }
        for name, component in components.items():
            if shard_size is not None and name in ("text_encoder", "transformer"):
                component.save_pretrained(staging / name, max_shard_size=shard_size)
            else:
                component.save_pretrained(staging / name)
        scheduler = staging / "scheduler"
        scheduler.mkdir()
        header = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": diffusers.__version__}
        (scheduler / "scheduler_config.json").write_text(json.dumps(header | SCHEDULER_CONFIG, indent=2) + "\n")
        index = {"_class_name": "ZImagePipeline", "_diffusers_version": diffusers.__version__}
        index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
        index |= {name: _class_entry(component) for name, component in components.items()}
        (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out_dir


def export_comfyui(out_dir: Path, size: str = "tiny") -> ComfyUIExport:
    """Write a synthetic model's DiT, text encoder and VAE as ComfyUI single files under `out_dir`."""
    out_dir, model = Path(out_dir), _size(size)
    dit = diffusers_to_comfyui(synthetic_dit_state_dict(model.dit))
    dit[COMFYUI_PREFIX + UNUSED_COMFYUI_KEY] = torch.ones(model.dit["dim"])
    encoder = build_synthetic_text_encoder(Qwen3Config(**model.text_encoder)).state_dict()
    text_encoder = {LM_PREFIX + name: value for name, value in encoder.items()}
    vae = diffusers_vae_to_comfyui(synthetic_vae_state_dict(TINY_VAE_CONFIG))
    files = comfyui_files(size)
    with _atomic_folder(out_dir) as staging:
        for relative, state in ((files.dit, dit), (files.text_encoder, text_encoder), (files.vae, vae)):
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, staging / relative)
    return ComfyUIExport(dit=out_dir / files.dit, text_encoder=out_dir / files.text_encoder, vae=out_dir / files.vae)
