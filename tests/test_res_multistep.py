"""ComfyUI's `res_multistep` sampler, checked against reasons of its own, never its own printed output.

- In t = -log(sigma) the flow ODE of an x0 model is `dx/dt = D(t) - x`, so for a prediction D that is
  affine in t the exact step is `e^-h x + (a + b t)(1 - e^-h) + b (h - 1 + e^-h)` (integrate
  `e^-(h-s) (a + b (t + s))` over [0, h]): the second-order update must reproduce it.
- For Gaussian data N(0, s^2) under `x = (1 - sigma) x0 + sigma eps` the ideal denoiser is
  `(1 - sigma) s^2 / v(sigma) x` with `v = (1 - sigma)^2 s^2 + sigma^2`, and the ODE carries x(1) to
  `s x(1)` at sigma 0: halving the step size must shrink Euler's error about 2x and res_multistep's
  about 4x.
- ComfyUI's code (`comfy/k_diffusion/sampling.py`): the first step and the step to sigma 0 are Euler
  steps; `sample_res_multistep` uses eta 0 (no noise).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from implementations.comfyui_style.res_multistep import res_multistep
from implementations.comfyui_style.sampler import comfy_sample
from implementations.diffsynth_style.adapter import DiffSynthFp32TimeAdapter, DiffSynthStyleAdapter
from implementations.diffusers_live.adapter import DiffusersAdapter
from implementations.zimage.sampling import sampling_loop
from parity.stages.denoise import DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case


def affine_in_t(a: torch.Tensor, b: torch.Tensor):
    """A prediction that ignores x and is affine in t = -log(sigma)."""
    return lambda sigma: a + b * (-math.log(sigma))


def exact_step(x, a, b, sigma, sigma_next):
    t, h = -math.log(sigma), math.log(sigma / sigma_next)
    return math.exp(-h) * x + (a + b * t) * (1 - math.exp(-h)) + b * (h - 1 + math.exp(-h))


sigma_lists = st.lists(st.floats(0.02, 0.98), min_size=2, max_size=6, unique=True).map(
    lambda inner: torch.tensor([1.0, *sorted(inner, reverse=True), 0.0], dtype=torch.float64)
)


@settings(max_examples=40, deadline=None)
@given(sigmas=sigma_lists, seed=st.integers(0, 2**16))
def test_the_multistep_update_is_exact_for_a_prediction_affine_in_log_sigma(sigmas, seed):
    g = torch.Generator().manual_seed(seed)
    a, b, x = (torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    predict = affine_in_t(a, b)
    advance = res_multistep(lambda _x, k: predict(float(sigmas[k])), sigmas)
    x, _ = advance(x, 0)  # Euler: no history yet
    for k in range(1, len(sigmas) - 2):
        expected = exact_step(x, a, b, float(sigmas[k]), float(sigmas[k + 1]))
        x, _ = advance(x, k)
        torch.testing.assert_close(x, expected, atol=1e-12, rtol=1e-12)
    # The last step goes to sigma 0 by Euler, which lands on the prediction itself.
    x_last, _ = advance(x, len(sigmas) - 2)
    torch.testing.assert_close(x_last, predict(float(sigmas[-2])), atol=1e-12, rtol=0)


def gaussian_final_error(sampler: str, steps: int, spread: float = 0.5) -> float:
    """|x(0) - s x(1)| after sampling Gaussian data's ideal denoiser over uniform sigmas."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    x1 = torch.linspace(-2.0, 2.0, 16, dtype=torch.float64).reshape(1, 1, 4, 4)

    def denoised(x: torch.Tensor, k: int) -> torch.Tensor:
        sigma = float(sigmas[k])
        return (1 - sigma) * spread**2 / ((1 - sigma) ** 2 * spread**2 + sigma**2) * x

    if sampler == "res_multistep":
        advance = res_multistep(denoised, sigmas)
    else:

        def advance(x, k):
            v = (x - denoised(x, k)) / sigmas[k]
            return x + v * (sigmas[k + 1] - sigmas[k]), v

    final = sampling_loop(advance, steps, x1, torch.float64).latents[-1]
    return float((final - spread * x1[0]).abs().max())


def observed_orders(sampler: str) -> list[float]:
    errors = [gaussian_final_error(sampler, n) for n in (32, 64, 128)]
    return [math.log2(coarse / fine) for coarse, fine in itertools.pairwise(errors)]


def test_res_multistep_is_second_order_where_euler_is_first():
    assert all(0.9 < order < 1.1 for order in observed_orders("euler"))
    # Uniform sigmas grow wide in log sigma near 0 (the last multistep step is always h = log 2), so
    # the order approaches 2 from below instead of sitting at it.
    assert all(1.6 < order < 2.2 for order in observed_orders("res_multistep"))
    assert gaussian_final_error("res_multistep", 64) < gaussian_final_error("euler", 64) / 5


# --- on ComfyUI's sampler path: the first step is Euler's, the velocity recorded, teacher forcing ---

SIGMAS = torch.tensor([1.0, 0.9, 0.7, 0.45, 0.2, 0.0], dtype=torch.float64)


def toy_velocity(x, t, caps, k, positive):
    """A smooth stand-in for the DiT: depends on the latent, the time and the caption."""
    return torch.tanh(x) * (0.5 + t.reshape(-1, 1, 1, 1)) + caps.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def toy_inputs(forced: torch.Tensor | None = None) -> DenoiseInputs:
    g = torch.Generator().manual_seed(3)
    positive = Embeddings(torch.randn(5, 8, generator=g), torch.ones(5, dtype=torch.bool))
    schedule = Schedule(SIGMAS, 1.0 - SIGMAS[:-1])
    return DenoiseInputs(positive, None, schedule, torch.randn(1, 4, 6, 6, generator=g), forced)


def run(sampler: str, forced: torch.Tensor | None = None):
    return comfy_sample(toy_velocity, toy_inputs(forced), Case(id="toy", prompt="", sampler=sampler))


def test_the_first_step_is_eulers_and_later_steps_are_not():
    euler, multi = run("euler"), run("res_multistep")
    assert torch.equal(multi.latents[:2], euler.latents[:2])
    torch.testing.assert_close(multi.model_out[0], euler.model_out[0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(multi.latents[2], euler.latents[2], atol=1e-4)


def test_the_recorded_velocity_is_the_effective_one():
    multi = run("res_multistep")
    steps = (SIGMAS[1:] - SIGMAS[:-1]).float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(multi.latents[:-1] + multi.model_out * steps, multi.latents[1:], atol=1e-6, rtol=1e-6)


def test_forced_onto_its_own_trajectory_it_reproduces_it():
    free = run("res_multistep")
    torch.testing.assert_close(run("res_multistep", forced=free.latents).latents, free.latents, atol=0, rtol=0)


def test_teacher_forced_the_history_is_its_own_prediction_from_the_given_latents():
    """Each forced step k >= 1 equals the update from forced[k] with the predictions the sampler made
    from forced[k] and forced[k - 1], whatever trajectory the forced latents came from."""
    forced = run("euler").latents
    got = run("res_multistep", forced=forced)
    sigmas = SIGMAS.float()
    inputs = toy_inputs()

    def denoised(x, k):
        sigma = sigmas[k]
        return x - toy_velocity(x, (1.0 - sigma).reshape(1), inputs.positive.hidden[None], k, 0) * sigma

    for k in range(1, len(sigmas) - 2):
        advance = res_multistep(denoised, sigmas)
        advance(forced[k - 1 : k], k - 1)  # the history: its own prediction from the given latent
        expected, _ = advance(forced[k : k + 1], k)
        torch.testing.assert_close(got.latents[k + 1], expected[0], atol=0, rtol=0)


# --- who can run it ---


@pytest.mark.parametrize("adapter_cls", [DiffusersAdapter, DiffSynthStyleAdapter, DiffSynthFp32TimeAdapter])
def test_euler_only_pipelines_say_so(context, adapter_cls):
    case = Case(id="multi", prompt="A cat sleeping", sampler="res_multistep")
    with pytest.raises(Unsupported, match="Euler"):
        adapter_cls(context).check_supported(case)
    adapter_cls(context).check_supported(replace(case, sampler="euler"))
