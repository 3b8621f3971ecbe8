"""Peak memory of one adapter against all of them, on a mid-size synthetic checkpoint.

A naive harness loads the weights once per implementation and pays about K times one
implementation's memory; this one shares one copy (`parity.models.context`), so all adapters should cost
little more than one. The checkpoint is `parity export --size mid` (1.3 GiB of float32 weights,
sharded), written once into the work folder and reused. Its golden fixtures are recorded there by
`parity fixtures regen`, then `parity run` runs in a fresh process per measurement, once with the
reference alone and once with every default adapter, each process's peak RSS read from the kernel.

    python benchmarks/memory.py [--layout diffusers|comfyui] [--work build/bench] [--out reports/bench-memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = """[[case]]
id = "bench"
prompt = "A red fox asleep on a mossy log at dawn, soft light"
height = 256
width = 256
steps = 2
"""
TARGET = 1.25
GIB = 2**30


def parity(*args: str) -> list[str]:
    return [sys.executable, "-m", "parity.cli", *args]


def peak_rss(command: list[str]) -> tuple[int, float]:
    """Run `command` in a fresh process: its peak resident memory in bytes and its wall seconds."""
    # stderr goes to a file, not a pipe: a pipe nobody reads until the child exits can fill and stall it.
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        # wait4 reports the usage of exactly this child; getrusage(RUSAGE_CHILDREN) would mix all of them.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in (0, 1):
            stderr.seek(0)
            said = stderr.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{said}")
    return usage.ru_maxrss * 1024, seconds


def prepare(work: Path, layout: str) -> tuple[Path, Path]:
    """The mid-size checkpoint in `layout` and a fixture root for the bench case, made once."""
    checkpoint = work / f"mid-{layout}"
    if not checkpoint.exists():
        print(f"exporting the mid-size model ({layout}) to {checkpoint}", file=sys.stderr)
        extra = ["--max-shard-size", "300MB"] if layout == "diffusers" else []
        subprocess.run(parity("export", "--format", layout, "--size", "mid", "--out", str(checkpoint), *extra),
                       check=True, stdout=subprocess.DEVNULL)
    fixtures = work / f"fixtures-{layout}"
    if not (fixtures / "manifest.json").exists():
        (fixtures / "cases").mkdir(parents=True, exist_ok=True)
        (fixtures / "cases" / "bench.toml").write_text(CASE)
        (fixtures / "expectations.toml").write_text("")
        print(f"recording the reference fixtures in {fixtures}", file=sys.stderr)
        subprocess.run(parity("fixtures", "regen", "--all", "--fixtures", str(fixtures), "--checkpoint",
                              str(checkpoint), "--changelog", str(work / "changelog.md")),
                       check=True, stdout=subprocess.DEVNULL)
    return checkpoint, fixtures


def weights_bytes(checkpoint: Path) -> int:
    return sum(p.stat().st_size for p in checkpoint.rglob("*.safetensors"))


def measure(work: Path, layout: str, one: str = "diffusers") -> dict:
    checkpoint, fixtures = prepare(work, layout)
    run = ["run", "--fixtures", str(fixtures), "--checkpoint", str(checkpoint), "--with-forced"]
    print(f"peak RSS: {one} alone", file=sys.stderr)
    alone, alone_s = peak_rss(parity(*run, "--adapters", one))
    print("peak RSS: every default adapter", file=sys.stderr)
    every, every_s = peak_rss(parity(*run))
    from parity.suite.adapter import select_adapters

    adapters = sorted(select_adapters(None))
    return {
        "benchmark": "memory",
        "layout": layout,
        "checkpoint_weights_gib": round(weights_bytes(checkpoint) / GIB, 3),
        "one_adapter": one,
        "adapters": adapters,
        "peak_rss_gib": {"one": round(alone / GIB, 3), "all": round(every / GIB, 3)},
        "seconds": {"one": round(alone_s, 1), "all": round(every_s, 1)},
        "ratio": round(every / alone, 3),
        "naive_ratio": len(adapters),
        "target": TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("diffusers", "comfyui"), default="diffusers")
    parser.add_argument("--work", type=Path, default=Path("build/bench"), help="checkpoint and fixtures (reused)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-memory.json"))
    args = parser.parse_args()
    result = measure(args.work, args.layout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    rss = result["peak_rss_gib"]
    print(f"{result['layout']}: {result['checkpoint_weights_gib']} GiB of weights; peak RSS {rss['one']} GiB with "
          f"{result['one_adapter']} alone, {rss['all']} GiB with all {len(result['adapters'])} adapters: "
          f"ratio {result['ratio']} (target <= {TARGET}); written to {args.out}")


if __name__ == "__main__":
    main()
