"""Every benchmark in one run, side by side: what the harness costs on this machine.

- suite: wall time of the default parity job (`parity run --with-forced --blocks` plus its report and
  JSON, a fresh process, the environment already built), and how it grows with the number of cases
  (shards 1/8, 1/4, 1/2 and the whole suite; fitted as a line: startup + seconds per case);
- growth: the denoise stage against sampling steps and image tokens (`growth.py`);
- capture: what per-step capture costs against the plain diffusers pipeline (`capture_overhead.py`);
- memory: peak RSS of all adapters against one on a 1.3 GiB synthetic checkpoint (`memory.py`);
- report: the time to render the HTML report from the suite's results, and its size.

Results go to reports/bench.json, with each target and whether it was met, and a plot to
reports/bench.png. Timings on a shared machine move; the ratios are measured within one process
or back to back so that drift hits both sides.

    python benchmarks/suite.py [--quick] [--work build/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import capture_overhead
import growth
import memory
import numpy as np
import torch

TARGETS = {"suite_seconds": 60.0, "capture_ratio": 1.10, "memory_ratio": 1.25, "report_seconds": 5.0,
           "report_mib": 5.0}
SHARDS = (8, 4, 2, 1)
MIB = 2**20


def timed_run(args: list[str]) -> tuple[float, dict]:
    """Wall seconds of `parity run ARGS` in a fresh process, and the results JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        start = time.perf_counter()
        done = subprocess.run(memory.parity("run", *args, "--json", str(results)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise SystemExit(f"parity run {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return seconds, json.loads(results.read_text())


def suite() -> dict:
    default = ["--with-forced", "--blocks"]
    with tempfile.TemporaryDirectory() as tmp:
        seconds, data = timed_run([*default, "--report", str(Path(tmp) / "parity.html")])
    counts, times = [], []
    for n in SHARDS:
        t, shard = (seconds, data) if n == 1 else timed_run([*default, "--shard", f"1/{n}"])
        counts.append(len({r["case"] for r in shard["results"]}))
        times.append(t)
    per_case, startup = np.polyfit(counts, times, 1)
    return {
        "command": "parity run --with-forced --blocks --report ... --json ...",
        "seconds": round(seconds, 2),
        "cases": {"values": counts, "seconds": [round(t, 2) for t in times],
                  "fit": {"seconds_per_case": round(float(per_case), 3), "startup_seconds": round(float(startup), 2)}},
    }, data


def report(data: dict) -> dict:
    from parity.report.html import write_html

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parity.html"
        start = time.perf_counter()
        write_html(data, out)
        seconds = time.perf_counter() - start
        return {"seconds": round(seconds, 3), "mib": round(out.stat().st_size / MIB, 3)}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    cases = result["suite"]["cases"]
    ax = axes[0][0]
    ax.plot(cases["values"], cases["seconds"], "o-")
    fit = cases["fit"]
    xs = np.array([0, max(cases["values"])])
    ax.plot(xs, fit["startup_seconds"] + fit["seconds_per_case"] * xs, "--", label="fit")
    ax.axhline(TARGETS["suite_seconds"], color="red", lw=0.8, label="target")
    ax.set(title="default suite vs cases", xlabel="cases", ylabel="seconds")
    ax.legend()
    steps = result["growth"]["steps"]
    ax = axes[0][1]
    ax.plot(steps["values"], steps["seconds"], "o-")
    ax.set(title=f"denoise (all adapters) vs steps, {steps['side']}px", xlabel="steps", ylabel="seconds")
    tokens = result["growth"]["image_tokens"]
    ax = axes[1][0]
    ax.loglog(tokens["values"], tokens["seconds"], "o-")
    ax.set(title=f"denoise vs image tokens ({tokens['steps']} steps): ~tokens^{tokens['fit']['exponent']} "
           f"(^{tokens['fit']['exponent_largest']} at the top)",
           xlabel="image tokens", ylabel="seconds")
    ax = axes[1][1]
    names = ["capture", "memory", "report s", "report MiB"]
    values = [result["capture"]["ratio"], result["memory"]["ratio"], result["report"]["seconds"],
              result["report"]["mib"]]
    targets = [TARGETS["capture_ratio"], TARGETS["memory_ratio"], TARGETS["report_seconds"], TARGETS["report_mib"]]
    ax.bar(names, [v / t for v, t in zip(values, targets, strict=True)])
    ax.axhline(1.0, color="red", lw=0.8)
    ax.set(title="measured / target (below 1 meets it)", ylabel="fraction of target")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench"), help="the mid-size checkpoint (reused)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (capture 5, growth 2)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench.json"))
    args = parser.parse_args()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    print("suite: the default parity job, then shards of it", file=sys.stderr)
    result["suite"], data = suite()
    print("report: rendering the suite's results", file=sys.stderr)
    result["report"] = report(data)
    print("capture overhead", file=sys.stderr)
    result["capture"] = capture_overhead.measure(repeats=5 if args.quick else 15)
    print("growth with steps and image size", file=sys.stderr)
    result["growth"] = growth.measure(repeats=2 if args.quick else 5)
    print("memory: one adapter vs all on the mid-size checkpoint", file=sys.stderr)
    result["memory"] = memory.measure(args.work, "diffusers")
    measured = {"suite_seconds": result["suite"]["seconds"], "capture_ratio": result["capture"]["ratio"],
                "memory_ratio": result["memory"]["ratio"], "report_seconds": result["report"]["seconds"],
                "report_mib": result["report"]["mib"]}
    result["targets"] = {k: {"target": TARGETS[k], "measured": round(v, 3), "met": v < TARGETS[k]}
                         for k, v in measured.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    for name, t in result["targets"].items():
        print(f"{name}: {t['measured']} (target < {t['target']}) {'met' if t['met'] else 'MISSED'}")
    print(f"written to {args.out} and {args.out.with_suffix('.png')}")
    if not all(t["met"] for t in result["targets"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
