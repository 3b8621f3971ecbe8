"""A checkpoint's model config checked before any model is built from it: its sizes, their
consistency, and its layer counts against the weights' headers.

Building a model costs time per layer even on the meta device, where nothing is allocated: a config
naming a million layers spent minutes building before any weight was compared with it, and sizes the
model code divides by or asserts on (no heads, heads that do not divide the width) ended in a
traceback. So each config is checked first: every size a positive integer, the sizes consistent with
each other, every layer count the number of blocks the weights hold. Only then is the model's full
set of shapes built and compared with the headers (`weight_check`).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, ZImageTransformer2DModel

from parity.core.errors import InputError, shown

# What `ZImageTransformer2DModel` is built from, with the defaults it applies to what a config omits.
DIT_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(ZImageTransformer2DModel.__init__).parameters.items()
    if name != "self"
}
DIT_SIZES = ("in_channels", "dim", "n_layers", "n_refiner_layers", "n_heads", "n_kv_heads", "cap_feat_dim")
DIT_SIZE_LISTS = ("all_patch_size", "all_f_patch_size", "axes_dims", "axes_lens")
DIT_NUMBERS = ("norm_eps", "rope_theta", "t_scale")
# What `AutoencoderKL` is built from, with its defaults; the sizes a VAE config sets; and the
# settings every Flux VAE decoder the harness runs assumes (each implementation hard-codes them).
VAE_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(AutoencoderKL.__init__).parameters.items()
    if name != "self"
}
VAE_SIZES = ("in_channels", "out_channels", "layers_per_block", "latent_channels", "norm_num_groups")
VAE_FLAGS = ("force_upcast", "use_quant_conv", "use_post_quant_conv", "mid_block_add_attention")
FLUX_VAE_SETTINGS: dict[str, Any] = {"act_fn": "silu", "mid_block_add_attention": True}
FLUX_VAE_BLOCKS = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}
# The Qwen3 sizes a text-encoder config sets (head_dim too: Qwen3 does not derive it from the width).
TEXT_ENCODER_SIZES = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
)


def read_config(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`, the config of `what` ("the DiT")."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {what} config {path}: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{what} config {path} is not a JSON object")
    return config


def block_count(shapes: Mapping[str, tuple[int, ...]], stack: str) -> int:
    """How many blocks `<stack>.<i>.` the weights hold."""
    pattern = re.compile(rf"^{re.escape(stack)}\.(\d+)\.")
    return len({m.group(1) for name in shapes if (m := pattern.match(name))})


def _is_positive_int(value: Any) -> bool:
    # JSON true is a Python int; a size is never a boolean.
    return type(value) is int and value > 0


def _positive_int(path: Path, values: Mapping[str, Any], key: str) -> int:
    value = values[key]
    if not _is_positive_int(value):
        raise InputError(f"{path}: {key} must be a positive integer, not {shown(value)}")
    return value


def _positive_ints(path: Path, values: Mapping[str, Any], key: str) -> list[int]:
    value = values[key]
    if not isinstance(value, list | tuple) or not value or not all(_is_positive_int(v) for v in value):
        raise InputError(f"{path}: {key} must be a list of positive integers, not {shown(value)}")
    return list(value)


def _check_positive_number(path: Path, values: Mapping[str, Any], key: str) -> None:
    value = values[key]
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{path}: {key} must be a positive number, not {shown(value)}")


def _check_count(path: Path, key: str, declared: int, shapes: Mapping[str, tuple[int, ...]], stack: str) -> None:
    held = block_count(shapes, stack)
    if declared != held:
        raise InputError(f"{path}: {key} is {declared}, but the weights hold {held} (blocks {stack}.N)")


def check_dit_config(path: Path, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """`config` (a diffusers `transformer/config.json`, at `path`) against itself and the weights' `shapes`."""
    unknown = sorted(key for key in config if not key.startswith("_") and key not in DIT_DEFAULTS)
    if unknown:
        raise InputError(f"{path}: {unknown[0]!r} is not a key of a Z-Image DiT config")
    values = DIT_DEFAULTS | dict(config)
    sizes = {key: _positive_int(path, values, key) for key in DIT_SIZES}
    lists = {key: _positive_ints(path, values, key) for key in DIT_SIZE_LISTS}
    for key in DIT_NUMBERS:
        _check_positive_number(path, values, key)
    if type(values["qk_norm"]) is not bool:
        raise InputError(f"{path}: qk_norm must be true or false, not {shown(values['qk_norm'])}")
    for first, second in (("all_patch_size", "all_f_patch_size"), ("axes_dims", "axes_lens")):
        if len(lists[first]) != len(lists[second]):
            raise InputError(f"{path}: {first} {lists[first]} and {second} {lists[second]} differ in length")
    dim, heads, axes = sizes["dim"], sizes["n_heads"], lists["axes_dims"]
    if dim % heads:
        raise InputError(f"{path}: dim {dim} is not a whole number of heads (n_heads {heads})")
    if sum(axes) != dim // heads:
        raise InputError(
            f"{path}: dim {dim} / n_heads {heads} makes heads {dim // heads} wide, "
            f"but axes_dims {axes} sum to {sum(axes)}"
        )
    if any(d % 2 for d in axes):
        raise InputError(f"{path}: axes_dims {axes} must be even (RoPE turns pairs of channels)")
    stacks = ["noise_refiner", "context_refiner"]
    if values["siglip_feat_dim"] is not None:
        _positive_int(path, values, "siglip_feat_dim")
        stacks.append("siglip_refiner")
    _check_count(path, "n_layers", sizes["n_layers"], shapes, "layers")
    for stack in stacks:
        _check_count(path, "n_refiner_layers", sizes["n_refiner_layers"], shapes, stack)


def check_text_encoder_config(path: Path, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """A `text_encoder/config.json` (at `path`), as written, against itself and the weights' `shapes`
    (keys without the causal LM's `model.` prefix). Checked before transformers parses it: parsing
    alone spends seconds per million layers it is told of. A size it omits takes the config class's
    default, which the shapes are then checked against."""
    values = {key: config[key] for key in TEXT_ENCODER_SIZES if config.get(key) is not None}
    for key in values:
        _positive_int(path, values, key)
    heads, groups = values.get("num_attention_heads"), values.get("num_key_value_heads")
    if heads is not None and groups is not None and heads % groups:
        raise InputError(
            f"{path}: num_attention_heads {heads} is not a whole number of key-value groups "
            f"(num_key_value_heads {groups})"
        )
    if "num_hidden_layers" in values:
        _check_count(path, "num_hidden_layers", values["num_hidden_layers"], shapes, "layers")


def check_vae_config(path: Path, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """`config` (a diffusers `vae/config.json`, at `path`) against itself, the Flux VAE decoder's
    fixed settings, and the weights' `shapes` (its decoder's level and resnet counts)."""
    kind = config.get("_class_name", "AutoencoderKL")
    if kind != "AutoencoderKL":
        raise InputError(f"{path} is the config of a {shown(kind)}, not of an AutoencoderKL (the VAE)")
    unknown = sorted(key for key in config if not key.startswith("_") and key not in VAE_DEFAULTS)
    if unknown:
        raise InputError(f"{path}: {unknown[0]!r} is not a key of an AutoencoderKL config")
    values = VAE_DEFAULTS | dict(config)
    sizes = {key: _positive_int(path, values, key) for key in VAE_SIZES}
    widths = _positive_ints(path, values, "block_out_channels")
    for key, block in FLUX_VAE_BLOCKS.items():
        if not isinstance(values[key], list | tuple) or list(values[key]) != [block] * len(widths):
            raise InputError(
                f"{path}: {key} must be {block} for each of the {len(widths)} block_out_channels, "
                f"not {shown(values[key])}"
            )
    for key in VAE_FLAGS:
        if type(values[key]) is not bool:
            raise InputError(f"{path}: {key} must be true or false, not {shown(values[key])}")
    for key, setting in FLUX_VAE_SETTINGS.items():
        if values[key] != setting:
            raise InputError(f"{path}: {key} is {shown(values[key])}; a Flux VAE decoder has {shown(setting)}")
    _check_positive_number(path, values, "scaling_factor")
    # Z-Image's pipelines add it to every latent: the Flux VAE's config sets it, and null cannot be added.
    if "shift_factor" not in config:
        raise InputError(f"{path} has no shift_factor (the Flux VAE's is 0.1159)")
    shift = values["shift_factor"]
    if type(shift) not in (int, float) or not math.isfinite(shift):
        raise InputError(f"{path}: shift_factor must be a number, not {'null' if shift is None else shown(shift)}")
    groups = sizes["norm_num_groups"]
    if any(width % groups for width in widths):
        raise InputError(f"{path}: block_out_channels {widths} are not all multiples of norm_num_groups {groups}")
    _check_count(path, "the length of block_out_channels", len(widths), shapes, "decoder.up_blocks")
    resnets = block_count(shapes, "decoder.up_blocks.0.resnets")
    if resnets != sizes["layers_per_block"] + 1:
        raise InputError(
            f"{path}: layers_per_block is {sizes['layers_per_block']}, so each decoder block has one more "
            f"resnet, but the weights hold {resnets} (decoder.up_blocks.0.resnets.N)"
        )
