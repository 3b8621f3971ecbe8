"""The Z-Image DiT (S3-DiT, "single-stream"), written once; what implementations vary is a `DiTVariant`.

Read top to bottom it is the model: a caption and a latent image become two token sequences, each is
refined on its own (the image under time modulation, the caption without), the two are joined into one
sequence for the main layers, and the image tokens of the result become the output.

Flow of `ZImageDiT.forward` for one sample:
1. time: `t * t_scale` -> 256-dim sinusoid [cos, sin] -> MLP (256 -> 1024 -> min(dim, 256)) = `adaln`;
2. image: (C, H, W) cut into p x p patches, tokens in row-major (h, w) order, features ordered
   (patch row, patch column, channel) -> `x_embedder`; caption rows (L, cap_feat_dim) -> RMSNorm + Linear;
3. both sequences padded to a multiple of 32 with learned pad tokens, which are *not* masked out;
4. positions: caption token j -> (1 + j, 0, 0); image token (h, w) -> (Lc + 1, h, w) with Lc the padded
   caption length; image pad tokens -> (0, 0, 0);
5. `noise_refiner` blocks on the image tokens (modulated by adaln), `context_refiner` on the caption's;
6. the joined sequence through `layers` (modulated), `final_layer`, and back to (C, H, W).

The state dict is diffusers' `ZImageTransformer2DModel` layout (DiffSynth uses the same keys) for every
variant; module names equal diffusers', so `noise_refiner.0` or `layers.3` name the same block in both.
`ZImageDiT.from_state_dict` assigns the given tensors as the module's parameters (no copy), so K
implementations holding one state dict cost one copy of weights. ComfyUI's fused attention projection
(one matmul over q, k and v stacked) is built per layer at call time from those same tensors, never
stored: a view when they already lie back to back (as a ComfyUI file's split weights do), else a
transient copy of one layer's three matrices.

The model runs in the dtype of its weights; inputs are cast to it first, as every pipeline does. A batch
is modelled for captions of one length only (ComfyUI batches only those), so no attention mask is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from implementations.zimage.rope import RopeForm, Rotary, rotary
from parity.models.convert import stacked_rows

SEQ_MULTIPLE = 32
ADALN_MAX_DIM = 256
TIME_FREQUENCY_DIM = 256
TIME_HIDDEN_DIM = 1024
TIME_MAX_PERIOD = 10000
FINAL_NORM_EPS = 1e-6

JointOrder = Literal["image_caption", "caption_image"]
NormCast = Literal["cast_before_weight", "input_dtype", "fp32"]


@dataclass(frozen=True)
class DiTVariant:
    """Where implementations of the same DiT differ. Every field changes numbers, never the model.

    joint_order: "image_caption" (diffusers, DiffSynth) or "caption_image" (ComfyUI). Attention is
        unmasked and RoPE positions travel with their tokens, so the order changes only summation order.
    rope: "complex" (diffusers, DiffSynth) or "rotation" (ComfyUI); see `implementations.zimage.rope`.
    fused_qkv: q, k, v from one (3*dim, dim) matmul over the stacked projections (ComfyUI).
    qk_norm_eps: eps of the per-head q/k RMSNorm. diffusers and DiffSynth hard-code 1e-5; ComfyUI
        builds `torch.nn.RMSNorm` without one, which means the input dtype's machine epsilon (None here):
        1.2e-7 in fp32, 7.8e-3 in bf16.
    norm_cast: where RMSNorm leaves float32 when the input is lower precision (identical in fp32).
        "cast_before_weight": variance in fp32, normalised value cast back, then x weight (diffusers with
        bf16 weights, DiffSynth); "input_dtype": all arithmetic in the input dtype (the original Tongyi
        code); "fp32": normalise and weight in fp32, one cast at the end (`torch.nn.functional.rms_norm`,
        which ComfyUI calls; measured on CPU with torch 2.13).
    time_embedder_bf16: the sinusoid is cast to bf16 and the time MLP runs in bf16 whatever the model's
        dtype (DiffSynth's TimestepEmbedder does this unconditionally); the result is cast back.
    """

    joint_order: JointOrder = "image_caption"
    rope: RopeForm = "complex"
    fused_qkv: bool = False
    qk_norm_eps: float | None = 1e-5
    norm_cast: NormCast = "cast_before_weight"
    time_embedder_bf16: bool = False


# diffusers' layout is the default; every other implementation's variant lives in its adapter's folder.
DIFFUSERS = DiTVariant()


@dataclass(frozen=True)
class DiTConfig:
    """The architecture, read from a diffusers `ZImageTransformer2DModel` config.

    Defaults are Z-Image's (and diffusers'). `n_kv_heads` is accepted and ignored, as in diffusers:
    the attention has no grouped keys.
    """

    in_channels: int = 16
    patch_size: int = 2
    f_patch_size: int = 1
    dim: int = 3840
    n_layers: int = 30
    n_refiner_layers: int = 2
    n_heads: int = 30
    norm_eps: float = 1e-5
    qk_norm: bool = True
    cap_feat_dim: int = 2560
    rope_theta: float = 256.0
    t_scale: float = 1000.0
    axes_dims: tuple[int, ...] = (32, 48, 48)
    axes_lens: tuple[int, ...] = (1024, 512, 512)

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> DiTConfig:
        """Parse a diffusers config dict; ValueError for anything this DiT does not model."""
        known = {f.name for f in fields(cls)} | {"all_patch_size", "all_f_patch_size", "n_kv_heads", "siglip_feat_dim"}
        unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
        if unknown:
            raise ValueError(f"unknown Z-Image DiT config keys: {', '.join(unknown)}")
        if config.get("siglip_feat_dim") is not None:
            raise ValueError("the Omni model (siglip_feat_dim) is not modelled: text-to-image only")
        patches = list(config.get("all_patch_size", (2,)))
        f_patches = list(config.get("all_f_patch_size", (1,)))
        if len(patches) != 1 or f_patches != [1]:
            raise ValueError(f"one spatial patch size and f_patch_size 1 expected, got {patches} / {f_patches}")
        values = {k: config[k] for k in (f.name for f in fields(cls)) if k in config}
        for key in ("axes_dims", "axes_lens"):
            if key in values:
                values[key] = tuple(values[key])
        made = cls(patch_size=patches[0], f_patch_size=1, **values)
        if made.dim % made.n_heads or sum(made.axes_dims) != made.dim // made.n_heads:
            raise ValueError(f"axes_dims {made.axes_dims} must sum to dim / n_heads = {made.dim / made.n_heads}")
        return made

    @property
    def patch_key(self) -> str:
        """The ModuleDict key of the embedder and final layer, as diffusers names it ("2-1")."""
        return f"{self.patch_size}-{self.f_patch_size}"

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, ADALN_MAX_DIM)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float | None, cast: NormCast) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.cast = cast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        if self.cast == "input_dtype":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight
        wide = x.float()
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
        if self.cast == "fp32":
            return (normed * self.weight.float()).to(x.dtype)
        return normed.to(x.dtype) * self.weight


class Attention(nn.Module):
    """Self-attention with per-head q/k RMSNorm and RoPE; q, k, v from one fused matmul or three."""

    def __init__(self, config: DiTConfig, variant: DiTVariant) -> None:
        super().__init__()
        dim, self.heads = config.dim, config.n_heads
        self.fused = variant.fused_qkv
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False)])
        head_dim = dim // self.heads
        self.norm_q = RMSNorm(head_dim, variant.qk_norm_eps, variant.norm_cast) if config.qk_norm else None
        self.norm_k = RMSNorm(head_dim, variant.qk_norm_eps, variant.norm_cast) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope: Rotary) -> torch.Tensor:
        if self.fused:
            weight = stacked_rows([self.to_q.weight, self.to_k.weight, self.to_v.weight])
            q, k, v = F.linear(x, weight).chunk(3, dim=-1)
        else:
            q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        q, k, v = (y.unflatten(-1, (self.heads, -1)) for y in (q, k, v))
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        q, k = rope.apply(q), rope.apply(k)
        # SDPA wants (batch, heads, tokens, head_dim).
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), hidden width int(dim / 3 * 8)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = int(dim / 3 * 8)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre- and post-normed attention and FFN; with `modulation`, adaLN scales and tanh gates.

    `adaLN_modulation` maps adaln to (scale_msa, gate_msa, scale_mlp, gate_mlp); there is no shift
    term and no SiLU before the Linear.
    """

    def __init__(self, config: DiTConfig, variant: DiTVariant, modulation: bool) -> None:
        super().__init__()
        dim, eps, cast = config.dim, config.norm_eps, variant.norm_cast
        self.attention = Attention(config, variant)
        self.feed_forward = FeedForward(dim)
        self.attention_norm1 = RMSNorm(dim, eps, cast)
        self.attention_norm2 = RMSNorm(dim, eps, cast)
        self.ffn_norm1 = RMSNorm(dim, eps, cast)
        self.ffn_norm2 = RMSNorm(dim, eps, cast)
        self.modulation = modulation
        if modulation:
            self.adaLN_modulation = nn.Sequential(nn.Linear(config.adaln_dim, 4 * dim, bias=True))

    def forward(self, x: torch.Tensor, rope: Rotary, adaln: torch.Tensor | None = None) -> torch.Tensor:
        if not self.modulation:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), rope))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.adaLN_modulation(adaln).unsqueeze(1).chunk(4, dim=2)
        attended = self.attention(self.attention_norm1(x) * (1.0 + scale_msa), rope)
        x = x + gate_msa.tanh() * self.attention_norm2(attended)
        fed = self.feed_forward(self.ffn_norm1(x) * (1.0 + scale_mlp))
        return x + gate_mlp.tanh() * self.ffn_norm2(fed)


class TimestepEmbedder(nn.Module):
    def __init__(self, out_dim: int, in_bf16: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(TIME_FREQUENCY_DIM, TIME_HIDDEN_DIM, bias=True),
            nn.SiLU(),
            nn.Linear(TIME_HIDDEN_DIM, out_dim, bias=True),
        )
        self.in_bf16 = in_bf16

    @staticmethod
    def sinusoid(t: torch.Tensor) -> torch.Tensor:
        """(1,) scaled time -> (1, 256) float32 [cos, sin], frequencies 10000^(-i/128)."""
        half = TIME_FREQUENCY_DIM // 2
        freqs = torch.exp(-math.log(TIME_MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        freq = self.sinusoid(t)
        if not self.in_bf16:
            return self.mlp(freq.to(self.mlp[0].weight.dtype)).to(dtype)
        first, act, second = self.mlp
        bf16 = torch.bfloat16
        hidden = act(F.linear(freq.to(bf16), first.weight.to(bf16), first.bias.to(bf16)))
        return F.linear(hidden, second.weight.to(bf16), second.bias.to(bf16)).to(dtype)


class FinalLayer(nn.Module):
    """LayerNorm (no affine) x (1 + Linear(SiLU(adaln))), then Linear to patch pixels; no shift."""

    def __init__(self, dim: int, adaln_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=FINAL_NORM_EPS)
        self.linear = nn.Linear(dim, out_dim, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(adaln_dim, dim, bias=True))

    def forward(self, x: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + self.adaLN_modulation(adaln)
        return self.linear(self.norm_final(x) * scale.unsqueeze(1))


def patchify(image: torch.Tensor, p: int) -> torch.Tensor:
    """(C, H, W) -> (H/p * W/p, p * p * C): tokens row-major, features (patch row, patch col, channel)."""
    c, h, w = image.shape
    return image.reshape(c, h // p, p, w // p, p).permute(1, 3, 2, 4, 0).reshape((h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, channels: int, grid: tuple[int, int], p: int) -> torch.Tensor:
    """The inverse of `patchify` for a (gh, gw) token grid."""
    gh, gw = grid
    return tokens.reshape(gh, gw, p, p, channels).permute(4, 0, 2, 1, 3).reshape(channels, gh * p, gw * p)


def padded_length(n: int) -> int:
    return n + (-n) % SEQ_MULTIPLE


def pad_tokens(tokens: torch.Tensor, pad_token: torch.Tensor) -> torch.Tensor:
    """Append copies of the learned pad token to (B, N, D) tokens, up to a multiple of 32 tokens."""
    batch, n, _ = tokens.shape
    return torch.cat([tokens, pad_token.to(tokens.dtype).expand(batch, padded_length(n) - n, -1)], dim=1)


def token_positions(caption_tokens: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (frame-or-index, row, column) positions: (image incl. pads, caption incl. pads)."""
    cap_len = padded_length(caption_tokens)
    caption = torch.zeros(cap_len, 3, dtype=torch.long)
    caption[:, 0] = torch.arange(1, cap_len + 1)
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    image = torch.zeros(padded_length(gh * gw), 3, dtype=torch.long)
    image[: gh * gw, 0] = cap_len + 1
    image[: gh * gw, 1] = rows.flatten()
    image[: gh * gw, 2] = cols.flatten()
    return image, caption


class ZImageDiT(nn.Module):
    def __init__(self, config: DiTConfig, variant: DiTVariant = DIFFUSERS) -> None:
        super().__init__()
        self.config, self.variant = config, variant
        dim, p = config.dim, config.patch_size
        self.t_embedder = TimestepEmbedder(config.adaln_dim, variant.time_embedder_bf16)
        self.all_x_embedder = nn.ModuleDict({config.patch_key: nn.Linear(p * p * config.in_channels, dim, bias=True)})
        self.cap_embedder = nn.Sequential(
            RMSNorm(config.cap_feat_dim, config.norm_eps, variant.norm_cast),
            nn.Linear(config.cap_feat_dim, dim, bias=True),
        )
        self.x_pad_token = nn.Parameter(torch.zeros(1, dim))
        self.cap_pad_token = nn.Parameter(torch.zeros(1, dim))
        refiners = range(config.n_refiner_layers)
        self.noise_refiner = nn.ModuleList([TransformerBlock(config, variant, modulation=True) for _ in refiners])
        self.context_refiner = nn.ModuleList([TransformerBlock(config, variant, modulation=False) for _ in refiners])
        layers = range(config.n_layers)
        self.layers = nn.ModuleList([TransformerBlock(config, variant, modulation=True) for _ in layers])
        out_dim = p * p * config.in_channels
        self.all_final_layer = nn.ModuleDict({config.patch_key: FinalLayer(dim, config.adaln_dim, out_dim)})

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], config: DiTConfig, variant: DiTVariant = DIFFUSERS
    ) -> ZImageDiT:
        """A DiT whose parameters ARE the given tensors (shared storage, no copy), in eval mode.

        Keys must be diffusers' layout exactly, whatever the variant; a missing or extra key raises.
        """
        with torch.device("meta"):
            model = cls(config, variant)
        model.load_state_dict(dict(state), strict=True, assign=True)
        return model.eval()

    def _rotary(self, positions: torch.Tensor, device: torch.device) -> Rotary:
        c = self.config
        return rotary(positions.to(device), c.axes_dims, c.axes_lens, c.rope_theta, self.variant.rope)

    def forward(self, latent: torch.Tensor, t: torch.Tensor, cap_feats: torch.Tensor) -> torch.Tensor:
        """The raw DiT output: what diffusers' transformer returns, before the pipeline negates it.

        One sample: latent (C, H, W) or (1, C, H, W), t a scalar or (1,), cap_feats (L >= 1,
        cap_feat_dim) -> (C, H, W). A batch: latent (B, C, H, W), t (B,), cap_feats (B, L, cap_feat_dim)
        -> (B, C, H, W). H and W must be multiples of the patch size (ValueError otherwise: padding or
        rounding is the caller's choice, and implementations choose differently). t is the model time
        `1 - sigma`, multiplied by t_scale in its own dtype, the sinusoid taken in float32, as diffusers
        does (pass float32 to match it); cap_feats are the caption rows as the implementation hands them.
        """
        c, p = self.config, self.config.patch_size
        batched = cap_feats.ndim == 3
        images = latent if batched or latent.ndim == 4 else latent[None]
        caps = cap_feats if batched else cap_feats[None]
        if images.ndim != 4 or images.shape[1] != c.in_channels or len(images) != len(caps):
            raise ValueError(f"latent must be ({c.in_channels}, H, W) or one per caption, got {tuple(latent.shape)}")
        batch, channels, height, width = images.shape
        if height % p or width % p:
            raise ValueError(f"latent {height}x{width} is not divisible by the patch size {p}")
        if caps.ndim != 3 or caps.shape[2] != c.cap_feat_dim or not caps.shape[1]:
            raise ValueError(f"cap_feats must be ([B,] L >= 1, {c.cap_feat_dim}), got {tuple(cap_feats.shape)}")
        if t.numel() != batch:
            raise ValueError(f"{batch} time value(s) expected, got shape {tuple(t.shape)}")
        dtype, device = self.x_pad_token.dtype, self.x_pad_token.device
        adaln = self.t_embedder(t.reshape(batch).to(device) * c.t_scale, dtype)

        grid = (height // p, width // p)
        patches = torch.stack([patchify(image, p) for image in images.to(device, dtype)])
        x = pad_tokens(self.all_x_embedder[c.patch_key](patches), self.x_pad_token)
        cap = pad_tokens(self.cap_embedder(caps.to(device, dtype)), self.cap_pad_token)
        image_pos, cap_pos = token_positions(caps.shape[1], grid)

        image_rope = self._rotary(image_pos, device)
        for block in self.noise_refiner:
            x = block(x, image_rope, adaln)
        cap_rope = self._rotary(cap_pos, device)
        for block in self.context_refiner:
            cap = block(cap, cap_rope)

        image_first = self.variant.joint_order == "image_caption"
        parts, positions = ((x, cap), (image_pos, cap_pos)) if image_first else ((cap, x), (cap_pos, image_pos))
        joint = torch.cat(parts, dim=1)
        joint_rope = self._rotary(torch.cat(positions), device)
        for block in self.layers:
            joint = block(joint, joint_rope, adaln)
        out = self.all_final_layer[c.patch_key](joint, adaln)

        start = 0 if image_first else cap.shape[1]
        tokens = out[:, start : start + grid[0] * grid[1]]
        result = torch.stack([unpatchify(sample, channels, grid, p) for sample in tokens])
        return result if batched else result[0]
