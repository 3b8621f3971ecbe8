"""The installed DiffSynth-Engine (`diffsynth_engine`) `ZImagePipeline`, driven as-is on the harness's weights.

Nothing here re-implements DiffSynth-Engine; the adapter builds the real pipeline from the run's
shared models and observes what its own calls do:
- template, tokens, embeddings: its `encode_prompt` (the template it hard-codes, its own tokenizer,
  the shipped `conf/tokenizers/z_image` files, its own `Qwen3Model`), through a recording proxy of
  that tokenizer (the string handed over is the template) and a forward pre-hook on the encoder (the
  ids and mask it receives); the rows are the masked-in ones it returns;
- schedule: one real `pipe(...)` call. The sigmas are what its `prepare_latents` returns (its
  `RecifitedFlowScheduler`, with the `mu` its call computes from the image size, cast to the
  pipeline dtype); `model_t` is the time its `predict_noise` hands the DiT, `(1000 - t) / 1000` in
  the pipeline dtype (the DiT scales it by 1000). That stand-in `predict_noise` returns zeros, so
  the schedule never runs the DiT, and the call stops at its decode;
- noise: its own `generate_noise` with the shape and device its call uses;
- denoise: one real `pipe(...)` call with the given embeddings (its `encode_prompt` replaced on our
  instance), the given starting latent (its `generate_noise` replaced), teacher-forced the given
  sigmas (its `prepare_latents` replaced), and its own DiT on the shared weights. The velocity and
  latent of each step are what its sampler's `step` is handed and returns (wrapped on our
  instance); teacher-forced, that wrapper returns the reference's next latent;
- decode: its `decode_image` on its own `FluxVAEDecoder` (over the shared weights, as
  `implementations/diffsynth_live/vae.py` does for DiffSynth-Studio's) and its `vae_output_to_image`.

Guidance: the case's `cfg` is the scale of `neg + cfg (pos - neg)`; DiffSynth-Engine combines
`pos + s (pos - neg)`, so it is called with `cfg_scale = cfg - 1` (cfg 1: 0, its "no guidance").
A case that gives no negative prompt calls it without one (`negative_prompt=None`, its default), and
then it runs without guidance whatever the scale.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers

from implementations.diffsynth_engine_live import library
from implementations.zimage.observed_text import ObservedText, ObservedTextStages, recording_encoder_inputs
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case

_POSITIVE, _NEGATIVE = "<given positive embeddings>", "<given negative embeddings>"


class _Finished(Exception):
    """Raised by the stand-in `decode_image`: the sampling loop is done."""


class _RecordingTokenizer:
    """The library's tokenizer as its pipeline sees it; records each text it is asked to tokenize."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.tokenized: list[str] = []

    def __call__(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.tokenized.extend(texts)
        return self._tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "_tokenizer":
            raise AttributeError(name)
        return getattr(self._tokenizer, name)


def _stop(*_: Any, **__: Any) -> None:
    raise _Finished


class DiffSynthEngineLiveAdapter(ObservedTextStages, Adapter):
    name: ClassVar[str] = "diffsynth_engine_live"
    summary: ClassVar[str] = "the installed DiffSynth-Engine ZImagePipeline, driven live (references environment)"
    reference_priority: ClassVar[int | None] = 5
    text_call: ClassVar[str] = "DiffSynth-Engine's encode_prompt"
    in_default_run: ClassVar[bool] = False

    @classmethod
    def missing_requirement(cls, checkouts: Mapping[str, Path]) -> str | None:
        return None if library.available() else f"the diffsynth-engine package is not installed: {library.INSTALL_HINT}"

    @staticmethod
    def _library() -> Any:
        if not library.available():
            raise Unsupported(f"the diffsynth-engine package is not installed: {library.INSTALL_HINT}")
        return library.load()

    # Its models on the shared weights. Built per call, not kept: a kept module would hold the
    # weights after the context lets them go.

    def _text_encoder(self) -> torch.nn.Module:
        shared = self.context.text_encoder
        return self._library().Qwen3Model.from_state_dict(
            dict(shared.state_dict()), copy.deepcopy(shared.config), device=self.context.device,
            dtype=self.context.torch_dtype,
        )

    def _dit(self, weights: bool = True) -> torch.nn.Module:
        config = {k: v for k, v in self.context.dit_config.items() if not k.startswith("_")}
        lib = self._library()
        if not weights:
            with torch.device("meta"):
                return lib.ZImageDiT(device="meta", dtype=self.context.torch_dtype, **config)
        return lib.ZImageDiT.from_state_dict(
            dict(self.context.dit_state_dict), device=self.context.device, dtype=self.context.torch_dtype, **config
        ).eval()

    def _vae_decoder(self) -> torch.nn.Module:
        """Its `FluxVAEDecoder` (the real Flux widths, hard-coded) built on the meta device, its
        parameters then set to the shared tensors as its own converter names them; the attention's
        head width, read from the constructor, set to the weights'."""
        lib = self._library()
        with torch.device("meta"):
            decoder = lib.FluxVAEDecoder(device="meta", dtype=self.context.torch_dtype)
        converted = decoder.converter.convert(dict(self.context.vae_state_dict))
        if set(converted) != set(decoder.state_dict()):
            odd = sorted(set(converted) ^ set(decoder.state_dict()))[0]
            raise RuntimeError(f"the VAE weights do not fit DiffSynth-Engine's FluxVAEDecoder: {odd}")
        for name, tensor in converted.items():
            owner, _, attribute = name.rpartition(".")
            value = tensor.to(device=self.context.device, dtype=self.context.torch_dtype)
            setattr(decoder.get_submodule(owner), attribute, torch.nn.Parameter(value, requires_grad=False))
        for module in decoder.modules():
            if hasattr(module, "head_dim") and hasattr(module, "to_q"):
                module.head_dim = module.to_q.weight.shape[0] // module.num_heads
        return decoder.eval()

    def _pipeline(self, **models: torch.nn.Module | None) -> Any:
        lib = self._library()
        dtype = self.context.torch_dtype
        config = lib.ZImagePipelineConfig(
            model_path="", device=self.context.device, model_dtype=dtype, encoder_dtype=dtype, vae_dtype=dtype
        )
        tokenizer = _RecordingTokenizer(lib.Qwen2TokenizerFast.from_pretrained(str(lib.tokenizer_folder)))
        parts = {"text_encoder": None, "dit": None, "vae_decoder": None} | models
        return lib.ZImagePipeline(config=config, tokenizer=tokenizer, **parts).eval()

    def _call(self, pipe: Any, case: Case, negative: bool) -> None:
        """One `pipe(...)` call for the case, up to (not including) the decode."""
        pipe.decode_image = _stop
        try:
            # Its loop draws a progress bar on stderr, which carries the run's own progress.
            with contextlib.redirect_stderr(io.StringIO()):
                pipe(
                    prompt=_POSITIVE, negative_prompt=_NEGATIVE if negative else None, height=case.height,
                    width=case.width, num_inference_steps=case.steps, cfg_scale=case.cfg - 1, seed=case.seed,
                )
        except _Finished:
            return
        raise RuntimeError("ZImagePipeline returned without reaching its decode")

    def check_supported(self, case: Case) -> None:
        self._library()
        if not case.is_plain_prompt:
            raise Unsupported("DiffSynth-Engine's ZImagePipeline encodes a single user prompt only")
        if case.sampler != "euler":
            raise Unsupported(f"DiffSynth-Engine's FlowMatchEulerSampler is an Euler step; it has no {case.sampler}")
        if case.height % 16 or case.width % 16:
            raise Unsupported(f"DiffSynth-Engine refuses {case.height}x{case.width}: sides must be multiples of 16")
        if case.denoise != 1.0:
            raise Unsupported("DiffSynth-Engine's text-to-image call has no denoising strength")

    # Text stages: one run of its encode_prompt, observed

    def observe_text(self, case: Case) -> ObservedText:
        pipe = self._pipeline(text_encoder=self._text_encoder())
        with recording_encoder_inputs(pipe.text_encoder) as seen, torch.no_grad():
            rows = pipe.encode_prompt(case.user_text)
        if len(pipe.tokenizer.tokenized) != 1:
            raise RuntimeError(f"expected one string handed to the tokenizer, got {len(pipe.tokenizer.tokenized)}")
        return ObservedText.of(pipe.tokenizer.tokenized[0], seen, rows[0].float().cpu())

    # Sampling stages

    def schedule(self, case: Case) -> Schedule:
        pipe = self._pipeline(dit=self._dit(weights=False))
        pipe.encode_prompt = lambda prompt: None if prompt is None else [torch.zeros(1, 1)]
        prepared, handed = [], []
        prepare = pipe.prepare_latents

        def recording_prepare(*args: Any, **kwargs: Any) -> Any:
            prepared.append(prepare(*args, **kwargs))
            return prepared[-1]

        def time_only(latents: torch.Tensor, timestep: torch.Tensor, prompt_emb: Any) -> list[torch.Tensor]:
            handed.append(timestep.detach().cpu().to(torch.float64).reshape(-1))
            return [torch.zeros_like(latents[0]).unsqueeze(1)]

        pipe.prepare_latents, pipe.predict_noise = recording_prepare, time_only
        self._call(pipe, case, negative=False)
        _, sigmas, _ = prepared[0]
        return Schedule(sigmas=sigmas.detach().cpu().to(torch.float64), model_t=torch.cat(handed))

    def noise(self, case: Case) -> torch.Tensor:
        """Its own draw, as its call makes it: `randn` of (1, 16, H/8, W/8) in the pipeline dtype
        from a CPU generator seeded with the seed; returned as float32."""
        pipe = self._pipeline()
        shape = (1, 16, case.height // 8, case.width // 8)
        return pipe.generate_noise(shape, seed=case.seed, device="cpu", dtype=pipe.dtype).float()

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        self._library()
        if case.cfg_normalization != 0.0 or case.cfg_truncation != 1.0:
            raise Unsupported("the harness does not drive DiffSynth-Engine's cfg_normalization or cfg_truncation")
        pipe = self._pipeline(dit=self._dit())
        if not torch.equal(inputs.schedule.sigmas.double(), self.schedule(case).sigmas):
            # Another implementation's sigmas (teacher-forced), handed over where its own scheduler's
            # come out, with its scheduler's timesteps for them (`sigmas * 1000`, recifited_flow.py);
            # the DiT's time input is then its own `(1000 - t) / 1000` of those.
            sigmas = inputs.schedule.sigmas

            def given_schedule(latents: torch.Tensor, *_: Any) -> tuple[torch.Tensor, ...]:
                cast = {"device": pipe.device, "dtype": pipe.dtype}
                return latents.to(**cast), sigmas.to(**cast), (sigmas[:-1] * 1000).to(**cast)

            pipe.prepare_latents = given_schedule
        negative = bool(case.negative_prompt) and inputs.negative is not None
        given = {_POSITIVE: inputs.positive.hidden, _NEGATIVE: inputs.negative.hidden if negative else None}

        def given_embeddings(prompt: str | None) -> list[torch.Tensor] | None:
            rows = given.get(prompt)
            return None if rows is None else [rows.to(device=pipe.device, dtype=pipe.dtype)]

        forced = inputs.forced_latents
        start = forced[0].unsqueeze(0) if forced is not None else inputs.noise

        def given_noise(shape: tuple[int, ...], *_: Any, dtype: torch.dtype = torch.float32, **__: Any) -> Any:
            if tuple(shape) != tuple(start.shape):
                raise Unsupported(
                    f"DiffSynth-Engine samples a {tuple(shape)} latent; the given one is {tuple(start.shape)}"
                )
            return start.to(dtype=dtype)

        velocities, latents = [], []
        step = pipe.sampler.step

        def recording_step(current: torch.Tensor, velocity: torch.Tensor, k: int) -> torch.Tensor:
            if not latents:
                latents.append(current.detach().float().cpu())
            velocities.append(velocity.detach().float().cpu())
            out = step(current, velocity, k)
            latents.append(out.detach().float().cpu())
            if forced is not None and k + 1 < case.steps:
                return forced[k + 1].unsqueeze(0).to(dtype=out.dtype, device=out.device)
            return out

        pipe.encode_prompt, pipe.generate_noise, pipe.sampler.step = given_embeddings, given_noise, recording_step
        self._call(pipe, case, negative=negative)
        return Denoise(model_out=torch.cat(velocities), latents=torch.cat(latents))

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        """What its call does after the loop: `decode_image` (the latent in the VAE's dtype), then
        `vae_output_to_image` (the saved image). The float image is that function's last float values,
        `(x / 2 + 0.5).clip(0, 1)`."""
        pipe = self._pipeline(vae_decoder=self._vae_decoder())
        with torch.no_grad():
            out = pipe.decode_image(latent.to(dtype=pipe.dtype, device=pipe.device))
        saved = torch.from_numpy(np.asarray(pipe.vae_output_to_image(out)).copy())
        image = (out[0].float() / 2 + 0.5).clip(0, 1).permute(1, 2, 0).cpu()
        return Decoded(image.contiguous(), saved)

    def versions(self) -> dict[str, str]:
        return {
            "diffsynth-engine": library.installed_version() or "not installed",
            "transformers": transformers.__version__,
        }
