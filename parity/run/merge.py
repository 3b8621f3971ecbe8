"""`parity report --merge`: the results of a run's shards (`parity run --shard I/N --json`) joined
into the results the unsharded run gives.

Each shard's file records every case of the unsharded run in its order, so the shards' cases go
back where that run reports them. Only shards of one run join: the same split, case selection and
options, modes, stages, adapters and environment (its dtypes aside: a shard reports the ones its
cases use), every shard once. Anything else is refused, naming the files and what differs, since
its merge would be a result no run gives. Seconds add up (time spent, not wall time).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from parity.core.errors import InputError
from parity.run.results import RunResult, merge
from parity.run.results_file import read_results

MISSING_SHOWN = 5


@dataclass
class ShardResults:
    path: Path
    index: int
    count: int
    cases: list[str]  # every case of the unsharded run, in its order
    run: dict[str, Any]  # the run options the results do not show
    runs: list[RunResult]  # the run's mode first, then its companions


def read_shard(path: Path) -> ShardResults:
    data = read_results(path, f"shard results not found: {path}")
    if "shard" not in data:
        raise InputError(f"{path}: not a shard's results (write them with `parity run --shard I/N --json FILE`)")
    shard = data["shard"]
    runs = [RunResult.from_json(run) for run in [data, *data["companions"]]]
    return ShardResults(path, shard["index"], shard["count"], shard["cases"], shard["run"], runs)


def _environment(run: RunResult) -> dict[str, Any]:
    return {k: v for k, v in run.environment.items() if k != "dtype"}


def _differences(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{k}={a.get(k)!r} vs {b.get(k)!r}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))


def _check_same_run(first: ShardResults, other: ShardResults) -> None:
    pair = f"{first.path} and {other.path}"
    if other.count != first.count:
        raise InputError(f"{pair} split different ways: {first.index}/{first.count} vs {other.index}/{other.count}")
    if other.cases != first.cases:
        raise InputError(f"{pair} shard different case selections (same --cases and case files for every shard)")
    if other.run != first.run:
        raise InputError(f"{pair} ran with different options: {_differences(first.run, other.run)}")
    modes = [r.mode for r in first.runs], [r.mode for r in other.runs]
    if modes[0] != modes[1]:
        raise InputError(f"{pair} ran different modes: {', '.join(modes[0])} vs {', '.join(modes[1])}")
    for mine, theirs in zip(first.runs, other.runs, strict=True):
        for what in ("stages", "adapters"):
            if getattr(mine, what) != getattr(theirs, what):
                raise InputError(
                    f"{pair} ran different {what}: {','.join(getattr(mine, what))} vs {','.join(getattr(theirs, what))}"
                )
        if _environment(mine) != _environment(theirs):
            raise InputError(
                f"{pair} ran in different environments: {_differences(_environment(mine), _environment(theirs))}"
            )


def _check_each_shard_once(shards: list[ShardResults]) -> None:
    seen: dict[int, Path] = {}
    for shard in shards:
        if shard.index in seen:
            raise InputError(f"{seen[shard.index]} and {shard.path} are both shard {shard.index}/{shard.count}")
        seen[shard.index] = shard.path
    count = shards[0].count
    # The first few only: a count is any whole number a file says, and listing a billion would hang.
    missing = [f"{i}/{count}" for i in islice((i for i in range(1, count + 1) if i not in seen), MISSING_SHOWN)]
    if missing:
        more = count - len(seen) - len(missing)
        listed = ", ".join(missing) + (f" and {more} more" if more else "")
        raise InputError(f"shard {listed} missing: a merge needs every shard of the run")
    owner: dict[str, Path] = {}
    for shard in shards:
        for run in shard.runs:
            for case in run.references:
                if case not in shard.cases:
                    raise InputError(f"{shard.path}: case {case!r} is not among the cases of its run")
                if owner.setdefault(case, shard.path) != shard.path:
                    raise InputError(f"case {case!r} is in both {owner[case]} and {shard.path}")


def merge_shards(paths: list[Path]) -> list[RunResult]:
    """The unsharded run's results, one per mode (its mode first), from every shard's results file."""
    shards = sorted((read_shard(p) for p in paths), key=lambda s: s.index)
    for other in shards[1:]:
        _check_same_run(shards[0], other)
    _check_each_shard_once(shards)
    return [merge([s.runs[k] for s in shards], shards[0].cases) for k in range(len(shards[0].runs))]
