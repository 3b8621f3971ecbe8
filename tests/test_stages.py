"""The stage registry's contract: what every stage module declares holds together, an unknown stage is
an error that names it, and each stage's typed detail survives the results file unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import UndefinedError

from parity.compare.records import Malformed
from parity.core.errors import InputError
from parity.report.html import _environment
from parity.stages import REGISTRY, STAGES, check, stage, upstream
from parity.stages.decode import Decoded
from parity.stages.denoise import Denoise, DenoiseDetail
from parity.stages.embeddings import Embeddings
from parity.stages.outputs import StageOutputs, decode, encode
from parity.stages.schedule import Schedule
from parity.stages.template import Template
from parity.stages.tokens import Tokens

TEMPLATES = Path(__file__).parents[1] / "parity" / "report" / "templates"
CONTEXT = SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda ids: f"<{ids[0]}>"))


def test_an_unknown_stage_is_an_error_that_names_it():
    known = r"\(known: template, tokens, embeddings, schedule, denoise, decode\)"
    with pytest.raises(InputError, match=r"unknown stage 'upscale' " + known):
        stage("upscale")


def test_each_stage_consumes_only_stages_before_it():
    for n, s in enumerate(REGISTRY):
        assert all(STAGES.index(i) < n for i in s.inputs), s.name
    assert upstream("denoise") == ("template", "tokens", "embeddings", "schedule")
    assert upstream("tokens") == ("template",)


def test_each_stage_declares_what_the_harness_reads():
    records = [r for s in REGISTRY for r in s.records]
    assert len(records) == len(set(records))
    for s in REGISTRY:
        assert s.name in s.records
        assert s.path in ("text", "sampling")
        assert s.partial is None or (TEMPLATES / s.partial).is_file(), s.partial
        for key, rule in {**s.tensors, **s.tensor_families}.items():
            assert key.split(".")[0] in s.records, key
            assert rule.partner in s.tensors, key
        assert all(key.split(".")[0] in s.records for key in s.strings), s.strings
        assert s.drawn <= {f for f in s.detail.__dataclass_fields__}, s.name


def test_a_missing_side_fails_the_check_and_says_which():
    assert not check("template", Template("a"), None, CONTEXT, "fp32").passed
    missing = check("template", None, Template("a"), CONTEXT, "fp32")
    assert not missing.passed and "no template output" in missing.summary and missing.detail is None


def _pair(name: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if name == "template":
        return Template("<user>\nA cat\n<think>\n"), Template("<user>\nA cat\n")
    if name == "tokens":
        return Tokens([7, 1, 2, 9, 9, 3], [1] * 6), Tokens([7, 1, 2, 3, 0], [1, 1, 1, 1, 0])
    if name == "embeddings":
        hidden, mask = torch.randn(5, 6, generator=g), torch.ones(5, dtype=torch.bool)
        return Embeddings(hidden + 1e-3 * torch.randn(5, 6, generator=g), mask), Embeddings(hidden, mask)
    if name == "schedule":
        sigmas = torch.tensor([1.0, 0.7, 0.3, 0.0], dtype=torch.float64)
        return Schedule(sigmas * 0.99, 1 - sigmas[:-1]), Schedule(sigmas, 1 - sigmas[:-1])
    if name == "decode":
        image = torch.rand(4, 5, 3, generator=g)
        wobble = (image + 3e-3 * torch.randn(4, 5, 3, generator=g)).clamp(0, 1)
        return Decoded(wobble, (wobble * 255).to(torch.uint8)), Decoded(image, (image * 255).round().to(torch.uint8))
    model_out, latents = torch.randn(3, 2, 2, 2, generator=g), torch.randn(4, 2, 2, 2, generator=g)
    blocks = {f"step.1.layers.{k}": torch.randn(1, 4, 6, generator=g) for k in range(2)}
    drift = torch.tensor([0.0, 1e-2, 2e-2]).reshape(3, 1, 1, 1)
    ours = Denoise(model_out + drift, latents + torch.cat([torch.zeros(1, 1, 1, 1), drift]),
                   {k: v + 1e-2 for k, v in blocks.items()})
    return ours, Denoise(model_out, latents, blocks)


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(STAGES), seed=st.integers(0, 2**31 - 1))
def test_each_detail_reads_back_from_its_json_as_it_was(name: str, seed: int):
    ours, theirs = _pair(name, seed)
    for a, b in ((ours, theirs), (theirs, theirs)):
        detail = stage(name).check(a, b, CONTEXT, "fp32").detail
        assert stage(name).detail.from_json(detail.to_json()).to_json() == detail.to_json()


def test_what_only_tracing_sets_and_a_shape_mismatch_read_back_too():
    detail = stage("denoise").check(*_pair("denoise", 0), CONTEXT, "fp32").detail
    traced = replace(detail, blocks_step=1, blocks_unavailable="not here", first_nonfinite_block="layers.0")
    assert DenoiseDetail.from_json(traced.to_json()) == traced
    ours, theirs = _pair("denoise", 0)
    other = Denoise(ours.model_out[:, :1], ours.latents[:, :1])
    mismatch = stage("denoise").check(other, theirs, CONTEXT, "fp32").detail
    assert mismatch.to_json() == {"shape_mismatch": True}
    assert DenoiseDetail.from_json(mismatch.to_json()) == mismatch


def test_a_detail_with_a_key_its_record_lacks_is_refused_with_its_path():
    detail = stage("denoise").check(*_pair("denoise", 0), CONTEXT, "fp32").detail
    with pytest.raises(Malformed) as e:
        DenoiseDetail.from_json({**detail.to_json(), "surprise": 1}, "results[0].detail")
    assert e.value.where == "results[0].detail" and "surprise" in e.value.problem
    with pytest.raises(Malformed) as e:
        DenoiseDetail.from_json({**detail.to_json(), "steps": -1}, "d")
    assert e.value.where == "d.steps"


def test_outputs_round_trip_through_their_stored_form():
    outputs = StageOutputs(meta={"adapter": "a", "case": "c"})
    for name in STAGES:
        ours, _ = _pair(name, 1)
        outputs.put({name: ours})
    back = decode(*encode(outputs), "here")
    assert encode(back) == encode(outputs)
    assert back.tokens.attended == [7, 1, 2, 9, 9, 3]
    with pytest.raises(KeyError, match="no stage produces a 'upscale' record"):
        outputs.get("upscale")
    with pytest.raises(TypeError, match="no stage produces a 'upscale' record"):
        StageOutputs(upscale=1)
    outputs.template = Template("other")
    assert outputs.get("template") == Template("other") and "template" not in vars(outputs)
    outputs.tokens = None
    assert outputs.get("tokens") is None and "tokens.input_ids" not in outputs.stored()[0]


def test_a_report_partial_reading_a_missing_field_is_an_error_not_a_blank():
    with pytest.raises(UndefinedError):
        _environment().from_string("{{ view.plot }}").render(view={})
