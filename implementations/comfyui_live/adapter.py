"""ComfyUI from a checkout, driven live, headless: its own code for every stage, observed.

Nothing here re-implements ComfyUI; the adapter builds ComfyUI's own objects around the run's
shared weights (`models.py`) and calls them as its nodes do:
- template: the string `ZImageTokenizer` formats and hands to its inner `SDTokenizer`, recorded
  from that call;
- tokens: that inner tokenizer on the given template (`disable_weights=True`, as Z-Image's calls
  it), and the mask ComfyUI's encoder builds from the ids (`SDClipModel.process_tokens`);
- embeddings: `CLIP.encode_from_tokens` on the given ids: ComfyUI's own Qwen3 implementation (not
  transformers'), `layer_idx=-2`, its weights in the run's dtype and its compute in float32, as
  `CLIP` sets it; the rows it returns and the `attention_mask` it returns with them;
- schedule: the sigmas of ComfyUI's own `KSampler` (scheduler `simple`) on a model whose sampling
  `ModelSamplingAuraFlow` patched with the case's shift; `model_t` is what `NextDiT` hands its time
  embedder (a forward pre-hook that stops the call there, so the DiT, built on the meta device,
  never computes), over 1000;
- noise: `EmptySD3LatentImage`, then `comfy.sample.prepare_noise` with the seed;
- denoise: ComfyUI's `CFGGuider` (its cond/uncond batching, its cfg-1 shortcut) and its own sampler
  function, run through a `KSAMPLER` whose function wraps the real one: free-running, one call,
  the latent before each step read from the sampler's callback and the last one from its return
  (before the guider unscales it for the VAE); teacher-forced, the real function once per step
  from the given latent (the Euler sampler keeps nothing between steps, so this is its own loop;
  `res_multistep` keeps the previous step's prediction, so it runs free only). The velocity
  recorded is the one each step applied, `(x_next - x) / (sigma_next - sigma)`. The negative is the
  official workflow's `ConditioningZeroOut` of the positive, or with `negative_conditioning =
  "encoded"` the negative prompt's own CONDITIONING;
- decode: the guider's unscale (`process_latent_out`: the Z-Image latent format's `process_out`, in float32),
  `VAEDecode`, then `SaveImage` writing a PNG into a temporary folder, read back.

The DiT ComfyUI builds on a CPU is float32 whatever the weights' dtype (`unet_dtype`), so a bf16
case samples in float32 here, as it does in ComfyUI on a CPU.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from implementations.comfyui_live import library, models
from implementations.comfyui_live.checkout import COMFYUI
from implementations.comfyui_style.adapter import richer_than_a_prompt
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case
from parity.suite.checkouts import Checkout

SCHEDULER = "simple"


def token_ids(batches: list) -> list[int]:
    """The ids of ComfyUI's tokenizer output (batches of (token, weight[, word id]))."""
    return [int(token) for batch in batches for token, *_ in batch]


@contextmanager
def recording_tokenizer(tokenizer: Any) -> Iterator[list[tuple[str, list[int]]]]:
    """Within: each string `ZImageTokenizer` hands its inner tokenizer, with the ids it got back."""
    inner = getattr(tokenizer, tokenizer.clip)
    tokenize, handed = inner.tokenize_with_weights, []

    def recording(text: str, *args: Any, **kwargs: Any) -> Any:
        out = tokenize(text, *args, **kwargs)
        handed.append((text, token_ids(out)))
        return out

    inner.tokenize_with_weights = recording
    try:
        yield handed
    finally:
        del inner.tokenize_with_weights


def conditioning_rows(cond: torch.Tensor, extra: dict) -> Embeddings:
    """The rows of one CONDITIONING entry and the mask that came with them (none: every row is real)."""
    hidden, mask = cond[0].float().cpu(), extra.get("attention_mask")
    rows = mask[0].bool().cpu() if mask is not None else torch.ones(hidden.shape[0], dtype=torch.bool)
    return Embeddings(hidden, rows)


class _TimeSeen(Exception):
    """Raised by the time embedder's pre-hook in a schedule run: nothing after it computes."""


class ComfyUILiveAdapter(Adapter):
    name: ClassVar[str] = "comfyui_live"
    summary: ClassVar[str] = "ComfyUI from a checkout (--comfyui), its own nodes driven headless (live)"
    reference_priority: ClassVar[int | None] = 3
    checkouts: ClassVar[tuple[Checkout, ...]] = (COMFYUI,)

    @property
    def comfy(self) -> SimpleNamespace:
        return library.load(self.context.checkouts[COMFYUI.name], torch.device(self.context.device).type)

    def versions(self) -> dict[str, str]:
        return library.describe(self.context.checkouts[COMFYUI.name])

    def caveats(self, case: Case) -> dict[str, str]:
        if case.dtype != "bf16":
            return {}
        mm = self.comfy.model_management
        # The working dtypes `VAE` gives a VAE of this layout.
        chosen = {
            "denoise": ("DiT", models.dit_dtype(self.comfy, self.context)),
            "decode": ("VAE", mm.vae_dtype(mm.vae_device(), [torch.bfloat16, torch.float32])),
        }
        where = mm.get_torch_device().type
        return {
            stage: f"ComfyUI on this {where} runs the {part} of a bf16 case in {shown}: these are {shown} numbers"
            for stage, (part, dtype) in chosen.items()
            if dtype != torch.bfloat16
            for shown in [str(dtype).removeprefix("torch.")]
        }

    def check_supported(self, case: Case) -> None:
        extra = richer_than_a_prompt(case)
        if extra is not None:
            raise Unsupported(f"ComfyUI's text encode node takes one prompt; the case sets {extra}")

    # Text stages

    @cached_property
    def _tokenizer(self) -> Any:
        return self.comfy.z_image.ZImageTokenizer()

    def template(self, case: Case) -> Template:
        with recording_tokenizer(self._tokenizer) as handed:
            self._tokenizer.tokenize_with_weights(case.user_text)
        if len(handed) != 1:
            raise RuntimeError(f"expected one string handed to ComfyUI's tokenizer, got {len(handed)}")
        return Template(handed[0][0])

    def _mask(self, clip: Any, ids: list[int]) -> list[int]:
        encoder = getattr(clip.cond_stage_model, models.TEXT_ENCODER_NAME)
        _, mask, _, _ = encoder.process_tokens([ids], torch.device("cpu"))
        return [int(m) for m in mask[0].tolist()] if mask is not None else [1] * len(ids)

    def tokens(self, case: Case, template: Template) -> Tokens:
        inner = getattr(self._tokenizer, self._tokenizer.clip)
        ids = token_ids(inner.tokenize_with_weights(template.text, False, disable_weights=True))
        return Tokens(ids, self._mask(models.text_encoder(self.comfy, self.context), ids))

    def embeddings(self, case: Case, tokens: Tokens) -> Embeddings:
        clip = models.text_encoder(self.comfy, self.context)
        if self._mask(clip, tokens.input_ids) != tokens.attention_mask:
            raise Unsupported("ComfyUI's encoder builds its own mask from the pad token; it cannot take another")
        pairs = {models.TEXT_ENCODER_NAME: [[(i, 1.0) for i in tokens.input_ids]]}
        with torch.no_grad():
            out = clip.encode_from_tokens(pairs, return_dict=True)
        return conditioning_rows(out.pop("cond"), out)

    # Sampling stages

    def schedule(self, case: Case) -> Schedule:
        patcher = models.dit(self.comfy, self.context, case.shift, weights=False)
        sampler = self.comfy.samplers.KSampler(
            patcher, steps=case.steps, device=torch.device("cpu"), sampler=case.sampler, scheduler=SCHEDULER,
            denoise=case.denoise,
        )
        sigmas = sampler.sigmas.to(torch.float64).cpu()
        model = patcher.model
        # What `ModelPatcher` sets on the model while it samples: the patched model sampling.
        model.model_sampling = patcher.get_model_object("model_sampling")
        handed: list[torch.Tensor] = []

        def stop(_module: torch.nn.Module, args: tuple) -> None:
            handed.append(args[0].detach().to(torch.float64).cpu().reshape(-1))
            raise _TimeSeen

        hook = model.diffusion_model.t_embedder.register_forward_pre_hook(stop)
        channels = self.context.dit_config["in_channels"]
        try:
            for sigma in sampler.sigmas[:-1]:
                try:
                    model.apply_model(
                        torch.zeros(1, channels, 2, 2), sigma.reshape(1).float(),
                        c_crossattn=torch.zeros(1, 1, self.context.dit_config["cap_feat_dim"]), num_tokens=1,
                    )
                except _TimeSeen:
                    continue
                raise RuntimeError("NextDiT returned without reaching its time embedder")
        finally:
            hook.remove()
        return Schedule(sigmas=sigmas, model_t=torch.cat(handed) / self.context.dit_config["t_scale"])

    def noise(self, case: Case) -> torch.Tensor:
        latent = self.comfy.nodes_sd3.EmptySD3LatentImage.execute(case.width, case.height, 1).result[0]
        return self.comfy.sample.prepare_noise(latent["samples"], case.seed).float()

    def _conditioning(self, rows: Embeddings) -> list:
        """A CONDITIONING as `CLIPTextEncode` outputs it: the rows, with the mask they came with."""
        return [[rows.hidden.unsqueeze(0), {"attention_mask": rows.mask.long().unsqueeze(0)}]]

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        comfy = self.comfy
        if inputs.forced_latents is not None and case.sampler != "euler":
            raise Unsupported(
                f"ComfyUI's {case.sampler} sampler carries its history from step to step inside one call; "
                "it cannot restart each step from a given latent"
            )
        positive = self._conditioning(inputs.positive)
        if case.negative_conditioning == "encoded" and inputs.negative is not None:
            negative = self._conditioning(inputs.negative)
        else:
            negative = comfy.nodes.ConditioningZeroOut().zero_out(positive)[0]
        patcher = models.dit(comfy, self.context, case.shift)
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(positive, negative)
        guider.set_cfg(case.cfg)
        sigmas = inputs.schedule.sigmas.to(torch.float32)
        real = comfy.samplers.ksampler(case.sampler)
        seen: dict[str, Any] = {}

        def observed(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Any = None,
                     callback: Callable | None = None, disable: Any = None, **options: Any) -> torch.Tensor:
            run = real.sampler_function
            if inputs.forced_latents is None:
                before: list[torch.Tensor] = []
                out = run(model, x, sigmas, extra_args=extra_args, callback=lambda d: before.append(d["x"].clone()),
                          disable=disable, **options)
                seen["latents"] = [*before, out]
                return out
            seen["latents"] = [x]
            starts = []
            for k in range(len(sigmas) - 1):
                start = inputs.forced_latents[k].unsqueeze(0).to(x)
                starts.append(start)
                seen["latents"].append(run(model, start, sigmas[k : k + 2], extra_args=extra_args, disable=disable,
                                           **options))
            seen["starts"] = starts
            return seen["latents"][-1]

        sampler = comfy.samplers.KSAMPLER(observed, real.extra_options, real.inpaint_options)
        latent = torch.zeros_like(inputs.noise)
        with torch.no_grad():
            guider.sample(inputs.noise, latent, sampler, sigmas, disable_pbar=True, seed=case.seed)
        latents = torch.cat([x.float().cpu() for x in seen["latents"]])
        starts = torch.cat([x.float().cpu() for x in seen["starts"]]) if "starts" in seen else latents[:-1]
        drops = (sigmas[1:] - sigmas[:-1]).reshape(-1, 1, 1, 1)
        return Denoise(model_out=(latents[1:] - starts) / drops, latents=latents)

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        comfy = self.comfy
        latent_format = comfy.supported_models.ZImage(models.dit_config(self.context)).latent_format
        samples = latent_format.process_out(latent.to(torch.float32))
        vae = models.vae(comfy, self.context)
        with torch.no_grad():
            images = comfy.nodes.VAEDecode().decode(vae, {"samples": samples})[0]
        with tempfile.TemporaryDirectory() as folder:
            node = comfy.nodes.SaveImage()
            node.output_dir = folder
            saved = node.save_images(images, "parity")["ui"]["images"][0]
            with Image.open(Path(folder) / saved["subfolder"] / saved["filename"]) as png:
                pixels = np.array(png.convert("RGB"))
        return Decoded(images[0].float().cpu().contiguous(), torch.from_numpy(pixels))
