"""The live DiffSynth adapter drives the installed `diffsynth` package; these facts come from the reference doc.

Expected values are ZIMAGE_REFERENCE.md's, never what the adapter printed: §0 (the ids of "A cat
sleeping"), §1 (no think block, padding/truncation at 512 including the template), §3 (the 8-step
sigmas), §5 and §6 (the bf16 time embedder, the bf16-cast timesteps [1000, 956, 900, 832, 752, 644,
500, 300] so the embedder sees [0, 44, 100, 168, 248, 356, 500, 700], the bf16 noise = fp32 randn
cast to bf16, sizes rounded up to 16, the torch attention backend).
"""

from dataclasses import replace

import pytest
import torch

from implementations.diffsynth_live import library
from implementations.diffsynth_live.adapter import DiffSynthLiveAdapter
from implementations.diffsynth_style.adapter import DiffSynthStyleAdapter
from parity.core.noise import shared_noise
from parity.models.context import Context
from parity.run.execute import execute
from parity.stages.denoise import DENOISE, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case

diffsynth = pytest.importorskip("diffsynth", reason="needs the references environment (nox -s references)")

A_CAT = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
PAD = 151643
SIGMAS_8 = [1.0, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3, 0.0]
BF16_TIME_8 = [0.0, 44.0, 100.0, 168.0, 248.0, 356.0, 500.0, 700.0]
FP32_TIME_8 = [0.0, 45.4545, 100.0, 166.6667, 250.0, 357.1429, 500.0, 700.0]  # 1000 * (1 - sigma)


@pytest.fixture(scope="module")
def bf16():
    return Context(dtype="bf16")


@pytest.fixture(scope="module")
def live(context):
    return DiffSynthLiveAdapter(context)


@pytest.fixture(scope="module")
def live_bf16(bf16):
    return DiffSynthLiveAdapter(bf16)


@pytest.fixture(scope="module")
def turbo(suite_cases):
    return suite_cases["turbo-bf16"]


def test_it_is_a_reference_behind_diffusers_and_qwen3_chat():
    assert DiffSynthLiveAdapter.name == "diffsynth_live"
    assert DiffSynthLiveAdapter.reference_priority == 2 and DiffSynthLiveAdapter.is_reference()
    assert DiffSynthLiveAdapter.summary


def test_diffsynth_attends_with_torch_sdpa(live):
    live.check_supported(Case(id="t", prompt="x"))  # loads diffsynth
    from diffsynth.core.attention import attention

    assert attention.ATTENTION_IMPLEMENTATION == "torch"


def test_template_tokens_and_rows_of_a_short_prompt(live, context):
    case = Case(id="t", prompt="A cat sleeping")
    template = live.template(case)
    assert template.text == "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"  # no think block
    tokens = live.tokens(case, template)
    assert len(tokens.input_ids) == 512  # padding="max_length", max_length=512, on the right
    assert tokens.input_ids[:11] == A_CAT and set(tokens.input_ids[11:]) == {PAD}
    assert tokens.attention_mask == [1] * 11 + [0] * 501
    rows = live.embeddings(case, tokens)
    # hidden_states[-2] of the text encoder, masked-in rows only.
    ids = torch.tensor([tokens.input_ids])
    with torch.no_grad():
        hidden = context.text_encoder(input_ids=ids, attention_mask=torch.tensor([tokens.attention_mask]),
                                      output_hidden_states=True).hidden_states[-2][0]
    assert rows.hidden.shape == (11, 80) and bool(rows.mask.all())
    assert torch.equal(rows.hidden, hidden[:11])


def test_the_512_limit_includes_the_template(live):
    case = Case(id="long", prompt="lighthouse " * 800)
    tokens = live.tokens(case, live.template(case))
    assert len(tokens.input_ids) == 512 and all(tokens.attention_mask)
    assert 151645 not in tokens.input_ids and tokens.input_ids[:3] == [151644, 872, 198]


def test_it_refuses_what_diffsynth_cannot_take(live, live_bf16, turbo):
    case = Case(id="t2", prompt="A cat sleeping")
    with pytest.raises(Unsupported):
        live.tokens(case, Template("<|im_start|>user\nsomething else<|im_end|>\n"))
    with pytest.raises(Unsupported):
        live.embeddings(case, Tokens([1, 2, 3], [1, 1, 1]))
    with pytest.raises(Unsupported, match="single user prompt"):
        live.check_supported(Case(id="s", prompt="x", system_prompt="y"))
    ours, _ = execute(live_bf16, turbo, "embeddings")
    noise = shared_noise(turbo.seed, turbo.height, turbo.width)
    own = live_bf16.schedule(turbo)
    with pytest.raises(Unsupported, match="cfg_truncation"):
        live_bf16.denoise(replace(turbo, cfg_truncation=0.5), DenoiseInputs(ours.embeddings, None, own, noise))
    # diffusers' time input (1 - sigma, fp32) with DiffSynth's own sigmas: the loop would use its own.
    diffusers_time = Schedule(own.sigmas, 1 - own.sigmas[:-1].float().double())
    with pytest.raises(Unsupported, match="model_t"):
        live_bf16.denoise(turbo, DenoiseInputs(ours.embeddings, None, diffusers_time, noise))
    # A size DiffSynth rounds up (136 -> 144) with a starting latent of diffusers' shape (136 // 16 * 2).
    odd = replace(turbo, height=136, width=136)
    with pytest.raises(Unsupported, match="18, 18"):
        live_bf16.denoise(odd, DenoiseInputs(ours.embeddings, None, own, shared_noise(42, 136, 136)))


def test_it_says_so_without_diffsynth(live, monkeypatch):
    monkeypatch.setattr(library, "available", lambda: False)
    with pytest.raises(Unsupported, match="references environment"):
        live.check_supported(Case(id="t", prompt="x"))
    with pytest.raises(Unsupported, match="references environment"):
        live.schedule(Case(id="t", prompt="x"))


@pytest.mark.parametrize("which", ["fp32", "bf16"])
def test_the_schedule_is_the_published_8_step_one(live, live_bf16, which):
    adapter = live if which == "fp32" else live_bf16
    got = adapter.schedule(Case(id="s", prompt="", steps=8))
    assert got.sigmas.dtype == torch.float64
    assert torch.allclose(got.sigmas, torch.tensor(SIGMAS_8, dtype=torch.float64), atol=1e-6, rtol=0)
    if which == "bf16":
        assert (got.model_t * 1000).tolist() == BF16_TIME_8
    else:
        assert torch.allclose(got.model_t * 1000, torch.tensor(FP32_TIME_8, dtype=torch.float64), atol=1e-4, rtol=0)


def test_its_time_embedder_runs_in_bf16(live, live_bf16, turbo, monkeypatch):
    seen: list[torch.dtype] = []

    def record(_module, args):
        seen.append(args[0].dtype)

    def kept(adapter):
        # The adapter builds its DiT per call; the hooked one must be the one the run uses.
        dit = adapter.dit()
        monkeypatch.setattr(adapter, "dit", lambda: dit)
        return dit

    hook = kept(live_bf16).t_embedder.mlp.register_forward_pre_hook(record)
    try:
        run, skipped = execute(live_bf16, turbo, "denoise")
    finally:
        hook.remove()
    assert skipped == {} and run.denoise is not None
    assert seen and set(seen) == {torch.bfloat16}
    # In an fp32 pipeline the sinusoid still reaches the time MLP in bf16, and the fp32 MLP refuses it:
    # the installed DiffSynth cannot sample in fp32, which the adapter reports instead of working around.
    seen.clear()
    hook = kept(live).t_embedder.mlp.register_forward_pre_hook(record)
    try:
        run, skipped = execute(live, replace(turbo, dtype="fp32"), "denoise")
    finally:
        hook.remove()
    assert seen == [torch.bfloat16]
    assert run.denoise is None and "bf16" in skipped["denoise"]


def test_its_own_noise_is_fp32_randn_cast_to_its_dtype(live, live_bf16, turbo):
    fp32 = torch.randn((1, 16, 16, 16), generator=torch.Generator("cpu").manual_seed(turbo.seed))
    own = live_bf16.noise(turbo)
    assert torch.equal(own, fp32.to(torch.bfloat16).float()) and not torch.equal(own, fp32)
    assert torch.equal(live.noise(turbo), fp32)
    assert live.noise(replace(turbo, height=136, width=136)).shape == (1, 16, 18, 18)  # rounded up to 144


def test_teacher_forcing_feeds_the_given_latents(live_bf16, turbo):
    """Forced along the trajectory of another start, the pipeline reproduces that trajectory exactly:
    every step started from the given latent, not from its own previous result."""
    ours, _ = execute(live_bf16, turbo, "schedule")
    text, _ = execute(live_bf16, turbo, "embeddings")
    other = shared_noise(7, turbo.height, turbo.width)
    start = shared_noise(turbo.seed, turbo.height, turbo.width)
    theirs = live_bf16.denoise(turbo, DenoiseInputs(text.embeddings, None, ours.schedule, other))
    forced = live_bf16.denoise(turbo, DenoiseInputs(text.embeddings, None, ours.schedule, start, theirs.latents))
    free = live_bf16.denoise(turbo, DenoiseInputs(text.embeddings, None, ours.schedule, start))
    assert torch.equal(forced.latents, theirs.latents)
    assert torch.equal(forced.model_out, theirs.model_out)
    assert not torch.equal(free.latents[1:], theirs.latents[1:])
    assert forced.latents.shape == (turbo.steps + 1, 16, 16, 16) and forced.model_out.shape == (turbo.steps, 16, 16, 16)


def test_guided_per_block_capture_is_the_positive_pass(live_bf16, suite_cases):
    case = replace(suite_cases["cfg-on"], dtype="bf16")
    run, skipped = execute(live_bf16, case, "denoise", capture_blocks=(0, 3))
    assert skipped == {}
    names = sorted(run.denoise.blocks)
    assert {n.split(".")[1] for n in names} == {"0", "3"}
    assert "step.0.layers.1" in names and "step.3.all_final_layer.2-1" in names
    assert run.denoise.blocks["step.0.noise_refiner.0"].shape == (64, 64)  # 16x16 latent, 2x2 patches


def test_the_reimplementation_matches_the_installed_library_in_bf16(bf16, live_bf16, suite_cases):
    for case_id in ("turbo-bf16", "cfg-on"):
        case = replace(suite_cases[case_id], dtype="bf16")
        theirs, _ = execute(live_bf16, case, "denoise")
        ours, _ = execute(DiffSynthStyleAdapter(bf16), case, "denoise")
        assert ours.template == theirs.template and ours.tokens == theirs.tokens
        assert torch.equal(ours.schedule.sigmas, theirs.schedule.sigmas)
        assert torch.equal(ours.schedule.model_t, theirs.schedule.model_t)
        check = DENOISE.check(ours.denoise, theirs.denoise, None, "bf16")
        assert check.passed, check.summary


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_reimplemented_decode_is_the_installed_decoder_and_conversion(dtype):
    """DiffSynth's own FluxVAEDecoder and vae_output_to_image on the shared weights, against the
    re-implementation: the same saved image, the float image within the decode tolerance."""
    from parity.stages.decode import DECODE

    context = Context(dtype=dtype)
    latent = torch.randn(1, 16, 16, 12, generator=torch.Generator().manual_seed(5))
    live = DiffSynthLiveAdapter(context).decode(None, latent)
    ours = DiffSynthStyleAdapter(context).decode(None, latent)
    assert live.uint8.shape == (128, 96, 3)
    assert torch.equal(live.uint8, ours.uint8)
    torch.testing.assert_close(ours.image, live.image, atol=DECODE.tolerance(dtype).tolerance.atol, rtol=0)
    # Truncation: the saved image is the float image's levels cut down, never rounded up.
    assert torch.equal(live.uint8, (live.image.double() * 255 + 1e-6).floor().to(torch.uint8))
