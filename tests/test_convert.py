"""DiT key layouts: diffusers <-> ComfyUI round trips, agreement with diffusers' own single-file
converter, and the fused-qkv DiT against the split one."""

import hypothesis.strategies as st
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers
from hypothesis import given, settings

from implementations.zimage.dit import DIFFUSERS, DiTConfig, DiTVariant, ZImageDiT
from parity.models.convert import (
    COMFYUI_PREFIX,
    UNUSED_COMFYUI_KEY,
    comfyui_to_diffusers,
    diffusers_to_comfyui,
    fuse_qkv,
    stacked_rows,
)
from parity.models.dit_weights import expected_shapes, tiny_dit_config, tiny_dit_state_dict

# The DiT noise floor tolerance justified in tests/test_dit.py (measured: fused qkv is bit-identical).
ATOL = 1e-5


@pytest.fixture(scope="module")
def state():
    return tiny_dit_state_dict()


def assert_round_trip(state):
    comfy = diffusers_to_comfyui(state)
    back = comfyui_to_diffusers(comfy)
    assert list(back) == list(state)
    for key, value in state.items():
        assert torch.equal(back[key], value), key
        if ".attention.to_" not in key or ".attention.to_out." in key:
            assert back[key] is value, f"{key} was copied"
    return comfy


def test_round_trip_of_the_tiny_state_dict_shares_every_tensor_but_qkv(state):
    comfy = assert_round_trip(state)
    assert all(key.startswith(COMFYUI_PREFIX) for key in comfy)
    fused = sum(key.endswith(".attention.qkv.weight") for key in comfy)
    assert fused == 2 * 2 + 2  # noise_refiner + context_refiner + layers
    assert len(comfy) == len(state) - 2 * fused


def test_comfyui_names_are_the_ones_comfyui_and_diffusers_use(state):
    comfy = diffusers_to_comfyui(state)
    p = COMFYUI_PREFIX
    for key in (
        "x_embedder.weight",
        "final_layer.linear.bias",
        "final_layer.adaLN_modulation.1.weight",
        "layers.0.attention.qkv.weight",
        "layers.0.attention.out.weight",
        "layers.0.attention.q_norm.weight",
        "layers.0.attention.k_norm.weight",
        "noise_refiner.1.adaLN_modulation.0.bias",
        "context_refiner.0.feed_forward.w3.weight",
        "cap_embedder.1.weight",
        "t_embedder.mlp.2.bias",
        "x_pad_token",
        "cap_pad_token",
    ):
        assert p + key in comfy, key
    # diffusers' own single-file loader reads our ComfyUI layout back to the same state dict,
    # unused norm_final.weight included (it drops it, as we do).
    with_unused = comfy | {p + UNUSED_COMFYUI_KEY: torch.ones(64)}
    converted = convert_z_image_transformer_checkpoint_to_diffusers(dict(with_unused))
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)
    mine = comfyui_to_diffusers(with_unused)
    assert all(torch.equal(mine[k], converted[k]) for k in state)


def test_unprefixed_comfyui_files_are_read_too(state):
    bare = {k.removeprefix(COMFYUI_PREFIX): v for k, v in diffusers_to_comfyui(state).items()}
    assert all(torch.equal(comfyui_to_diffusers(bare)[k], v) for k, v in state.items())


def test_fused_qkv_is_q_k_v_stacked_on_dim_0(state):
    fused = fuse_qkv(state)
    for block in ("noise_refiner.0", "context_refiner.1", "layers.1"):
        parts = [state[f"{block}.attention.to_{x}.weight"] for x in "qkv"]
        assert torch.equal(fused[f"{block}.attention.qkv.weight"], torch.cat(parts))


@st.composite
def small_configs(draw):
    heads = draw(st.integers(1, 3))
    axes = [2 * draw(st.integers(1, 3)) for _ in range(3)]
    return {
        **tiny_dit_config(),
        "n_layers": draw(st.integers(0, 3)),
        "n_refiner_layers": draw(st.integers(0, 2)),
        "n_heads": heads,
        "n_kv_heads": heads,
        "dim": heads * sum(axes),
        "axes_dims": axes,
        "cap_feat_dim": draw(st.integers(1, 16)),
    }


@settings(max_examples=25, deadline=None)
@given(config=small_configs(), seed=st.integers(0, 2**31))
def test_round_trip_over_random_small_configs(config, seed):
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(shape, generator=g) for k, shape in expected_shapes(config).items()}
    assert_round_trip(state)
    converted = convert_z_image_transformer_checkpoint_to_diffusers(diffusers_to_comfyui(state))
    assert set(converted) == set(state)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), grid=st.integers(1, 8), cap_len=st.integers(1, 70))
def test_the_comfyui_layout_dit_equals_the_split_one(state, seed, grid, cap_len):
    config = DiTConfig.from_diffusers(tiny_dit_config())
    split = ZImageDiT.from_state_dict(state, config, DIFFUSERS)
    from_comfy = comfyui_to_diffusers(diffusers_to_comfyui(state))
    fused = ZImageDiT.from_state_dict(from_comfy, config, DiTVariant(fused_qkv=True))
    g = torch.Generator().manual_seed(seed)
    latent, cap, t = torch.randn(16, 2 * grid, 6, generator=g), torch.randn(cap_len, 80, generator=g), torch.rand(1)
    with torch.no_grad():
        torch.testing.assert_close(fused(latent, t, cap), split(latent, t, cap), atol=ATOL, rtol=0)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.integers(1, 5), min_size=1, max_size=4), cols=st.integers(1, 4), split=st.booleans())
def test_stacked_rows_equals_cat_and_is_a_view_exactly_when_the_parts_are_adjacent(rows, cols, split):
    base = torch.randn(sum(rows), cols)
    parts = list(base.split(rows)) if split else [torch.randn(r, cols) for r in rows]
    stacked = stacked_rows(parts)
    assert torch.equal(stacked, torch.cat(parts))
    shares = stacked.untyped_storage().data_ptr() == parts[0].untyped_storage().data_ptr()
    assert shares == (split or len(parts) == 1)


def test_stacked_rows_copies_parts_out_of_order():
    q, k, v = torch.randn(6, 4).chunk(3)
    assert torch.equal(stacked_rows([k, q, v]), torch.cat([k, q, v]))
    assert stacked_rows([k, q, v]).untyped_storage().data_ptr() != q.untyped_storage().data_ptr()


def test_a_comfyui_file_s_fused_weight_is_used_in_place(state):
    """Loaded from ComfyUI's layout, q, k and v are views of the file's fused tensor, and the fused
    DiT's projection is that tensor again: one copy of the attention weights, not two."""
    comfy = diffusers_to_comfyui(state)
    from_comfy = comfyui_to_diffusers(comfy)
    block = "layers.0.attention"
    fused = comfy[f"{COMFYUI_PREFIX}layers.0.attention.qkv.weight"]
    stacked = stacked_rows([from_comfy[f"{block}.to_{x}.weight"] for x in "qkv"])
    assert stacked.data_ptr() == fused.data_ptr() and torch.equal(stacked, fused)
