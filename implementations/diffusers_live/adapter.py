"""The installed diffusers package, driven as-is: `ZImagePipeline` with the installed transformer.

Nothing here re-implements diffusers; the harness calls the real pipeline and observes it:
- template: `encode_prompt` overwrites the caller's prompt list in place with the rendered string;
- tokens: a forward hook on the text encoder records the ids and mask diffusers passes in;
- embeddings: the list of masked-in rows `encode_prompt` returns;
- schedule: the installed scheduler, set up the way the installed pipeline sets it up;
- decode: the pipeline's own steps after its loop, on the installed `AutoencoderKL` and the
  pipeline's `image_processor` (tests/test_decode.py checks them against a whole pipeline call);
- denoise: one real `pipeline(...)` call with `output_type="latent"`. The velocity each step
  applies is what the pipeline hands `scheduler.step` (recorded by wrapping that bound method on
  our own scheduler instance); each step's result is read in `callback_on_step_end`, which is
  also how teacher forcing feeds the reference's latent back in, through the pipeline's own hook.
Because template, tokens and embeddings happen in one call, this adapter cannot be fed another
implementation's template or tokens, and the pipeline always computes its own schedule; it says so
instead of pretending.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, ClassVar

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel

from implementations.diffusers_live.schedule import diffusers_schedule
from implementations.zimage.dit_capture import capture_blocks
from implementations.zimage.observed_text import ObservedText, ObservedTextStages, recording_encoder_inputs
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.schedule import Schedule
from parity.suite.adapter import Adapter, Unsupported
from parity.suite.cases import Case


class _StepCapture:
    """Per-block outputs of the transformer's k-th call (step k) for each k in `steps`.

    The pipeline calls the transformer once per step, so a call counter is a step counter; the
    block hooks are opened just before the chosen call and closed right after it.
    """

    def __init__(self, model: torch.nn.Module, steps: tuple[int, ...]) -> None:
        self.model, self.steps = model, set(steps)
        self.blocks: dict[str, torch.Tensor] = {}
        self._call = 0
        self._open: tuple[ExitStack, dict[str, torch.Tensor]] | None = None

    def _before(self, _module: torch.nn.Module, _args: tuple) -> None:
        if self._call in self.steps:
            stack = ExitStack()
            self._open = (stack, stack.enter_context(capture_blocks(self.model)))

    def _after(self, _module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        if self._open is not None:
            stack, captured = self._open
            stack.close()
            self.blocks.update({f"step.{self._call}.{name}": value.float() for name, value in captured.items()})
            self._open = None
        self._call += 1

    @contextmanager
    def active(self) -> Iterator[None]:
        handles = [self.model.register_forward_pre_hook(self._before), self.model.register_forward_hook(self._after)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


class DiffusersAdapter(ObservedTextStages, Adapter):
    name: ClassVar[str] = "diffusers"
    summary: ClassVar[str] = f"the installed diffusers {diffusers.__version__} ZImagePipeline (live)"
    reference_priority: ClassVar[int | None] = 0
    text_call: ClassVar[str] = "encode_prompt"

    def check_supported(self, case: Case) -> None:
        if not case.is_plain_prompt:
            raise Unsupported("ZImagePipeline takes a single user prompt only")
        if case.sampler != "euler":
            raise Unsupported(f"ZImagePipeline's FlowMatchEulerDiscreteScheduler is Euler only: no {case.sampler}")

    def _pipeline(self) -> ZImagePipeline:
        # Only the text path is exercised here: no VAE or transformer needed. Built per call, not
        # kept, so the context can release the text encoder once the text stages are done.
        return ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
            vae=None,
            text_encoder=self.context.text_encoder,
            tokenizer=self.context.tokenizer,
            transformer=None,
        )

    def observe_text(self, case: Case) -> ObservedText:
        pipe = self._pipeline()
        prompts = [case.user_text]
        with recording_encoder_inputs(pipe.text_encoder) as seen, torch.inference_mode():
            embeds, _ = pipe.encode_prompt(
                prompt=prompts, device=torch.device(self.context.device), do_classifier_free_guidance=False
            )
        # encode_prompt overwrote our list in place with the string it rendered.
        return ObservedText.of(prompts[0], seen, embeds[0].cpu())

    def schedule(self, case: Case) -> Schedule:
        return diffusers_schedule(case.steps, case.shift)

    def noise(self, case: Case) -> torch.Tensor:
        """The pipeline's own draw: `prepare_latents` with a CPU generator seeded with the seed."""
        pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None)
        generator = torch.Generator("cpu").manual_seed(case.seed)
        return pipe.prepare_latents(1, 16, case.height, case.width, torch.float32, torch.device("cpu"), generator)

    def transformer(self) -> ZImageTransformer2DModel:
        """The installed transformer class holding the shared weights (assigned, not copied). Built per
        call, not kept: a kept module would hold the weights after the context lets them go."""
        config = {k: v for k, v in self.context.dit_config.items() if not k.startswith("_")}
        with torch.device("meta"):
            model = ZImageTransformer2DModel(**config)
        model.load_state_dict(self.context.dit_state_dict, assign=True)
        return model.eval()

    def vae(self) -> AutoencoderKL:
        """The installed `AutoencoderKL` holding the shared decoder weights (assigned, not copied; its
        encoder, never run, stays on the meta device). Built per call, as the transformer is."""
        config = {k: v for k, v in self.context.vae_config.items() if not k.startswith("_")}
        with torch.device("meta"):
            model = AutoencoderKL(**config)
        # `vae.dtype`, which the pipeline casts the latent to, is its first parameter's: an encoder weight.
        model.encoder.to(self.context.torch_dtype)
        missing, unexpected = model.load_state_dict(self.context.vae_state_dict, strict=False, assign=True)
        not_encoder = [k for k in missing if not k.startswith(("encoder.", "quant_conv."))]
        if not_encoder or unexpected:
            raise RuntimeError(f"the VAE weights do not fit AutoencoderKL: {(not_encoder or unexpected)[0]}")
        return model.eval()

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        own = self.schedule(case)
        if not torch.equal(inputs.schedule.sigmas.double(), own.sigmas):
            raise Unsupported("the pipeline computes its own schedule; it cannot take another one")
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=case.shift)
        transformer = self.transformer()
        pipe = ZImagePipeline(scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None, transformer=transformer)
        pipe.set_progress_bar_config(disable=True)
        velocities: list[torch.Tensor] = []
        results: list[torch.Tensor] = []
        real_step = scheduler.step

        def recording_step(model_output: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            velocities.append(model_output.detach().float().clone())
            return real_step(model_output, *args, **kwargs)

        scheduler.step = recording_step
        forced = inputs.forced_latents

        def on_step_end(_pipeline: ZImagePipeline, i: int, _t: torch.Tensor, kwargs: dict) -> dict:
            results.append(kwargs["latents"].detach().float().clone())
            if forced is not None and i + 1 < case.steps:
                return {"latents": forced[i + 1].unsqueeze(0).float()}
            return {}

        start = forced[0].unsqueeze(0) if forced is not None else inputs.noise
        guided = case.cfg > 1 and inputs.negative is not None
        if guided and inputs.capture_blocks:
            raise Unsupported("with guidance on the pipeline runs both passes as one batch: no per-block capture")
        capture = _StepCapture(transformer, inputs.capture_blocks)
        try:
            with torch.inference_mode(), capture.active():
                pipe(
                    prompt_embeds=[inputs.positive.hidden],
                    negative_prompt_embeds=[inputs.negative.hidden] if guided else None,
                    guidance_scale=case.cfg - 1,  # diffusers' g = the classic scale s - 1
                    cfg_normalization=case.cfg_normalization,
                    cfg_truncation=case.cfg_truncation,
                    num_inference_steps=case.steps,
                    height=case.height,
                    width=case.width,
                    latents=start.float(),
                    output_type="latent",
                    callback_on_step_end=on_step_end,
                    callback_on_step_end_tensor_inputs=["latents"],
                )
        except ValueError as e:
            raise Unsupported(f"diffusers refuses the case: {e}") from None
        return Denoise(
            model_out=torch.cat(velocities), latents=torch.cat([start.float(), *results]), blocks=capture.blocks or None
        )

    def decode(self, case: Case, latent: torch.Tensor) -> Decoded:
        """What `ZImagePipeline.__call__` does after its loop, on its own components: the latent cast
        to the VAE's dtype, then unscaled with the VAE config's factors, `vae.decode`, and the
        pipeline's `image_processor`: `postprocess` to a float array (the float image), then its
        `numpy_to_pil`, which rounds (the saved image)."""
        vae = self.vae()
        pipe = ZImagePipeline(scheduler=None, vae=vae, text_encoder=None, tokenizer=None, transformer=None)
        latents = latent.to(device=self.context.device, dtype=vae.dtype)
        latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
        with torch.inference_mode():
            image = vae.decode(latents, return_dict=False)[0]
        array = pipe.image_processor.postprocess(image, output_type="np")
        # A non-finite image (a NaN weight upstream) casts to undefined levels, unwarned: the float
        # image carries the NaN to the check.
        with np.errstate(invalid="ignore"):
            saved = pipe.image_processor.numpy_to_pil(array)[0]
        return Decoded(torch.from_numpy(array[0].copy()), torch.from_numpy(np.asarray(saved).copy()))

    def versions(self) -> dict[str, str]:
        return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


class DiffusersLegacyScheduleAdapter(DiffusersAdapter):
    """diffusers 0.36-0.38's schedule (sigma_min = 0, no sigmas passed), driven on the installed scheduler.

    Only the schedule is of that era: the installed pipeline always samples with its own.
    """

    name: ClassVar[str] = "diffusers_legacy_schedule"
    summary: ClassVar[str] = "the schedule diffusers 0.36-0.38 sampled with (a wasted last step at 9 steps)"
    reference_priority: ClassVar[int | None] = None
    in_default_run: ClassVar[bool] = False

    def schedule(self, case: Case) -> Schedule:
        return diffusers_schedule(case.steps, case.shift, legacy=True)

    def denoise(self, case: Case, inputs: DenoiseInputs) -> Denoise:
        raise Unsupported("the installed pipeline samples with its current schedule, not the legacy one")
