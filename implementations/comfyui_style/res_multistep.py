"""ComfyUI's `res_multistep` sampler (`comfy/k_diffusion/sampling.py`), as `sample_res_multistep` runs it.

`sample_res_multistep` calls `res_multistep` with eta 0, so every step goes down to the next sigma
(`sigma_down = sigma_next`) and adds no noise: its noise term is drawn but scaled by `sigma_up = 0`,
so it adds exact zeros and is left out here. The update, in the model's x0 (denoised) predictions,
with t = -log(sigma) and h = t_next - t:
- the first step, which has no history, and a step to sigma 0, where t_next is infinite, are Euler
  steps, `x + (x - denoised) / sigma * (sigma_next - sigma)`;
- every other step is the second-order exponential multistep update of arXiv 2308.02157, reading the
  previous step's prediction: `exp(-h) x + h (b1 denoised + b2 denoised_prev)`, with
  `c2 = (t_prev - t) / h`, `b1 = phi1(-h) - phi2(-h) / c2`, `b2 = phi2(-h) / c2`, `phi1(z) =
  expm1(z) / z`, `phi2(z) = (phi1(z) - 1) / z` (NaN coefficients zeroed, as ComfyUI does).
The arithmetic is ComfyUI's: float32 sigmas as 0-d tensors, its order of operations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from implementations.zimage.sampling import Advance

# denoised(x, k) -> the model's x0 prediction at step k (after guidance).
Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def _phi1(z: torch.Tensor) -> torch.Tensor:
    return torch.expm1(z) / z


def _phi2(z: torch.Tensor) -> torch.Tensor:
    return (_phi1(z) - 1.0) / z


def multistep_update(
    x: torch.Tensor, denoised: torch.Tensor, previous: torch.Tensor, sigmas: torch.Tensor, k: int
) -> torch.Tensor:
    """Step k's second-order update from x, given this step's and the previous step's predictions."""
    t, t_next, t_prev = (sigmas[i].log().neg() for i in (k, k + 1, k - 1))
    h = t_next - t
    # ComfyUI's t_old is the previous step's sigma_down, which with eta 0 is this step's sigma: t.
    c2 = (t_prev - t) / h
    phi1, phi2 = _phi1(-h), _phi2(-h)
    b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
    b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
    return h.neg().exp() * x + h * (b1 * denoised + b2 * previous)


def res_multistep(denoised: Denoiser, sigmas: torch.Tensor) -> Advance:
    """The sampler as an `advance` for `sampling_loop`, over float32 `sigmas` (ending with 0).

    The history (the previous step's prediction) is the sampler's own: teacher-forced, it is what
    this sampler predicted from the previous step's given latent. No single velocity drives a
    multistep update, so each step records the effective one, `(x_next - x) / (sigma_next -
    sigma)`: the velocity an Euler step would need to land where this step did.
    """
    previous: torch.Tensor | None = None

    def advance(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal previous
        current = denoised(x, k)
        sigma, sigma_next = sigmas[k], sigmas[k + 1]
        if sigma_next == 0 or previous is None:
            x_next = x + (x - current) / sigma * (sigma_next - sigma)
        else:
            x_next = multistep_update(x, current, previous, sigmas, k)
        previous = current
        return x_next, (x_next - x) / (sigma_next - sigma)

    return advance
