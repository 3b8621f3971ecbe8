"""The results file's validation (parity/run/results_file.py) and the fixture files'
(parity/stages/outputs.py `decode`).

The property: whatever JSON value a results file holds, `check_results` either refuses it with an
InputError or accepts it, and then the report renders it, its runs read back as RunResults and, for
a shard, the merge takes it, none of them raising anything else. Arbitrary JSON is nearly always
refused at the top, so most examples start from a results file that has every kind of detail the
report draws (built here from the real comparators) and change it: its structure damaged (a value
replaced by any JSON value, a key deleted or added), a few values replaced by others of their kind
(any integer, float or string), or every float in it replaced by any finite float (huge, tiny and
negative errors are what the report's log-scaled plots must still draw).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from cli_run import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from parity.core.errors import InputError
from parity.core.status import DECLARED, MATCH, STALE, STATUSES, UNEXPECTED, UNSUPPORTED
from parity.report.html import render_html
from parity.run.merge import merge_shards
from parity.run.results import CrossCheck, RunResult, StageResult
from parity.run.results_file import RESULTS_FORMAT, check_results, read_results, results_json
from parity.run.shard import Shard
from parity.stages import STAGES, stage
from parity.stages.denoise import Denoise
from parity.stages.embeddings import Embeddings
from parity.stages.outputs import StageOutputs, decode, encode
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "fixtures"


def _stage_results(case: str, adapter: str, mode: str) -> list[StageResult]:
    """One result per stage with the detail the real comparators give a small divergence."""
    g = torch.Generator().manual_seed(0)
    context = SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda ids: f"<{ids[0]}> "))
    template = stage("template").check(
        Template("<user>\nA cat\n<think>\n"), Template("<user>\nA cat\n"), context, "fp32"
    )
    tokens = stage("tokens").check(
        Tokens([7, 1, 2, 9, 9, 3], [1] * 6), Tokens([7, 1, 2, 3, 0], [1, 1, 1, 1, 0]), context, "fp32"
    )
    hidden, mask = torch.randn(5, 6, generator=g), torch.ones(5, dtype=torch.bool)
    embeddings = stage("embeddings").check(Embeddings(hidden + 1e-3 * torch.randn(5, 6, generator=g), mask),
                                           Embeddings(hidden, mask), context, "fp32")
    sigmas = torch.tensor([1.0, 0.7, 0.3, 0.0], dtype=torch.float64)
    schedule = stage("schedule").check(Schedule(sigmas * 0.99, 1 - sigmas[:-1]), Schedule(sigmas, 1 - sigmas[:-1]),
                                       context, "fp32")
    model_out, latents = torch.randn(3, 2, 2, 2, generator=g), torch.randn(4, 2, 2, 2, generator=g)
    blocks = {f"step.1.layers.{k}": torch.randn(1, 4, 6, generator=g) for k in range(2)}
    drift = torch.tensor([0.0, 1e-2, 2e-2]).reshape(3, 1, 1, 1)
    denoise = stage("denoise").check(
        Denoise(model_out + drift, latents + torch.cat([torch.zeros(1, 1, 1, 1), drift]),
                {k: v + 1e-2 for k, v in blocks.items()}),
        Denoise(model_out, latents, blocks), context, "fp32",
    )
    denoise = replace(denoise, detail=replace(denoise.detail, blocks_step=1))
    checks = {"template": template, "tokens": tokens, "embeddings": embeddings, "schedule": schedule,
              "denoise": denoise}
    statuses = {"template": DECLARED, "tokens": UNEXPECTED, "embeddings": STALE, "schedule": MATCH,
                "denoise": DECLARED if mode == "free" else UNEXPECTED}
    return [StageResult(case, adapter, stage, statuses[stage], c.summary, "a reason", c.detail)
            for stage, c in checks.items()]


def _run(mode: str) -> RunResult:
    results = [
        *_stage_results("a", "ours", mode),
        *[StageResult("a", "theirs", s, UNSUPPORTED, "not supported", "cannot") for s in STAGES],
        *_stage_results("b", "ours", mode)[:2],
    ]
    entry = {"case_hash": "0" * 64, "files": {}, "provenance": {"environment": {"threads": 2}}}
    return RunResult(
        mode=mode, references={"a": "ref", "b": "ref"}, adapters=["ours", "theirs"], stages=list(STAGES),
        results=results,
        environment={"torch": "2", "device": "cpu", "dtype": "fp32", "threads": 2, "checkpoint": None},
        seconds=1.5, warnings=["fixtures were recorded with threads=1; this run has threads=2"],
        cross=[CrossCheck("a", "template", "ours", "ref", False, "text differs")],
        fixtures={"a/ref": entry, "b/ref": entry},
    )


def rich_results() -> dict[str, Any]:
    """A one-shard results file holding every kind of detail the report draws, in both modes."""
    data = results_json([_run("free"), _run("forced")])
    data["shard"] = Shard(1, 1).to_json(["a", "b"], {"reference": None, "blocks": True, "dtype": None})
    return json.loads(json.dumps(data))


RICH = rich_results()


def accepted_and_read(data: Any, tmp: Path) -> bool:
    """Whether `data` was accepted; if it was, that the report, RunResult and the merge all take it."""
    try:
        check_results(data, "results.json")
    except InputError:
        return False
    render_html(data)
    for run in [data, *data["companions"]]:
        RunResult.from_json({k: v for k, v in run.items() if k not in ("format", "companions", "shard")})
    if "shard" in data:
        path = tmp / "shard.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        try:
            merged = merge_shards([path])
        except InputError:
            return True
        # What a merge writes is itself a results file (whose report is this one but for the seconds).
        check_results(results_json(merged), "merged.json")
    return True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into `value`, the empty path (the whole) included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*prefix, i))
    return found


def at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def a_path(draw: st.DrawFn, data: Any, leaves: bool) -> tuple:
    """A path into `data` (only to a leaf when `leaves`), each field as likely as any other: a heatmap's
    hundred cells count as one field, not as a hundred."""
    by_field: dict[tuple, list[tuple]] = {}
    for path in paths(data):
        if not leaves or not isinstance(at(data, path), dict | list):
            by_field.setdefault(tuple("[]" if isinstance(k, int) else k for k in path), []).append(path)
    return draw(st.sampled_from(by_field[draw(st.sampled_from(sorted(by_field, key=repr)))]))


def of_its_kind(value: Any) -> st.SearchStrategy:
    """Values of `value`'s JSON type, extremes included: what a check of types alone lets through."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from([0, 1, 2, 2**63 - 1, 2**63, 10**40, -1]) | st.integers()
    if isinstance(value, float):
        return st.sampled_from([5e-324, 1e-300, 1.7e308, 0.0, -1.7e308, math.nan, -math.inf]) | st.floats()
    if isinstance(value, str):
        return st.sampled_from([*STATUSES, *STAGES, "free", "forced", "a", "b", ""]) | st.text(max_size=12)
    return json_values


@st.composite
def damaged(draw: st.DrawFn) -> Any:
    """RICH with its structure damaged: a value replaced by any JSON value, a key deleted or added."""
    data = copy.deepcopy(RICH)
    for _ in range(draw(st.integers(1, 3))):
        path = a_path(draw, data, leaves=False)
        if not path:
            return draw(json_values)
        parent, key = at(data, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(json_values)
    return data


@st.composite
def retyped(draw: st.DrawFn) -> Any:
    """RICH with a few leaves given other values of their own kind: mostly accepted, so mostly drawn."""
    data = copy.deepcopy(RICH)
    for _ in range(draw(st.integers(1, 8))):
        path = a_path(draw, data, leaves=True)
        parent, key = at(data, path[:-1]), path[-1]
        parent[key] = draw(of_its_kind(parent[key]))
    return data


@st.composite
def refloated(draw: st.DrawFn) -> Any:
    """RICH with every float in it replaced by any finite float: each example puts huge, tiny and negative
    values into every number the report plots at once (a random leaf or two would seldom be one)."""
    finite = st.sampled_from([5e-324, 1e-300, 1.7e308, -1.7e308, 0.0]) | st.floats(allow_nan=False,
                                                                                     allow_infinity=False)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return draw(finite) if isinstance(value, float) else value

    return walk(RICH)


def test_the_rich_results_are_accepted_and_render(tmp_path):
    assert accepted_and_read(RICH, tmp_path)
    assert RICH["format"] == RESULTS_FORMAT and next(iter(RICH)) == "format"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_json_value_is_refused_with_an_input_error_or_renders(value, tmp_path):
    accepted_and_read(value, tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged())
def test_damaged_results_are_refused_with_an_input_error_or_render(data, tmp_path):
    accepted_and_read(data, tmp_path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=retyped())
def test_results_with_any_values_of_the_right_kind_are_refused_with_an_input_error_or_render(data, tmp_path):
    accepted_and_read(data, tmp_path)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=refloated())
def test_results_with_any_finite_numbers_render(data, tmp_path):
    assert accepted_and_read(data, tmp_path)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: d.pop("format"), "no 'format' key"),
    (lambda d: d.update(format=True), "results format True"),
    (lambda d: d.update(extra=1), "the file: unknown key 'extra'"),
    (lambda d: d["results"][0].update(case="z"), "results[0].case: 'z' is not a case of this run"),
    (lambda d: d["fixtures"].update({"z/ref": {}}), "fixtures['z/ref']: not the fixture of a case of this run"),
    (lambda d: d["companions"][0]["results"][3].update(stage="sample"), "companions[0].results[3].stage: unknown"),
    (lambda d: d["results"][4]["detail"]["blocks"]["step.1.layers.0"].update(max_abs="big"),
     "results[4].detail.blocks['step.1.layers.0'].max_abs: must be a finite number, got a string"),
    (lambda d: d["results"][2]["detail"]["diff_heatmap"]["values"][0].pop(), "rows of different lengths"),
    (lambda d: d["results"][3]["detail"].pop("obtained_sigmas"), "missing key 'obtained_sigmas'"),
    (lambda d: d["results"][0].update(summary="\ud800"), "results[0].summary: not valid Unicode"),
    (lambda d: d["shard"].update(index=2), "shard.index: shard 2 of 1"),
    (lambda d: d["environment"].update(deep=json.loads("[" * 150 + "]" * 150)), "environment.deep"),
])
def test_each_refusal_names_the_json_path_of_the_bad_value(edit, fragment):
    data = copy.deepcopy(RICH)
    edit(data)
    with pytest.raises(InputError, match=r"^results\.json: ") as refused:
        check_results(data, "results.json")
    assert fragment in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_number_too_long_to_convert_is_unreadable_results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"format": 1, "seconds": ' + "1" * 5000 + "}", encoding="utf-8")
    with pytest.raises(InputError, match="unreadable results"):
        read_results(path, "not found")


def test_a_runs_json_reads_back_renders_and_merges(tmp_path):
    run = ("run", "--cases", "short", "--adapters", "inhouse", "--stages", "template,tokens", "--fixtures", FIXTURES)
    assert invoke(*run, "--json", tmp_path / "plain.json").rc == 0
    assert invoke(*run, "--shard", "1/1", "--json", tmp_path / "shard.json").rc == 0
    data = read_results(tmp_path / "plain.json", "not found")
    assert data["format"] == RESULTS_FORMAT
    assert RunResult.from_json(data).to_json() == {k: v for k, v in data.items() if k not in ("format", "companions")}
    assert invoke("report", "--json", tmp_path / "plain.json", "--out", tmp_path / "r.html").rc == 0
    merged = invoke("report", "--merge", tmp_path / "shard.json", "--json", tmp_path / "m.json",
                    "--out", tmp_path / "m.html")
    assert merged.rc == 0, merged
    assert read_results(tmp_path / "m.json", "not found")["results"] == data["results"]
    # A shard of a huge split: refused at once, naming the first shards missing (not listing them all).
    shard = read_results(tmp_path / "shard.json", "not found")
    shard["shard"]["count"] = 10**18
    (tmp_path / "huge.json").write_text(json.dumps(shard), encoding="utf-8")
    with pytest.raises(InputError, match=r"^shard 2/10{18}, 3/10{18}, .* and 999999999999999994 more missing"):
        merge_shards([tmp_path / "huge.json"])


# --- fixture and dump files: decode takes back what encode writes, and refuses the rest with one line ---


def test_decode_takes_back_every_stage_encode_writes():
    g = torch.Generator().manual_seed(0)
    outputs = StageOutputs(
        template=Template("<user>\nA cat\n"), tokens=Tokens([1, 2, 3], [1, 1, 0]),
        embeddings=Embeddings(torch.randn(3, 4, generator=g).to(torch.bfloat16), torch.tensor([True, True, False])),
        negative=Embeddings(torch.randn(2, 4, generator=g), torch.tensor([True, True])),
        schedule=Schedule(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.5],
                                                                                           dtype=torch.float64)),
        denoise=Denoise(torch.randn(2, 2, 2, 2, generator=g), torch.randn(3, 2, 2, 2, generator=g),
                        {"step.0.layers.0": torch.randn(1, 3, 4, generator=g)}),
        meta={"adapter": "ours", "case": "a", "versions": {"lib": "1.0"}, "skipped": {}},
    )
    back = decode(*encode(outputs), "a/ours")
    assert encode(back) == encode(outputs)
    assert back.template == outputs.template and back.tokens == outputs.tokens and back.meta == outputs.meta


def test_dumps_of_a_sampling_run_decode(tmp_path):
    dump = tmp_path / "dump"
    res = invoke("run", "--cases", "turbo", "--fixtures", FIXTURES, "--dump", dump)
    assert res.rc == 0, res
    written = sorted(dump.glob("*/*.safetensors"))
    assert len(written) >= 5
    for tensors in written:
        outputs = decode(tensors.read_bytes(), tensors.with_suffix(".json").read_bytes(), str(tensors))
        assert outputs.denoise is not None or outputs.template is not None


def _encoded(changes: dict[str, torch.Tensor | None] | None = None) -> tuple[bytes, bytes]:
    """A small fixture's files, with `changes` made to its tensors (None: that tensor left out)."""
    outputs = StageOutputs(tokens=Tokens([1, 2], [1, 1]),
                           schedule=Schedule(torch.tensor([1.0, 0.0], dtype=torch.float64),
                                             torch.tensor([0.0], dtype=torch.float64)),
                           meta={"adapter": "ours"})
    tensors, strings = outputs.stored()
    tensors |= changes or {}
    return save({k: v for k, v in tensors.items() if v is not None}), json.dumps(strings).encode()


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"tokens.attention_mask": None}, "tokens.input_ids without tokens.attention_mask"),
    ({"tokens.attention_mask": torch.tensor([1, 1, 1])}, "tokens.attention_mask is 3 long"),
    ({"schedule.sigmas": torch.tensor([1.0, 0.0])}, "schedule.sigmas: must be float64, not float32"),
    ({"schedule.sigmas": torch.tensor([1.0], dtype=torch.float64)}, "schedule.sigmas is 1 long"),
    ({"embeddings.hidden": torch.zeros(2, 3, dtype=torch.int64), "embeddings.mask": torch.ones(2, dtype=torch.bool)},
     "embeddings.hidden: must be a floating-point tensor"),
    ({"denoise.latents": torch.zeros(2, 1, 2, 2)}, "denoise.latents without denoise.model_out"),
    ({"denoise.model_out": torch.zeros(1, 1, 2, 2), "denoise.latents": torch.zeros(2, 1, 2, 3)},
     "one latent shape for both"),
    ({"denoise.model_out": torch.zeros(2, 1, 2, 2), "denoise.latents": torch.zeros(3, 1, 2, 2)},
     "denoise.model_out has 2 steps, schedule.model_t 1"),
    ({"tokens.input_id": torch.tensor([1])}, "unknown tensor 'tokens.input_id'"),
])
def test_tensors_of_the_wrong_kind_for_their_key_are_one_line(changes, fragment):
    with pytest.raises(InputError, match=r"^a/ours \(safetensors\): ") as refused:
        decode(*_encoded(changes), "a/ours")
    assert fragment in str(refused.value)


@pytest.mark.parametrize(("strings", "fragment"), [
    ({"meta": {"adapter": 3}}, "meta.adapter: must be a string, got an integer"),
    ({"meta": {"case": None}}, "meta.case: must be a string, got null"),
    ({"meta": {"versions": {"lib": 1}}}, "meta.versions: must be an object of strings"),
    ({"meta": []}, "meta: must be an object, got a list"),
    ({"meta": {}, "template.text": "\ud800"}, "template.text: must be a string"),
])
def test_fixture_json_of_the_wrong_kind_is_one_line(strings, fragment):
    tensors, _ = _encoded()
    with pytest.raises(InputError, match=r"^a/ours \(JSON\): ") as refused:
        decode(tensors, json.dumps(strings).encode(), "a/ours")
    assert fragment in str(refused.value)
