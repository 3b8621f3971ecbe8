"""The text encoder: a tiny Qwen3 built from code by default, or a checkpoint's `text_encoder/`.

The tiny model keeps what matters for parity and shrinks the rest: the real vocabulary (151,936,
so every real token id is valid), the real head layout ratios of Qwen3-4B (4 query heads per KV
head, heads x head_dim = 1.6 x hidden, MLP = 3.8 x hidden), its rope_theta and norm eps, and
enough layers that `hidden_states[-2]` is neither the embedding nor the last layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModel, Qwen3Config, Qwen3Model

from parity.errors import InputError
from parity.models.config_check import check_text_encoder_config, read_config
from parity.models.deterministic import state_dict_sha256, uniform
from parity.models.safetensors_files import shapes_of, weight_files
from parity.models.weight_check import check_names, check_shapes

TINY_SEED = 20251126
WEIGHTS_FILE = "model.safetensors"
LM_PREFIX = "model."
TINY_CONFIG = dict(
    vocab_size=151936,
    hidden_size=80,
    intermediate_size=304,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=32,
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=False,
    attention_bias=False,
)


def tiny_config() -> Qwen3Config:
    return Qwen3Config(**TINY_CONFIG)


def synthetic_state_dict(config: Qwen3Config, seed: int = TINY_SEED) -> dict[str, torch.Tensor]:
    """Deterministic weights for every parameter of a bare Qwen3Model with `config`."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Qwen3Model(config).state_dict().items()}
    state = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            # Norm gains near 1, but not exactly 1, so a skipped or misplaced norm shows.
            state[name] = uniform(name, shape, seed, 0.75, 1.25)
        elif name == "embed_tokens.weight":
            state[name] = uniform(name, shape, seed, -1.0, 1.0)
        else:
            bound = shape[-1] ** -0.5
            state[name] = uniform(name, shape, seed, -bound, bound)
    return state


def build_synthetic_text_encoder(
    config: Qwen3Config, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> Qwen3Model:
    """A bare Qwen3Model with `config` and `synthetic_state_dict` weights."""
    model = Qwen3Model(config)
    model.load_state_dict(synthetic_state_dict(config), strict=True)
    return model.to(device=device, dtype=dtype).eval()


def build_tiny_text_encoder(device: str = "cpu", dtype: torch.dtype = torch.float32) -> Qwen3Model:
    return build_synthetic_text_encoder(tiny_config(), device, dtype)


def load_text_encoder(
    checkpoint: Path | None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The tiny encoder, a diffusers checkpoint's `text_encoder/`, or a ComfyUI text-encoder file
    (`parity.models.checkpoint`)."""
    if checkpoint is None:
        return build_tiny_text_encoder(device, dtype)
    from parity.models import checkpoint as layouts

    layout = layouts.detect(checkpoint)
    if layout.kind == "comfyui":
        return layouts.text_encoder(layout, device=device, dtype=dtype)
    folder = checkpoint / "text_encoder"
    if not folder.is_dir():
        raise InputError(f"checkpoint {checkpoint} has no text_encoder/ folder")
    _check_weights(folder)
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot load the text encoder in {folder}: {str(e).strip().splitlines()[0]}") from None
    return model.to(device).eval()


def _check_weights(folder: Path) -> None:
    """The folder's weight files against its config.json, from the headers: every shard the index
    names present and readable, the config's sizes and layer count (before a model is built from
    it), then every tensor the config implies there with its shape, none extra."""
    path = folder / "config.json"
    written = read_config(path, "the text encoder")
    found = shapes_of(weight_files(folder, WEIGHTS_FILE))
    # A causal-LM checkpoint nests the encoder under `model.` and adds a head the encoder never uses.
    found = {k.removeprefix(LM_PREFIX): v for k, v in found.items() if k != "lm_head.weight"}
    check_text_encoder_config(path, written, found)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, StrictDataclassError) as e:
        # transformers' validation errors span lines: the field on one, the reason on the next.
        raise InputError(f"cannot read the text encoder config {path}: {' '.join(str(e).split())}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AutoModel.from_config(config).state_dict().items()}
    check_names(folder, expected, found, "text-encoder", "the text-encoder config")
    check_shapes(folder, expected, found, "text-encoder")


def weights_sha256(model: torch.nn.Module) -> str:
    return state_dict_sha256(model.state_dict())
