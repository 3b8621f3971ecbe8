"""Reference fixtures: the drift check, environment warnings, and the N-way view."""

import shutil
from pathlib import Path

import pytest
import torch

from parity.cli import main
from parity.golden.expectations import Expectations
from parity.golden.store import FixtureStore
from parity.run.judge import Runner, environment_differences
from parity.stages.embeddings import Embeddings
from parity.stages.outputs import StageOutputs
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.cases import Case, load_cases

ROOT = Path(__file__).parents[1]


@pytest.fixture
def fixtures_copy(tmp_path) -> Path:
    target = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", target)
    return target


def test_the_live_references_reproduce_the_stored_fixtures(fixtures_copy, capsys):
    code = main(["fixtures", "regen", "--check", "--cases", "short", "--fixtures", str(fixtures_copy)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 of 2 fixture(s) reproduced" in out


def test_the_drift_check_fails_on_a_perturbed_fixture_and_writes_nothing(fixtures_copy, capsys):
    store = FixtureStore(fixtures_copy)
    (case,) = load_cases(fixtures_copy / "cases", "short")
    stored = store.load(case, "diffusers")
    hidden = stored.embeddings.hidden.clone()
    hidden[3, 7] += 0.01  # a drift a new library release could cause
    rows = Embeddings(hidden, stored.embeddings.mask)
    moved = StageOutputs(stored.meta, template=stored.template, tokens=stored.tokens, embeddings=rows)
    store.write(case, "diffusers", moved, store.entry("short", "diffusers")["provenance"])
    store.commit()
    before = sorted(p.read_bytes() for p in (fixtures_copy / "golden" / "short").iterdir())
    code = main(["fixtures", "regen", "--check", "--cases", "short", "--fixtures", str(fixtures_copy)])
    out = capsys.readouterr().out
    assert code == 1
    assert "short/diffusers: NOT REPRODUCED: embeddings:" in out
    assert sorted(p.read_bytes() for p in (fixtures_copy / "golden" / "short").iterdir()) == before


def test_a_different_environment_is_named():
    entry = {"provenance": {"environment": {"torch": "2.14.1", "threads": 2, "device": "cpu"}}}
    here = {"torch": "2.13.0", "threads": 2, "device": "cpu"}
    assert environment_differences(entry, here) == [
        "fixtures were recorded with torch='2.14.1'; this run has torch='2.13.0'"
    ]
    assert environment_differences(entry, entry["provenance"]["environment"]) == []


def test_the_nway_view_shows_a_reference_that_disagrees_with_another(context):
    case = Case(id="c", prompt="x", stages=("template", "tokens", "embeddings"))
    rows = torch.zeros(2, 3)
    agree = StageOutputs(template=Template("t"), tokens=Tokens([1, 2], [1, 1]),
                         embeddings=Embeddings(rows, torch.ones(2, dtype=torch.bool)))
    odd = StageOutputs(template=Template("t!"), tokens=Tokens([1, 2], [1, 1]),
                       embeddings=Embeddings(rows, torch.ones(2, dtype=torch.bool)))
    runner = Runner(context, {}, {}, FixtureStore(Path("unused")), Expectations())
    cells = runner._fixtures_against_each_other(case, {"a": agree, "b": agree, "odd": odd})
    failing = {(c.adapter, c.reference, c.stage) for c in cells if not c.passed}
    assert failing == {
        ("a (fixture)", "odd", "template"),
        ("b (fixture)", "odd", "template"),
        ("odd (fixture)", "a", "template"),
        ("odd (fixture)", "b", "template"),
    }
