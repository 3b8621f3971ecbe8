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
