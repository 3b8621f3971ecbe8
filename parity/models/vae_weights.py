"""The VAE's decoder weights: a tiny Flux VAE built from code by default, or a checkpoint's, in either
layout (`parity.models.checkpoint`): a diffusers `vae/` folder or a ComfyUI `vae/` file.

Only the decoder is read (`decoder.*`, and `post_quant_conv.*` where the config has one): the
harness decodes final latents and never encodes, so the encoder's tensors are neither checked nor
loaded. The state dict is in diffusers' key layout (what `AutoencoderKL.state_dict()` has).

A ComfyUI file holds the whole VAE in the original (ldm) layout, possibly under a prefix
(`first_stage_model.`, `vae.`), and no config: the config is inferred from tensor shapes
(`comfyui_vae_config`), with 32 groups (ComfyUI builds every GroupNorm of its VAE so) and the
scaling and shift factors ComfyUI's Flux latent format hard-codes. The file's names and shapes are
checked against that config in the original layout (`vae_convert`) before anything is loaded; its
tensors are then renamed by the installed diffusers' own `convert_ldm_vae_checkpoint`.

The tiny model's weights are chosen so a decoded image is neither flat nor saturated: decoding
`randn(1, 16, 16, 16) / 0.3611 + 0.1159` gives values of std about 0.42, mean about -0.06, about 2% of
them outside [-1, 1], so its uint8 image uses every level and rounding against truncation changes
about half of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from parity.core.errors import InputError
from parity.models.checkpoint import CheckpointLayout, comfyui_file, detect
from parity.models.config_check import VAE_DEFAULTS, block_count, check_vae_config, read_config
from parity.models.deterministic import uniform
from parity.models.safetensors_files import read_shapes, read_tensors, shapes_of, tensors_of, weight_files
from parity.models.vae_convert import diffusers_vae_to_comfyui
from parity.models.weight_check import check_names, check_shapes, name_some

TINY_SEED = 20251127
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
# What the decoder runs on: its own tensors, and the 1x1 conv before it where a config has one.
DECODER_PREFIXES = ("decoder.", "post_quant_conv.")
# The Flux VAE ([128, 256, 512, 512], 2 layers per block, 32 groups) at a quarter of its widths.
# Keeping its depth, its 32 groups and the levels where a resnet changes width (so which resnets
# have a conv shortcut) lets other libraries' Flux decoders, which hard-code that structure, hold
# these weights; four levels keep the pipeline's 8x scale factor.
# The Flux VAE's latent factors: Z-Image's vae/config.json, and what ComfyUI's Flux latent format
# (`comfy/latent_formats.py`) hard-codes.
FLUX_FACTORS = dict(scaling_factor=0.3611, shift_factor=0.1159)
TINY_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 64, 128, 128],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    **FLUX_FACTORS,
    force_upcast=True,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
)
# Fan-in-scaled weights leave the normalised, SiLU'd map before conv_out at about unit scale and the
# image at std 0.6, a tenth of it clamped; 0.7 of that bound brings the image to std 0.42.
CONV_OUT_SCALE = 0.7
# The groups of ComfyUI's VAE GroupNorms (its `Normalize`).
COMFYUI_GROUPS = 32
# Keys every decoder has, in each layout; used to refuse other models' files.
DIFFUSERS_DECODER_REQUIRED = (
    "decoder.conv_in.weight",
    "decoder.mid_block.resnets.0.conv1.weight",
    "decoder.up_blocks.0.resnets.0.conv1.weight",
    "decoder.conv_out.weight",
)
COMFYUI_DECODER_REQUIRED = (
    "decoder.conv_in.weight",
    "decoder.mid.block_1.conv1.weight",
    "decoder.up.0.block.0.conv1.weight",
    "decoder.conv_out.weight",
)


def _complete(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with AutoencoderKL's defaults for what it omits, `_` keys dropped (a fresh copy)."""
    init = {k: v for k, v in config.items() if not k.startswith("_")}
    return json.loads(json.dumps(VAE_DEFAULTS | init))


def tiny_vae_config() -> dict[str, Any]:
    """The tiny VAE's config in the diffusers `AutoencoderKL` format, every key set (a fresh copy)."""
    return _complete(TINY_VAE_CONFIG)


def _all_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = AutoencoderKL(**_complete(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _decoder_part(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}


def expected_vae_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the decoder part of the diffusers state dict for `config`, with its shape
    (nothing allocated)."""
    return _decoder_part(_all_shapes(config))


def _synthetic_tensor(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    if len(shape) == 1:
        # 1-D weights are GroupNorm gains, near 1 but not 1 so a skipped norm shows; biases small.
        low, high = (0.75, 1.25) if name.endswith("weight") else (-0.1, 0.1)
        return uniform(name, shape, seed, low, high)
    # Variance 1 / fan_in: unit-variance outputs for unit-variance inputs (see CONV_OUT_SCALE).
    bound = math.sqrt(3.0 / math.prod(shape[1:]))
    if name == "decoder.conv_out.weight":
        bound *= CONV_OUT_SCALE
    return uniform(name, shape, seed, -bound, bound)


def synthetic_vae_state_dict(config: Mapping[str, Any], seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for every key (encoder and decoder) of an AutoencoderKL with `config`."""
    return {name: _synthetic_tensor(name, shape, seed) for name, shape in _all_shapes(config).items()}


def tiny_vae_state_dict() -> dict[str, torch.Tensor]:
    """Deterministic float32 weights for the tiny VAE's decoder (diffusers key layout)."""
    shapes = expected_vae_shapes(TINY_VAE_CONFIG)
    return {name: _synthetic_tensor(name, shape, TINY_SEED) for name, shape in shapes.items()}


def _check_floating(where: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    wrong = sorted(name for name, tensor in tensors.items() if not tensor.is_floating_point())
    if wrong:
        first = f"{wrong[0]} is {tensors[wrong[0]].dtype}"
        more = f" (and {name_some(wrong[1:])})" if len(wrong) > 1 else ""
        raise InputError(f"{where} has VAE decoder weights that are not floating point: {first}{more}")


def _comfyui_vae_shapes(path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The prefix a ComfyUI VAE file's decoder keys have ("" when bare), and the decoder's shapes
    under the bare names."""
    shapes = read_shapes(path)
    anchor = COMFYUI_DECODER_REQUIRED[0]
    prefixes = sorted({k.removesuffix(anchor) for k in shapes if k.endswith(anchor)})
    prefixes = [p for p in prefixes if p == "" or p.endswith(".")]
    if len(prefixes) > 1:
        raise InputError(f"{path} holds more than one VAE decoder (under {', '.join(repr(p) for p in prefixes)})")
    prefix = prefixes[0] if prefixes else ""
    bare = _decoder_part({k.removeprefix(prefix): s for k, s in shapes.items() if k.startswith(prefix)})
    missing = [k for k in COMFYUI_DECODER_REQUIRED if k not in bare]
    if missing and DIFFUSERS_DECODER_REQUIRED[1] in bare:
        raise InputError(
            f"{path} holds a VAE in diffusers' key layout (decoder.up_blocks.N.resnets.M); a ComfyUI vae/ "
            "file has the original layout (decoder.up.N.block.M), as diffusers' vae/ folder has the other"
        )
    if missing:
        raise InputError(f"{path} is not a Flux VAE file: it lacks {name_some(missing)}")
    return prefix, bare


def _inferred_config(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """The AutoencoderKL config a ComfyUI file's decoder shapes (original layout) imply. The original
    numbers the decoder's levels as the encoder's, so level i's width is block_out_channels[i]."""
    levels = block_count(shapes, "decoder.up")
    widths = []
    for i in range(levels):
        key = f"decoder.up.{i}.block.0.conv1.weight"
        if key not in shapes:
            raise InputError(f"{path} lacks VAE decoder weights: {key}")
        widths.append(shapes[key][0])
    if any(width % COMFYUI_GROUPS for width in widths):
        raise InputError(f"{path}: decoder widths {widths} are not all multiples of the VAE's {COMFYUI_GROUPS} groups")
    resnets = block_count(shapes, "decoder.up.0.block")
    if resnets < 2:
        raise InputError(f"{path}: decoder.up.0 holds {resnets} resnet; a Flux VAE decoder level holds at least 2")
    return _complete(
        dict(
            out_channels=shapes["decoder.conv_out.weight"][0],
            down_block_types=["DownEncoderBlock2D"] * levels,
            up_block_types=["UpDecoderBlock2D"] * levels,
            block_out_channels=widths,
            layers_per_block=resnets - 1,
            latent_channels=shapes["decoder.conv_in.weight"][1],
            norm_num_groups=COMFYUI_GROUPS,
            sample_size=1024,  # the Flux VAE's: diffusers tiles large images by it, nothing here does
            use_quant_conv=False,
            use_post_quant_conv="post_quant_conv.weight" in shapes,
            mid_block_add_attention=True,
            **FLUX_FACTORS,
        )
    )


def _checked_comfyui(path: Path) -> tuple[str, dict[str, Any], dict[str, tuple[int, ...]], list[str]]:
    """A ComfyUI VAE file's key prefix, the config its shapes imply, that config's decoder shapes
    (diffusers names) and the file's decoder names (bare, original layout), once those names and
    their shapes agree with the config, from the header."""
    prefix, shapes = _comfyui_vae_shapes(path)
    config = _inferred_config(path, shapes)
    expected = expected_vae_shapes(config)
    meta = {name: torch.empty(shape, device="meta") for name, shape in expected.items()}
    original = {k: tuple(v.shape) for k, v in diffusers_vae_to_comfyui(meta).items()}
    check_names(path, original, shapes, "VAE decoder", "a Flux VAE decoder")
    check_shapes(path, original, shapes, "VAE decoder")
    return prefix, config, expected, sorted(original)


def comfyui_vae_config(path: Path) -> dict[str, Any]:
    """The diffusers-format AutoencoderKL config a ComfyUI VAE file implies, from its decoder's shapes
    (once every decoder tensor agrees with it)."""
    return _checked_comfyui(path)[1]


def comfyui_vae_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ComfyUI VAE file's decoder weights in diffusers' layout, checked against the config it implies."""
    prefix, config, expected, names = _checked_comfyui(path)
    tensors = read_tensors(path, [prefix + name for name in names])
    _check_floating(path, tensors)
    bare = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
    converted = _decoder_part(convert_ldm_vae_checkpoint(bare, config))
    odd = sorted(set(converted) ^ set(expected))
    odd = odd or sorted(name for name, shape in expected.items() if tuple(converted[name].shape) != shape)
    if odd:
        # The file was checked above: this is the installed converter disagreeing with the model.
        raise RuntimeError(f"diffusers {diffusers.__version__}'s convert_ldm_vae_checkpoint returned {odd[0]} wrong")
    return converted


def _checked_vae_folder(layout: CheckpointLayout) -> tuple[dict[str, Any], dict[str, Path]]:
    """A diffusers `vae/`'s complete config and the file holding each decoder tensor: the weights
    checked to be a VAE's, the config against itself and their headers, then every decoder shape it
    implies, before anything is built from it or loaded."""
    folder = layout.vae
    if folder is None:
        raise InputError(f"checkpoint {layout.folder} has no vae/ folder")
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"{folder} has no config.json")
    written = read_config(path, "the VAE")
    files = weight_files(folder, WEIGHTS_FILE)
    shapes = shapes_of(files)
    where = next(iter(set(files.values()))) if len(set(files.values())) == 1 else folder
    missing = [k for k in DIFFUSERS_DECODER_REQUIRED if k not in shapes]
    if missing:
        raise InputError(f"{where} is not a VAE weights file: it lacks {name_some(missing)}")
    check_vae_config(path, written, shapes)
    config = _complete(written)
    expected, found = expected_vae_shapes(config), _decoder_part(shapes)
    check_names(where, expected, found, "VAE decoder", "the VAE config")
    check_shapes(where, expected, found, "VAE decoder")
    return config, _decoder_part(files)


def load_vae_config(checkpoint: Path | None) -> dict[str, Any]:
    """The VAE config (diffusers `AutoencoderKL` format, every key set, none starting with `_`): the
    tiny one, `<checkpoint>/vae/config.json` (once the weights agree with it), or the one a ComfyUI
    VAE file's shapes imply."""
    if checkpoint is None:
        return tiny_vae_config()
    layout = detect(checkpoint)
    if layout.kind == "comfyui":
        return comfyui_vae_config(comfyui_file(layout, "vae"))
    return _checked_vae_folder(layout)[0]


def load_vae_state_dict(checkpoint: Path | None) -> dict[str, torch.Tensor]:
    """The VAE decoder's weights in diffusers' layout, as stored: the tiny ones, or a checkpoint's,
    memory-mapped (a diffusers `vae/` or a ComfyUI VAE file). The encoder's are never loaded.

    A checkpoint must hold exactly the decoder keys its config implies, each of the shape it implies
    and floating point; anything else is an InputError that names the first few.
    """
    if checkpoint is None:
        return tiny_vae_state_dict()
    layout = detect(checkpoint)
    if layout.kind == "comfyui":
        return comfyui_vae_state_dict(comfyui_file(layout, "vae"))
    _config, files = _checked_vae_folder(layout)
    state: dict[str, torch.Tensor] = {}
    for path, tensors in tensors_of(files).items():
        _check_floating(path, tensors)
        state.update(tensors)
    return state
