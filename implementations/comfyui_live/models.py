"""ComfyUI's own text encoder, DiT and VAE, built around the run's shared weights.

ComfyUI recognises a model by its tensors' names and shapes (`comfy/model_detection.py`,
`comfy/sd.py`) and knows Z-Image only at full width: the tiny DiT (dim 64) is taken for a Lumina 2
model of unknown heads, and the tiny VAE (a quarter of the Flux VAE's widths) for one of full
width. So each model is built here the way ComfyUI's loader builds it once it has recognised the
model, from ComfyUI's own classes, with the sizes read from the shared config instead of its
hard-coded full-width ones. Three places cannot take a size and are worked around, here and only here:

- text encoder: `Qwen3_4BConfig.head_dim` is a class constant (128), not a field the config
  dict can set, so the tiny encoder (head_dim 32) gets a model class that builds ComfyUI's own
  `Llama2_` from that config with the head width set. A real Qwen3-4B builds unpatched;
- DiT: `NextDiT` sizes its time embedder as `TimestepEmbedder(min(dim, 1024), output_size=256)`,
  which is the checkpoint's shape only when dim >= 1024 (Z-Image's 3840). ComfyUI's own
  `TimestepEmbedder` of that checkpoint's shape, `(1024, output_size=min(dim, 256))`, replaces it:
  for dim >= 1024 the same module ComfyUI builds. (The FFN width needs no patch: `multiple_of=1`
  in the config gives Z-Image's 8/3 x dim, which its rounding to 256 gives at full width too.);
- VAE: its detection hard-codes the Flux VAE's widths, so the tiny one goes in through the
  explicit config `VAE(config=...)` takes, with the one difference that path has (`vae` says which).

Weights come from the shared state dicts through ComfyUI's own converters (diffusers' DiT keys
to its fused-qkv layout, diffusers' VAE keys to the original layout). ComfyUI copies them into its
own modules, so a live ComfyUI model is a second copy, built per call and dropped after it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from implementations.comfyui_live.library import quiet_logging
from parity.models.context import Context

TEXT_ENCODER_NAME = "qwen3_4b"
# Hard-coded in ComfyUI's Qwen3-4B encoder as its pad token.
PAD_ID = 151643
# The Flux VAE's layout at ComfyUI's defaults (`comfy/sd.py`), its widths from the shared config.
_VAE_LAYOUT = dict(double_z=True, resolution=256, in_channels=3, out_ch=3, attn_resolutions=[], dropout=0.0)


def text_encoder(comfy: SimpleNamespace, context: Context) -> Any:
    """ComfyUI's `CLIP` for Z-Image (its tokenizer, its Qwen3 encoder) holding the shared weights."""
    config = context.text_encoder.config
    sizes = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, rms_norm_eps=config.rms_norm_eps,
    )
    llama, z_image, sd1_clip = comfy.llama, comfy.z_image, comfy.sd1_clip
    head_dim = config.head_dim

    class Qwen3(llama.Qwen3_4B):
        def __init__(self, config_dict: dict, dtype: Any, device: Any, operations: Any) -> None:
            torch.nn.Module.__init__(self)
            built = llama.Qwen3_4BConfig(**config_dict)
            built.head_dim = head_dim
            self.num_layers = built.num_hidden_layers
            self.model = llama.Llama2_(built, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    model_class = llama.Qwen3_4B if head_dim == llama.Qwen3_4BConfig.head_dim else Qwen3

    class Encoder(z_image.Qwen3_4BModel):
        # `Qwen3_4BModel.__init__` with the sizes and model class above; its other arguments as it passes them.
        def __init__(self, device: str = "cpu", layer: str = "hidden", layer_idx: int = -2, dtype: Any = None,
                     attention_mask: bool = True, model_options: dict | None = None) -> None:
            sd1_clip.SDClipModel.__init__(
                self, device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=dict(sizes),
                dtype=dtype, special_tokens={"pad": PAD_ID}, layer_norm_hidden_state=False, model_class=model_class,
                enable_attention_masks=attention_mask, return_attention_masks=attention_mask,
                model_options=model_options or {},
            )

    class TextEncoders(sd1_clip.SD1ClipModel):
        def __init__(self, device: str = "cpu", dtype: Any = None, model_options: dict | None = None) -> None:
            super().__init__(device=device, dtype=dtype, name=TEXT_ENCODER_NAME, clip_model=Encoder,
                             model_options=model_options or {})

    weights = {f"{TEXT_ENCODER_NAME}.transformer.model.{k}": v for k, v in context.text_encoder.state_dict().items()}
    target = comfy.supported_models_base.ClipTarget(z_image.ZImageTokenizer, TextEncoders)
    return comfy.sd.CLIP(target=target, state_dict=weights, model_options={"dtype": context.torch_dtype})


def dit_config(context: Context) -> dict[str, Any]:
    """The config `model_detection` writes for a Z-Image checkpoint, with the shared DiT's sizes."""
    c = context.dit_config
    return dict(
        image_model="lumina2", patch_size=c["all_patch_size"][0], in_channels=c["in_channels"], dim=c["dim"],
        cap_feat_dim=c["cap_feat_dim"], n_layers=c["n_layers"], n_refiner_layers=c["n_refiner_layers"],
        qk_norm=c["qk_norm"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"], axes_dims=list(c["axes_dims"]),
        axes_lens=list(c["axes_lens"]), rope_theta=c["rope_theta"], ffn_dim_multiplier=8.0 / 3.0, multiple_of=1,
        z_image_modulation=True, time_scale=c["t_scale"], pad_tokens_multiple=32, norm_eps=c["norm_eps"],
    )


def dit_dtype(comfy: SimpleNamespace, context: Context) -> torch.dtype:
    """The dtype ComfyUI's loader picks for DiT weights of the run's dtype on this device."""
    supported = comfy.supported_models.ZImage(dit_config(context)).supported_inference_dtypes
    mm = comfy.model_management
    return mm.unet_dtype(mm.get_torch_device(), supported_dtypes=supported, weight_dtype=context.torch_dtype)


def dit(comfy: SimpleNamespace, context: Context, shift: float, weights: bool = True) -> Any:
    """ComfyUI's Z-Image model (`model_base.Lumina2` over `NextDiT`) in a `ModelPatcher`, its model
    sampling patched by `ModelSamplingAuraFlow` with `shift`; without `weights`, on the meta device
    (for what runs before the DiT computes). Returns the patched patcher."""
    mm = comfy.model_management
    config = comfy.supported_models.ZImage(dit_config(context))
    device = mm.get_torch_device()
    weight_dtype = dit_dtype(comfy, context)
    manual_cast = mm.unet_manual_cast(weight_dtype, device, config.supported_inference_dtypes)
    config.set_inference_dtype(weight_dtype, manual_cast)
    where = None if weights else torch.device("meta")
    model = config.get_model({}, "", device=where)
    # The operations `BaseModel` builds the rest of the network with.
    operations = comfy.ops.pick_operations(
        config.unet_config.get("dtype"), config.manual_cast_dtype, fp8_optimizations=False, model_config=config
    )
    model.diffusion_model.t_embedder = comfy.mmdit.TimestepEmbedder(
        1024, output_size=min(context.dit_config["dim"], 256), dtype=config.unet_config.get("dtype"), device=where,
        operations=operations,
    )
    if weights:
        converted = comfy.model_detection.convert_diffusers_mmdit(dict(context.dit_state_dict), "")
        model.load_model_weights(converted, "")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())
    return comfy.nodes_model_advanced.ModelSamplingAuraFlow().patch_aura(patcher, shift)[0]


def vae(comfy: SimpleNamespace, context: Context) -> Any:
    """ComfyUI's `VAE` (its original-layout `Encoder`/`Decoder`) holding the shared decoder weights."""
    c = context.vae_config
    widths, channels = list(c["block_out_channels"]), c["latent_channels"]
    ddconfig = dict(
        _VAE_LAYOUT, z_channels=channels, ch=widths[0], ch_mult=[w // widths[0] for w in widths],
        num_res_blocks=c["layers_per_block"],
    )
    weights = dict(context.vae_state_dict)
    # The config path builds `AutoencoderKL`, whose decode runs `post_quant_conv` first; the Flux VAE
    # has none (ComfyUI's detection builds it without one), so it gets the identity 1x1 convolution,
    # which hands every value on unchanged (x * 1 plus exact zeros), in either dtype.
    like = next(iter(weights.values()))
    weights["post_quant_conv.weight"] = torch.eye(channels, dtype=like.dtype).reshape(channels, channels, 1, 1)
    weights["post_quant_conv.bias"] = torch.zeros(channels, dtype=like.dtype)
    # Only the decoder's weights exist; ComfyUI warns of every encoder key it lacks (some 130 lines).
    with quiet_logging():
        return comfy.sd.VAE(sd=weights, config={"params": {"ddconfig": ddconfig, "embed_dim": channels}})
