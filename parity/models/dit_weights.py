"""The DiT's weights: a tiny Z-Image DiT built from code by default, or a checkpoint's, in either layout
(`parity.models.checkpoint`): a diffusers `transformer/` or a ComfyUI DiT file.

The tiny model keeps Z-Image's structure and every constant that changes numbers (patch 2, 16
latent channels, RoPE theta 256 with three axes, t_scale 1000, 32-token padding, qk norm, two
refiner layers of each kind) and shrinks the widths: dim 64 with two heads of 32 = 8 + 12 + 12, and
cap_feat_dim 80, the tiny text encoder's hidden size, so its embeddings feed the DiT directly.

Weights are chosen so nothing in the forward is degenerate: activations stay O(1), attention logits
are O(1) (neither uniform nor one-hot), the adaLN gates tanh(g) average about 0.45 with none above
0.75, so a skipped block or a wrong cast moves the output by a visible fraction; and the learned
pad tokens are set (diffusers used to create them uninitialised).

The state dict is in diffusers' key layout (what `ZImageTransformer2DModel.state_dict()` has); a
ComfyUI file's weights go through `convert.comfyui_to_diffusers`. A ComfyUI file carries no config,
so it is inferred from tensor shapes (`comfyui_dit_config`), and the constants no shape shows (RoPE
theta, eps, t_scale, axis lengths) are the tiny model's when every inferred width is the tiny
model's, else Z-Image-Turbo's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ZImageTransformer2DModel

from parity.core.errors import InputError
from parity.models.checkpoint import comfyui_file, detect
from parity.models.config_check import block_count, check_dit_config, read_config
from parity.models.convert import COMFYUI_PREFIX, comfyui_to_diffusers
from parity.models.deterministic import state_dict_sha256, uniform
from parity.models.safetensors_files import read_shapes, read_tensors, shapes_of, tensors_of, weight_files
from parity.models.weight_check import check_names, check_shapes, name_some

TINY_SEED = 20251127
TINY_CONFIG: dict[str, Any] = dict(
    all_patch_size=[2],
    all_f_patch_size=[1],
    in_channels=16,
    dim=64,
    n_layers=2,
    n_refiner_layers=2,
    n_heads=2,
    n_kv_heads=2,
    norm_eps=1e-5,
    qk_norm=True,
    cap_feat_dim=80,
    rope_theta=256.0,
    t_scale=1000.0,
    axes_dims=[8, 12, 12],
    axes_lens=[1024, 512, 512],
)
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = WEIGHTS_FILE + ".index.json"
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
# Z-Image-Turbo's transformer/config.json constants that no tensor shape shows.
ZIMAGE_DIT_CONSTANTS: dict[str, Any] = dict(
    norm_eps=1e-5, rope_theta=256.0, t_scale=1000.0, axes_lens=[1536, 512, 512]
)


def tiny_dit_config() -> dict[str, Any]:
    """The tiny DiT's config in the diffusers `ZImageTransformer2DModel` format (a fresh copy)."""
    return json.loads(json.dumps(TINY_CONFIG))


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the diffusers state dict for `config`, with its shape (nothing allocated)."""
    init = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = ZImageTransformer2DModel(**init)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _bound(fan_in: int) -> float:
    # Uniform(-b, b) with b = sqrt(3 / fan_in) has variance 1 / fan_in: unit-variance outputs for
    # unit-variance inputs, so activations neither grow nor vanish through the stack.
    return math.sqrt(3.0 / fan_in)


def _synthetic_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm_" in name:
        # Norm gains near 1, but not exactly 1, so a skipped or misplaced norm shows.
        return uniform(name, shape, seed, 0.75, 1.25)
    if name == "cap_embedder.0.weight":
        return uniform(name, shape, seed, 0.75, 1.25)
    if name.endswith("pad_token"):
        return uniform(name, shape, seed, -1.0, 1.0)
    if name.endswith("adaLN_modulation.0.bias"):
        # Block modulation (scale_msa, gate_msa, scale_mlp, gate_mlp): centred at 0.5 so the gates
        # tanh(0.5 +- weight term) stay clear of 0 and of saturation, and the scales near 1.5.
        return uniform(name, shape, seed, 0.25, 0.75)
    if name.endswith("adaLN_modulation.0.weight"):
        return uniform(name, shape, seed, -0.3 * _bound(shape[1]), 0.3 * _bound(shape[1]))
    if name.endswith(".bias"):
        return uniform(name, shape, seed, -0.1, 0.1)
    return uniform(name, shape, seed, -_bound(shape[1]), _bound(shape[1]))


def synthetic_dit_state_dict(config: Mapping[str, Any], seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for every key of the diffusers state dict of a DiT with `config`."""
    return {name: _synthetic_tensor(name, shape, seed) for name, shape in expected_shapes(config).items()}


def tiny_dit_state_dict(seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for every key of the tiny DiT's diffusers state dict."""
    return synthetic_dit_state_dict(TINY_CONFIG, seed)


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
    if all(TINY_CONFIG[k] == v for k, v in inferred.items()):
        return {**TINY_CONFIG, **inferred}
    return {**inferred, **ZIMAGE_DIT_CONSTANTS}


def comfyui_dit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ComfyUI DiT file's weights in diffusers' layout, checked against the config it implies."""
    expected = expected_shapes(comfyui_dit_config(path))
    shapes = _comfyui_dit_shapes(path)
    check_names(path, expected, shapes, "DiT", "a Z-Image DiT")
    check_shapes(path, expected, shapes, "DiT")
    return comfyui_to_diffusers(read_tensors(path))


def _transformer_folder(checkpoint: Path) -> Path:
    folder = checkpoint / "transformer"
    if not folder.is_dir():
        raise InputError(f"checkpoint {checkpoint} has no transformer/ folder")
    return folder


def _checked_transformer(checkpoint: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """A diffusers `transformer/`'s config and the file holding each tensor, the config checked
    against the weights' headers (its sizes and layer counts, then every shape it implies) before
    anything is built from it."""
    folder = _transformer_folder(checkpoint)
    path = folder / "config.json"
    config = read_config(path, "the DiT")
    files = weight_files(folder, WEIGHTS_FILE)
    shapes = shapes_of(files)
    check_dit_config(path, config, shapes)
    expected = expected_shapes(config)
    check_names(folder, expected, files, "DiT", "the DiT config")
    check_shapes(folder, expected, shapes, "DiT")
    return config, files


def load_dit_config(checkpoint: Path | None) -> dict[str, Any]:
    """The DiT config (diffusers format): the tiny one, `<checkpoint>/transformer/config.json` (once
    the weights agree with it), or the one a ComfyUI DiT file's shapes imply."""
    if checkpoint is None:
        return tiny_dit_config()
    layout = detect(checkpoint)
    if layout.kind == "comfyui":
        return comfyui_dit_config(comfyui_file(layout, "dit"))
    return _checked_transformer(checkpoint)[0]


def load_dit_state_dict(checkpoint: Path | None) -> dict[str, torch.Tensor]:
    """The DiT weights in diffusers' layout: the tiny ones, or a checkpoint's, memory-mapped
    (a diffusers `transformer/` or a ComfyUI DiT file).

    A checkpoint must hold exactly the keys its config implies, each of the shape it implies; anything
    else is an InputError that names the first few.
    """
    if checkpoint is None:
        return tiny_dit_state_dict()
    layout = detect(checkpoint)
    if layout.kind == "comfyui":
        return comfyui_dit_state_dict(comfyui_file(layout, "dit"))
    _config, files = _checked_transformer(checkpoint)
    return {name: tensor for tensors in tensors_of(files).values() for name, tensor in tensors.items()}


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """The fixture-provenance hash of a DiT state dict (names, dtypes, shapes, bytes)."""
    return state_dict_sha256(dict(state))
