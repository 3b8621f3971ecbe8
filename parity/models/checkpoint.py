"""What `--checkpoint DIR` holds, decided in one place: a diffusers folder or ComfyUI single files.

Two layouts are recognised (`detect`):
- diffusers: a Z-Image-Turbo checkpoint folder (`model_index.json`, `transformer/`, `text_encoder/`,
  `tokenizer/`; any of them marks the layout, each consumer needs only its own part). Configs are
  read from the folder; the DiT and text encoder code in `parity.models.dit` / `.text_encoder` reads it.
- ComfyUI: a folder as `parity export --format comfyui` writes it, `diffusion_models/<name>.safetensors`
  (the DiT, fused qkv, keys under `model.diffusion_model.` or bare) and
  `text_encoders/<name>.safetensors` (Qwen3 with HF key names under `model.`). ComfyUI files carry no
  configs, so both are inferred from tensor shapes (`comfyui_dit_config`, `comfyui_text_encoder_config`)
  and the constants no shape shows (RoPE theta, eps, t_scale, RoPE axis split and lengths) are the
  tiny model's when every inferred width is the tiny model's, else the documented Z-Image-Turbo /
  Qwen3-4B values. The DiT weights go through `convert.comfyui_to_diffusers`, so every consumer gets
  diffusers' key layout.

  A ComfyUI folder has no tokenizer: the reference Qwen3 tokenizer is used (ComfyUI bundles its own
  copy of the Qwen vocabulary, identical to Qwen3's since 2025-12-01; `layout.tokenizer` is None).

Tensors are read with `safe_open` (memory-mapped); shapes are read from headers without loading.
Anything unusable is an InputError with one line naming the file and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import Qwen3Config, Qwen3Model
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

from parity.errors import InputError
from parity.models.config_check import block_count
from parity.models.convert import COMFYUI_PREFIX, comfyui_to_diffusers
from parity.models.dit import TINY_CONFIG as TINY_DIT_CONFIG
from parity.models.dit import expected_shapes
from parity.models.safetensors_files import read_shapes, read_tensors
from parity.models.text_encoder import TINY_CONFIG as TINY_TEXT_ENCODER_CONFIG
from parity.models.weight_check import check_names, check_shapes, name_some

COMFYUI_DIT_FOLDER = "diffusion_models"
COMFYUI_TEXT_ENCODER_FOLDER = "text_encoders"
DIFFUSERS_MARKERS = ("model_index.json", "transformer", "text_encoder", "tokenizer")
TEXT_ENCODER_PREFIX = "model."

# Keys (ComfyUI names, prefix stripped) every Z-Image DiT file has; used to refuse other models.
COMFYUI_DIT_REQUIRED = (
    "x_embedder.weight",
    "cap_embedder.0.weight",
    "layers.0.attention.qkv.weight",
    "layers.0.attention.q_norm.weight",
    "noise_refiner.0.attention.qkv.weight",
    "context_refiner.0.attention.qkv.weight",
    "final_layer.linear.weight",
)
# Keys (prefix stripped) every Qwen3 text-encoder file has.
TEXT_ENCODER_REQUIRED = (
    "embed_tokens.weight",
    "layers.0.self_attn.q_proj.weight",
    "layers.0.self_attn.k_proj.weight",
    "layers.0.self_attn.q_norm.weight",
    "layers.0.mlp.gate_proj.weight",
    "norm.weight",
)
# Z-Image-Turbo's transformer/config.json constants that no tensor shape shows.
ZIMAGE_DIT_CONSTANTS: dict[str, Any] = dict(
    norm_eps=1e-5, rope_theta=256.0, t_scale=1000.0, axes_lens=[1536, 512, 512]
)
# Qwen3-4B's config.json constants that no tensor shape shows.
QWEN3_4B_CONSTANTS: dict[str, Any] = dict(
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
)


@dataclass(frozen=True)
class CheckpointLayout:
    """A checkpoint folder's layout and the parts it was found to hold (None: not there)."""

    folder: Path
    kind: Literal["diffusers", "comfyui"]
    dit: Path | None  # diffusers: transformer/ folder; ComfyUI: the DiT file
    text_encoder: Path | None  # diffusers: text_encoder/ folder; ComfyUI: the encoder file
    tokenizer: Path | None  # diffusers: tokenizer/ folder; ComfyUI: always None (reference tokenizer)


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
        )
    dit = _single_file(folder / COMFYUI_DIT_FOLDER, "DiT")
    text_encoder = _single_file(folder / COMFYUI_TEXT_ENCODER_FOLDER, "text-encoder")
    if dit is not None or text_encoder is not None:
        return CheckpointLayout(folder=folder, kind="comfyui", dit=dit, text_encoder=text_encoder, tokenizer=None)
    raise InputError(
        f"checkpoint {folder} matches no known layout: no transformer/, text_encoder/, tokenizer/ or "
        f"model_index.json (diffusers), no {COMFYUI_DIT_FOLDER}/*.safetensors or "
        f"{COMFYUI_TEXT_ENCODER_FOLDER}/*.safetensors (ComfyUI)"
    )


def _need(layout: CheckpointLayout, part: Literal["dit", "text_encoder"]) -> Path:
    path = getattr(layout, part)
    if path is None:
        folder = COMFYUI_DIT_FOLDER if part == "dit" else COMFYUI_TEXT_ENCODER_FOLDER
        raise InputError(f"checkpoint {layout.folder} has no {folder}/*.safetensors file")
    return path


# --- the DiT ------------------------------------------------------------------------------------


def _comfyui_dit_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The DiT file's shapes under diffusers' key names (converted on meta tensors: nothing loaded)."""
    shapes = read_shapes(path)
    bare = {k.removeprefix(COMFYUI_PREFIX) for k in shapes}
    missing = [k for k in COMFYUI_DIT_REQUIRED if k not in bare]
    if missing:
        raise InputError(f"{path} is not a Z-Image DiT file: it lacks {name_some(missing)}")
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    return {k: tuple(v.shape) for k, v in comfyui_to_diffusers(meta).items()}


def comfyui_dit_config(path: Path) -> dict[str, Any]:
    """The diffusers-format DiT config a ComfyUI DiT file implies, from its tensor shapes.

    Widths come from shapes: dim and cap_feat_dim from the embedders, head_dim from the `q_norm`
    gain (n_heads = dim / head_dim, n_kv_heads from to_k's rows), the block counts from the keys,
    patch sizes from the embedder's `p-f` name. axes_dims split head_dim as Z-Image does (1/4, 3/8,
    3/8: 32/48/48 of 128, 8/12/12 of the tiny 32).
    """
    shapes = _comfyui_dit_shapes(path)
    embedders = sorted(k for k in shapes if re.match(r"^all_x_embedder\.\d+-\d+\.weight$", k))
    patches = [tuple(int(n) for n in k.split(".")[1].split("-")) for k in embedders]
    dim, patch_in = shapes[embedders[0]]
    p, f = patches[0]
    head_dim = shapes["layers.0.attention.norm_q.weight"][0]
    if dim % head_dim or head_dim % 8:
        raise InputError(f"{path}: dim {dim} and q_norm width {head_dim} do not make whole Z-Image heads")
    inferred = dict(
        all_patch_size=[pp for pp, _ in patches],
        all_f_patch_size=[ff for _, ff in patches],
        in_channels=patch_in // (p * p * f),
        dim=dim,
        n_layers=block_count(shapes, "layers"),
        n_refiner_layers=block_count(shapes, "noise_refiner"),
        n_heads=dim // head_dim,
        n_kv_heads=shapes["layers.0.attention.to_k.weight"][0] // head_dim,
        qk_norm=True,
        cap_feat_dim=shapes["cap_embedder.0.weight"][0],
        axes_dims=[head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8],
    )
    if all(TINY_DIT_CONFIG[k] == v for k, v in inferred.items()):
        return {**TINY_DIT_CONFIG, **inferred}
    return {**inferred, **ZIMAGE_DIT_CONSTANTS}


def comfyui_dit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ComfyUI DiT file's weights in diffusers' layout, checked against the config it implies."""
    expected = expected_shapes(comfyui_dit_config(path))
    shapes = _comfyui_dit_shapes(path)
    check_names(path, expected, shapes, "DiT", "a Z-Image DiT")
    check_shapes(path, expected, shapes, "DiT")
    return comfyui_to_diffusers(read_tensors(path))


def dit_config(layout: CheckpointLayout) -> dict[str, Any]:
    """The DiT config of a ComfyUI layout (diffusers folders: `parity.models.dit.load_dit_config`)."""
    return comfyui_dit_config(_need(layout, "dit"))


def dit_state_dict(layout: CheckpointLayout) -> dict[str, torch.Tensor]:
    """The DiT weights of a ComfyUI layout, diffusers key layout."""
    return comfyui_dit_state_dict(_need(layout, "dit"))


# --- the text encoder ---------------------------------------------------------------------------


def _text_encoder_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    shapes = {k.removeprefix(TEXT_ENCODER_PREFIX): s for k, s in read_shapes(path).items()}
    shapes.pop("lm_head.weight", None)  # a causal-LM head the encoder never uses
    missing = [k for k in TEXT_ENCODER_REQUIRED if k not in shapes]
    if missing:
        raise InputError(f"{path} is not a Qwen3 text-encoder file: it lacks {name_some(missing)}")
    return shapes


def comfyui_text_encoder_config(path: Path) -> Qwen3Config:
    """The Qwen3 config a text-encoder file implies: widths from shapes, Qwen3 constants otherwise."""
    shapes = _text_encoder_shapes(path)
    vocab, hidden = shapes["embed_tokens.weight"]
    head_dim = shapes["layers.0.self_attn.q_norm.weight"][0]
    inferred = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shapes["layers.0.mlp.gate_proj.weight"][0],
        num_hidden_layers=block_count(shapes, "layers"),
        num_attention_heads=shapes["layers.0.self_attn.q_proj.weight"][0] // head_dim,
        num_key_value_heads=shapes["layers.0.self_attn.k_proj.weight"][0] // head_dim,
        head_dim=head_dim,
        attention_bias="layers.0.self_attn.q_proj.bias" in shapes,
    )
    if all(TINY_TEXT_ENCODER_CONFIG[k] == v for k, v in inferred.items()):
        return Qwen3Config(**{**TINY_TEXT_ENCODER_CONFIG, **inferred})
    return Qwen3Config(**{**QWEN3_4B_CONSTANTS, **inferred})


def comfyui_text_encoder(path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Qwen3Model:
    """A bare Qwen3Model holding a ComfyUI text-encoder file's weights (all of them, strictly)."""
    config = comfyui_text_encoder_config(path)
    with torch.device("meta"):
        model = Qwen3Model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = _text_encoder_shapes(path)
    check_names(path, expected, shapes, "text-encoder", "a Qwen3 encoder")
    check_shapes(path, expected, shapes, "text-encoder")
    names = {k.removeprefix(TEXT_ENCODER_PREFIX): k for k in read_shapes(path)}
    tensors = read_tensors(path, [names[k] for k in expected])
    model.load_state_dict({k: tensors[names[k]] for k in expected}, strict=True, assign=True)
    # RoPE's inv_freq is a non-persistent buffer that loading does not fill: build it off meta.
    model.rotary_emb = Qwen3RotaryEmbedding(config)
    return model.to(device=device, dtype=dtype).eval()


def text_encoder(layout: CheckpointLayout, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Qwen3Model:
    """The text encoder of a ComfyUI layout (diffusers folders: `load_text_encoder`)."""
    return comfyui_text_encoder(_need(layout, "text_encoder"), device=device, dtype=dtype)
