"""Exports: the diffusers folder loads offline in the real pipeline; ComfyUI files round-trip."""

import json

import pytest
import torch
from diffusers import ZImagePipeline
from safetensors.torch import load_file

from implementations.zimage.dit import DiTConfig, ZImageDiT
from parity.core.errors import InputError
from parity.models.convert import comfyui_to_diffusers
from parity.models.dit_weights import tiny_dit_config, tiny_dit_state_dict, weights_sha256
from parity.models.export import SCHEDULER_CONFIG, export_comfyui, export_diffusers
from parity.models.text_encoder_weights import synthetic_state_dict, tiny_config

# The DiT noise floor tolerance justified in tests/test_dit.py.
ATOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_diffusers(tmp_path_factory.mktemp("export") / "zimage-tiny")


@pytest.fixture
def pipeline(exported, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return ZImagePipeline.from_pretrained(exported)


def test_the_folder_has_the_real_checkpoint_layout(exported):
    assert sorted(p.name for p in exported.iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"
    ]
    scheduler = json.loads((exported / "scheduler" / "scheduler_config.json").read_text())
    assert {k: v for k, v in scheduler.items() if not k.startswith("_")} == SCHEDULER_CONFIG
    assert not list(exported.parent.glob(".*"))  # no staging folder left behind


def test_the_pipeline_loads_offline_and_its_transformer_equals_our_dit(pipeline):
    transformer = pipeline.transformer
    assert weights_sha256(transformer.state_dict()) == weights_sha256(tiny_dit_state_dict())
    ours = ZImageDiT.from_state_dict(tiny_dit_state_dict(), DiTConfig.from_diffusers(tiny_dit_config()))
    g = torch.Generator().manual_seed(0)
    latent, cap, t = torch.randn(16, 8, 12, generator=g), torch.randn(21, 80, generator=g), torch.tensor([0.7])
    with torch.no_grad():
        theirs = transformer([latent.unsqueeze(1)], t, [cap], return_dict=False)[0][0][:, 0]
        torch.testing.assert_close(ours(latent, t, cap), theirs, atol=ATOL, rtol=0)
    assert pipeline.vae.config.scaling_factor == 0.3611 and pipeline.vae.config.shift_factor == 0.1159
    assert pipeline.vae.config.latent_channels == 16
    assert pipeline.scheduler.config.shift == 3.0 and not pipeline.scheduler.config.use_dynamic_shifting


def test_the_pipeline_runs_end_to_end(pipeline):
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(
        "A cat sleeping", height=32, width=32, num_inference_steps=1, guidance_scale=0.0,
        generator=torch.Generator().manual_seed(0), output_type="pt", max_sequence_length=32,
    ).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_comfyui_files_round_trip_to_the_reference_weights(tmp_path):
    written = export_comfyui(tmp_path / "comfy")
    dit = load_file(written.dit)
    assert all(k.startswith("model.diffusion_model.") for k in dit)
    assert "model.diffusion_model.norm_final.weight" in dit
    back = comfyui_to_diffusers(dit)
    reference = tiny_dit_state_dict()
    assert set(back) == set(reference) and all(torch.equal(back[k], reference[k]) for k in reference)
    encoder = load_file(written.text_encoder)
    assert "model.layers.0.self_attn.q_norm.weight" in encoder and "model.norm.weight" in encoder
    expected = synthetic_state_dict(tiny_config())
    assert {k.removeprefix("model."): v.shape for k, v in encoder.items()} == {k: v.shape for k, v in expected.items()}
    assert all(torch.equal(encoder["model." + k], v) for k, v in expected.items())


@pytest.mark.parametrize("export", [export_diffusers, export_comfyui])
def test_a_non_empty_out_dir_is_refused_and_left_alone(tmp_path, export):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        export(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_an_empty_out_dir_is_filled(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    written = export_comfyui(out)
    assert written.dit.is_file() and written.text_encoder.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]
