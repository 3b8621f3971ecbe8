"""Observations of the sampling path, each made by running one adapter on a tiny probe case.

The DiT is the shared tiny model, so a 64x64 image (an 8x8 latent) and one to nine steps keep
every probe cheap. What the DiT is handed (time values, the dtype its time MLP computes
in, the latent size, how many samples per step) is watched from outside (`dit_watch.py`); everything
else is the adapter's stage outputs. `Unsupported` from the adapter propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from parity.analysis.dit_watch import DiTLog
from parity.analysis.probe_runner import ProbeRunner
from parity.analysis.text_observations import PROMPT
from parity.core.noise import shared_noise
from parity.stages.denoise import Denoise, DenoiseInputs
from parity.stages.embeddings import Embeddings
from parity.suite.adapter import Unsupported
from parity.suite.cases import SAMPLERS, Case

SIDE = 64  # pixels: an 8x8 latent
NEGATIVE = "blurry, low quality"
GUIDANCE_SCALE = 3.0
# One size per alignment: a multiple of 4, 8, 16 and 32 pixels (and of nothing larger among these).
ALIGNMENT_SIZES = {4: 132, 8: 136, 16: 144, 32: 160}
NOISE_SEED = 42


def sampling_case(id: str, **fields) -> Case:
    base = {"prompt": PROMPT, "height": SIDE, "width": SIDE, "steps": 8, "seed": 0}
    return Case(id=f"probe.{id}", **(base | fields))


SAMPLE = {dtype: sampling_case(f"sample-{dtype}", dtype=dtype) for dtype in ("fp32", "bf16")}
GUIDED = sampling_case("guided", negative_prompt=NEGATIVE, cfg=GUIDANCE_SCALE, steps=1)
UNGUIDED = replace(GUIDED, id="probe.guided-cfg1", cfg=1.0)


def schedule_case(steps: int) -> Case:
    return Case(id=f"probe.schedule-{steps}", prompt="", height=SIDE, width=SIDE, steps=steps, stages=("schedule",))


def noise_case(side: int, dtype: str, seed: int = NOISE_SEED) -> Case:
    return Case(id=f"probe.noise-{side}-{dtype}-{seed}", prompt="", height=side, width=side, seed=seed, dtype=dtype)


def size_case(side: int) -> Case:
    return sampling_case(f"size-{side}", height=side, width=side, steps=1, noise="own")


# --- schedule ------------------------------------------------------------------------------------


def sigmas(lab: ProbeRunner, name: str, steps: int) -> list[float]:
    def compute() -> list[float]:
        return lab.run(name, schedule_case(steps), "schedule").schedule.sigmas.tolist()

    return lab.memo(("sigmas", name, steps), compute)


def reference_schedule(lab: ProbeRunner, steps: int) -> tuple[str, list[float]]:
    """The schedule of the highest-priority reference that has one."""
    reasons = []
    for name in lab.reference_names():
        try:
            return name, sigmas(lab, name, steps)
        except Unsupported as e:
            reasons.append(f"{name}: {e}")
    raise Unsupported("no reference computes a schedule here (" + "; ".join(reasons) + ")")


def max_difference(a: list[float], b: list[float]) -> float | None:
    """Largest absolute difference, or None when the lengths differ."""
    if len(a) != len(b):
        return None
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


# Float32 rounding of values in [0, 1], with room for a different order of operations.
SCHEDULE_ATOL = 1e-6


# --- watched sampling runs: time input, dtypes ---------------------------------------------------


@dataclass(frozen=True)
class TimeInput:
    values: list[float]  # what the time embedder is handed, model_t * 1000
    watched: bool  # True: seen at the time embedder in a sampling run; False: the schedule stage's model_t


def time_input(lab: ProbeRunner, name: str, dtype: str) -> TimeInput:
    def compute() -> TimeInput:
        case = SAMPLE[dtype]
        try:
            _, log = lab.watched_run(name, case)
        except Unsupported as sampling:
            try:
                model_t = lab.run(name, case, "schedule").schedule.model_t
            except Unsupported:
                raise sampling from None
            return TimeInput([float(t) * 1000 for t in model_t], watched=False)
        if not log.finished_calls:
            raise Unsupported("no time-embedder call was seen during sampling")
        return TimeInput([v for call in log.finished_calls for v in call.values], watched=True)

    return lab.memo(("time-input", name, dtype), compute)


@dataclass(frozen=True)
class DtypeCasts:
    time_mlp: list[torch.dtype]  # dtypes the time embedder's linear layers computed in
    time_input: torch.dtype
    latents_bf16: bool  # every latent after the first is exactly representable in bf16


def dtype_casts(lab: ProbeRunner, name: str, dtype: str) -> DtypeCasts:
    def compute() -> DtypeCasts:
        outputs, log = lab.watched_run(name, SAMPLE[dtype])
        latents = outputs.denoise.latents[1:].float()
        if not log.finished_calls:
            raise Unsupported("no time-embedder call was seen during sampling")
        return DtypeCasts(
            time_mlp=log.compute_dtypes(),
            time_input=log.finished_calls[0].input_dtype,
            latents_bf16=bool(torch.equal(latents, latents.bfloat16().float())),
        )

    return lab.memo(("dtype-casts", name, dtype), compute)


# --- resolution alignment ------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeOutcome:
    side: int
    refused: str | None = None
    latent: tuple[int, int] | None = None
    dit: tuple[int, int] | None = None  # the latent size the DiT was handed (None: not seen)

    @property
    def as_is(self) -> bool:
        """The latent is side/8 and the DiT is handed exactly that."""
        if self.refused is not None or self.latent is None:
            return False
        expected = (self.side // 8, self.side // 8)
        return self.side % 8 == 0 and self.latent == expected and self.dit in (None, expected)


@dataclass(frozen=True)
class Alignment:
    outcomes: list[SizeOutcome]

    @property
    def required(self) -> int | None:
        """The smallest probed multiple m such that every probed size divisible by m runs as is."""
        for multiple in sorted(ALIGNMENT_SIZES):
            if all(o.as_is for o in self.outcomes if o.side % multiple == 0):
                return multiple
        return None


def size_outcome(lab: ProbeRunner, name: str, side: int) -> SizeOutcome:
    try:
        outputs, log = lab.watched_run(name, size_case(side))
    except Unsupported as e:
        return SizeOutcome(side, refused=str(e))
    latent = tuple(int(n) for n in outputs.denoise.latents.shape[-2:])
    dit = log.latent_sizes[0] if log.latent_sizes else None
    return SizeOutcome(side, latent=latent, dit=dit)


def alignment(lab: ProbeRunner, name: str) -> Alignment:
    def compute() -> Alignment:
        outcomes = [size_outcome(lab, name, side) for side in sorted(ALIGNMENT_SIZES.values())]
        if all(o.refused is not None for o in outcomes):
            raise Unsupported(outcomes[0].refused)
        return Alignment(outcomes)

    return lab.memo(("alignment", name), compute)


# --- guidance --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    uncond: str  # "negative" (the encoded negative prompt) or "zero" (the positive conditioning zeroed)
    k: float  # v = pos + k (pos - uncond)
    residual: float  # |v - pos - k (pos - uncond)| / |v - pos|


@dataclass(frozen=True)
class Guidance:
    cfg: float
    fits: list[Fit]  # best first
    samples_guided: int  # DiT samples per step with guidance on
    calls_guided: int  # DiT (time-embedder) calls per step with guidance on
    samples_unguided: int  # per step at cfg 1 with a negative given

    @property
    def best(self) -> Fit:
        return self.fits[0]


def _fit(v: torch.Tensor, pos: torch.Tensor, uncond: torch.Tensor, label: str) -> Fit:
    d = (pos - uncond).detach().double().flatten()
    target = (v - pos).detach().double().flatten()
    k = float(target @ d / (d @ d))
    residual = float((target - k * d).norm() / target.norm()) if target.norm() > 0 else float("inf")
    return Fit(label, k, residual)


def _per_step(log: DiTLog, steps: int) -> tuple[int, int]:
    return log.samples // steps, len(log.finished_calls) // steps


def guidance(lab: ProbeRunner, name: str) -> Guidance:
    """Fit the guided velocity to `pos + k (pos - u)` for u = the negative and u = zeros.

    One step from the same noise: the guided run (cfg 3), then the adapter's own denoise with only
    the positive, only the negative, and only the positive zeroed (zeros of its shape, as a graph
    that zeroes its conditioning feeds) as its prompt. Which u fits, and k, say the formula and the
    scale mapping (k = cfg - 1 is the classic `u + cfg (pos - u)`).
    """

    def compute() -> Guidance:
        guided, log = lab.watched_run(name, GUIDED)
        pos, neg = guided.embeddings, guided.negative
        if neg is None:
            raise Unsupported("no negative prompt was encoded for a guided case")
        noise = guided.denoise.latents[0:1]

        def alone(label: str, caption: Embeddings, negative: Embeddings | None = None) -> Denoise:
            inputs = lambda: DenoiseInputs(caption, negative, guided.schedule, noise)  # noqa: E731
            return lab.watched_denoise(name, UNGUIDED, label, inputs)

        v = guided.denoise.model_out[0]
        v_pos = alone("positive", pos)[0].model_out[0]
        v_neg = alone("negative", neg)[0].model_out[0]
        zero = Embeddings(torch.zeros_like(pos.hidden), pos.mask)
        v_zero = alone("zeroed positive", zero)[0].model_out[0]
        _, unguided_log = alone("positive with a negative at cfg 1", pos, neg)
        fits = sorted([_fit(v, v_pos, v_neg, "negative"), _fit(v, v_pos, v_zero, "zero")], key=lambda f: f.residual)
        samples, calls = _per_step(log, GUIDED.steps)
        return Guidance(GUIDED.cfg, fits, samples, calls, _per_step(unguided_log, UNGUIDED.steps)[0])

    return lab.memo(("guidance", name), compute)


@dataclass(frozen=True)
class Passes:
    cfg: float
    steps: int
    samples: int  # samples the time embedder embedded, all steps
    calls: int  # time-embedder calls, all steps


def passes(lab: ProbeRunner, name: str, cfg: float) -> Passes:
    """DiT passes in one step at `cfg`, with a negative prompt's embeddings handed in."""

    def compute() -> Passes:
        guided, _ = lab.watched_run(name, GUIDED)
        case = replace(GUIDED, id=f"probe.passes-cfg-{cfg}", cfg=cfg)
        noise = guided.denoise.latents[0:1]
        inputs = lambda: DenoiseInputs(guided.embeddings, guided.negative, guided.schedule, noise)  # noqa: E731
        _, log = lab.watched_denoise(name, case, "with a negative", inputs)
        return Passes(cfg, case.steps, log.samples, len(log.finished_calls))

    return lab.memo(("passes", name, cfg), compute)


# --- samplers ---------------------------------------------------------------------------------------

SAMPLER_STEPS = 3


@dataclass(frozen=True)
class SamplerRun:
    sampler: str
    refused: str | None = None
    first_step: float | None = None  # max abs difference of the first step's latent from the first sampler's
    final: float | None = None  # the same for the final latent


def samplers(lab: ProbeRunner, name: str) -> list[SamplerRun]:
    """The same probe (3 steps) under every sampler a case can name, each against the first (euler)."""

    def compute() -> list[SamplerRun]:
        cases = [sampling_case(f"sampler-{sampler}", sampler=sampler, steps=SAMPLER_STEPS) for sampler in SAMPLERS]
        base = lab.run(name, cases[0], "denoise").denoise.latents
        runs = [SamplerRun(SAMPLERS[0], first_step=0.0, final=0.0)]
        for sampler, case in zip(SAMPLERS[1:], cases[1:], strict=True):
            try:
                latents = lab.run(name, case, "denoise").denoise.latents
            except Unsupported as e:
                runs.append(SamplerRun(sampler, refused=str(e)))
                continue
            gaps = (latents - base).abs()
            runs.append(SamplerRun(sampler, first_step=float(gaps[1].max()), final=float(gaps[-1].max())))
        return runs

    return lab.memo(("samplers", name), compute)


# --- noise -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseDraw:
    values: torch.Tensor  # as drawn, float32
    side: int
    dtype: str  # the pipeline dtype
    shape: tuple[int, ...]
    returned_dtype: torch.dtype
    shared_shape: tuple[int, ...]
    equal_to_shared: bool
    max_abs_diff: float | None  # against the shared draw, when the shapes agree
    bf16_values: bool  # every value exactly representable in bf16


def noise_draw(lab: ProbeRunner, name: str, side: int, dtype: str, seed: int = NOISE_SEED) -> NoiseDraw:
    def compute() -> NoiseDraw:
        case = noise_case(side, dtype, seed)
        own = lab.noise(name, case)
        shared = shared_noise(case.seed, case.height, case.width)
        values = own.float()
        same_shape = tuple(values.shape) == tuple(shared.shape)
        return NoiseDraw(
            values=values,
            side=side,
            dtype=dtype,
            shape=tuple(own.shape),
            returned_dtype=own.dtype,
            shared_shape=tuple(shared.shape),
            equal_to_shared=same_shape and bool(torch.equal(values, shared)),
            max_abs_diff=float((values - shared).abs().max()) if same_shape else None,
            bf16_values=bool(torch.equal(values, values.bfloat16().float())),
        )

    return lab.memo(("noise", name, side, dtype, seed), compute)
