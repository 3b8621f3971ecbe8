"""Schedules: each implementation's sigmas and DiT time input.

Expected values come from the installed diffusers scheduler driven directly, from the published
facts in ZIMAGE_REFERENCE.md §3 and §6, or (where a test says so) from an expression read in the
implementation's source; never from running the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from hypothesis import given
from hypothesis import strategies as st

from implementations.comfyui_style.schedule import SCHEDULERS, comfyui_schedule
from implementations.diffsynth_style.schedule import diffsynth_schedule
from implementations.diffusers_live.schedule import diffusers_schedule
from parity.core.errors import InputError
from parity.stages.schedule import Schedule

# §3: diffusers >= 0.39 at 8 steps, and ComfyUI "simple" at 9 steps (the official workflow).
PUBLISHED_DIFFUSERS_8 = [1, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3, 0]
PUBLISHED_COMFYUI_SIMPLE_9 = [1, 0.960043, 0.913146, 0.857326, 0.789773, 0.706349, 0.600719, 0.462656, 0.27451, 0]
# §6: what DiffSynth's time embedder sees at 8 steps in bf16.
PUBLISHED_DIFFSYNTH_BF16_EMBEDDER_8 = [0, 44, 100, 168, 248, 356, 500, 700]

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
STEPS_1_TO_50 = range(1, 51)

steps_st = st.integers(min_value=1, max_value=200)
# Below about 0.1 ComfyUI's "normal" scheduler drops its terminal zero (tested on its own below).
shift_st = st.floats(min_value=0.2, max_value=20.0)
denoise_st = st.floats(min_value=0.05, max_value=1.0, exclude_min=True)


def live_scheduler(shift: float = 3.0) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False)


def live_diffusers(steps: int, shift: float = 3.0, legacy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The installed scheduler set up directly (no pipeline helpers): (sigmas, timesteps)."""
    scheduler = live_scheduler(shift)
    if legacy:
        scheduler.sigma_min = 0.0
        scheduler.set_timesteps(steps, device="cpu")
    else:
        scheduler.set_timesteps(sigmas=torch.linspace(1.0, 1 / steps, steps).tolist(), device="cpu")
    return scheduler.sigmas, scheduler.timesteps


def shifted(s: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * s / (1 + (shift - 1) * s)


def all_schedules(steps: int, shift: float) -> dict[str, Schedule]:
    made = {
        "diffusers": diffusers_schedule(steps, shift),
        "diffusers_legacy": diffusers_schedule(steps, shift, legacy=True),
        "diffsynth_bf16": diffsynth_schedule(steps, shift),
        "diffsynth_fp32": diffsynth_schedule(steps, shift, dtype=torch.float32),
    }
    made.update({f"comfyui_{name}": comfyui_schedule(steps, shift, scheduler=name) for name in SCHEDULERS})
    return made


# diffusers, live


@pytest.mark.parametrize("steps", STEPS_1_TO_50)
@pytest.mark.parametrize("legacy", [False, True])
def test_diffusers_equals_the_installed_scheduler(steps: int, legacy: bool) -> None:
    sigmas, timesteps = live_diffusers(steps, legacy=legacy)
    got = diffusers_schedule(steps, legacy=legacy)
    assert got.sigmas.dtype == got.model_t.dtype == torch.float64
    assert torch.equal(got.sigmas, sigmas.double())
    assert torch.equal(got.model_t, ((1000 - timesteps) / 1000).double())


def test_diffusers_8_steps_is_the_published_schedule() -> None:
    np.testing.assert_allclose(diffusers_schedule(8).sigmas.numpy(), PUBLISHED_DIFFUSERS_8, atol=5e-7)


def test_legacy_diffusers_9_steps_ends_with_a_wasted_step() -> None:
    sigmas = diffusers_schedule(9, legacy=True).sigmas
    assert sigmas[-2:].tolist() == [0.0, 0.0]
    # §3: 0.36-0.38 shifted linspace(1, 0, N), so 8 steps differs from today's 8 steps.
    np.testing.assert_allclose(sigmas[:-2].numpy(), shifted(torch.linspace(1, 0, 9, dtype=torch.float64), 3.0)[:-1])
    assert not torch.allclose(diffusers_schedule(8, legacy=True).sigmas, diffusers_schedule(8).sigmas)


# DiffSynth


@pytest.mark.parametrize("steps", STEPS_1_TO_50)
def test_diffsynth_at_full_strength_equals_diffusers(steps: int) -> None:
    sigmas, _ = live_diffusers(steps)
    got = diffsynth_schedule(steps, dtype=torch.float32)
    torch.testing.assert_close(got.sigmas, sigmas.double(), rtol=0, atol=FLOAT32_EPS)
    torch.testing.assert_close(got.model_t, 1 - sigmas[:-1].double(), rtol=0, atol=2 * FLOAT32_EPS)


def test_diffsynth_bf16_time_input_is_the_published_one() -> None:
    model_t = diffsynth_schedule(8).model_t
    assert torch.equal(model_t, torch.tensor(PUBLISHED_DIFFSYNTH_BF16_EMBEDDER_8, dtype=torch.float64) / 1000)


def test_diffsynth_target_timesteps_replace_the_nearest_step() -> None:
    # Read in diffsynth 2.1.12 set_timesteps_z_image: the nearest timestep (954.5 here) becomes
    # the target, and its sigma becomes target / 1000 in float32.
    got = diffsynth_schedule(8, dtype=torch.float32, target_timesteps=[950.0])
    plain = diffsynth_schedule(8, dtype=torch.float32)
    assert got.sigmas[1].item() == (torch.tensor(950.0) / 1000).item()
    assert got.model_t[1].item() == 50 / 1000
    keep = [0, 2, 3, 4, 5, 6, 7]
    assert torch.equal(got.model_t[keep], plain.model_t[keep])
    assert torch.equal(got.sigmas[keep], plain.sigmas[keep])


@pytest.mark.parametrize("target", [-1.0, 1000.5, math.nan])
def test_diffsynth_target_timesteps_outside_training_range_are_named(target: float) -> None:
    with pytest.raises(InputError, match=r"^target_timesteps "):
        diffsynth_schedule(8, target_timesteps=[target])


@given(steps=steps_st, shift=shift_st, denoise=denoise_st)
def test_diffsynth_denoise_starts_at_the_shifted_strength(steps: int, shift: float, denoise: float) -> None:
    # §3: linspace(strength, 0, N+1)[:-1], shifted.
    sigmas = diffsynth_schedule(steps, shift, denoise).sigmas
    expected = shifted(torch.linspace(denoise, 0, steps + 1, dtype=torch.float64), shift)[:-1]
    torch.testing.assert_close(sigmas[:-1], expected, rtol=0, atol=4 * FLOAT32_EPS)
    assert sigmas[-1].item() == 0


# ComfyUI


def test_comfyui_simple_8_steps_equals_diffusers() -> None:
    sigmas, _ = live_diffusers(8)
    torch.testing.assert_close(comfyui_schedule(8).sigmas, sigmas.double(), rtol=0, atol=FLOAT32_EPS)


def test_comfyui_simple_9_steps_is_the_published_schedule() -> None:
    np.testing.assert_allclose(comfyui_schedule(9).sigmas.numpy(), PUBLISHED_COMFYUI_SIMPLE_9, atol=5e-7)


def test_comfyui_simple_uses_a_float_stride() -> None:
    # Read in comfy/samplers.py: entry -(1 + int(x * (1000 / steps))). §3 writes int(x*1000/N),
    # which differs where the float stride rounds down, first at 38 steps, x = 19 (499 vs 500).
    sigmas = comfyui_schedule(38, shift=1.0).sigmas
    assert sigmas[19].item() == (torch.tensor(501) / 1000).item()


@pytest.mark.parametrize("steps", STEPS_1_TO_50)
def test_comfyui_normal_equals_diffusers_without_sigmas(steps: int) -> None:
    # Both interpolate between the shifted table's ends and shift again, ending at
    # shift(shift(1/1000)) (§3: "plain set_timesteps(8) ends at ~0.0089").
    scheduler = live_scheduler()
    scheduler.set_timesteps(steps, device="cpu")
    got = comfyui_schedule(steps, scheduler="normal").sigmas
    torch.testing.assert_close(got, scheduler.sigmas.double(), rtol=0, atol=2 * FLOAT32_EPS)
    if steps > 1:
        assert got[-2].item() == pytest.approx(float(shifted(shifted(torch.tensor(1e-3, dtype=torch.float64), 3), 3)))


def test_comfyui_normal_with_a_tiny_shift_has_no_terminal_zero() -> None:
    # Read in comfy/samplers.py normal_scheduler: a last sigma within 1e-5 of 0 takes one more
    # step instead of an appended zero.
    sigmas = comfyui_schedule(4, shift=0.05, scheduler="normal").sigmas
    assert len(sigmas) == 5
    assert 0 < sigmas[-1].item() < 1e-5


@given(steps=st.integers(min_value=1, max_value=100), denoise=denoise_st, name=st.sampled_from(sorted(SCHEDULERS)))
def test_comfyui_denoise_keeps_the_tail_of_a_longer_schedule(steps: int, denoise: float, name: str) -> None:
    # Read in comfy/samplers.py KSampler.set_steps.
    got = comfyui_schedule(steps, scheduler=name, denoise=denoise).sigmas
    if denoise > 0.9999:
        assert torch.equal(got, comfyui_schedule(steps, scheduler=name).sigmas)
    else:
        assert torch.equal(got, comfyui_schedule(int(steps / denoise), scheduler=name).sigmas[-(steps + 1) :])


# Properties of every schedule


@given(steps=steps_st, shift=shift_st)
def test_schedules_are_decreasing_to_a_terminal_zero(steps: int, shift: float) -> None:
    for name, schedule in all_schedules(steps, shift).items():
        sigmas, model_t = schedule.sigmas, schedule.model_t
        assert sigmas.dtype == model_t.dtype == torch.float64, name
        assert sigmas.shape == (steps + 1,) and model_t.shape == (steps,), name
        # Near sigma 1 the shift scales float32 rounding by 1/shift: a few ulps for shift 0.2.
        assert sigmas[0].item() == pytest.approx(1.0, abs=1e-6), name
        assert sigmas[-1].item() == 0, name
        # Legacy diffusers (0.36-0.38) alone repeats the zero: its last step starts at sigma 0.
        body = sigmas[:-1] if name == "diffusers_legacy" and steps > 1 else sigmas
        assert bool((body[1:] < body[:-1]).all()), name


@given(steps=steps_st, shift=shift_st)
def test_time_input_is_one_minus_sigma_up_to_each_cast(steps: int, shift: float) -> None:
    schedules = all_schedules(steps, shift)
    for name, schedule in schedules.items():
        expected = 1 - schedule.sigmas[:-1]
        if name == "diffsynth_bf16":
            # bf16 rounds the timestep (spacing up to 4 below 1000), then 1000 - t again.
            torch.testing.assert_close(schedule.model_t, expected, rtol=0, atol=4e-3)
            embedded = schedule.model_t * 1000
            assert torch.equal(embedded.to(torch.bfloat16).double(), embedded), name
        else:
            torch.testing.assert_close(schedule.model_t, expected, rtol=0, atol=FLOAT32_EPS, msg=name)
    # ComfyUI's NextDiT computes 1.0 - sigma in float32 on the float32 sigma.
    for name in SCHEDULERS:
        schedule = schedules[f"comfyui_{name}"]
        assert torch.equal(schedule.model_t, (1 - schedule.sigmas[:-1].float()).double())


@given(steps=steps_st)
def test_shift_one_is_the_unshifted_schedule(steps: int) -> None:
    diffusers_unshifted = torch.linspace(1.0, 1 / steps, steps).double()
    assert torch.equal(diffusers_schedule(steps, 1.0).sigmas[:-1], diffusers_unshifted)
    assert torch.equal(diffsynth_schedule(steps, 1.0).sigmas[:-1], torch.linspace(1.0, 0.0, steps + 1)[:-1].double())
    # ComfyUI's unshifted table is i/1000, so every simple sigma is a whole number of thousandths,
    # and where N divides 1000 the picks are evenly spaced like diffusers'.
    simple = comfyui_schedule(steps, 1.0).sigmas
    thousandths = simple * 1000
    torch.testing.assert_close(thousandths, thousandths.round(), rtol=0, atol=1e-3)
    if 1000 % steps == 0:
        torch.testing.assert_close(simple[:-1], diffusers_unshifted, rtol=0, atol=FLOAT32_EPS)
    normal = comfyui_schedule(steps, 1.0, scheduler="normal").sigmas
    torch.testing.assert_close(normal[:-1], torch.linspace(1.0, 1e-3, steps).double(), rtol=0, atol=FLOAT32_EPS)


# Bad input


def make(which: str, steps: int = 8, shift: float = 3.0, denoise: float = 1.0) -> Schedule:
    if which == "diffusers":
        return diffusers_schedule(steps, shift)
    if which == "diffsynth":
        return diffsynth_schedule(steps, shift, denoise)
    return comfyui_schedule(steps, shift, denoise=denoise)


@given(which=st.sampled_from(["diffusers", "diffsynth", "comfyui"]), steps=st.integers(max_value=0))
def test_bad_steps_are_named(which: str, steps: int) -> None:
    with pytest.raises(InputError, match=r"^steps "):
        make(which, steps=steps)


@given(
    which=st.sampled_from(["diffusers", "diffsynth", "comfyui"]),
    shift=st.one_of(st.floats(max_value=0.0), st.just(math.nan)),
)
def test_bad_shift_is_named(which: str, shift: float) -> None:
    with pytest.raises(InputError, match=r"^shift "):
        make(which, shift=shift)


@given(
    which=st.sampled_from(["diffsynth", "comfyui"]),
    denoise=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True), st.just(math.nan)),
)
def test_bad_denoise_is_named(which: str, denoise: float) -> None:
    with pytest.raises(InputError, match=r"^denoise "):
        make(which, denoise=denoise)


def test_unknown_comfyui_scheduler_is_named() -> None:
    with pytest.raises(InputError, match=r"^scheduler .*karras"):
        comfyui_schedule(8, scheduler="karras")


def test_the_legacy_and_normal_schedules_are_selectable_by_adapter(capsys):
    import json

    from parity.cli import main

    assert main(["schedule", "--adapter", "diffusers_legacy_schedule", "--steps", "9", "--json"]) == 0
    legacy = json.loads(capsys.readouterr().out)
    # Published: diffusers 0.36-0.38 at 9 steps ended `..., 0, 0` (a wasted step).
    assert legacy["sigmas"][-2:] == [0.0, 0.0]
    assert main(["schedule", "--adapter", "comfyui_style_normal", "--steps", "8", "--json"]) == 0
    normal = json.loads(capsys.readouterr().out)
    # Published: a plain `scheduler.set_timesteps(8)` (no sigmas) ends at ~0.0089 before the 0.
    assert normal["sigmas"][-2] == pytest.approx(0.0089, abs=1e-4) and normal["sigmas"][-1] == 0.0
