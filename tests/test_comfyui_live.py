"""The live ComfyUI adapter on a real ComfyUI checkout (`nox -s references -- --comfyui DIR`).

Expected values are published facts, never what the adapter printed: the ids of "A cat sleeping"
(the Qwen3 vocabulary, as in the reference doc's section 0) under ComfyUI's hard-coded template, the
8-step shift-3 sigmas `shift * t / (1 + (shift - 1) * t)`, and the stored fixtures of the real code.
"""

import importlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from implementations.comfyui_style.float32_compute import comfy_hidden
from implementations.zimage.text_encoding import penultimate_hidden
from parity.core.status import MATCH
from parity.golden.expectations import Expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.execute import execute
from parity.run.judge import Runner
from parity.stages import STAGES
from parity.stages.tokens import Tokens
from parity.suite.adapter import registered_adapters
from parity.suite.cases import Case
from parity.suite.checkouts import resolve

pytest.importorskip("torchsde", reason="needs ComfyUI's requirements (nox -s references)")
CHECKOUTS = resolve({}) if os.environ.get("ZIMAGE_PARITY_COMFYUI") else {}
pytestmark = pytest.mark.skipif(not CHECKOUTS, reason="needs a ComfyUI checkout: ZIMAGE_PARITY_COMFYUI=DIR")

ROOT = Path(__file__).parents[1]
A_CAT = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
SIGMAS_8 = [1.0, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3, 0.0]


@pytest.fixture(scope="module")
def live():
    return registered_adapters(CHECKOUTS)["comfyui_live"](Context(checkouts=CHECKOUTS))


def test_the_template_tokens_and_mask_are_comfyuis_hard_coded_string_unpadded(live):
    case = Case(id="cat", prompt="A cat sleeping")
    template = live.template(case)
    assert template.text == "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
    tokens = live.tokens(case, template)
    assert tokens.input_ids == A_CAT and tokens.attention_mask == [1] * len(A_CAT)


def test_the_schedule_is_the_shifted_simple_schedule_and_the_dit_sees_one_minus_sigma(live):
    schedule = live.schedule(Case(id="s", prompt="x", steps=8))
    assert torch.allclose(schedule.sigmas, torch.tensor(SIGMAS_8, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(schedule.model_t, 1 - schedule.sigmas[:-1], atol=1e-7)


def test_a_bf16_encoder_keeps_bf16_weights_and_computes_in_float32(live):
    """ComfyUI's CLIP sets its compute dtype to float32: the bf16 rows equal a float32 encoder of the
    bf16-rounded weights (here transformers' Qwen3, another implementation of the same network)."""
    bf16 = registered_adapters(CHECKOUTS)["comfyui_live"](Context(dtype="bf16", checkouts=CHECKOUTS))
    case = Case(id="cat", prompt="A cat sleeping", dtype="bf16")
    rows = bf16.embeddings(case, bf16.tokens(case, bf16.template(case))).hidden
    encoder = Context().text_encoder
    rounded = {k: v.to(torch.bfloat16).float() for k, v in encoder.state_dict().items()}
    encoder.load_state_dict(rounded)
    with torch.no_grad():
        expected = encoder(torch.tensor([A_CAT]), output_hidden_states=True).hidden_states[-2][0]
    assert (rows - expected).abs().max() < 1e-5
    shared_bf16 = Context(dtype="bf16").text_encoder
    tokens = Tokens(A_CAT, [1] * len(A_CAT))
    assert (penultimate_hidden(shared_bf16, tokens).float() - expected).abs().max() > 1e-3, "bf16 compute differs"
    assert (comfy_hidden(shared_bf16, tokens) - expected).abs().max() < 1e-5, "comfyui_style models the fp32 compute"


def test_a_bf16_case_on_a_cpu_says_comfyui_sampled_and_decoded_it_in_float32():
    """On a CPU, ComfyUI's own dtype choices (`unet_dtype`, `vae_dtype`) are float32 for bf16 weights:
    the live adapter's bf16 sampling rows say so, and a float32 case has nothing to say."""
    bf16 = registered_adapters(CHECKOUTS)["comfyui_live"](Context(dtype="bf16", checkouts=CHECKOUTS))
    said = bf16.caveats(Case(id="b", prompt="x", dtype="bf16"))
    assert set(said) == {"denoise", "decode"}
    assert "DiT of a bf16 case in float32" in said["denoise"] and "VAE" in said["decode"]
    fp32 = registered_adapters(CHECKOUTS)["comfyui_live"](Context(checkouts=CHECKOUTS))
    assert fp32.caveats(Case(id="f", prompt="x")) == {}


def test_the_time_embedder_stand_in_is_the_module_comfyui_builds_at_full_width(live):
    comfy = live.comfy
    lumina = importlib.import_module("comfy.ldm.lumina.model")
    sizes = dict(patch_size=2, in_channels=16, n_layers=1, n_refiner_layers=1, qk_norm=True, z_image_modulation=True,
                 cap_feat_dim=64)
    # The tiny DiT's heads (2 of 32) and Z-Image's (of 128), at two widths either side of 1024.
    heads = {64: dict(n_heads=2, n_kv_heads=2, axes_dims=[8, 12, 12]), 1024: dict(n_heads=8, n_kv_heads=8,
                                                                                    axes_dims=[32, 48, 48])}
    built = {}
    for dim in (64, 1024):
        with torch.device("meta"):
            own = lumina.NextDiT(dim=dim, operations=comfy.ops.disable_weight_init, **sizes, **heads[dim]).t_embedder
            stand_in = comfy.mmdit.TimestepEmbedder(1024, output_size=min(dim, 256),
                                                     operations=comfy.ops.disable_weight_init)
        built[dim] = ({k: v.shape for k, v in own.state_dict().items()},
                      {k: v.shape for k, v in stand_in.state_dict().items()})
    assert built[1024][0] == built[1024][1]
    assert built[64][0] != built[64][1], "at the tiny width ComfyUI's own shape is not the checkpoint's"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_identity_post_quant_conv_hands_every_value_on_unchanged(dtype):
    x = torch.randn(1, 16, 9, 7).to(dtype)
    weight = torch.eye(16, dtype=dtype).reshape(16, 16, 1, 1)
    assert torch.equal(torch.nn.functional.conv2d(x, weight, torch.zeros(16, dtype=dtype)), x)


@pytest.mark.parametrize("sampler", ["euler", "res_multistep"])
def test_a_partial_denoise_samples_as_comfyui_does(suite_cases, sampler):
    """denoise < 1 (a workflow's KSampler, read with `--from-workflow`): the re-implementation's
    schedule and trajectory against ComfyUI's, from the same noise."""
    case = replace(suite_cases["comfy-workflow-9"], id="partial", denoise=0.6, sampler=sampler)
    context = Context(checkouts=CHECKOUTS)
    live = registered_adapters(CHECKOUTS)["comfyui_live"](context)
    real, _ = execute(live, case, "denoise")
    ours, _ = execute(registered_adapters(CHECKOUTS)["comfyui_style"](context), case, "denoise")
    assert torch.equal(ours.schedule.sigmas, real.schedule.sigmas)
    assert torch.equal(ours.denoise.latents[0], real.denoise.latents[0])
    assert (ours.denoise.latents - real.denoise.latents).abs().max() < 1e-4


@pytest.mark.parametrize("case_id", ["short", "weight-escapes", "turbo", "cfg-on", "size-not-16", "turbo-bf16"])
def test_it_reproduces_its_stored_fixtures(suite_cases, case_id):
    case = suite_cases[case_id]
    context = Context(dtype=case.dtype, checkouts=CHECKOUTS)
    classes = registered_adapters(CHECKOUTS)
    references = {n: c(context) for n, c in classes.items() if c.is_reference()}
    runner = Runner(
        context, {"comfyui_live": references["comfyui_live"]}, references, FixtureStore(ROOT / "fixtures"),
        Expectations([]), STAGES, reference="comfyui_live", progress=lambda line: None,
    )
    result = runner.run([case])
    assert {r.stage: r.status for r in result.results} == {s: MATCH for s in case.stages}
