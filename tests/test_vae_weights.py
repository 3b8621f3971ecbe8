"""The VAE decoder's weights: the tiny model, both checkpoint layouts of an export loading to it, the
ComfyUI file's layout against diffusers' own converter, the real library loading our folder, and
every bad input as one line naming the file."""

import json
import re
import shutil
from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from hypothesis import given, settings
from safetensors.torch import load_file, save_file

from parity.core.errors import InputError
from parity.models.checkpoint import comfyui_file, detect
from parity.models.dit_weights import tiny_dit_config, tiny_dit_state_dict
from parity.models.export import export_comfyui, export_diffusers, tiny_vae
from parity.models.vae_convert import diffusers_vae_to_comfyui
from parity.models.vae_weights import (
    TINY_VAE_CONFIG,
    expected_vae_shapes,
    load_vae_config,
    load_vae_state_dict,
    synthetic_vae_state_dict,
    tiny_vae_config,
    tiny_vae_state_dict,
)

SCALE, SHIFT = 0.3611, 0.1159


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_vae_state_dict(None)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vae-exports")
    export_comfyui(root / "comfyui")
    return {"diffusers": export_diffusers(root / "diffusers"), "comfyui": root / "comfyui"}


def _decoder_model(state: dict[str, torch.Tensor]) -> AutoencoderKL:
    """The installed AutoencoderKL holding decoder weights only (its encoder left on meta, never run)."""
    with torch.device("meta"):
        model = AutoencoderKL(**load_vae_config(None))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    assert not unexpected and all(k.startswith("encoder.") for k in missing)
    return model.eval()


def _decode(model: AutoencoderKL, latent: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(latent / SCALE + SHIFT, return_dict=False)[0]


def test_the_tiny_decoder_is_deterministic_float32_and_decoder_only(reference):
    assert set(reference) == set(expected_vae_shapes(TINY_VAE_CONFIG))
    assert all(k.startswith("decoder.") for k in reference)
    assert all(v.dtype == torch.float32 for v in reference.values())
    again = tiny_vae_state_dict()
    assert all(torch.equal(again[k], v) for k, v in reference.items())
    full = synthetic_vae_state_dict(TINY_VAE_CONFIG)
    assert any(k.startswith("encoder.") for k in full)
    assert all(torch.equal(full[k], v) for k, v in reference.items())


def test_a_realistic_latent_decodes_to_values_spread_over_the_range(reference):
    latent = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    image = _decode(_decoder_model(reference), latent)
    assert image.shape == (1, 3, 128, 128)
    clamped = (image.abs() > 1).float().mean().item()
    assert 0.3 < image.std().item() < 0.6 and clamped < 0.05, (image.std().item(), clamped)
    levels = ((image.clamp(-1, 1) + 1) * 127.5).round()
    assert len(levels.unique()) == 256


@pytest.mark.parametrize("layout", ["diffusers", "comfyui"])
def test_both_export_layouts_load_the_tiny_decoder(exports, reference, layout):
    assert detect(exports[layout]).kind == layout
    assert load_vae_config(exports[layout]) == tiny_vae_config() == load_vae_config(None)
    state = load_vae_state_dict(exports[layout])
    assert set(state) == set(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_detect_names_the_vae_of_each_layout(exports):
    assert detect(exports["diffusers"]).vae == exports["diffusers"] / "vae"
    layout = detect(exports["comfyui"])
    assert comfyui_file(layout, "vae") == exports["comfyui"] / "vae" / "zimage_parity_tiny_vae.safetensors"


def test_the_comfyui_file_is_the_original_layout_and_round_trips_through_diffusers_converter(exports):
    written = load_file(comfyui_file(detect(exports["comfyui"]), "vae"))
    assert written["decoder.mid.attn_1.q.weight"].shape == (128, 128, 1, 1)
    assert "decoder.up.3.block.0.conv1.weight" in written and "decoder.up.0.upsample.conv.weight" not in written
    assert "encoder.down.0.block.1.norm2.weight" in written and not any("_blocks." in k for k in written)
    back = convert_ldm_vae_checkpoint(written, tiny_vae_config())
    full = synthetic_vae_state_dict(TINY_VAE_CONFIG)
    assert set(back) == set(full)
    assert all(torch.equal(back[k], full[k]) for k in full)


@settings(max_examples=20, deadline=None)
@given(
    widths=st.lists(st.sampled_from([2, 4, 6]), min_size=1, max_size=4),
    layers=st.integers(1, 3),
    latent=st.integers(1, 4),
    quant=st.booleans(),
    prefix=st.sampled_from(["", "first_stage_model.", "vae."]),
)
def test_any_autoencoder_round_trips_through_the_original_layout(widths, layers, latent, quant, prefix):
    config = dict(
        down_block_types=["DownEncoderBlock2D"] * len(widths),
        up_block_types=["UpDecoderBlock2D"] * len(widths),
        block_out_channels=widths,
        layers_per_block=layers,
        latent_channels=latent,
        norm_num_groups=2,
        use_quant_conv=quant,
        use_post_quant_conv=quant,
    )
    state = synthetic_vae_state_dict(config)
    original = {prefix + k: v for k, v in diffusers_vae_to_comfyui(state).items()}
    back = convert_ldm_vae_checkpoint(original, config)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_the_real_library_loads_our_folder_and_decodes_as_the_tiny_decoder(exports, reference, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    theirs = AutoencoderKL.from_pretrained(exports["diffusers"] / "vae").eval()
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_decode(theirs, latent), _decode(_decoder_model(reference), latent), atol=0, rtol=0)


def test_a_prefixed_comfyui_file_loads_the_same(tmp_path, reference):
    for prefix in ("first_stage_model.", "vae."):
        folder = _comfy(tmp_path / prefix.rstrip("."), {prefix + k: v for k, v in _original().items()})
        state = load_vae_state_dict(folder)
        assert set(state) == set(reference) and all(torch.equal(state[k], reference[k]) for k in reference)


# Bad inputs: each one line naming the file.


def _original() -> dict[str, torch.Tensor]:
    return diffusers_vae_to_comfyui(synthetic_vae_state_dict(TINY_VAE_CONFIG))


def _comfy(folder: Path, vae: dict[str, torch.Tensor] | None) -> Path:
    """A ComfyUI folder with a stand-in DiT file (which only marks the layout) and `vae` as its VAE file."""
    (folder / "diffusion_models").mkdir(parents=True)
    save_file({"x": torch.zeros(1)}, folder / "diffusion_models" / "dit.safetensors")
    if vae is not None:
        (folder / "vae").mkdir()
        save_file({k: v.contiguous() for k, v in vae.items()}, folder / "vae" / "flux_vae.safetensors")
    return folder


@pytest.fixture(scope="module")
def saved_vae(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "vae"
    tiny_vae().save_pretrained(folder)
    return folder


@pytest.fixture
def diffusers_folder(saved_vae, tmp_path) -> Path:
    """A diffusers folder (tokenizer/ marks the layout) holding the tiny VAE, for a test to damage."""
    folder = tmp_path / "ckpt"
    (folder / "tokenizer").mkdir(parents=True)
    shutil.copytree(saved_vae, folder / "vae")
    return folder


def _raises(checkpoint: Path, names: Path, pattern: str) -> None:
    """Both loaders refuse `checkpoint` with one line naming `names` and matching `pattern`."""
    for load in (load_vae_state_dict, load_vae_config):
        with pytest.raises(InputError) as info:
            load(checkpoint)
        message = str(info.value)
        assert "\n" not in message and str(names) in message, message
        assert re.search(pattern, message), message


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])  # the 8-byte length promises a header that is gone


def _edit_config(folder: Path, **changes: object) -> Path:
    path = folder / "vae" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    return path


def _edit_weights(folder: Path, edit) -> Path:
    path = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path)
    return path


def test_a_checkpoint_without_a_vae_is_named(tmp_path):
    (tmp_path / "d" / "tokenizer").mkdir(parents=True)
    _raises(tmp_path / "d", tmp_path / "d", r"has no vae/ folder")
    _raises(_comfy(tmp_path / "c", None), tmp_path / "c", r"has no vae/\*\.safetensors file")


def test_a_vae_folder_without_config_or_weights_is_named(diffusers_folder):
    (diffusers_folder / "vae" / "config.json").unlink()
    _raises(diffusers_folder, diffusers_folder / "vae", r"has no config\.json")
    shutil.rmtree(diffusers_folder / "vae")
    (diffusers_folder / "vae").mkdir()
    (diffusers_folder / "vae" / "config.json").write_text(json.dumps(TINY_VAE_CONFIG))
    _raises(diffusers_folder, diffusers_folder / "vae", r"has neither diffusion_pytorch_model\.safetensors")


def test_truncated_weights_are_named(diffusers_folder, tmp_path):
    weights = diffusers_folder / "vae" / "diffusion_pytorch_model.safetensors"
    _truncate(weights)
    _raises(diffusers_folder, weights, r"cannot read")
    comfy = _comfy(tmp_path / "c", _original())
    _truncate(comfy / "vae" / "flux_vae.safetensors")
    _raises(comfy, comfy / "vae" / "flux_vae.safetensors", r"cannot read")


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda path: path.write_text("{not json"), r"cannot read the VAE config"),
        (lambda path: path.write_text("[1, 2]"), r"is not a JSON object"),
        (lambda path: path.write_text(json.dumps({"_class_name": "ZImageTransformer2DModel"})),
         r"config of a 'ZImageTransformer2DModel', not of an AutoencoderKL"),
        (lambda path: path.write_text(json.dumps(tiny_dit_config())),
         r"'all_f_patch_size' is not a key of an AutoencoderKL"),
        # The pipelines add it to every latent: null would fail there, mid-run.
        (lambda path: path.write_text(json.dumps(json.loads(path.read_text()) | {"shift_factor": None})),
         r"shift_factor must be a number, not null"),
    ],
    ids=["not-json", "not-an-object", "another-class", "dit-config", "shift-null"],
)
def test_an_unreadable_or_foreign_config_is_named(diffusers_folder, edit, pattern):
    path = diffusers_folder / "vae" / "config.json"
    edit(path)
    _raises(diffusers_folder, path, pattern)


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"act_fn": "relu"}, r"act_fn is 'relu'; a Flux VAE decoder has 'silu'"),
        ({"layers_per_block": 0}, r"layers_per_block must be a positive integer"),
        ({"layers_per_block": 3}, r"layers_per_block is 3, .* the weights hold 3"),
        ({"block_out_channels": [32, 64, 128], "down_block_types": ["DownEncoderBlock2D"] * 3,
          "up_block_types": ["UpDecoderBlock2D"] * 3},
         r"the length of block_out_channels is 3, but the weights hold 4 \(blocks decoder\.up_blocks\.N\)"),
        ({"up_block_types": ["AttnUpDecoderBlock2D"] * 4},
         r"up_block_types must be UpDecoderBlock2D for each of the 4"),
        ({"norm_num_groups": 24}, r"not all multiples of norm_num_groups 24"),
        ({"block_out_channels": [32, 64, 96, 96]},
         r"wrong shape: decoder\.conv_in\.bias, .* \(decoder\.conv_in\.bias is \(128,\), expected \(96,\)\)"),
        ({"use_post_quant_conv": True}, r"lacks VAE decoder weights: post_quant_conv\.bias, post_quant_conv\.weight"),
    ],
    ids=["activation", "no-layers", "layer-count", "level-count", "block-type", "groups", "widths", "post-quant-conv"],
)
def test_a_config_the_weights_disagree_with_is_named(diffusers_folder, changes, pattern):
    path = _edit_config(diffusers_folder, **changes)
    names = path if "wrong shape" not in pattern and "lacks" not in pattern else diffusers_folder / "vae"
    _raises(diffusers_folder, names, pattern)


def test_diffusers_weights_of_another_model_missing_or_not_float_are_named(diffusers_folder):
    weights = diffusers_folder / "vae" / "diffusion_pytorch_model.safetensors"
    save_file(tiny_dit_state_dict(), weights)
    _raises(diffusers_folder, weights, r"is not a VAE weights file: it lacks decoder\.conv_in\.weight")
    save_file({k: v for k, v in tiny_vae().state_dict().items() if k != "decoder.conv_out.bias"}, weights)
    _raises(diffusers_folder, diffusers_folder / "vae", r"lacks VAE decoder weights: decoder\.conv_out\.bias")
    _edit_weights(diffusers_folder, lambda s: s.update({"decoder.conv_out.bias": torch.zeros(3, dtype=torch.int64)}))
    with pytest.raises(InputError, match=r"safetensors has VAE decoder weights that are not floating point: "
                       r"decoder\.conv_out\.bias is torch\.int64$") as info:
        load_vae_state_dict(diffusers_folder)
    assert str(weights) in str(info.value)


def _without(key: str):
    return lambda state: state.pop(key)


def _reshaped(key: str, shape: tuple[int, ...]):
    return lambda state: state.update({key: state[key].reshape(shape)})


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (_without("decoder.mid.attn_1.k.bias"), r"lacks VAE decoder weights: decoder\.mid\.attn_1\.k\.bias"),
        (_reshaped("decoder.mid.attn_1.q.weight", (128, 128)),
         r"wrong shape: decoder\.mid\.attn_1\.q\.weight \(.* is \(128, 128\), expected \(128, 128, 1, 1\)\)"),
        (_reshaped("decoder.up.2.block.0.conv1.weight", (128, 128, 9)),
         r"wrong shape: decoder\.up\.2\.block\.0\.conv1"),
        (lambda s: s.update({"decoder.up.1.block.0.extra.weight": torch.zeros(1)}),
         r"weights a Flux VAE decoder does not use: decoder\.up\.1\.block\.0\.extra\.weight"),
        (lambda s: s.update({"decoder.norm_out.bias": s["decoder.norm_out.bias"].to(torch.int32)}),
         r"not floating point: decoder\.norm_out\.bias"),
        (_without("decoder.up.2.block.0.conv1.weight"), r"lacks VAE decoder weights: decoder\.up\.2\.block\.0\.conv1"),
        (_reshaped("decoder.up.0.block.0.conv1.weight", (16, 128, 3, 3)),
         r"widths \[16, 64, 128, 128\] are not all multiples of the VAE's 32 groups"),
    ],
    ids=["missing", "linear-attention", "reshaped", "extra", "integer", "level-gap", "groups"],
)
def test_a_damaged_comfyui_file_is_named(tmp_path, edit, pattern):
    state = _original()
    edit(state)
    folder = _comfy(tmp_path, state)
    path = folder / "vae" / "flux_vae.safetensors"
    if "floating" in pattern:
        with pytest.raises(InputError, match=pattern) as info:
            load_vae_state_dict(folder)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    else:
        _raises(folder, path, pattern)


def test_a_comfyui_file_of_another_model_or_layout_is_named(tmp_path):
    folder = _comfy(tmp_path / "dit", {"model.diffusion_model.x_embedder.weight": torch.zeros(2, 2)})
    _raises(folder, folder / "vae" / "flux_vae.safetensors", r"is not a Flux VAE file: it lacks decoder\.conv_in")
    folder = _comfy(tmp_path / "diffusers", synthetic_vae_state_dict(TINY_VAE_CONFIG))
    _raises(folder, folder / "vae" / "flux_vae.safetensors", r"holds a VAE in diffusers' key layout")
    two = {**_original(), **{"vae." + k: v for k, v in _original().items()}}
    folder = _comfy(tmp_path / "two", two)
    _raises(folder, folder / "vae" / "flux_vae.safetensors", r"more than one VAE decoder \(under '', 'vae\.'\)")


def test_two_vae_files_or_a_vae_alone_are_refused(tmp_path):
    folder = _comfy(tmp_path / "two", _original())
    shutil.copy(folder / "vae" / "flux_vae.safetensors", folder / "vae" / "other.safetensors")
    with pytest.raises(InputError, match=r"vae holds more than one VAE file \(flux_vae\.safetensors, other"):
        detect(folder)
    alone = tmp_path / "alone"
    shutil.copytree(folder / "vae", alone / "vae")
    (alone / "vae" / "other.safetensors").unlink()
    with pytest.raises(InputError, match=r"matches no known layout"):
        load_vae_state_dict(alone)
