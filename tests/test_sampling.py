"""The sampling path (schedule + denoise) on the real suite: per-step parity, noise, sizes, bad input.

Where expectations come from (never from what the code under test printed):
- the installed diffusers library, driven directly here: `ZImagePipeline.prepare_latents`, a
  `ZImagePipeline(...)(output_type="latent")` call, and `ZImageTransformer2DModel` with its time
  embedder moved to bf16 (which casts the sinusoid to the weight dtype, as DiffSynth's does);
- published facts in ZIMAGE_REFERENCE.md: §3 (schedules: ComfyUI's 9-step "simple" differs from
  diffusers but both start at sigma 1), §4 (noise shapes and generators; diffusers refuses sizes not
  divisible by 16, DiffSynth rounds up, ComfyUI pads to the patch size), §5 (DiffSynth's time
  embedder always runs in bf16; Turbo runs guidance off), §6 (DiffSynth's bf16 noise is the fp32
  draw cast to bf16; its fp32 Euler step);
- ComfyUI's `comfy/ldm/common_dit.py:pad_to_patch_size`: `F.pad(img, (0, pad_w, 0, pad_h),
  mode="circular")`, the DiT output then cropped back to the latent's size;
- the denoise stage's fp32 tolerance (parity/stages/denoise.py), read at test time.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline
from safetensors.torch import load_file, save_file

from implementations.comfyui_style.adapter import ComfyUIStyleAdapter
from implementations.diffsynth_style.adapter import DiffSynthFp32TimeAdapter, DiffSynthStyleAdapter
from implementations.diffsynth_style.dit_variant import DIFFSYNTH
from implementations.diffusers_live.adapter import DiffusersAdapter
from parity.cli import main
from parity.core.errors import InputError
from parity.core.labels import split_label
from parity.core.noise import shared_noise
from parity.core.status import DECLARED, MATCH, UNEXPECTED, UNSUPPORTED
from parity.golden.expectations import load_expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.models.dit_weights import WEIGHTS_FILE, load_dit_state_dict, tiny_dit_state_dict
from parity.models.export import export_diffusers, tiny_transformer
from parity.run.execute import execute
from parity.run.judge import Runner
from parity.stages import STAGES
from parity.stages.denoise import DENOISE, Denoise, DenoiseInputs
from parity.suite.adapter import registered_adapters
from parity.suite.cases import load_case_file

ROOT = Path(__file__).parents[1]
ADAPTERS = ("diffusers", "diffsynth_style", "diffsynth_style_fp32_time", "comfyui_style", "inhouse")
# ZIMAGE_REFERENCE.md §0: Z-Image-Turbo's scheduler/scheduler_config.json.
TURBO_SCHEDULER = dict(num_train_timesteps=1000, use_dynamic_shifting=False, shift=3.0)
# "Above the tolerance but far below any bug": bf16 keeps 8 significant bits (relative rounding
# 2**-9 ~ 2e-3) in a time embedding that modulates O(1) activations, so its effect on an O(1)
# velocity is of order 1e-3..1e-2, not 0.05 and up (a wrong layer or prompt moves it by O(1)).
BF16_TIME_EMBEDDING_CEILING = 0.05


def denoise_atol() -> float:
    return DENOISE.tolerance("fp32").tolerance.atol


def make_runner(context, mode="free", names=ADAPTERS, stages=STAGES):
    classes = registered_adapters()
    adapters = {n: classes[n](context) for n in names}
    references = {n: adapters.get(n) or c(context) for n, c in classes.items() if c.is_reference()}
    expectations = load_expectations(ROOT / "fixtures" / "expectations.toml")
    return Runner(context, adapters, references, FixtureStore(ROOT / "fixtures"), expectations,
                  stages, mode, progress=lambda line: None)


def rows(result, case, adapter):
    return {r.stage: r for r in result.results if r.case == case and r.adapter == adapter}


@pytest.fixture(scope="module")
def sampling(suite_cases):
    """The sampling cases (fixtures/cases/sampling.toml), by id."""
    return {c.id: c for c in suite_cases.values() if c.source is not None and c.source.stem == "sampling"}


@pytest.fixture(scope="module")
def free(context, sampling):
    return make_runner(context).run([c for c in sampling.values() if c.dtype == "fp32"])


@pytest.fixture(scope="module")
def forced(context, sampling):
    names = ("comfyui_style", "inhouse", "diffsynth_style", "diffsynth_style_fp32_time")
    cases = [sampling[c] for c in ("turbo", "comfy-workflow-9", "non-square")]
    return make_runner(context, "forced", names).run(cases)


@pytest.fixture(scope="module")
def golden(sampling):
    store = FixtureStore(ROOT / "fixtures")
    return lambda case_id: store.load(sampling[case_id], "diffusers")


def run_installed_pipeline(transformer, case, *, prompt_embeds=None, latents=None, prompt=None,
                           generator=None, context=None) -> Denoise:
    """One real `ZImagePipeline` call, recording what each Euler step applied and produced."""
    scheduler = FlowMatchEulerDiscreteScheduler(**TURBO_SCHEDULER)
    velocities, results = [], []
    real_step = scheduler.step

    def recording_step(model_output, *args, **kwargs):
        velocities.append(model_output.detach().float().clone())
        return real_step(model_output, *args, **kwargs)

    scheduler.step = recording_step

    def on_step_end(pipeline, i, t, kwargs):
        results.append(kwargs["latents"].detach().float().clone())
        return {}

    pipe = ZImagePipeline(
        scheduler=scheduler, vae=None, transformer=transformer,
        text_encoder=context.text_encoder if context else None, tokenizer=context.tokenizer if context else None,
    )
    pipe.set_progress_bar_config(disable=True)
    final = pipe(
        prompt=prompt, prompt_embeds=prompt_embeds, latents=latents, generator=generator,
        height=case.height, width=case.width, num_inference_steps=case.steps,
        guidance_scale=0.0,  # §4: Turbo runs guidance off (diffusers g = 0)
        output_type="latent", callback_on_step_end=on_step_end,
    ).images
    assert torch.equal(final.float(), results[-1])
    # The trajectory: the starting latent when the caller gave it, then every step's result.
    trajectory = ([latents.float()] if latents is not None else []) + results
    return Denoise(torch.cat(velocities), torch.cat(trajectory))


# 1. Free-running on the sampling cases, with the repository's expectations


def test_the_sampling_cases_have_no_unexpected_divergence(free, sampling):
    assert free.failures == []
    assert free.exit_code == 0
    judged = {(r.case, *split_label(r.adapter)) for r in free.results if r.stage == "denoise"}
    fp32 = {c.id for c in sampling.values() if c.dtype == "fp32"}
    assert {"turbo", "non-square", "comfy-workflow-9", "cfg-on", "size-not-16"} <= fp32
    assert {(c, a) for c, a, against in judged if against is None} == {(c, a) for c in fp32 for a in ADAPTERS}
    # Each re-implementation of code that runs live is judged against that code's stored outputs too.
    assert {(c, a, against) for c, a, against in judged if against is not None} == {
        (c, "comfyui_style", "comfyui_live") for c in fp32
    } | {(c, "inhouse", "inhouse_live") for c in fp32}


@pytest.mark.parametrize("case_id", ["turbo", "non-square"])
@pytest.mark.parametrize("adapter", ["comfyui_style", "diffsynth_style_fp32_time", "diffusers"])
def test_re_implementations_match_the_live_transformer_step_by_step(free, sampling, case_id, adapter):
    row = rows(free, case_id, adapter)["denoise"]
    assert row.status == MATCH, row.summary
    detail = row.detail
    assert detail.steps == sampling[case_id].steps
    assert detail.first_divergent_step is None and detail.first_nonfinite_step is None
    assert detail.noise_matches is True  # shared noise: every adapter starts from diffusers' draw
    assert len(detail.model_out_max_abs) == sampling[case_id].steps
    assert all(err <= denoise_atol() for err in detail.model_out_max_abs), detail.model_out_max_abs
    assert all(err <= denoise_atol() for err in detail.latents_max_abs), detail.latents_max_abs
    assert detail.tolerance_evidence == DENOISE.tolerance("fp32")


@pytest.mark.parametrize("case_id", ["turbo", "non-square"])
def test_diffsynth_bf16_time_embedder_is_a_named_declared_divergence(free, case_id):
    got = rows(free, case_id, "diffsynth_style")
    # Everything upstream of the DiT agrees: the divergence is the sampler's own.
    assert [got[s].status for s in ("template", "tokens", "embeddings", "schedule")] == [MATCH] * 4
    row = got["denoise"]
    assert row.status == DECLARED
    assert row.detail.first_divergent_step == 0
    assert row.detail.noise_matches is True
    assert "bf16" in row.reason and "diffsynth_style_fp32_time" in row.reason
    errors = row.detail.model_out_max_abs
    assert all(denoise_atol() < e < BF16_TIME_EMBEDDING_CEILING for e in errors), errors


def test_the_two_diffsynth_adapters_differ_only_by_the_time_embedder_cast():
    assert DiffSynthStyleAdapter.variant == DIFFSYNTH
    assert DIFFSYNTH.time_embedder_bf16 is True
    assert DiffSynthFp32TimeAdapter.variant == replace(DIFFSYNTH, time_embedder_bf16=False)
    assert issubclass(DiffSynthFp32TimeAdapter, DiffSynthStyleAdapter)
    own = {k for k in vars(DiffSynthFp32TimeAdapter) if not k.startswith("_")}
    assert own == {"name", "summary", "variant"}


def test_diffsynth_equals_the_installed_transformer_with_a_bf16_time_embedder(context, sampling):
    """The declared divergence is the bf16 time embedding and nothing else: the installed diffusers
    transformer with its time embedder in bf16 (sinusoid cast to bf16, MLP in bf16, cast back)
    reproduces DiffSynth-style's trajectory within the fp32 tolerance."""
    case = sampling["turbo"]
    ours, _ = execute(DiffSynthStyleAdapter(context), case, "denoise")
    model = tiny_transformer()
    model.t_embedder.to(torch.bfloat16)
    noise = shared_noise(case.seed, case.height, case.width)
    with torch.inference_mode():
        theirs = run_installed_pipeline(model, case, prompt_embeds=[ours.embeddings.hidden], latents=noise)
    check = DENOISE.check(ours.denoise, theirs, None, "fp32")
    assert check.passed, check.summary


def test_the_tolerance_sits_between_measured_noise_and_the_smallest_real_divergence(free):
    atol = denoise_atol()
    noise_floor = max(
        max(rows(free, case, adapter)["denoise"].detail.model_out_max_abs)
        for case, adapter in [
            ("turbo", "comfyui_style"), ("non-square", "comfyui_style"),
            *((c, "diffsynth_style_fp32_time") for c in ("turbo", "non-square", "comfy-workflow-9", "cfg-on")),
        ]
    )
    smallest_real = min(
        min(rows(free, case, "diffsynth_style")["denoise"].detail.model_out_max_abs)
        for case in ("turbo", "non-square", "comfy-workflow-9", "cfg-on")
    )
    assert noise_floor * 3 <= atol, (noise_floor, atol)
    assert atol * 3 <= smallest_real, (atol, smallest_real)


def test_inhouse_denoise_is_declared_only_because_of_its_template(free):
    got = rows(free, "turbo", "inhouse")
    assert got["template"].status == DECLARED
    assert "think" in got["template"].reason
    assert got["schedule"].status == MATCH  # 8 steps: ComfyUI's simple scheduler equals diffusers (§3)
    assert got["denoise"].status == DECLARED
    assert got["denoise"].reason == "follows from the template divergence"
    expectations = load_expectations(ROOT / "fixtures" / "expectations.toml")
    assert expectations.declared("turbo", "inhouse", "denoise", "free") is None


# 2. Initial noise: shared from the case seed, or drawn each implementation's own way


@pytest.mark.parametrize(("seed", "height", "width"),
                         [(42, 128, 128), (3, 192, 128), (0, 1024, 768), (2**31 - 1, 64, 96), (42, 136, 136)])
def test_shared_noise_is_what_the_installed_pipeline_draws(seed, height, width):
    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None)
    generator = torch.Generator("cpu").manual_seed(seed)
    drawn = pipe.prepare_latents(1, 16, height, width, torch.float32, torch.device("cpu"), generator)
    ours = shared_noise(seed, height, width)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, drawn)


@pytest.mark.parametrize(("height", "width"), [(128, 128), (192, 128), (1024, 768)])
def test_comfyui_noise_equals_shared_noise_for_sizes_divisible_by_16(context, sampling, height, width):
    case = replace(sampling["turbo"], height=height, width=width, seed=7)
    own = ComfyUIStyleAdapter(context).noise(case)
    assert own.dtype == torch.float32
    assert torch.equal(own, shared_noise(7, height, width))


def test_comfyui_noise_for_a_size_not_divisible_by_16_is_its_own_shape(context, sampling):
    case = sampling["size-not-16"]
    own = ComfyUIStyleAdapter(context).noise(case)
    assert own.shape == (1, 16, 136 // 8, 136 // 8)  # the empty latent's shape, 17 x 17
    assert shared_noise(case.seed, case.height, case.width).shape == (1, 16, 16, 16)  # diffusers floors to 16


def test_diffsynth_noise_in_bf16_is_the_bf16_rounding_of_the_fp32_draw(sampling):
    case = sampling["turbo"]
    fp32 = shared_noise(case.seed, case.height, case.width)
    bf16 = DiffSynthStyleAdapter(Context(dtype="bf16")).noise(case)
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, fp32.to(torch.bfloat16))
    assert not torch.equal(bf16.float(), fp32)
    # In an fp32 pipeline DiffSynth draws the same fp32 numbers diffusers does.
    assert torch.equal(DiffSynthStyleAdapter(Context()).noise(case), fp32)


def test_own_noise_shows_seed_incompatibility_as_its_own_finding(sampling):
    case = sampling["own-noise"]
    assert case.noise == "own" and case.dtype == "bf16"
    result = make_runner(Context(dtype="bf16"), names=("diffusers", "diffsynth_style", "comfyui_style")).run([case])
    assert result.failures == []
    diffsynth = rows(result, case.id, "diffsynth_style")["denoise"]
    assert diffsynth.detail.noise_matches is False
    assert diffsynth.summary.startswith("initial noise differs")
    # ComfyUI's own draw at 128 x 128 is diffusers' draw (same shape, fp32, CPU generator).
    assert rows(result, case.id, "comfyui_style")["denoise"].detail.noise_matches is True
    assert rows(result, case.id, "diffusers")["denoise"].detail.noise_matches is True


# 3. The live diffusers adapter is a real pipeline call


def test_live_adapter_denoise_equals_an_independent_pipeline_call(context, sampling):
    case = sampling["turbo"]
    adapter = DiffusersAdapter(context)
    ours, _ = execute(adapter, case, "denoise")
    noise = shared_noise(case.seed, case.height, case.width)
    theirs = run_installed_pipeline(adapter.transformer(), case, prompt_embeds=[ours.embeddings.hidden],
                                    latents=noise)
    assert torch.equal(ours.denoise.latents, theirs.latents)
    assert torch.equal(ours.denoise.model_out, theirs.model_out)


def test_live_adapter_reproduces_a_pipeline_call_from_prompt_and_seed(context, sampling):
    """DESIGN.md: the diffusers rows reproduce `ZImagePipeline(..., generator=...)` bit for bit."""
    case = sampling["non-square"]
    adapter = DiffusersAdapter(context)
    ours, _ = execute(adapter, case, "denoise")
    theirs = run_installed_pipeline(adapter.transformer(), case, prompt=case.prompt, context=context,
                                    generator=torch.Generator("cpu").manual_seed(case.seed))
    assert torch.equal(ours.denoise.latents[1:], theirs.latents)
    assert torch.equal(ours.denoise.model_out, theirs.model_out)


# 4. A size not divisible by 16


def test_size_not_16_is_reported_per_implementation(free):
    case = "size-not-16"
    diffusers = rows(free, case, "diffusers")["denoise"]
    assert diffusers.status == UNSUPPORTED and diffusers.summary == "not supported"
    assert "divisible by 16" in diffusers.reason
    # DiffSynth rounds 136 up to 144: 144 / 8 = 18. ComfyUI's latent is 136 // 8 = 17, padded for the
    # DiT and cropped back. The pack's ZImageEmptyLatent rounds 136 / 16 = 8.5 to the even 8: 128 px.
    expected = {"diffsynth_style": (16, 18, 18), "diffsynth_style_fp32_time": (16, 18, 18),
                "comfyui_style": (16, 17, 17), "inhouse": (16, 16, 16)}
    for adapter, shape in expected.items():
        row = rows(free, case, adapter)["denoise"]
        assert row.status == UNSUPPORTED, adapter
        assert row.summary == f"no reference: this adapter's latents are {shape}", adapter
        assert "divisible by 16" in row.reason, adapter


@pytest.mark.parametrize(("mode", "agrees"), [("circular", True), ("constant", False), ("replicate", False)])
def test_comfyui_pads_the_latent_circularly_for_the_dit_and_crops_back(context, sampling, mode, agrees):
    case = sampling["size-not-16"]
    ours, _ = execute(ComfyUIStyleAdapter(context), case, "denoise")
    assert ours.denoise.latents.shape == (case.steps + 1, 16, 17, 17)
    assert ours.denoise.model_out.shape == (case.steps, 16, 17, 17)
    noise = ours.denoise.latents[0]
    padded = F.pad(noise.unsqueeze(0), (0, 1, 0, 1), mode=mode)[0]  # 17 -> 18: one patch of 2
    with torch.inference_mode():
        # Step 0: sigma = 1, so the DiT's time input 1 - sigma is 0; the velocity is the negated output.
        out = tiny_transformer()([padded.unsqueeze(1)], torch.zeros(1), [ours.embeddings.hidden], return_dict=False)
    velocity = -out[0][0][:, 0][..., :17, :17]
    diff = (ours.denoise.model_out[0] - velocity).abs().max().item()
    assert (diff <= denoise_atol()) is agrees, diff


def test_comfyui_starts_a_partial_denoise_from_the_noise_scaled_by_the_first_sigma(context, sampling):
    """ComfyUI's flow models scale the noise into the empty latent (`CONST.noise_scaling`,
    `sigma * noise + (1 - sigma) * latent`, `comfy/model_sampling.py`; the empty latent is left
    unshifted, `comfy/samplers.py`): at denoise 1 that is the noise, below it less."""
    case = replace(sampling["comfy-workflow-9"], denoise=0.6)
    ours, _ = execute(ComfyUIStyleAdapter(context), case, "denoise")
    noise = shared_noise(case.seed, case.height, case.width)[0]
    sigma = ours.schedule.sigmas[0].float()
    assert sigma < 0.99
    assert torch.equal(ours.denoise.latents[0], sigma * noise)
    full, _ = execute(ComfyUIStyleAdapter(context), sampling["comfy-workflow-9"], "denoise")
    assert torch.equal(full.denoise.latents[0], noise)


# 5. Teacher-forced denoise: every step starts from the reference's latent


def test_teacher_forced_sampling_has_no_unexpected_divergence(forced):
    assert forced.failures == []


def test_forced_comfyui_runs_on_the_reference_schedule(forced, free):
    got = rows(forced, "comfy-workflow-9", "comfyui_style")
    assert got["schedule"].status == DECLARED  # its own 9-step simple schedule differs (§3)
    assert got["denoise"].status == MATCH, got["denoise"].summary
    assert got["denoise"].detail.first_divergent_step is None
    # Free-running it samples on its own schedule: step 0 (sigma 1 in both, §3) agrees, later steps do not.
    own = rows(free, "comfy-workflow-9", "comfyui_style")["denoise"]
    assert own.status == DECLARED and own.reason == "follows from the schedule divergence"
    assert own.detail.model_out_max_abs[0] <= denoise_atol()
    assert max(own.detail.model_out_max_abs[1:]) > denoise_atol()


@pytest.mark.parametrize("case_id", ["turbo", "comfy-workflow-9", "non-square"])
def test_forced_inhouse_dit_matches_the_live_transformer(forced, case_id):
    """Fed the reference's embeddings, the node pack's sampler (ComfyUI's) matches step by step:
    its free-running divergence is its template only."""
    got = rows(forced, case_id, "inhouse")
    assert got["template"].status == DECLARED
    assert got["denoise"].status == MATCH, got["denoise"].summary
    assert all(e <= denoise_atol() for e in got["denoise"].detail.model_out_max_abs)


def test_forced_diffsynth_errors_stay_bounded_per_step(forced, golden):
    row = rows(forced, "turbo", "diffsynth_style")["denoise"]
    assert row.status == DECLARED
    velocity = row.detail.model_out_max_abs
    first = velocity[0]
    assert first > denoise_atol()
    assert all(first / 3 <= e <= 3 * first for e in velocity), velocity
    # Each step's latent error is that step's own velocity error times its step size: nothing carried.
    sigmas = golden("turbo").schedule.sigmas
    latents = row.detail.latents_max_abs
    assert latents[0] == 0.0
    for k, err in enumerate(velocity):
        assert latents[k + 1] <= abs(sigmas[k + 1] - sigmas[k]).item() * err + 2e-6, (k, latents, velocity)


@pytest.mark.parametrize("adapter_cls", [DiffusersAdapter, ComfyUIStyleAdapter, DiffSynthStyleAdapter])
def test_every_forced_step_starts_from_the_reference_latent(context, sampling, golden, adapter_cls):
    case = sampling["turbo"]
    feed = golden("turbo")
    # Perturb the reference trajectory so that only a step that really starts from it can agree.
    feed.denoise = Denoise(feed.denoise.model_out, feed.denoise.latents * 0.9)
    ours, _ = execute(adapter_cls(context), case, "denoise", feed)
    sigmas = feed.schedule.sigmas.float()
    for k in range(case.steps):
        expected = feed.denoise.latents[k] + (sigmas[k + 1] - sigmas[k]) * ours.denoise.model_out[k]
        torch.testing.assert_close(ours.denoise.latents[k + 1], expected, atol=2e-6, rtol=0)


# 6. Bad input


def write_case(tmp_path, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(f'[[case]]\nid = "bad"\nprompt = "A cat sleeping"\n{key} = {value}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(("key", "value"), [
    ("steps", "0"), ("steps", "-2"), ("shift", "0"), ("shift", "0.0"), ("shift", "-1.5"),
    ("denoise", "1.5"), ("denoise", "0"), ("denoise", "-0.25"), ("denoise", "nan"),
])
def test_a_case_file_with_bad_sampling_numbers_names_the_key(tmp_path, key, value):
    with pytest.raises(InputError, match=rf"bad\.toml: case 'bad': {key} "):
        load_case_file(write_case(tmp_path, key, value))


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_case_file_with_a_non_finite_shift_names_the_key(tmp_path, value):
    with pytest.raises(InputError, match=r"case 'bad': shift "):
        load_case_file(write_case(tmp_path, "shift", value))


def test_a_good_case_file_loads(tmp_path):
    (case,) = load_case_file(write_case(tmp_path, "denoise", "1"))
    assert (case.steps, case.shift, case.denoise) == (8, 3.0, 1.0)


@pytest.mark.parametrize("bad", [
    ["--steps", "0"], ["--steps", "-1"], ["--steps", "8", "--shift", "0"], ["--steps", "8", "--shift", "-3"],
    ["--steps", "8", "--shift", "nan"], ["--steps", "8", "--denoise", "0"], ["--steps", "8", "--denoise", "1.01"],
    ["--steps", "8", "--shift", "inf"],
])
@pytest.mark.parametrize("adapter", ["diffusers", "comfyui_style", "diffsynth_style"])
def test_parity_schedule_refuses_bad_numbers_with_one_line(capsys, adapter, bad):
    code = main(["schedule", "--adapter", adapter, *bad, "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("parity: error: ")
    option = bad[-2].lstrip("-")
    assert option in err, err


# 7. Non-finite model output


def poisoned_context(context) -> Context:
    """A fresh context sharing the clean text path, whose DiT has one NaN weight in `layers.1`."""
    state = dict(tiny_dit_state_dict())
    weight = state["layers.1.feed_forward.w2.weight"].clone()
    weight[3, 5] = math.nan
    state["layers.1.feed_forward.w2.weight"] = weight
    poisoned = Context()
    poisoned.__dict__["tokenizer"] = context.tokenizer
    poisoned.__dict__["text_encoder"] = context.text_encoder
    poisoned.__dict__["dit_state_dict"] = state
    return poisoned


def test_a_nan_weight_is_reported_at_the_first_non_finite_step(context, sampling, golden):
    case = sampling["turbo"]
    ours, _ = execute(ComfyUIStyleAdapter(poisoned_context(context)), case, "denoise")
    assert not bool(torch.isfinite(ours.denoise.model_out[0]).all())
    check = DENOISE.check(ours.denoise, golden("turbo").denoise, None, "fp32")
    assert not check.passed
    assert check.detail.first_nonfinite_step == 0
    assert check.summary.startswith("non-finite model output at step 0")


def test_the_runner_row_names_the_non_finite_step(context, sampling):
    result = make_runner(poisoned_context(context), names=("comfyui_style",)).run([sampling["turbo"]])
    row = rows(result, "turbo", "comfyui_style")["denoise"]
    assert row.status == UNEXPECTED
    assert row.detail.first_nonfinite_step == 0
    assert "non-finite model output at step 0" in row.summary
    # The NaN was put in layers.1: every block before it is finite, so that is the one named.
    assert row.detail.first_nonfinite_block == "layers.1"
    assert row.summary.endswith("first in block layers.1")
    assert result.exit_code == 1


def test_a_later_non_finite_step_is_the_one_named(context, sampling, golden):
    """Teacher-forced with an infinite value in the reference latent of step 3 only: steps 0-2 are
    finite, so the step named must be 3, not 0 and not the last."""
    case = sampling["turbo"]
    feed = golden("turbo")
    latents = feed.denoise.latents.clone()
    latents[3, 0, 0, 0] = math.inf
    inputs = DenoiseInputs(feed.embeddings, None, feed.schedule, latents[:1], latents)
    obtained = ComfyUIStyleAdapter(context).denoise(case, inputs)
    assert bool(torch.isfinite(obtained.model_out[:3]).all())
    check = DENOISE.check(obtained, feed.denoise, None, "fp32")
    assert check.detail.first_nonfinite_step == 3
    assert check.summary.startswith("non-finite model output at step 3")


# 8. A checkpoint with missing keys


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_diffusers(tmp_path_factory.mktemp("export") / "checkpoint")


@pytest.fixture
def missing_two_keys(exported, tmp_path):
    """A copy of the exported transformer folder without two of its tensors."""
    folder = tmp_path / "checkpoint"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_bytes((exported / "transformer" / "config.json").read_bytes())
    state = load_file(exported / "transformer" / WEIGHTS_FILE)
    assert "layers.1.feed_forward.w2.weight" in state and "x_pad_token" in state
    del state["layers.1.feed_forward.w2.weight"], state["x_pad_token"]
    save_file(state, folder / "transformer" / WEIGHTS_FILE)
    return folder


def test_the_exported_checkpoint_loads_whole(exported):
    state = load_dit_state_dict(exported)
    reference = tiny_dit_state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_a_checkpoint_with_missing_keys_names_them(missing_two_keys):
    with pytest.raises(InputError, match="lacks DiT weights") as info:
        load_dit_state_dict(missing_two_keys)
    assert "layers.1.feed_forward.w2.weight" in str(info.value)
    assert "x_pad_token" in str(info.value)
    with pytest.raises(InputError, match=r"layers\.1\.feed_forward\.w2\.weight"):
        _ = Context(checkpoint=missing_two_keys).dit_state_dict


def test_parity_run_on_a_checkpoint_with_a_missing_key_exits_2(exported, tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    for path in exported.rglob("*"):
        if path.is_file():
            (folder / path.relative_to(exported)).parent.mkdir(parents=True, exist_ok=True)
            (folder / path.relative_to(exported)).write_bytes(path.read_bytes())
    weights = folder / "transformer" / WEIGHTS_FILE
    state = load_file(weights)
    del state["layers.1.feed_forward.w2.weight"]
    save_file(state, weights)
    code = main(["run", "--checkpoint", str(folder), "--cases", "turbo", "--adapters", "comfyui_style",
                 "--stages", "denoise", "--fixtures", str(ROOT / "fixtures")])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("parity: error: ") and "layers.1.feed_forward.w2.weight" in last
    assert "Traceback" not in err
