"""The denoise stage: the sampling trajectory, compared step by step.

The first step whose velocity or result leaves the tolerance is the first divergent step; a
different starting latent is a noise finding of its own. Its own hooks: teacher forcing per step
(a forced run starts every step from the reference's latent), and `trace`, which names the block
where a non-finite output or (with `--blocks`) a divergence starts. Stored as `denoise.model_out`
(N, C, H, W) and `denoise.latents` (N+1, ...), any float, and per-block captures as
`denoise.blocks.step.<k>.<module>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from parity.compare.metrics import MetricRow, numeric_row
from parity.compare.numeric import NumericDiff, compare_numeric, first_non_finite
from parity.compare.records import Count, Record, optional
from parity.compare.tolerances import SAMPLING_PROBE, Evidence, StageTolerance, Tolerance
from parity.core.noise import shared_noise
from parity.core.status import DIVERGENT
from parity.models.context import Context
from parity.stages.base import Page, Records, Stage, StageCheck, TensorRule, Tracer
from parity.stages.embeddings import Embeddings
from parity.stages.schedule import Schedule

BLOCKS = "denoise.blocks."
TOLERANCES = {
    # Per-step velocity and latent, free-running. Floor 9.2e-6: DiffSynth's path with its bf16 time
    # embedder off against the installed diffusers transformer (same arithmetic, different code),
    # worst step of the fp32 sampling cases. 1e-4 leaves ~11x. The ComfyUI layout's worst step is
    # 2.5e-5: its q/k RMSNorm uses the dtype's epsilon instead of 1e-5, a real but sub-tolerance
    # difference that the DiT-level test (tests/test_dit.py, atol 1e-5) resolves. The smallest real
    # sampling divergence measured, DiffSynth's bf16 time embedder, is 5.0e-3, 50x above.
    "fp32": StageTolerance(Tolerance(atol=1e-4, rtol=0.0), Evidence(9.2e-6, 11.0, SAMPLING_PROBE)),
    # Floor 6.5e-2 (two bf16 ulps at magnitude 2-4): the ComfyUI layout vs diffusers in bf16, where
    # the placement of casts dominates. 0.2 leaves 3x and sits 3x below the bf16 timestep cast's
    # effect (0.66).
    "bf16": StageTolerance(Tolerance(atol=0.2, rtol=0.0), Evidence(6.5e-2, 3.0, SAMPLING_PROBE)),
}


@dataclass(frozen=True)
class Denoise:
    """The sampling trajectory: what each step's update used, and where it went.

    `model_out` is (N, C, H, W): the velocity the step applied, `x_next = x + (sigma_next - sigma)
    * model_out`, after guidance and sign conventions (a multistep update, which applies no single
    velocity, records its effective one, `(x_next - x) / (sigma_next - sigma)`). `latents` is
    (N+1, C, H, W): the initial noise, then every step's result. `blocks` maps "step.<k>.<module>"
    to that block's output at step k when per-block capture is on.
    """

    model_out: torch.Tensor
    latents: torch.Tensor
    blocks: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class DenoiseInputs:
    """What the denoise stage consumes: its own upstream outputs, or the reference's when forced.

    `noise` is the initial latent (1, C, H, W) in float32. `forced_latents`, when given, replaces
    the input latent of every step k with `forced_latents[k]` (teacher forcing per step), so each
    step's output shows only the error that step adds.
    """

    positive: Embeddings
    negative: Embeddings | None
    schedule: Schedule
    noise: torch.Tensor
    forced_latents: torch.Tensor | None = None
    capture_blocks: tuple[int, ...] = ()


@dataclass(frozen=True)
class DenoiseDetail(Record):
    """Per-step errors and the first divergent step; what `trace` found, where it ran.

    A latent shape that differs leaves only `shape_mismatch`. `blocks` and `first_divergent_block`
    come together: per-block errors at `blocks_step` (teacher-forced), and the first outside the
    tolerance (None: every block agrees).
    """

    shape_mismatch: bool | None = optional()
    steps: Count | None = None
    first_divergent_step: Count | None = None
    first_nonfinite_step: Count | None = None
    noise_matches: bool | None = None
    model_out_max_abs: tuple[float | None, ...] | None = None
    latents_max_abs: tuple[float | None, ...] | None = None
    final_latent: NumericDiff | None = None
    tolerance_evidence: StageTolerance | None = None
    blocks_step: Count | None = optional()
    blocks: dict[str, NumericDiff] | None = optional()
    first_divergent_block: str | None = optional()
    blocks_unavailable: str | None = optional()
    first_nonfinite_block: str | None = optional()

    def to_json(self) -> dict[str, Any]:
        if self.shape_mismatch:
            return {"shape_mismatch": True}
        data = super().to_json()
        if self.blocks is None:
            return data
        # Written even when None (every block agrees), right after the blocks it is about.
        ordered = {}
        for key, value in data.items():
            ordered[key] = value
            if key == "blocks":
                ordered["first_divergent_block"] = self.first_divergent_block
        return ordered


def _step_errors(diffs: list[NumericDiff]) -> tuple[float | None, ...]:
    """Each comparison's max abs error, None where either side held a non-finite value."""
    return tuple(None if d.nonfinite_obtained or d.nonfinite_expected else d.max_abs for d in diffs)


def _first_nonfinite_step(values: torch.Tensor) -> int | None:
    return next((k for k in range(values.shape[0]) if not bool(torch.isfinite(values[k]).all())), None)


def _blocks(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], tol: Tolerance) -> dict[str, NumericDiff]:
    return {
        name.split(".", 2)[2]: compare_numeric(ours[name], value, tol)
        for name, value in theirs.items()
        if name in ours
    }


class DenoiseStage(Stage):
    name = "denoise"
    path = "sampling"
    inputs = ("embeddings", "schedule")
    records = ("denoise",)
    detail = DenoiseDetail
    tolerances = TOLERANCES
    tensors: ClassVar[Mapping[str, TensorRule]] = {
        "denoise.model_out": TensorRule(None, 4, "denoise.latents"),
        "denoise.latents": TensorRule(None, 4, "denoise.model_out"),
    }
    tensor_families: ClassVar[Mapping[str, TensorRule]] = {BLOCKS: TensorRule(None, None, "denoise.model_out")}
    partial = "stages/denoise.html.j2"
    drawn = frozenset({"blocks", "model_out_max_abs", "latents_max_abs"})
    model = "dit"
    traces_blocks = True

    def run(
        self, adapter: Any, case: Any, given: Records, feed: Records | None,
        capture_blocks: tuple[int, ...],
    ) -> dict[str, Any]:
        noise = shared_noise(case.seed, case.height, case.width) if case.noise == "shared" else adapter.noise(case)
        forced = feed.get("denoise").latents if feed is not None and feed.get("denoise") is not None else None
        inputs = DenoiseInputs(
            given.get("embeddings"), given.get("negative"), given.get("schedule"), noise, forced, capture_blocks
        )
        return {"denoise": adapter.denoise(case, inputs)}

    def store(self, outputs: Records) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        denoise = outputs.get("denoise")
        if denoise is None:
            return {}, {}
        tensors = {
            "denoise.model_out": denoise.model_out.contiguous(), "denoise.latents": denoise.latents.contiguous()
        }
        for block, value in (denoise.blocks or {}).items():
            tensors[f"{BLOCKS}{block}"] = value.contiguous()
        return tensors, {}

    def load(self, tensors: Mapping[str, torch.Tensor], strings: Mapping[str, Any]) -> dict[str, Any]:
        if "denoise.model_out" not in tensors:
            return {}
        blocks = {k.removeprefix(BLOCKS): v for k, v in tensors.items() if k.startswith(BLOCKS)}
        return {"denoise": Denoise(tensors["denoise.model_out"], tensors["denoise.latents"], blocks or None)}

    def check_stored(self, tensors: Mapping[str, torch.Tensor]) -> str | None:
        if "denoise.model_out" not in tensors:
            return None
        model_out, latents = tensors["denoise.model_out"], tensors["denoise.latents"]
        steps = model_out.shape[0]
        if latents.shape[0] != steps + 1:  # the initial noise
            return f"denoise.latents is {latents.shape[0]} long where denoise.model_out ({steps}) needs {steps + 1}"
        if model_out.shape[1:] != latents.shape[1:]:
            return (f"denoise.model_out is {tuple(model_out.shape)}, denoise.latents {tuple(latents.shape)}: "
                    "one latent shape for both")
        if "schedule.model_t" in tensors and tensors["schedule.model_t"].shape[0] != steps:
            return f"denoise.model_out has {steps} steps, schedule.model_t {tensors['schedule.model_t'].shape[0]}"
        return None

    def check(self, obtained: Denoise, expected: Denoise, context: Context, dtype: str) -> StageCheck:
        tol = self.tolerance(dtype)
        if obtained.latents.shape[1:] != expected.latents.shape[1:]:
            ours, theirs = tuple(obtained.latents.shape[1:]), tuple(expected.latents.shape[1:])
            summary = f"latent shape {ours} vs reference {theirs}"
            return StageCheck(False, summary, DenoiseDetail(shape_mismatch=True))
        nonfinite = _first_nonfinite_step(obtained.model_out)
        # The starting latent is data, not arithmetic: any difference at all is a different draw.
        noise = compare_numeric(obtained.latents[0], expected.latents[0], Tolerance(atol=0.0, rtol=0.0))
        steps = min(obtained.model_out.shape[0], expected.model_out.shape[0])
        per_step = [compare_numeric(obtained.model_out[k], expected.model_out[k], tol.tolerance) for k in range(steps)]
        results = [
            compare_numeric(obtained.latents[k + 1], expected.latents[k + 1], tol.tolerance) for k in range(steps)
        ]
        first = next((k for k in range(steps) if not (per_step[k].passed and results[k].passed)), None)
        final = compare_numeric(obtained.latents[-1], expected.latents[-1], tol.tolerance)
        blocks = None
        if obtained.blocks and expected.blocks:
            blocks = {
                name: compare_numeric(obtained.blocks[name], expected.blocks[name], tol.tolerance)
                for name in expected.blocks
                if name in obtained.blocks
            }
        first_block = next((name for name, d in (blocks or {}).items() if not d.passed), None)
        detail = DenoiseDetail(
            steps=steps, first_divergent_step=first, first_nonfinite_step=nonfinite, noise_matches=noise.passed,
            model_out_max_abs=_step_errors(per_step), latents_max_abs=_step_errors([noise, *results]),
            final_latent=final, tolerance_evidence=tol, blocks=blocks, first_divergent_block=first_block,
        )
        passed = first is None and noise.passed and obtained.model_out.shape[0] == expected.model_out.shape[0]
        if nonfinite is not None:
            summary = f"non-finite model output at step {nonfinite}"
        elif not noise.passed:
            summary = f"initial noise differs ({noise.summary()}); final latent: {final.summary()}"
        elif first is not None:
            which = per_step[first] if not per_step[first].passed else results[first]
            what = "velocity" if not per_step[first].passed else "step result"
            summary = (
                f"diverges from step {first}: {what} {which.summary()}; final latent max abs "
                f"{final.max_abs:.3e}, cos {final.cosine:.6f}"
            )
        elif obtained.model_out.shape[0] != expected.model_out.shape[0]:
            summary = f"{obtained.model_out.shape[0]} steps vs the reference's {expected.model_out.shape[0]}"
        else:
            bounds = f"atol={tol.tolerance.atol:g} rtol={tol.tolerance.rtol:g}"
            summary = f"all {steps} steps within {bounds}; final latent {final.summary()}"
        if first_block:
            summary += f"; first divergent block: {first_block}"
        return StageCheck(passed, summary, detail)

    def trace(self, check: StageCheck, tracer: Tracer) -> StageCheck:
        """Name the block where a non-finite output or a divergence starts.

        A non-finite output is traced in a rerun of the adapter's run as it went. A divergence (with
        `--blocks`) is traced teacher-forced at its first divergent step, against the live reference
        run the same way, so the blocks compared saw identical inputs.
        """
        detail = check.detail
        if detail is None or detail.shape_mismatch:
            return check
        if detail.first_nonfinite_step is not None:
            rerun = tracer.own((detail.first_nonfinite_step,))
            # Captured in execution order, so the first non-finite block is where it started.
            block = first_non_finite(rerun.blocks or {}) if rerun is not None else None
            if block is None:
                return check
            name = block.split(".", 2)[2]
            return replace(check, summary=f"{check.summary}, first in block {name}",
                           detail=replace(detail, first_nonfinite_block=name))
        step = detail.first_divergent_step
        pair = tracer.pair((step,)) if step is not None else None
        if pair is None:
            return check
        ours, theirs = pair
        if ours is None or theirs is None or not ours.blocks or not theirs.blocks:
            unavailable = "per-block capture is not available for this pair"
            return replace(check, detail=replace(detail, blocks_unavailable=unavailable))
        blocks = _blocks(ours.blocks, theirs.blocks, detail.tolerance_evidence.tolerance)
        first = next((name for name, d in blocks.items() if not d.passed), None)
        if first is not None:
            summary = f"{check.summary}; at step {step} (teacher-forced) first divergent block: {first}"
        else:
            summary = f"{check.summary}; teacher-forced, every block at step {step} agrees: the divergence comes"
            summary += " from upstream"
        return replace(check, summary=summary,
                       detail=replace(detail, blocks_step=step, blocks=blocks, first_divergent_block=first))

    def describe(self, record: Denoise) -> str:
        return f"this adapter's latents are {tuple(record.latents.shape[1:])}"

    def evidence(self, detail: DenoiseDetail) -> StageTolerance | None:
        return detail.tolerance_evidence

    def metric_rows(self, detail: DenoiseDetail) -> list[MetricRow]:
        rows = []
        tol = detail.tolerance_evidence.tolerance if detail.tolerance_evidence else None
        steps = [*(detail.model_out_max_abs or ()), *(detail.latents_max_abs or ())]
        if steps:
            finite = all(v is not None for v in steps)
            worst = max((v for v in steps if v is not None), default=None)
            # Per step the rule is atol + rtol*|e|; with rtol 0 (the denoise tolerances) the smallest
            # passing atol is exactly the worst step's max abs error.
            min_atol = worst if finite and tol is not None and tol.rtol == 0 else None
            first = detail.first_divergent_step
            rows.append(MetricRow(
                "denoise: worst step (velocity or latent)", f"{detail.steps} steps",
                f"from step {first}" if first is not None else "none", tol,
                {"max_abs": worst, "min_atol": min_atol}, {} if finite else {"max_abs": "non-finite"},
            ))
        if detail.final_latent is not None:
            rows.append(numeric_row("denoise: final latent", detail.final_latent))
        return rows

    def view(self, rows: list[tuple[str, str, DenoiseDetail]], page: Page) -> dict[str, Any] | None:
        from parity.drawing import plots  # matplotlib costs every command 0.4 s to import; only a report draws

        if not rows:
            return None
        curves = [(a, d, page.companion.get(a)) for a, _, d in rows if d.model_out_max_abs is not None]
        blocks = [(a, d) for a, _, d in rows if d.blocks]
        return {
            "plot": plots.denoise_figure(curves, page.adapters, page.mode) if curves else None,
            "has_companion": any(c is not None for _, _, c in curves),
            "blocks_plot": plots.blocks_figure(blocks, page.adapters) if blocks else None,
            "blocks_unavailable": [a for a, _, d in rows if d.blocks_unavailable],
            "divergent": [a for a, status, _ in rows if status in DIVERGENT],
        }


DENOISE = DenoiseStage()
