"""What per-step capture costs: the installed diffusers pipeline run plainly vs as the harness runs it.

The harness records each step's velocity (a wrapper on `scheduler.step`) and latent (the
pipeline's `callback_on_step_end`). Both runs use the same tiny DiT, embeddings, noise and steps;
runs alternate so drift on a shared machine hits both sides alike, and the medians are compared.

    python benchmarks/capture_overhead.py [--size 512] [--steps 8] [--repeats 15] [--out reports/bench-capture.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

from implementations.diffusers_live.adapter import DiffusersAdapter
from parity.core.noise import shared_noise
from parity.models.context import Context
from parity.stages.denoise import DenoiseInputs
from parity.suite.cases import Case

TARGET = 1.10


def measure(size: int = 512, steps: int = 8, repeats: int = 15) -> dict:
    context = Context()
    adapter = DiffusersAdapter(context)
    case = Case(id="bench", prompt="A cat sleeping", height=size, width=size, steps=steps)
    embeddings = adapter.embeddings(case, adapter.tokens(case, adapter.template(case)))
    noise = shared_noise(case.seed, case.height, case.width)
    inputs = DenoiseInputs(embeddings, None, adapter.schedule(case), noise)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=None, text_encoder=None, tokenizer=None, transformer=adapter.transformer(),
    )
    pipe.set_progress_bar_config(disable=True)

    def plain() -> None:
        with torch.inference_mode():
            pipe(prompt_embeds=[embeddings.hidden], guidance_scale=0.0, num_inference_steps=steps,
                 height=size, width=size, latents=noise, output_type="latent")

    def captured() -> None:
        adapter.denoise(case, inputs)

    plain(), captured()  # warm-up: first-call allocations and RoPE tables
    times: dict[str, list[float]] = {"plain": [], "captured": []}
    for _ in range(repeats):
        for name, run in (("plain", plain), ("captured", captured)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "benchmark": "capture_overhead",
        "size": size,
        "steps": steps,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "median_seconds": medians,
        "ratio": medians["captured"] / medians["plain"],
        "target": TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (divisible by 16)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-capture.json"))
    args = parser.parse_args()
    result = measure(args.size, args.steps, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    medians = result["median_seconds"]
    print(f"plain {medians['plain']:.3f}s, captured {medians['captured']:.3f}s, ratio {result['ratio']:.3f} "
          f"(target < {TARGET}); written to {args.out}")


if __name__ == "__main__":
    main()
