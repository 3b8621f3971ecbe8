"""The tiny text encoder: deterministic weights, and the padding facts the harness relies on."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from implementations.zimage.text_encoding import gathered, penultimate_hidden, unfiltered
from parity.models.deterministic import uniform
from parity.models.text_encoder_weights import build_tiny_text_encoder
from parity.stages.embeddings import EMBEDDINGS
from parity.stages.tokens import Tokens

PAD = 151643


@pytest.fixture(scope="module")
def encoder():
    return build_tiny_text_encoder()


def test_uniform_is_a_pure_function_of_name_shape_and_seed():
    a = uniform("w", (3, 5), 7, -1.0, 1.0)
    assert torch.equal(a, uniform("w", (3, 5), 7, -1.0, 1.0))
    assert not torch.equal(a, uniform("v", (3, 5), 7, -1.0, 1.0))
    assert not torch.equal(a, uniform("w", (3, 5), 8, -1.0, 1.0))
    assert a.dtype == torch.float32 and bool((a >= -1).all() and (a < 1).all())


def test_splitmix64_matches_its_published_reference_values():
    # SplitMix64 with seed 0 (Vigna's reference C code) yields 0xE220A8397B1DCDAF first; our
    # counter form hashes (index + key) * gamma, so index 1 with key 0 is that first output.
    import numpy as np

    from parity.models.deterministic import _splitmix64

    assert int(_splitmix64(np.array([1], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_real_vocabulary_and_layer_choice(encoder):
    assert encoder.config.vocab_size == 151936
    assert encoder.config.num_attention_heads // encoder.config.num_key_value_heads == 4


@settings(max_examples=15, deadline=None)
@given(ids=st.lists(st.integers(0, 151935), min_size=1, max_size=40), pad=st.integers(1, 40))
def test_right_padding_leaves_valid_rows_unchanged(encoder, ids, pad):
    tol = EMBEDDINGS.tolerance("fp32").tolerance
    plain = penultimate_hidden(encoder, Tokens(ids, [1] * len(ids)))
    padded = penultimate_hidden(encoder, Tokens(ids + [PAD] * pad, [1] * len(ids) + [0] * pad))
    torch.testing.assert_close(padded[: len(ids)], plain, atol=tol.atol, rtol=tol.rtol)


@settings(max_examples=25, deadline=None)
@given(valid=st.integers(1, 30), pad=st.integers(0, 30), width=st.integers(1, 8))
def test_filtering_then_repadding_round_trips(valid, pad, width):
    hidden = torch.arange((valid + pad) * width, dtype=torch.float32).reshape(valid + pad, width)
    tokens = Tokens([1] * (valid + pad), [1] * valid + [0] * pad)
    kept = gathered(hidden, tokens)
    assert kept.hidden.shape == (valid, width) and bool(kept.mask.all())
    repadded = torch.cat([kept.hidden, hidden[valid:]])
    assert torch.equal(repadded, hidden)
    assert torch.equal(unfiltered(hidden, tokens).valid, kept.hidden)


@pytest.mark.parametrize("length", [11, 300])
def test_in_bf16_computing_in_float32_moves_rows_no_more_than_padding_does(length):
    """Why the bf16 tolerance cannot catch a bf16 encoder that ComfyUI runs in float32 (it has to be
    modelled exactly, `implementations/comfyui_style/float32_compute.py`): the largest difference it
    makes is within two of the ulps that padding alone moves a correct bf16 encoder by, far inside the
    tolerance, though it moves every element where padding moves few."""
    from implementations.comfyui_style.float32_compute import comfy_hidden

    encoder = build_tiny_text_encoder().to(torch.bfloat16)
    ids = torch.randint(0, 150_000, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    with torch.no_grad():
        bf16 = penultimate_hidden(encoder, Tokens(ids, [1] * length)).float()
        pads = 512 - length
        padded = penultimate_hidden(encoder, Tokens(ids + [PAD] * pads, [1] * length + [0] * pads))
        float32 = comfy_hidden(encoder, Tokens(ids, [1] * length))
    floor, moved = (padded[:length].float() - bf16).abs(), (float32 - bf16).abs()
    bf16_tolerance = EMBEDDINGS.tolerance("bf16")
    ulp = bf16_tolerance.evidence.noise_floor_max_abs
    assert floor.max() <= ulp and moved.max() < 2 * ulp < bf16_tolerance.tolerance.atol
    assert (moved > 0).float().mean() > 0.99 > 0.5 > (floor > 0).float().mean()
