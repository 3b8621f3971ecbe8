"""The installed DiffSynth-Studio (`diffsynth`) `ZImagePipeline`, driven as-is on the harness's weights.

Nothing here re-implements DiffSynth; the adapter builds the real pipeline, gives it the run's
shared models, calls it, and observes what it does:
- template and tokens: the pipeline's own prompt unit (`ZImageUnit_PromptEmbedder`, run by the
  pipeline's unit runner as `__call__` runs it) renders and tokenizes through a recording proxy of
  our tokenizer (the string handed to the tokenizer call is the template), and a forward pre-hook
  on the text encoder records the ids and mask it is handed;
- embeddings: the masked-in rows the unit returns;
- schedule: one real `pipe(...)` call; the sigmas are its own `FlowMatchScheduler("Z-Image")`'s
  after the call, and `model_t` is what its Turbo model function hands `dit.t_embedder` (a forward
  pre-hook), divided by 1000. The hook stops the model function right there (the step then applies
  a zero velocity), so the schedule never runs the DiT: it is built on the meta device, no weights;
- noise: its own `ZImageUnit_ShapeChecker` and `ZImageUnit_NoiseInitializer` (`generate_noise`);
- denoise: one real `pipe(...)` call. The velocity each step applies and the latent it produces
  are what the pipeline hands its scheduler's `step` and what that returns (that bound method is
  wrapped on our own scheduler instance); teacher forcing returns the reference's next latent from
  that wrapper, which the loop stores as its latents. The starting latent comes in through our own
  pipeline instance's `generate_noise` (DiffSynth has no `latents=` argument), the given prompt
  embeddings through a unit that replaces the prompt unit in our instance's unit list, and the
  loop ends at decode: a stand-in `vae_decoder` stops the call, as there is no latent output type;
- decode: the pipeline's own steps after its loop, on its `vae_decoder` (DiffSynth's
  `FluxVAEDecoder` over the shared weights, `vae.py`) and its `vae_output_to_image`.

How the pipeline is put together (DiffSynth's loader identifies models by a hash of their keys and
shapes, so it does not recognise the tiny models): `ZImagePipeline(device, torch_dtype)` with the
run's text encoder (a bare `Qwen3Model`: DiffSynth's `ZImageTextEncoder` only wraps one and
forwards its arguments), tokenizer, and a `ZImageDiT` holding the shared DiT weights (DiffSynth's
keys are diffusers'; the learned pad tokens, which `ZImageDiT` creates uninitialised, are set by
them). The attention backend is pinned to torch SDPA (see `library.py`).

What DiffSynth cannot run is reported, not worked around:
- anything but one user prompt (its prompt unit takes a prompt string, batch of one);
- sampling in fp32: `TimestepEmbedder.forward` casts its sinusoid to bf16 before the time MLP
  (`models/z_image_dit.py:56`), so a DiT in fp32 fails there; with the time embedder in bf16 the
  Turbo model function hands its bf16 output straight to the fp32 adaLN layers
  (`pipelines/z_image.py:595`, `t_noisy` is never cast back, unlike `ZImageDiT.forward`) and fails in
  the first noise-refiner block (`models/z_image_dit.py:227`). So only bf16 pipelines sample;
- diffusers' `cfg_normalization` and `cfg_truncation`, which DiffSynth does not have;
- a given starting latent of another shape than the one it draws (it rounds sizes up to 16);
- another implementation's template, tokens or schedule (its calls produce their own): a schedule
  with its sigmas but another `model_t` (diffusers' `1 - sigma`, say, in a bf16 teacher-forced run)
  is refused too, since the loop always hands the DiT its own time input.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import transformers

from implementations.diffsynth_live import library
from implementations.diffsynth_live.vae import diffsynth_vae_decoder
from implementations.zimage.dit_capture import capture_blocks
from implementations.zimage.observed_text import ObservedText, ObservedTextStages, recording_encoder_inputs
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case

# What the prompt unit is asked to encode in a sampling call; the replacement unit maps these to the
# given embeddings (only the prompt unit reads the prompt).
_POSITIVE, _NEGATIVE = "<given positive embeddings>", "<given negative embeddings>"
_FP32_SAMPLING = (
    "DiffSynth's Turbo model function cannot sample in {dtype}: its time embedder casts the sinusoid to "
    "bf16 (z_image_dit.py:56) and model_fn_z_image_turbo feeds the bf16 result to the adaLN layers "
    "uncast (z_image.py:595), so only a bf16 pipeline runs"
)


class _Finished(Exception):
    """Raised by the stand-in decoder: the sampling loop is done and nothing is decoded."""


class _TimeSeen(Exception):
    """Raised by the time-embedder pre-hook of a schedule run: the model function stops there."""


class _StopAtDecode(torch.nn.Module):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        raise _Finished


class _RecordingTokenizer:
    """Our tokenizer as the pipeline sees it; records what it renders and what it is asked to tokenize."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.rendered: list[str] = []
        self.tokenized: list[str] = []

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        out = self._tokenizer.apply_chat_template(*args, **kwargs)
        self.rendered.append(out)
        return out

    def __call__(self, text: str | list[str], *args: Any, **kwargs: Any) -> Any:
        self.tokenized.extend([text] if isinstance(text, str) else list(text))
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "_tokenizer":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self._tokenizer, name)


def _quiet(steps: Iterable) -> Iterable:
    """The progress bar the pipeline is given: none."""
    return steps


@contextlib.contextmanager
def _no_prints() -> Iterator[None]:
    # The pipeline prints notices to stdout ("height % 16 != 0. We round it up to 144.", once per call);
    # stdout carries `--json` output and stderr the run's progress, so they are dropped. What they say
    # shows up as data: the latent shape.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class DiffSynthLiveAdapter(ObservedTextStages, Adapter):
    name: ClassVar[str] = "diffsynth_live"
    summary: ClassVar[str] = (
        f"the installed DiffSynth-Studio {library.installed_version() or '(not installed)'} ZImagePipeline (live)"
    )
    reference_priority: ClassVar[int | None] = 2
    text_call: ClassVar[str] = "DiffSynth's prompt unit"
    # It needs the references environment; elsewhere every row would read "not supported".
    in_default_run: ClassVar[bool] = False

    # The installed library and the pipeline

    @classmethod
    def missing_requirement(cls, checkouts: Mapping[str, Path]) -> str | None:
        return None if library.available() else f"the diffsynth package is not installed: {library.INSTALL_HINT}"

    @staticmethod
    def _library() -> Any:
        if not library.available():
            raise Unsupported(f"the diffsynth package is not installed: {library.INSTALL_HINT}")
        return library.load()

    def _pipeline(self, dit: torch.nn.Module | None, encodes_text: bool = False) -> Any:
        lib = self._library()
        pipe = lib.ZImagePipeline(device=self.context.device, torch_dtype=self.context.torch_dtype)
        # Only a pipeline that encodes text gets the encoder, so the DiT stages never load it again
        # after the context has released it.
        if encodes_text:
            pipe.text_encoder = self.context.text_encoder
        pipe.tokenizer = _RecordingTokenizer(self.context.tokenizer)
        if dit is not None:
            pipe.dit = dit
        return pipe

    def _dit_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.context.dit_config.items() if not k.startswith("_")}

    def dit(self) -> torch.nn.Module:
        """DiffSynth's `ZImageDiT` holding the shared DiT weights (assigned, not copied). Built per call,
        not kept: a kept module would hold the weights after the context lets them go."""
        with torch.device("meta"):
            model = self._library().ZImageDiT(**self._dit_config())
        model.load_state_dict(self.context.dit_state_dict, strict=True, assign=True)
        return model.eval()

    def _unit(self, pipe: Any, kind: type) -> Any:
        return next(unit for unit in pipe.units if isinstance(unit, kind))

    def _give_prompt_embeds(self, pipe: Any, embeds: dict[str, torch.Tensor]) -> None:
        """Replace the prompt unit in our pipeline's unit list with one that hands over `embeds`.

        It declares the real unit's parameters, so the unit runner calls it exactly as it would call
        the prompt unit (positive side, and the negative side when guidance is on).
        """
        lib = self._library()
        real = self._unit(pipe, lib.PromptEmbedder)
        given = lib.PipelineUnit(
            seperate_cfg=real.seperate_cfg,
            take_over=real.take_over,
            input_params=real.input_params,
            output_params=real.output_params,
            input_params_posi=real.input_params_posi,
            input_params_nega=real.input_params_nega,
        )
        ready = {k: v.to(device=pipe.device, dtype=pipe.torch_dtype) for k, v in embeds.items()}
        given.process = lambda _pipe, prompt, **_: {"prompt_embeds": [ready[prompt]]}
        pipe.units = [given if unit is real else unit for unit in pipe.units]

    def _call(self, pipe: Any, case: Case, cfg_scale: float) -> None:
        """One `pipe(...)` call for the case, up to (not including) the decode."""
        pipe.vae_decoder = _StopAtDecode()
        with _no_prints():
            try:
                pipe(
                    prompt=_POSITIVE,
                    negative_prompt=_NEGATIVE,
                    cfg_scale=cfg_scale,
                    height=case.height,
                    width=case.width,
                    seed=case.seed,
                    num_inference_steps=case.steps,
                    sigma_shift=case.shift,
                    denoising_strength=case.denoise,
                    progress_bar_cmd=_quiet,
                )
            except _Finished:
                return
        raise RuntimeError("ZImagePipeline returned without reaching its decoder")

    # Text stages: one run of the pipeline's prompt unit, observed

    def check_supported(self, case: Case) -> None:
        self._library()
        if not case.is_plain_prompt:
            raise Unsupported("DiffSynth's ZImagePipeline encodes a single user prompt only")
        if case.sampler != "euler":
            raise Unsupported(f"DiffSynth's FlowMatchScheduler.step is an Euler step; it has no {case.sampler}")

    def observe_text(self, case: Case) -> ObservedText:
        lib = self._library()
        # No DiT assigned: the unit then takes the branch a Turbo DiT (no SigLIP embedder) selects,
        # `encode_prompt`, without loading DiT weights for a text-only case.
        pipe = self._pipeline(dit=None, encodes_text=True)
        shared = {"cfg_scale": 1.0, "edit_image": None}
        positive, negative = {"prompt": case.user_text}, {"negative_prompt": ""}
        unit = self._unit(pipe, lib.PromptEmbedder)
        with recording_encoder_inputs(pipe.text_encoder) as seen, torch.no_grad():
            _, positive, _ = pipe.unit_runner(unit, pipe, shared, positive, negative)
        tokenized = pipe.tokenizer.tokenized
        if len(tokenized) != 1:
            raise RuntimeError(f"expected one string handed to the tokenizer, got {len(tokenized)}")
        return ObservedText.of(tokenized[0], seen, positive["prompt_embeds"][0].cpu())

    # Sampling stages

    def schedule(self, case: Case) -> Schedule:
        lib = self._library()
        # The model function is stopped at the time embedder, so the DiT never computes: a meta-device
        # DiT of the right architecture (Turbo: no SigLIP embedder) is all the call needs.
        with torch.device("meta"):
            dit = lib.ZImageDiT(**self._dit_config())
        pipe = self._pipeline(dit)
        self._give_prompt_embeds(pipe, {_POSITIVE: torch.zeros(1, dit.cap_embedder[1].in_features)})
        handed: list[torch.Tensor] = []

        def stop_at_time_embedder(_module: torch.nn.Module, args: tuple) -> None:
            handed.append(args[0].detach().cpu().to(torch.float64).reshape(-1))
            raise _TimeSeen

        model_fn = pipe.model_fn

        def stopped_model_fn(**kwargs: Any) -> torch.Tensor:
            try:
                return model_fn(**kwargs)
            except _TimeSeen:
                return torch.zeros_like(kwargs["latents"])

        pipe.model_fn = stopped_model_fn
        hook = dit.t_embedder.register_forward_pre_hook(stop_at_time_embedder)
        try:
            self._call(pipe, case, cfg_scale=1.0)
        finally:
            hook.remove()
        if len(handed) != case.steps:
            raise RuntimeError(f"the time embedder was reached {len(handed)} times in {case.steps} steps")
        sigmas = pipe.scheduler.sigmas.to(torch.float64)
        return Schedule(sigmas=torch.cat([sigmas, sigmas.new_zeros(1)]), model_t=torch.cat(handed) / 1000)

    def noise(self, case: Case) -> torch.Tensor:
        """DiffSynth's own draw: its shape unit (sizes rounded up to 16), then its noise unit.

        `generate_noise` draws `randn` in the pipeline dtype from a CPU generator; returned as float32.
        """
        lib = self._library()
        pipe = self._pipeline(dit=None)
        shared = {"height": case.height, "width": case.width, "seed": case.seed, "rand_device": "cpu"}
        with _no_prints():
            for kind in (lib.ShapeChecker, lib.NoiseInitializer):
                shared, _, _ = pipe.unit_runner(self._unit(pipe, kind), pipe, shared, {}, {})
        return shared["noise"].cpu().float()

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        self._library()
        if case.cfg_normalization != 0.0 or case.cfg_truncation != 1.0:
            raise Unsupported("DiffSynth's ZImagePipeline has no cfg_normalization or cfg_truncation")
        own = self.schedule(case)
        if not torch.equal(inputs.schedule.sigmas.double(), own.sigmas):
            raise Unsupported("the pipeline computes its own schedule; it cannot take another one")
        if not torch.equal(inputs.schedule.model_t.double(), own.model_t):
            # Same sigmas, another time input: e.g. diffusers' 1 - sigma, where DiffSynth's loop casts each
            # timestep to the pipeline dtype before its model function computes 1000 - t.
            raise Unsupported(
                "the pipeline computes its own DiT time input (timestep cast to the pipeline dtype, then "
                "1000 - t); it cannot take another schedule's model_t"
            )
        pipe = self._pipeline(self.dit())
        guided = case.cfg > 1 and inputs.negative is not None
        embeds = {_POSITIVE: inputs.positive.hidden}
        if guided:
            embeds[_NEGATIVE] = inputs.negative.hidden
        self._give_prompt_embeds(pipe, embeds)

        forced = inputs.forced_latents
        start = forced[0].unsqueeze(0) if forced is not None else inputs.noise
        held: list[torch.Tensor] = []

        def given_noise(shape: tuple[int, ...], *_: Any, torch_dtype: Any = None, device: Any = None, **__: Any):
            if tuple(shape) != tuple(start.shape):
                raise Unsupported(
                    f"DiffSynth samples a {tuple(shape)} latent for {case.height}x{case.width} (sizes rounded up "
                    f"to 16); the given starting latent is {tuple(start.shape)}"
                )
            # The given latent, cast the way `generate_noise` casts its own draw.
            latent = start.to(dtype=torch_dtype or pipe.torch_dtype, device=device or pipe.device)
            held.append(latent)
            return latent

        pipe.generate_noise = given_noise

        velocities: list[torch.Tensor] = []
        results: list[torch.Tensor] = []
        scheduler_step = pipe.scheduler.step

        def recording_step(model_output: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            velocities.append(model_output.detach().float().cpu().clone())
            out = scheduler_step(model_output, *args, **kwargs)
            results.append(out.detach().float().cpu().clone())
            k = len(results)
            if forced is not None and k < case.steps:
                return forced[k].unsqueeze(0).to(dtype=out.dtype, device=out.device)
            return out

        pipe.scheduler.step = recording_step
        blocks = self._capture_positive_pass(pipe, inputs.capture_blocks)
        try:
            self._call(pipe, case, cfg_scale=case.cfg if guided else 1.0)
        except RuntimeError as e:
            if pipe.torch_dtype != torch.bfloat16 and "must have the same dtype" in str(e):
                raise Unsupported(f"{_FP32_SAMPLING.format(dtype=self.context.dtype)} ({e})") from None
            raise
        return Denoise(
            model_out=torch.cat(velocities),
            latents=torch.cat([held[0].float().cpu(), *results]),
            blocks=blocks or None,
        )

    def _capture_positive_pass(self, pipe: Any, steps: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Per-block outputs of the first (positive) model-function call of each chosen step.

        The pipeline calls its model function with `progress_id` = the step; with guidance on it
        calls it twice per step (positive, then negative), as separate passes.
        """
        blocks: dict[str, torch.Tensor] = {}
        if not steps:
            return blocks
        model_fn: Callable[..., torch.Tensor] = pipe.model_fn
        wanted = set(steps)

        def capturing_model_fn(**kwargs: Any) -> torch.Tensor:
            k = kwargs["progress_id"]
            if k not in wanted:
                return model_fn(**kwargs)
            wanted.discard(k)
            with capture_blocks(pipe.dit) as captured:
                out = model_fn(**kwargs)
            blocks.update({f"step.{k}.{name}": value.float().cpu() for name, value in captured.items()})
            return out

        pipe.model_fn = capturing_model_fn
        return blocks

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        """What `ZImagePipeline.__call__` does after its loop, on our pipeline instance: the latent in
        the pipeline's dtype through its `vae_decoder`, then its `vae_output_to_image` (the saved
        image). The float image is that function's last float values, `((x + 1) * 255 / 2).clip(0, 255)`
        in the decoder's dtype, over 255."""
        pipe = self._pipeline(None)
        pipe.vae_decoder = diffsynth_vae_decoder(self._library(), self.context)
        pipe.load_models_to_device(["vae_decoder"])
        out = pipe.vae_decoder(latent.to(dtype=pipe.torch_dtype, device=pipe.device))
        saved = torch.from_numpy(np.asarray(pipe.vae_output_to_image(out)).copy())
        levels = ((out[0].permute(1, 2, 0) + 1) * (255 / 2)).clip(0, 255).float().cpu()
        return Decoded((levels / 255).contiguous(), saved)

    def versions(self) -> dict[str, str]:
        return {"diffsynth": library.installed_version() or "not installed", "transformers": transformers.__version__}
