"""The runner on the real suite: the findings the harness exists to show, in both modes."""

from pathlib import Path

import pytest

from parity.core.status import DECLARED, MATCH, STALE, UNEXPECTED, UNSUPPORTED
from parity.golden.expectations import Expectations, load_expectations
from parity.golden.store import FixtureStore
from parity.run.judge import Runner
from parity.stages import TEXT_STAGES
from parity.suite.adapter import registered_adapters

ROOT = Path(__file__).parents[1]
THINK_BLOCK = [151667, 271, 151668, 271]


def make_runner(context, mode="free", expectations=None, names=("diffusers", "diffsynth_style", "comfyui_style",
                                                                 "inhouse", "qwen3_chat")):
    classes = registered_adapters()
    adapters = {n: classes[n](context) for n in names}
    references = {n: adapters.get(n) or c(context) for n, c in classes.items() if c.is_reference()}
    if expectations is None:
        expectations = load_expectations(ROOT / "fixtures" / "expectations.toml")
    return Runner(context, adapters, references, FixtureStore(ROOT / "fixtures"), expectations,
                  TEXT_STAGES, mode, progress=lambda line: None)


@pytest.fixture(scope="module")
def free(context, suite_cases):
    fp32 = [c for c in suite_cases.values() if c.dtype == "fp32"]
    return make_runner(context).run(fp32)


def by(result, case, adapter):
    return {r.stage: r for r in result.results if r.case == case and r.adapter == adapter}


def test_the_default_suite_has_no_unexpected_divergence(free):
    assert free.failures == []
    assert free.exit_code == 0


def test_inhouse_default_differs_by_exactly_the_think_block(free):
    rows = by(free, "short", "inhouse")
    assert rows["template"].status == DECLARED
    spans = rows["tokens"].detail.spans
    assert len(spans) == 1
    assert spans[0].op == "insert" and list(spans[0].obtained_ids) == THINK_BLOCK
    assert "[151667, 271, 151668, 271]" in rows["tokens"].summary
    # The causal encoder leaves every row before the think block unchanged.
    assert rows["embeddings"].detail.compared_shape[0] == 11
    assert rows["embeddings"].detail.mismatched == 0


def test_inhouse_without_think_block_equals_the_references(free):
    for adapter in ("inhouse", "diffsynth_style", "comfyui_style", "qwen3_chat", "diffusers"):
        assert {s: r.status for s, r in by(free, "think-off", adapter).items()} == dict.fromkeys(TEXT_STAGES, MATCH)


def test_downstream_stages_inherit_a_declared_divergence_when_free_running(free):
    rows = by(free, "short", "inhouse")
    assert rows["tokens"].status == DECLARED
    assert rows["tokens"].reason.startswith("follows from the template divergence")


def test_diffsynth_matches_diffusers_on_every_plain_prompt(free, suite_cases):
    # DiffSynth samples with Euler only (res_multistep is reported as not supported).
    plain = [c.id for c in suite_cases.values() if c.is_plain_prompt and c.dtype == "fp32" and c.sampler == "euler"]
    assert len(plain) >= 8
    for case in plain:
        assert {r.status for r in by(free, case, "diffsynth_style").values()} == {MATCH}, case


def test_chat_cases_are_unsupported_by_single_prompt_references(free):
    rows = by(free, "multi-turn", "diffusers")
    assert {r.status for r in rows.values()} == {UNSUPPORTED}
    assert free.references["multi-turn"] == "qwen3_chat"
    assert free.references["short"] == "diffusers"


def test_forced_mode_isolates_the_stage_that_adds_the_error(context, suite_cases):
    result = make_runner(context, mode="forced").run([suite_cases["short"], suite_cases["weight-escapes"]])
    assert result.failures == []
    short = by(result, "short", "inhouse")
    assert short["template"].status == DECLARED
    assert short["tokens"].status == MATCH  # fed the reference template, it tokenizes identically
    escapes = by(result, "weight-escapes", "comfyui_style")
    assert escapes["template"].status == MATCH and escapes["tokens"].status == DECLARED


def test_an_undeclared_divergence_fails_and_a_stale_declaration_fails(context, suite_cases):
    bare = make_runner(context, expectations=Expectations(), names=("inhouse",)).run([suite_cases["short"]])
    assert [r.stage for r in bare.failures if r.status == UNEXPECTED] == ["template", "tokens", "embeddings"]
    assert bare.exit_code == 1

    from parity.golden.expectations import Divergence

    stale = Expectations((Divergence(("inhouse",), ("think-off",), ("template",), "claimed but false"),))
    result = make_runner(context, expectations=stale, names=("inhouse",)).run([suite_cases["think-off"]])
    assert [(r.stage, r.status) for r in result.failures] == [("template", STALE)]
