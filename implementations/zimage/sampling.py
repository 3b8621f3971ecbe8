"""The flow-matching loop every re-implemented Z-Image sampler runs; what differs is passed in.

The samplers integrate the same ODE, `dx/dsigma = v`, over the same sigmas. They differ in how v is
produced (the DiT's output negated, guidance formula, which passes run), in arithmetic (the dtype
the latent is kept in, how the step is written) and in the update itself: most take Euler steps,
`x_next = x + (sigma_next - sigma) * v`, ComfyUI's `res_multistep` a second-order one that also reads
the previous step. Each re-implemented adapter supplies its update as an `advance` function (for
Euler, a `predict` and a `step` function); the loop, per-step capture, per-block capture and teacher
forcing live here once: `comfyui_style` (and `inhouse`, which samples with it) and `diffsynth_style`
share it. (The live adapters run the installed pipeline's own loop instead.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from implementations.zimage.dit_capture import capture_blocks
from parity.stages.denoise import Denoise

# advance(x, k) -> (the latent step k produces from x, the velocity it applied).
Advance = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
# predict(x, k) -> the velocity step k applies; step(x, v, k) -> the next latent.
Predict = Callable[[torch.Tensor, int], torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def sampling_loop(
    advance: Advance,
    steps: int,
    noise: torch.Tensor,
    latent_dtype: torch.dtype = torch.float32,
    forced_latents: torch.Tensor | None = None,
    recorder: BlockRecorder | None = None,
    device: torch.device | str = "cpu",
) -> Denoise:
    """Run `steps` steps of `advance` from `noise` on `device` (the DiT's); with `forced_latents`,
    step k starts from its row k (whatever `advance` keeps between steps stays its own).

    Recorded per step, in float32 on the CPU: the velocity the step applied and the latent it
    produced, and the recorder's per-block activations when one is given.
    """
    x = noise.to(device=device, dtype=latent_dtype)
    latents, velocities = [x], []
    for k in range(steps):
        if forced_latents is not None:
            x = forced_latents[k].unsqueeze(0).to(device=device, dtype=latent_dtype)
        x, v = advance(x, k)
        velocities.append(v)
        latents.append(x)
    return Denoise(
        model_out=torch.cat(velocities).float().cpu(),
        latents=torch.cat(latents).float().cpu(),
        blocks=recorder.blocks if recorder is not None and recorder.blocks else None,
    )


def euler(predict: Predict, step: Step) -> Advance:
    """Euler steps as an `advance` for `sampling_loop`: each records the velocity `predict` gave it."""

    def advance(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = predict(x, k)
        return step(x, v, k), v

    return advance


class BlockRecorder:
    """Per-block outputs of the positive pass at each chosen step: the DiT's first forward, or the
    positive's sample of it when the caller names one (a batch holding the positive and others).

    Stored as `step.<k>.<block>` in float32, in the canonical token order of `capture_blocks`.
    """

    def __init__(self, model: nn.Module, steps: tuple[int, ...]) -> None:
        self.model, self.steps = model, set(steps)
        self.blocks: dict[str, torch.Tensor] = {}

    def forward(self, k: int, run: Callable[[], torch.Tensor], sample: int | None = None) -> torch.Tensor:
        if k not in self.steps or any(key.startswith(f"step.{k}.") for key in self.blocks):
            return run()
        with capture_blocks(self.model, sample) as captured:
            out = run()
        self.blocks.update({f"step.{k}.{name}": value.float().cpu() for name, value in captured.items()})
        return out
