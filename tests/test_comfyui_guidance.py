"""ComfyUI's guidance path: the negative's wiring and how cond and uncond reach the DiT.

Expectations come from ComfyUI's code, not from this project's output:
- `nodes.py` `ConditioningZeroOut`: `torch.zeros_like` of each conditioning tensor, the rest of its
  dict (the attention mask) copied; the official Z-Image-Turbo workflow zeroes the positive;
- `comfy/samplers.py` `sampling_function`: at `math.isclose(cfg, 1.0)` the uncond is dropped;
  `_calc_cond_batch`: conds that `can_concat_cond` (for Z-Image, `Lumina2.extra_conds`: equal
  `c_crossattn` shapes, equal `num_tokens`, the same `attention_mask` key) run as one batch, popped
  in reverse ([uncond, cond]); others run one call each, the cond first;
- the installed diffusers pipeline (the golden fixtures): its guidance `pos + g (pos - neg)` with
  g = cfg - 1 is ComfyUI's `uncond + cfg (cond - uncond)` in x0 space, so with the encoded negative
  ComfyUI's path must land on diffusers' trajectory within the denoise tolerance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import implementations.comfyui_style.guidance as guidance
from implementations.comfyui_style.adapter import ComfyUIStyleAdapter
from implementations.comfyui_style.guidance import batches_together, uncond_for
from implementations.comfyui_style.sampler import comfy_sample
from parity.golden.store import FixtureStore
from parity.run.execute import execute
from parity.stages.denoise import DENOISE, DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.suite.cases import Case

ROOT = Path(__file__).parents[1]
SIGMAS = torch.tensor([1.0, 0.6, 0.0], dtype=torch.float64)


def rows(n: int, masked: int = 0, seed: int = 0) -> Embeddings:
    hidden = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(n, dtype=torch.bool)
    if masked:
        mask[-masked:] = False
    return Embeddings(hidden, mask)


def inputs(positive: Embeddings, negative: Embeddings | None) -> DenoiseInputs:
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    return DenoiseInputs(positive, negative, Schedule(SIGMAS, 1.0 - SIGMAS[:-1]), noise)


class Calls:
    """A stand-in DiT that records what each call was handed."""

    def __init__(self) -> None:
        self.caps: list[torch.Tensor] = []
        self.positives: list[int | None] = []

    def __call__(self, x, t, caps, k, positive):
        assert len(x) == len(t) == len(caps)
        self.caps.append(caps)
        self.positives.append(positive)
        return torch.tanh(x) + caps.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def test_zeroed_is_the_positive_zeroed_with_its_mask():
    positive, negative = rows(7, masked=2), rows(4, seed=1)
    uncond = uncond_for(inputs(positive, negative), 4.0, "zeroed")
    assert uncond.hidden.shape == positive.hidden.shape and not uncond.hidden.any()
    assert torch.equal(uncond.mask, positive.mask)


def test_encoded_is_the_negative_as_handed_over():
    positive, negative = rows(7), rows(4, seed=1)
    assert uncond_for(inputs(positive, negative), 4.0, "encoded") is negative


@pytest.mark.parametrize("wiring", ["zeroed", "encoded"])
def test_at_cfg_1_there_is_no_uncond(wiring):
    assert uncond_for(inputs(rows(7), rows(4)), 1.0, wiring) is None


def test_what_batches_together():
    assert batches_together(rows(7), rows(7, seed=1))
    assert not batches_together(rows(7), rows(4))  # another caption length
    assert not batches_together(rows(7), rows(7, masked=1))  # another token count and a mask kept
    assert batches_together(rows(7, masked=2), rows(7, masked=2, seed=1))


def calls_for(positive: Embeddings, negative: Embeddings, wiring: str) -> Calls:
    calls = Calls()
    case = Case(id="guided", prompt="", cfg=4.0, negative_conditioning=wiring)
    comfy_sample(calls, inputs(positive, negative), case)
    return calls


def test_the_zeroed_positive_runs_in_one_call_with_the_positive_uncond_first():
    positive = rows(7)
    calls = calls_for(positive, rows(4, seed=1), "zeroed")
    assert len(calls.caps) == 2  # one call per step
    for caps, index in zip(calls.caps, calls.positives, strict=True):
        assert caps.shape == (2, 7, 8) and not caps[0].any() and torch.equal(caps[1], positive.hidden)
        assert index == 1


def test_an_encoded_negative_of_another_length_runs_as_its_own_call_after_the_positive():
    positive, negative = rows(7), rows(4, seed=1)
    calls = calls_for(positive, negative, "encoded")
    assert [tuple(c.shape) for c in calls.caps] == [(1, 7, 8), (1, 4, 8)] * 2
    assert calls.positives == [0, None] * 2


def test_an_encoded_negative_of_the_same_length_is_batched():
    calls = calls_for(rows(7), rows(7, seed=1), "encoded")
    assert [tuple(c.shape) for c in calls.caps] == [(2, 7, 8)] * 2


# --- on the tiny DiT: one batched call against two calls, and the encoded negative against diffusers ---


@pytest.fixture(scope="module")
def cfg_on(suite_cases):
    return suite_cases["cfg-on"]


def trajectory(context, case: Case):
    outputs, _ = execute(ComfyUIStyleAdapter(context), case, "denoise")
    return outputs.get("denoise")


def test_a_batched_call_differs_from_two_calls_by_rounding_only(context, cfg_on, monkeypatch):
    batched = trajectory(context, cfg_on)
    monkeypatch.setattr(guidance, "batches_together", lambda *_: False)
    separate = trajectory(context, cfg_on)
    assert not torch.equal(batched.latents[1:], separate.latents[1:])  # the batch really changes the arithmetic
    # Measured: 4.5e-6 in the latents, 9.7e-6 in the velocities over the 8 steps (fp32, CPU).
    atol = DENOISE.tolerance("fp32").tolerance.atol
    torch.testing.assert_close(batched.latents, separate.latents, atol=atol / 10, rtol=0)
    torch.testing.assert_close(batched.model_out, separate.model_out, atol=atol / 5, rtol=0)


def test_with_the_encoded_negative_comfyui_lands_on_diffusers_trajectory(context, cfg_on):
    golden = FixtureStore(ROOT / "fixtures").load(cfg_on, "diffusers").get("denoise")
    encoded = trajectory(context, replace(cfg_on, negative_conditioning="encoded"))
    atol = DENOISE.tolerance("fp32").tolerance.atol
    torch.testing.assert_close(encoded.latents, golden.latents, atol=atol, rtol=0)
    zeroed = trajectory(context, cfg_on)
    assert (zeroed.latents[-1] - golden.latents[-1]).abs().max() > 100 * atol
