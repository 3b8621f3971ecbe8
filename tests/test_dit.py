"""Our DiT against the installed diffusers `ZImageTransformer2DModel`, its variants, and block capture.

Tolerance (float32, CPU, torch 2.13, diffusers 0.42.1), measured over 40 random inputs (latents up
to 32x32, captions of 1-399 rows, t in [0, 1]; outputs reach |4.2|):
- the installed model against itself, sample 0 of a padded batch of two vs alone: max 3.2e-6;
  1 vs 2 threads: 0 (this machine has 2 cores);
- ours vs the installed model: default 1.6e-6; [caption, image] order 1.9e-6; rotation-matrix
  RoPE 2.7e-6; fused qkv and the three RMSNorm casts are bit-identical to our default;
- real differences, for scale: ComfyUI's q/k norm eps (machine epsilon, not 1e-5) 2.5e-5; the bf16
  time embedder 8.4e-3.
So ATOL = 1e-5, about 3x the largest noise floor and 2.5x below the smallest real difference; no
rtol, since outputs are O(1).
"""

import dataclasses
import json

import hypothesis.strategies as st
import pytest
import torch
from diffusers import ZImageTransformer2DModel
from hypothesis import given, settings
from safetensors.torch import save_file

from implementations.comfyui_style.dit_variant import COMFYUI
from implementations.diffsynth_style.dit_variant import DIFFSYNTH
from implementations.zimage.dit import DIFFUSERS, DiTConfig, DiTVariant, ZImageDiT
from implementations.zimage.dit_capture import capture_blocks
from parity.compare.numeric import first_non_finite
from parity.core.errors import InputError
from parity.models.dit_weights import (
    INDEX_FILE,
    WEIGHTS_FILE,
    load_dit_config,
    load_dit_state_dict,
    tiny_dit_config,
    tiny_dit_state_dict,
    weights_sha256,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def state():
    return tiny_dit_state_dict()


@pytest.fixture(scope="module")
def config():
    return DiTConfig.from_diffusers(tiny_dit_config())


def installed(state, t_embedder_dtype=torch.float32):
    with torch.device("meta"):
        model = ZImageTransformer2DModel(**tiny_dit_config())
    model.load_state_dict(state, assign=True)
    model.t_embedder.to(t_embedder_dtype)
    return model.eval()


@pytest.fixture(scope="module")
def reference(state):
    return installed(state)


def ours(state, config, variant=DIFFUSERS):
    return ZImageDiT.from_state_dict(state, config, variant)


def run_installed(model, latent, t, cap):
    with torch.no_grad():
        return model([latent.unsqueeze(1)], t, [cap], return_dict=False)[0][0][:, 0]


def run(model, latent, t, cap):
    with torch.no_grad():
        return model(latent, t, cap)


def make_inputs(seed, grid_h=5, grid_w=4, cap_len=13):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(16, 2 * grid_h, 2 * grid_w, generator=g)
    cap = torch.randn(cap_len, 80, generator=g)
    return latent, torch.rand(1, generator=g), cap


inputs = st.builds(
    make_inputs,
    seed=st.integers(0, 2**31),
    grid_h=st.integers(1, 9),
    grid_w=st.integers(1, 9),
    cap_len=st.integers(1, 90),
)


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@settings(max_examples=20, deadline=None)
@given(case=inputs)
def test_matches_the_installed_diffusers_model(state, config, reference, case):
    close(run(ours(state, config), *case), run_installed(reference, *case))


@settings(max_examples=10, deadline=None)
@given(case=inputs)
def test_the_tolerance_covers_the_installed_models_own_batching_noise(reference, case):
    latent, t, cap = case
    other_latent, _, other_cap = make_inputs(7, 6, 3, 50)
    alone = run_installed(reference, latent, t, cap)
    with torch.no_grad():
        batch = reference(
            [latent.unsqueeze(1), other_latent.unsqueeze(1)], torch.cat([t, t]), [cap, other_cap], return_dict=False
        )[0]
    close(batch[0][:, 0], alone)


EQUIVALENT = {
    "caption_image order": DiTVariant(joint_order="caption_image"),
    "rotation-matrix rope": DiTVariant(rope="rotation"),
    "fused qkv": DiTVariant(fused_qkv=True),
    "norm cast fp32": DiTVariant(norm_cast="fp32"),
    "norm in input dtype": DiTVariant(norm_cast="input_dtype"),
    "ComfyUI but qk eps 1e-5": dataclasses.replace(COMFYUI, qk_norm_eps=1e-5),
}


@pytest.mark.parametrize("variant", EQUIVALENT.values(), ids=EQUIVALENT.keys())
@settings(max_examples=8, deadline=None)
@given(case=inputs)
def test_variants_that_only_reorder_arithmetic_match_within_noise(state, config, reference, variant, case):
    close(run(ours(state, config, variant), *case), run_installed(reference, *case))


def test_comfyuis_qk_norm_eps_is_a_real_difference_the_tolerance_sees(state, config):
    case = make_inputs(0, grid_h=12, grid_w=10, cap_len=200)
    diff = (run(ours(state, config, COMFYUI), *case) - run(ours(state, config), *case)).abs().max().item()
    assert ATOL < diff < 1e-3


@settings(max_examples=10, deadline=None)
@given(case=inputs)
def test_bf16_time_embedder_equals_diffusers_with_a_bf16_t_embedder(state, config, case):
    # The installed TimestepEmbedder casts the sinusoid to its weights' dtype and the model casts
    # the result back: a bf16 t_embedder inside an fp32 model is DiffSynth's embedder exactly.
    close(run(ours(state, config, DIFFSYNTH), *case), run_installed(installed(state, torch.bfloat16), *case))


@pytest.mark.parametrize("t", [0.0, 0.0454545, 0.35, 0.6, 1.0])
def test_bf16_time_embedder_differs_from_fp32_by_bf16_rounding(state, config, t):
    fp32, bf16 = ours(state, config), ours(state, config, DIFFSYNTH)
    scaled = torch.tensor([t * 1000.0])
    with torch.no_grad():
        exact, rounded = fp32.t_embedder(scaled, torch.float32), bf16.t_embedder(scaled, torch.float32)
    # Three roundings of 2**-9 (input, hidden, output) plus bf16 weights: a few bf16 ulps of the
    # largest entry (measured up to 1.5 x 2**-8), never more than 2**-6 of it.
    assert 0 < (rounded - exact).abs().max() <= 2**-6 * exact.abs().max()
    latent, _, cap = make_inputs(1)
    out_fp32, out_bf16 = run(fp32, latent, torch.tensor([t]), cap), run(bf16, latent, torch.tensor([t]), cap)
    diff = (out_bf16 - out_fp32).abs().max()
    assert ATOL < diff < 1e-2 * out_fp32.abs().max()


def test_in_bf16_the_default_variant_matches_the_installed_model_and_norm_casts_differ(state, config):
    # Measured over 10 inputs: default vs installed 0 (bit-identical); the "input_dtype" and "fp32"
    # RMSNorm casts move outputs by up to 0.06, several bf16 ulps: the cast placement is visible.
    bf16 = {k: v.bfloat16() for k, v in state.items()}
    latent, t, cap = make_inputs(8, grid_h=6, grid_w=5, cap_len=37)
    latent, cap = latent.bfloat16(), cap.bfloat16()
    expected = run_installed(installed(bf16, torch.bfloat16), latent, t, cap).float()
    torch.testing.assert_close(run(ours(bf16, config), latent, t, cap).float(), expected, atol=1e-2, rtol=2**-7)
    for cast in ("input_dtype", "fp32"):
        moved = run(ours(bf16, config, DiTVariant(norm_cast=cast)), latent, t, cap).float()
        assert (moved - expected).abs().max() > 0


def capture(model, runner, case):
    with capture_blocks(model) as blocks:
        runner(model, *case)
    return blocks


@pytest.mark.parametrize("variant", [DIFFUSERS, EQUIVALENT["ComfyUI but qk eps 1e-5"]], ids=["diffusers", "comfyui"])
def test_block_capture_is_canonical_across_implementations(state, config, reference, variant):
    case = make_inputs(2, grid_h=3, grid_w=7, cap_len=40)
    expected = capture(reference, run_installed, case)
    got = capture(ours(state, config, variant), run, case)
    n = config.n_refiner_layers
    names = [f"noise_refiner.{i}" for i in range(n)] + [f"context_refiner.{i}" for i in range(n)]
    names += [f"layers.{i}" for i in range(config.n_layers)] + ["all_final_layer.2-1"]
    assert list(got) == list(expected) == names
    assert got["layers.0"].shape == (32 + 64, 64)  # 21 image tokens padded to 32, 40 caption rows to 64
    for name in names:
        close(got[name], expected[name])


BLOCK_WEIGHTS = {
    "noise_refiner.1": "noise_refiner.1.feed_forward.w2.weight",
    "context_refiner.0": "context_refiner.0.attention.to_v.weight",
    "layers.1": "layers.1.adaLN_modulation.0.bias",
    "all_final_layer.2-1": "all_final_layer.2-1.linear.weight",
}


@pytest.mark.parametrize("block", BLOCK_WEIGHTS)
@pytest.mark.parametrize("implementation", ["ours", "installed"])
def test_a_non_finite_weight_is_located_at_its_block(state, config, block, implementation):
    broken = dict(state)
    key = BLOCK_WEIGHTS[block]
    broken[key] = state[key].clone()
    broken[key].view(-1)[3] = float("nan")
    model, runner = (ours(broken, config), run) if implementation == "ours" else (installed(broken), run_installed)
    blocks = capture(model, runner, make_inputs(3))
    assert first_non_finite(blocks) == block


def test_clean_weights_have_no_non_finite_block(state, config):
    assert first_non_finite(capture(ours(state, config), run, make_inputs(3))) is None


def test_a_capture_covers_one_sample(reference):
    latent, t, cap = make_inputs(4)
    with pytest.raises(ValueError, match="one sample"), capture_blocks(reference):
        reference([latent.unsqueeze(1)] * 2, torch.cat([t, t]), [cap, cap], return_dict=False)


def batch_of_two(case, other):
    (latent, t, cap), (other_latent, other_t, other_cap) = case, other
    return torch.stack([other_latent, latent]), torch.cat([other_t, t]), torch.stack([other_cap, cap])


@settings(max_examples=10, deadline=None)
@given(case=inputs, seed=st.integers(0, 2**31))
def test_a_batch_of_one_caption_length_matches_each_sample_alone(state, config, reference, case, seed):
    """Against the installed model run on each sample alone: the batch changes rounding only, within
    the noise the installed model's own batching shows (the module docstring)."""
    latent, _, cap = case
    other = make_inputs(seed, latent.shape[1] // 2, latent.shape[2] // 2, cap.shape[0])
    batch = run(ours(state, config, EQUIVALENT["ComfyUI but qk eps 1e-5"]), *batch_of_two(case, other))
    assert batch.shape == (2, *latent.shape)
    close(batch[1], run_installed(reference, *case))
    close(batch[0], run_installed(reference, *other))


def test_a_batch_needs_one_time_value_per_sample(state, config):
    latent, t, cap = batch_of_two(make_inputs(1), make_inputs(2))
    with pytest.raises(ValueError, match="2 time value"):
        run(ours(state, config), latent, t[:1], cap)
    with pytest.raises(ValueError, match="one per caption"):
        run(ours(state, config), latent[:1], t, cap)


def test_a_capture_told_its_sample_keeps_that_sample_of_a_batch(state, config):
    case, other = make_inputs(5, cap_len=20), make_inputs(6, cap_len=20)
    model = ours(state, config, COMFYUI)
    alone = capture(model, run, case)
    with capture_blocks(model, sample=1) as batched:
        run(model, *batch_of_two(case, other))
    assert list(batched) == list(alone)
    for name in alone:
        close(batched[name], alone[name])


def test_weights_are_shared_not_copied(state, config):
    model = ours(state, config)
    assert all(p.data_ptr() == state[name].data_ptr() for name, p in model.state_dict().items())
    comfy = ZImageDiT.from_state_dict(state, config, COMFYUI)
    assert all(p.data_ptr() == state[name].data_ptr() for name, p in comfy.state_dict().items())


def test_input_shapes(state, config):
    model = ours(state, config)
    latent, t, cap = make_inputs(5)
    assert torch.equal(run(model, latent[None], t, cap), run(model, latent, t.reshape(()), cap))
    with pytest.raises(ValueError, match="patch size"):
        run(model, latent[:, :9], t, cap)
    with pytest.raises(ValueError, match="cap_feats"):
        run(model, latent, t, cap[:0])


def test_a_position_past_diffusers_rope_table_fails_as_diffusers_does(state, config, reference):
    # Caption positions run 1..L padded; axes_lens[0] = 1024 bounds diffusers' table, not ComfyUI's.
    latent, t, cap = make_inputs(6, 1, 1, cap_len=1024)
    with pytest.raises(ValueError, match="axes_lens"):
        run(ours(state, config), latent, t, cap)
    with pytest.raises(IndexError):
        run_installed(reference, latent, t, cap)
    assert torch.isfinite(run(ours(state, config, COMFYUI), latent, t, cap)).all()


def test_config_parsing_rejects_what_is_not_modelled():
    assert DiTConfig.from_diffusers({"_class_name": "ZImageTransformer2DModel"}) == DiTConfig()
    with pytest.raises(ValueError, match="unknown"):
        DiTConfig.from_diffusers({"dim": 64, "n_heads": 2, "new_thing": 1})
    with pytest.raises(ValueError, match="Omni"):
        DiTConfig.from_diffusers({"siglip_feat_dim": 1152})
    with pytest.raises(ValueError, match="axes_dims"):
        DiTConfig.from_diffusers({**tiny_dit_config(), "axes_dims": [8, 8, 8]})


def test_tiny_weights_are_deterministic_and_cover_the_diffusers_state_dict(state, reference):
    again = tiny_dit_state_dict()
    assert weights_sha256(again) == weights_sha256(state)
    assert set(state) == set(ZImageTransformer2DModel(**tiny_dit_config()).state_dict())
    assert not torch.equal(state["x_pad_token"], state["cap_pad_token"])


def save_transformer(folder, state, config, shards):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(state, folder / WEIGHTS_FILE)
        return
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        shard = f"part-{i}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        save_file(part, folder / shard)
        weight_map |= dict.fromkeys(part, shard)
    (folder / INDEX_FILE).write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("shards", [1, 3])
def test_a_checkpoint_folder_loads_single_or_sharded(tmp_path, state, shards):
    save_transformer(tmp_path / "transformer", state, tiny_dit_config(), shards)
    loaded = load_dit_state_dict(tmp_path)
    assert weights_sha256(loaded) == weights_sha256(state)
    assert load_dit_config(tmp_path) == tiny_dit_config()


def test_a_checkpoint_missing_weights_is_an_input_error(tmp_path, state):
    # Part of a block: a whole one missing is a layer count the config disagrees with (config_check).
    partial = {k: v for k, v in state.items() if not k.startswith("layers.1.adaLN_modulation.")}
    save_transformer(tmp_path / "transformer", partial, tiny_dit_config(), 1)
    with pytest.raises(InputError, match=r"lacks DiT weights: layers\.1\.adaLN_modulation\.0\.bias"):
        load_dit_state_dict(tmp_path)
    with pytest.raises(InputError, match="no transformer/"):
        load_dit_state_dict(tmp_path / "elsewhere")
