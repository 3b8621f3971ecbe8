"""The decode stage: the VAE, the uint8 conversion, the comparison that names a conversion difference.

Where expectations come from (never from what the code under test printed):
- the installed diffusers library, driven directly here: `AutoencoderKL.from_pretrained` on an
  exported checkpoint's `vae/`, `VaeImageProcessor`, and a whole `ZImagePipeline` call that
  returns a PIL image;
- published facts, checked in the sources (cited in the adapters): diffusers rounds
  (`numpy_to_pil`: `(images * 255).round()`), ComfyUI's `SaveImage` and DiffSynth's
  `vae_output_to_image` truncate; on the same float image rounding and truncation differ by one
  level wherever the fractional part of 255x is at least 0.5;
- the decode stage's tolerances (parity/stages/decode.py), read at test time.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ZImagePipeline
from diffusers.image_processor import VaeImageProcessor
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from implementations.zimage.vae import decode
from parity.cli import main
from parity.core.status import DECLARED, MATCH
from parity.models.context import Context
from parity.models.export import export_diffusers
from parity.models.vae_weights import TINY_VAE_CONFIG, tiny_vae_state_dict
from parity.run.execute import execute
from parity.stages import stage
from parity.stages.base import Page
from parity.stages.decode import ROUNDING, TRUNCATION, Decoded
from parity.suite.adapter import registered_adapters

DECODE = stage("decode")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return export_diffusers(tmp_path_factory.mktemp("export") / "tiny")


def latent(seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.randn(1, 16, size, size, generator=torch.Generator().manual_seed(seed))


def installed_vae(checkpoint, dtype=torch.float32) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(checkpoint / "vae", torch_dtype=dtype).eval()


# --- the shared decoder against the installed AutoencoderKL --------------------------------------


@pytest.mark.parametrize(("form", "atol"), [("linear", 0.0), ("conv", 1e-5)])
def test_the_shared_decoder_is_the_installed_autoencoders(checkpoint, form, atol):
    """Linear attention is diffusers' arithmetic exactly; 1x1 convolutions are other kernels on the same weights."""
    vae = installed_vae(checkpoint)
    z = latent()
    with torch.no_grad():
        theirs = vae.decode(z, return_dict=False)[0]
        ours = decode(tiny_vae_state_dict(), TINY_VAE_CONFIG, z, form)
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)


# --- the diffusers adapter is the installed pipeline ---------------------------------------------


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_diffusers_decode_is_the_installed_vae_and_image_processor(checkpoint, dtype):
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    adapter = registered_adapters()["diffusers"](Context(checkpoint=checkpoint, dtype=dtype))
    z = latent(1)
    ours = adapter.decode(None, z)
    vae = installed_vae(checkpoint, torch_dtype)
    processor = VaeImageProcessor(vae_scale_factor=16)
    with torch.no_grad():
        image = vae.decode(z.to(torch_dtype) / vae.config.scaling_factor + vae.config.shift_factor,
                           return_dict=False)[0]
    array = processor.postprocess(image, output_type="np")
    assert torch.equal(ours.image, torch.from_numpy(array[0]))
    assert torch.equal(ours.uint8, torch.from_numpy(np.array(processor.numpy_to_pil(array)[0])))


def test_an_exported_checkpoints_pipeline_saves_the_harness_png(checkpoint, suite_cases, tmp_path):
    """The whole installed pipeline, prompt to PIL image, against the harness's diffusers rows."""
    case = suite_cases["turbo"]
    context = Context(checkpoint=checkpoint)
    outputs, skipped = execute(registered_adapters()["diffusers"](context), case, "decode")
    assert not skipped
    pipe = ZImagePipeline.from_pretrained(checkpoint)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        prompt=case.user_text, height=case.height, width=case.width, num_inference_steps=case.steps,
        guidance_scale=0.0, generator=torch.Generator("cpu").manual_seed(case.seed),
    ).images[0]
    saved = tmp_path / "pipeline.png"
    image.save(saved)
    assert np.array_equal(np.asarray(Image.open(saved)), outputs.decode.uint8.numpy())


# --- the comparison -------------------------------------------------------------------------------


def images(seed: int, shape=(8, 8, 3)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def rounded(x: torch.Tensor) -> torch.Tensor:
    return (x.double() * 255).round().to(torch.uint8)


def truncated(x: torch.Tensor) -> torch.Tensor:
    return (x.double() * 255).to(torch.uint8)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_truncation_against_rounding_is_named_both_ways(seed):
    x = images(seed)
    # At least one value whose rounding goes up, so the two conversions differ.
    x[0, 0, 0] = 100.75 / 255
    context = Context()
    found = DECODE.check(Decoded(x, truncated(x)), Decoded(x, rounded(x)), context, "fp32")
    assert not found.passed and found.detail.conversion == TRUNCATION
    assert TRUNCATION in found.summary
    differing = int((truncated(x) != rounded(x)).sum())
    assert found.detail.uint8_differing == differing and found.detail.histogram[2] == differing
    back = DECODE.check(Decoded(x, rounded(x)), Decoded(x, truncated(x)), context, "fp32")
    assert back.detail.conversion == ROUNDING and back.detail.histogram[4] == differing


def test_a_difference_that_is_not_the_conversion_is_not_named_so():
    x = images(1)
    wrong = rounded(x).clone()
    wrong[2, 3, 1] = wrong[2, 3, 1] - 2 if wrong[2, 3, 1] >= 2 else 2
    found = DECODE.check(Decoded(x, wrong), Decoded(x, rounded(x)), Context(), "fp32")
    assert not found.passed and found.detail.conversion is None
    assert found.detail.worst_pixel == (2, 3, 1)
    # One level one way, but the float images disagree: a different image, not a conversion.
    shifted = (x + 0.05).clamp(0, 1)
    other = DECODE.check(Decoded(shifted, truncated(x)), Decoded(x, rounded(x)), Context(), "fp32")
    assert other.detail.conversion is None and not other.passed


def test_identical_images_pass_and_show_one_picture():
    x = images(2)
    found = DECODE.check(Decoded(x, rounded(x)), Decoded(x, rounded(x)), Context(), "fp32")
    assert found.passed and found.detail.psnr is None and found.detail.uint8_differing == 0
    assert found.detail.expected_png.startswith("data:image/png;base64,") and found.detail.obtained_png is None


def test_the_report_shows_each_different_looking_image_once():
    """An image within a level of the golden one shows only its difference; one two columns share
    shows once; a column judged against other real code whose image is the golden one says so and
    its difference is captioned against that code."""
    x = images(4, (16, 16, 3))
    far = rounded(x).clone()
    far[:4] = 255 - far[:4]
    golden, other = Decoded(x, rounded(x)), Decoded(x, truncated(x))
    checks = {
        "faint": DECODE.check(Decoded(x, truncated(x)), golden, Context(), "fp32").detail,
        "far": DECODE.check(Decoded(x, far), golden, Context(), "fp32").detail,
        "far_too": DECODE.check(Decoded(x, far), golden, Context(), "fp32").detail,
        "judged@live": DECODE.check(Decoded(x, rounded(x)), other, Context(), "fp32").detail,
    }
    view = DECODE.view([(a, "unexpected", d) for a, d in checks.items()], Page(list(checks), "free", {}, "ref"))
    shown = {a["name"]: a for a in view["adapters"]}
    assert shown["faint"]["faint"] and shown["faint"]["image"] is None and shown["faint"]["difference"]
    assert shown["far"]["image"] == checks["far"].obtained_png and not shown["far"]["faint"]
    assert shown["far_too"]["same_as"] == "far" and shown["far_too"]["image"] is None
    assert shown["judged@live"]["same_as"] == "the golden fixture (ref)" and shown["judged@live"]["against"] == "live"


def test_another_size_is_a_shape_mismatch_with_both_pictures():
    small, large = images(3, (8, 8, 3)), images(3, (16, 8, 3))
    found = DECODE.check(Decoded(small, rounded(small)), Decoded(large, rounded(large)), Context(), "fp32")
    assert not found.passed and found.detail.shape_mismatch and found.detail.obtained_png is not None


# --- the ComfyUI path against diffusers, as the suite runs it -------------------------------------


@pytest.mark.parametrize("adapter", ["comfyui_style", "inhouse"])
def test_the_comfyui_path_differs_from_diffusers_only_by_truncation(suite_cases, adapter):
    """Teacher-forced, both decode the reference's final latent: the float images agree within the
    fp32 tolerance and every uint8 difference is one level down."""
    context = Context()
    case = suite_cases["turbo"]
    reference = registered_adapters()["diffusers"](context)
    ours = registered_adapters()[adapter](context)
    golden, _ = execute(reference, case, "decode")
    obtained, _ = execute(ours, case, "decode", golden)
    found = DECODE.check(obtained.decode, golden.decode, context, "fp32")
    assert found.detail.conversion == TRUNCATION, found.summary
    assert 0.3 < found.detail.uint8_fraction < 0.7


def test_the_report_names_the_declared_truncation(tmp_path):
    report, results = tmp_path / "r.html", tmp_path / "r.json"
    assert main(["run", "--cases", "turbo", "--adapters", "comfyui_style", "--mode", "forced",
                 "--report", str(report), "--json", str(results)]) == 0
    rows = [r for r in json.loads(results.read_text())["results"] if r["stage"] == "decode"]
    assert [r["status"] for r in rows] == [DECLARED]
    html = report.read_text(encoding="utf-8")
    # One level of truncation looks the same: the golden image and the difference picture are shown.
    assert TRUNCATION in html and html.count("data:image/png;base64,") >= 2
    assert "within 1 level of the reference's image everywhere" in html
    assert "the golden fixture (diffusers)" in html


# --- files a user opens ---------------------------------------------------------------------------


def test_save_images_writes_each_adapters_png(tmp_path):
    out, dump = tmp_path / "images", tmp_path / "dump"
    assert main(["run", "--cases", "turbo", "--adapters", "diffusers,comfyui_style",
                 "--save-images", str(out), "--dump", str(dump)]) == 0
    assert sorted(p.name for p in (out / "turbo").iterdir()) == [
        "comfyui_style.png", "diffusers.fixture.png", "diffusers.png"
    ]
    for name in ("diffusers", "comfyui_style"):
        stored = load_file(dump / "turbo" / f"{name}.safetensors")["decode.uint8"].numpy()
        assert np.array_equal(np.asarray(Image.open(out / "turbo" / f"{name}.png")), stored)


def test_a_non_finite_image_fails_without_naming_a_conversion():
    x = images(4)
    broken = x.clone()
    broken[1, 1, 0] = float("nan")
    found = DECODE.check(Decoded(broken, rounded(x)), Decoded(x, rounded(x)), Context(), "fp32")
    assert not found.passed and found.detail.psnr is None and found.detail.shift is None
    assert found.detail.conversion is None and found.detail.image.nonfinite_obtained == 1


# --- runs that reach the decode stage, or do not --------------------------------------------------


def test_the_decode_stage_alone_runs_its_upstream_and_reports_only_itself(tmp_path):
    results = tmp_path / "r.json"
    assert main(["run", "--cases", "turbo", "--adapters", "comfyui_style", "--stages", "decode",
                 "--json", str(results)]) == 0
    rows = json.loads(results.read_text())["results"]
    assert [(r["adapter"], r["stage"], r["status"]) for r in rows] == [
        ("comfyui_style", "decode", DECLARED), ("comfyui_style@comfyui_live", "decode", MATCH)
    ]


def test_a_checkpoint_without_a_vae_runs_what_needs_none(checkpoint, tmp_path):
    """Only a stage that decodes reads the VAE: an adapter with no VAE, or the stages before decode,
    run on a checkpoint that has none."""
    folder = tmp_path / "no-vae"
    shutil.copytree(checkpoint, folder)
    shutil.rmtree(folder / "vae")
    assert main(["run", "--cases", "turbo", "--adapters", "qwen3_chat", "--checkpoint", str(folder)]) == 0
    assert main(["run", "--cases", "turbo", "--adapters", "diffusers", "--checkpoint", str(folder),
                 "--stages", "template,tokens,embeddings,schedule,denoise"]) == 0
    assert main(["run", "--cases", "turbo", "--adapters", "diffusers", "--checkpoint", str(folder)]) == 2


def test_a_damaged_vae_is_named_before_any_stage_runs(checkpoint, tmp_path, capsys):
    folder = tmp_path / "damaged"
    shutil.copytree(checkpoint, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert main(["run", "--cases", "turbo", "--adapters", "comfyui_style", "--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err.splitlines()[-1]
    assert "turbo: template" not in err and "turbo: denoise" not in err
