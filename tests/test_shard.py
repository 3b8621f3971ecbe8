"""Scaling a run past one process: `parity run --shard I/N`, `parity report --merge`, `parity run -j N`.

The contract: the shards of a run partition its cases (each case in exactly one shard, the same
shard every time); their results merged are the unsharded run's, entry for entry and in the same
order, only the seconds (time spent) differing; `-j N` gives what one process gives at the thread
count each worker gets. Bad shard values, and merges of results that do not belong to one run,
are one line and exit 2.

The runs cover `[ebn]*`: `empty` (fp32, text), `bf16-short` (bf16, text) and `non-square` (fp32,
sampling). Two dtypes make a run report its cases grouped by dtype, not in case-file order, so a
merge that only concatenated its shards would get the order wrong.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_run import Result, bad_input, invoke
from hypothesis import given
from hypothesis import strategies as st

from parity.run.shard import Shard, parse_shard
from parity.suite.cases import Case

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "fixtures"
CASES = "[ebn]*"
RUN = ("run", "--cases", CASES, "--with-forced", "--blocks", "--fixtures", FIXTURES)
WORKERS = 2


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def without_seconds(data: dict) -> dict:
    """A results file minus the time it took (the one thing that legitimately differs)."""
    kept = {k: v for k, v in data.items() if k != "seconds"}
    if "companions" in data:
        kept["companions"] = [without_seconds(c) for c in data["companions"]]
    return kept


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Runs:
    unsharded: Path
    unsharded_html: Path
    shards: list[Path]
    parallel: Path
    parallel_err: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    out = tmp_path_factory.mktemp("shard")
    # The one-process runs use the thread count each -j worker gets, so their numbers can be compared
    # bit for bit (the thread count moves the last bits of reductions).
    with torch_threads(max(1, torch.get_num_threads() // WORKERS)):
        whole = invoke(*RUN, "--json", out / "whole.json", "--report", out / "whole.html")
        assert whole.rc == 0, whole
        for i in (1, 2):
            shard = invoke(*RUN, "--shard", f"{i}/2", "--json", out / f"shard{i}.json")
            assert shard.rc == 0, shard
    parallel = invoke(*RUN, "-j", WORKERS, "--json", out / "parallel.json")
    assert parallel.rc == 0, parallel
    return Runs(out / "whole.json", out / "whole.html", [out / "shard1.json", out / "shard2.json"],
                out / "parallel.json", parallel.err)


# --- the shard rule ----------------------------------------------------------------------------------


case_ids = st.lists(st.text(min_size=1, max_size=8), min_size=0, max_size=40, unique=True)


@given(ids=case_ids, count=st.integers(1, 9), data=st.data())
def test_the_shards_of_any_count_partition_the_cases(ids, count, data):
    cases = [Case(id=i, prompt="") for i in ids]
    shards = [Shard(i, count).select(cases) for i in range(1, count + 1)]
    dealt = [c.id for shard in shards for c in shard]
    assert sorted(dealt) == sorted(ids)  # every case once: disjoint and complete
    for shard in shards:  # each keeps the order it was given
        assert [c.id for c in shard] == [i for i in ids if i in {c.id for c in shard}]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # dealt round-robin
    shuffled = data.draw(st.permutations(cases))
    # The same hands whatever order the cases arrive in (another machine, another file layout).
    assert [{c.id for c in Shard(i, count).select(shuffled)} for i in range(1, count + 1)] == [
        {c.id for c in shard} for shard in shards
    ]


def test_the_rule_is_sorted_ids_dealt_round_robin():
    cases = [Case(id=i, prompt="") for i in ("d", "b", "e", "a", "c")]  # sorted: a b c d e
    assert [c.id for c in Shard(1, 2).select(cases)] == ["e", "a", "c"]  # a, c, e in the given order
    assert [c.id for c in Shard(2, 2).select(cases)] == ["d", "b"]
    assert parse_shard("2/10") == Shard(2, 10)


@pytest.mark.parametrize("value", ["0/2", "3/2", "a/b", "1/0", "2", "-1/2", "1/2/3", "", " 1/2", "１/2"])
def test_a_bad_shard_value_is_one_line_and_exit_2(value):
    line = bad_input(invoke("run", f"--shard={value}", "--fixtures", FIXTURES), "--shard")
    assert repr(value) in line or value in line


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_a_bad_job_count_is_one_line_and_exit_2(jobs):
    bad_input(invoke("run", "-j", jobs, "--fixtures", FIXTURES), "-j", jobs)


# --- merging shards ----------------------------------------------------------------------------------


def test_merged_shards_are_the_unsharded_run(runs, tmp_path):
    whole = read(runs.unsharded)
    shards = [read(p) for p in runs.shards]
    # The test means something only if the shards split the run and the run is not in file order.
    assert list(whole["references"]) == ["empty", "non-square", "bf16-short"]
    assert [list(s["references"]) for s in shards] == [["bf16-short", "non-square"], ["empty"]]
    # Given in any order.
    res = invoke("report", "--merge", *reversed(runs.shards), "--json", tmp_path / "merged.json",
                 "--out", tmp_path / "merged.html")
    assert res.rc == 0, res
    merged = read(tmp_path / "merged.json")
    assert without_seconds(merged) == without_seconds(whole)
    assert json.dumps(without_seconds(merged)) == json.dumps(without_seconds(whole))  # key order too
    assert merged["seconds"] == pytest.approx(sum(s["seconds"] for s in shards), abs=0.002)
    for k, companion in enumerate(merged["companions"]):
        assert companion["seconds"] == pytest.approx(sum(s["companions"][k]["seconds"] for s in shards), abs=0.002)
    # The HTML report too, but for the one sentence that says how long the run took.
    took = re.compile(r"Run took [0-9.]+ s\.")
    html = (tmp_path / "merged.html").read_text(encoding="utf-8")
    assert took.search(html)
    assert took.sub("", html) == took.sub("", runs.unsharded_html.read_text(encoding="utf-8"))
    # Like the run: one summary line per mode.
    assert re.search(r"match.*free\)\n.*match.*forced\)\n", res.out), res.out


def test_a_shard_dealt_no_case_writes_valid_empty_results(tmp_path):
    # One case, two shards: shard 2 gets nothing, and still merges into the one-case run.
    run = ("run", "--cases", "empty", "--stages", "template", "--fixtures", FIXTURES)
    assert invoke(*run, "--json", tmp_path / "whole.json").rc == 0
    assert invoke(*run, "--shard", "1/2", "--json", tmp_path / "1.json").rc == 0
    res = invoke(*run, "--shard", "2/2", "--json", tmp_path / "2.json")
    assert res.rc == 0, res
    empty = read(tmp_path / "2.json")
    assert empty["results"] == [] and empty["references"] == {} and empty["cross"] == []
    assert empty["environment"]["dtype"] == [] and empty["stages"] == ["template"]
    assert empty["shard"]["cases"] == ["empty"]
    assert "no results" in res.out
    merged = invoke("report", "--merge", tmp_path / "1.json", tmp_path / "2.json", "--json", tmp_path / "m.json",
                    "--out", tmp_path / "m.html")
    assert merged.rc == 0, merged
    assert without_seconds(read(tmp_path / "m.json")) == without_seconds(read(tmp_path / "whole.json"))


def _twice(one: dict, two: dict) -> list[dict]:
    return [one, one]


def _alone(one: dict, two: dict) -> list[dict]:
    return [one]


def _each_run(edit: Callable[[dict], None]) -> Callable[[dict, dict], list[dict]]:
    """Apply `edit` to the second shard's result and its companions."""

    def doctor(one: dict, two: dict) -> list[dict]:
        for run in [two, *two["companions"]]:
            edit(run)
        return [one, two]

    return doctor


def _edit(edit: Callable[[dict], None]) -> Callable[[dict, dict], list[dict]]:
    """Apply `edit` to the second shard's file."""

    def doctor(one: dict, two: dict) -> list[dict]:
        edit(two)
        return [one, two]

    return doctor


def _overlap(one: dict, two: dict) -> list[dict]:
    # Shard 1's cases claimed again under shard 2's number.
    return [one, {**one, "shard": {**one["shard"], "index": 2}}]


BAD_MERGES = {
    "the same shard twice": (_twice, ["a.json", "b.json", "both shard 1/2"]),
    "a shard missing": (_alone, ["2/2", "missing"]),
    "overlapping shards": (_overlap, ["bf16-short", "in both", "a.json", "b.json"]),
    "different modes": (_edit(lambda d: d.update(companions=[])), ["different modes", "free, forced", "free"]),
    "different stages": (_each_run(lambda r: r.update(stages=["template"])), ["different stages", "template"]),
    "different adapters": (_each_run(lambda r: r["adapters"].pop()), ["different adapters"]),
    "different environments": (
        _each_run(lambda r: r["environment"].update(threads=r["environment"]["threads"] + 1)),
        ["different environments", "threads="],
    ),
    "different options": (_edit(lambda d: d["shard"]["run"].update(blocks=False)), ["different options", "blocks"]),
    "different splits": (_edit(lambda d: d["shard"].update(count=3)), ["split different ways", "2/3"]),
    "different case selections": (
        _edit(lambda d: d["shard"].update(cases=d["shard"]["cases"][:2])), ["different case selections"]
    ),
    "malformed shard record": (_edit(lambda d: d["shard"].pop("cases")), ["b.json", "malformed", "cases"]),
    "not a shard": (_edit(lambda d: d.pop("shard")), ["b.json", "not a shard", "--shard"]),
}


@pytest.mark.parametrize("name", BAD_MERGES)
def test_a_merge_of_results_that_are_not_one_runs_shards_is_refused(runs, tmp_path, name):
    doctor, fragments = BAD_MERGES[name]
    files = [write(tmp_path / f"{'ab'[k]}.json", d) for k, d in enumerate(doctor(*map(read, runs.shards)))]
    bad_input(invoke("report", "--merge", *files, "--json", tmp_path / "m.json", "--out", tmp_path / "m.html"),
              *fragments)
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.html").exists()


def test_a_merge_of_missing_or_unreadable_files_is_refused(runs, tmp_path):
    bad_input(invoke("report", "--merge", runs.shards[0], tmp_path / "gone.json"), "gone.json", "not found")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    bad_input(invoke("report", "--merge", runs.shards[0], tmp_path / "bad.json"), "bad.json", "unreadable")


def test_a_merge_exits_1_on_an_unexpected_divergence_like_the_run(runs, tmp_path):
    two = read(runs.shards[1])
    two["results"][0].update(status="unexpected")
    res = invoke("report", "--merge", runs.shards[0], write(tmp_path / "b.json", two), "--out", tmp_path / "m.html")
    assert res.rc == 1, res
    case, adapter, stage = (two["results"][0][k] for k in ("case", "adapter", "stage"))
    assert f"UNEXPECTED {case} / {adapter} / {stage}" in res.out


def test_report_without_merge_still_renders_a_results_file(runs, tmp_path):
    res = invoke("report", "--json", runs.unsharded, "--out", tmp_path / "r.html")
    assert res.rc == 0, res
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == runs.unsharded_html.read_text(encoding="utf-8")


# --- -j N --------------------------------------------------------------------------------------------


def test_parallel_workers_give_what_one_process_gives(runs):
    # Everything but the seconds, the environment (its thread count) and the warnings included.
    assert without_seconds(read(runs.parallel)) == without_seconds(read(runs.unsharded))
    # One progress line per case and mode, as each finishes.
    lines = [line for line in runs.parallel_err.splitlines() if re.match(r"\[\d+/6\] ", line)]
    assert len(lines) == 6, runs.parallel_err
    for case in ("empty", "non-square", "bf16-short"):
        for mode in ("free", "forced"):
            assert sum(f"] {case} ({mode}): " in line for line in lines) == 1, (case, mode)


def test_an_input_error_in_a_worker_is_one_line_and_exit_2(tmp_path):
    fixtures = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, fixtures)
    manifest = read(fixtures / "manifest.json")
    (name,) = [n for n in manifest["fixtures"]["empty/diffusers"]["files"] if n.endswith(".safetensors")]
    damaged = fixtures / "golden" / "empty" / name
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    # A real process, so anything a worker printed to the terminal would show.
    proc = subprocess.run(
        [sys.executable, "-m", "parity.cli", "run", "--cases", "empty", "--adapters", "inhouse", "-j", "2",
         "--fixtures", fixtures],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    bad_input(Result(proc.returncode, proc.stdout, proc.stderr), "empty/diffusers", name)
    assert proc.stdout == ""
