"""The text encoder: a tiny Qwen3 built from code by default, or a checkpoint's, in either layout
(`parity.models.checkpoint`): a diffusers `text_encoder/` or a ComfyUI text-encoder file.

The tiny model keeps what matters for parity and shrinks the rest: the real vocabulary (151,936,
so every real token id is valid), the real head layout ratios of Qwen3-4B (4 query heads per KV
head, heads x head_dim = 1.6 x hidden, MLP = 3.8 x hidden), its rope_theta and norm eps, and
enough layers that `hidden_states[-2]` is neither the embedding nor the last layer.

A ComfyUI file carries no config, so it is inferred from tensor shapes
(`comfyui_text_encoder_config`), and the constants no shape shows (RoPE theta, eps, positions, tied
embeddings) are the tiny model's when every inferred width is the tiny model's, else Qwen3-4B's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModel, Qwen3Config, Qwen3Model
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

from parity.core.errors import InputError, first_line
from parity.models.checkpoint import comfyui_file, detect
from parity.models.config_check import block_count, check_text_encoder_config, read_config
from parity.models.deterministic import state_dict_sha256, uniform
from parity.models.safetensors_files import read_shapes, read_tensors, shapes_of, weight_files
from parity.models.weight_check import check_names, check_shapes, name_some

TINY_SEED = 20251126
WEIGHTS_FILE = "model.safetensors"
# A causal-LM checkpoint (and a ComfyUI text-encoder file) nests the encoder's keys under this.
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
# Keys (prefix stripped) every Qwen3 text-encoder file has; used to refuse other models.
TEXT_ENCODER_REQUIRED = (
    "embed_tokens.weight",
    "layers.0.self_attn.q_proj.weight",
    "layers.0.self_attn.k_proj.weight",
    "layers.0.self_attn.q_norm.weight",
    "layers.0.mlp.gate_proj.weight",
    "norm.weight",
)
# Qwen3-4B's config.json constants that no tensor shape shows.
QWEN3_4B_CONSTANTS: dict[str, Any] = dict(
    max_position_embeddings=40960,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
    tie_word_embeddings=True,
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


def _comfyui_text_encoder_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    shapes = {k.removeprefix(LM_PREFIX): s for k, s in read_shapes(path).items()}
    shapes.pop("lm_head.weight", None)  # a causal-LM head the encoder never uses
    missing = [k for k in TEXT_ENCODER_REQUIRED if k not in shapes]
    if missing:
        raise InputError(f"{path} is not a Qwen3 text-encoder file: it lacks {name_some(missing)}")
    return shapes


def comfyui_text_encoder_config(path: Path) -> Qwen3Config:
    """The Qwen3 config a text-encoder file implies: widths from shapes, Qwen3 constants otherwise."""
    shapes = _comfyui_text_encoder_shapes(path)
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
    if all(TINY_CONFIG[k] == v for k, v in inferred.items()):
        return Qwen3Config(**{**TINY_CONFIG, **inferred})
    return Qwen3Config(**{**QWEN3_4B_CONSTANTS, **inferred})


def comfyui_text_encoder(path: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Qwen3Model:
    """A bare Qwen3Model holding a ComfyUI text-encoder file's weights (all of them, strictly)."""
    config = comfyui_text_encoder_config(path)
    with torch.device("meta"):
        model = Qwen3Model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = _comfyui_text_encoder_shapes(path)
    check_names(path, expected, shapes, "text-encoder", "a Qwen3 encoder")
    check_shapes(path, expected, shapes, "text-encoder")
    names = {k.removeprefix(LM_PREFIX): k for k in read_shapes(path)}
    tensors = read_tensors(path, [names[k] for k in expected])
    model.load_state_dict({k: tensors[names[k]] for k in expected}, strict=True, assign=True)
    # RoPE's inv_freq is a non-persistent buffer that loading does not fill: build it off meta.
    model.rotary_emb = Qwen3RotaryEmbedding(config)
    return model.to(device=device, dtype=dtype).eval()


def load_text_encoder(
    checkpoint: Path | None, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The tiny encoder, a diffusers checkpoint's `text_encoder/`, or a ComfyUI text-encoder file."""
    if checkpoint is None:
        return build_tiny_text_encoder(device, dtype)
    layout = detect(checkpoint)
    if layout.kind == "comfyui":
        return comfyui_text_encoder(comfyui_file(layout, "text_encoder"), device=device, dtype=dtype)
    folder = checkpoint / "text_encoder"
    if not folder.is_dir():
        raise InputError(f"checkpoint {checkpoint} has no text_encoder/ folder")
    _check_weights(folder)
    try:
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot load the text encoder in {folder}: {first_line(e)}") from None
    return model.to(device).eval()


def _check_weights(folder: Path) -> None:
    """The folder's weight files against its config.json, from the headers: every shard the index
    names present and readable, the config's sizes and layer count (before a model is built from
    it), then every tensor the config implies there with its shape, none extra."""
    path = folder / "config.json"
    written = read_config(path, "the text encoder")
    found = shapes_of(weight_files(folder, WEIGHTS_FILE))
    # A causal-LM checkpoint adds a head the encoder never uses.
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
