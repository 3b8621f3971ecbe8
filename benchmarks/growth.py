"""How the cost of comparing one case grows with sampling steps and image size.

In-process, on the tiny model: every default adapter runs the denoise stage of one case (the stage
that dominates a run; the text stages do not depend on steps or size), timed as the fastest of a
few repeats (as `timeit` does: on a shared machine, anything slower is someone else's load).
Steps grow at a fixed size, image tokens at a fixed step count; both are fitted, steps as a line
(seconds per step), tokens as a power law (the exponent says whether attention, quadratic in
tokens, has started to dominate the linear layers).

    python benchmarks/growth.py [--repeats 5] [--out reports/bench-growth.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from parity.models.context import Context
from parity.run.execute import execute, without
from parity.suite.adapter import Unsupported, select_adapters
from parity.suite.cases import Case

STEPS = (1, 2, 4, 8)
SIDES = (128, 256, 512, 768)
BASE_SIDE, BASE_STEPS = 256, 4
PIXELS_PER_TOKEN = 16 * 16  # the VAE's 8x downscale, then the DiT's 2x2 patches


def denoise_seconds(adapters: dict, case: Case, repeats: int) -> float:
    """The fastest of `repeats` runs of every adapter's denoise stage, the stages before it done once."""
    encoded = {}
    for name, adapter in adapters.items():
        try:
            adapter.check_supported(case)
        except Unsupported:
            continue
        encoded[name] = execute(adapter, case, "schedule")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for name, done in encoded.items():
            execute(adapters[name], case, "denoise", resume=without(done, "denoise"))
        times.append(time.perf_counter() - start)
    return min(times)


def measure(repeats: int = 5) -> dict:
    context = Context()
    adapters = {name: cls(context) for name, cls in select_adapters(None).items()}
    base = Case(id="growth", prompt="A red fox asleep on a mossy log at dawn", height=BASE_SIDE, width=BASE_SIDE)
    denoise_seconds(adapters, base, 1)  # warm-up: first-call allocations, RoPE tables
    by_steps = [denoise_seconds(adapters, replace(base, steps=s), repeats) for s in STEPS]
    by_side = [denoise_seconds(adapters, replace(base, steps=BASE_STEPS, height=n, width=n), repeats) for n in SIDES]
    tokens = [n * n // PIXELS_PER_TOKEN for n in SIDES]
    per_step, fixed = np.polyfit(STEPS, by_steps, 1)
    exponent, _ = np.polyfit(np.log(tokens), np.log(by_side), 1)
    # The slope between the two largest sizes: where attention's quadratic cost shows first.
    largest = np.log(by_side[-1] / by_side[-2]) / np.log(tokens[-1] / tokens[-2])
    return {
        "benchmark": "growth",
        "adapters": sorted(adapters),
        "steps": {"values": list(STEPS), "side": BASE_SIDE, "seconds": [round(t, 4) for t in by_steps],
                  "fit": {"seconds_per_step": round(float(per_step), 4), "fixed_seconds": round(float(fixed), 4)}},
        "image_tokens": {"values": tokens, "sides": list(SIDES), "steps": BASE_STEPS,
                         "seconds": [round(t, 4) for t in by_side], "fit": {"exponent": round(float(exponent), 3),
                                 "exponent_largest": round(float(largest), 3)}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-growth.json"))
    args = parser.parse_args()
    result = measure(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    fit = result["steps"]["fit"]
    print(f"denoise, all adapters: {fit['seconds_per_step']:.3f}s per step + {fit['fixed_seconds']:.3f}s; "
          f"time ~ image_tokens^{result['image_tokens']['fit']['exponent']} "
          f"(^{result['image_tokens']['fit']['exponent_largest']} between the two largest); written to {args.out}")


if __name__ == "__main__":
    main()
