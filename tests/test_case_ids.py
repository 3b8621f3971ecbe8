"""Case ids become folder names, so they are held to a file-name rule (parity/core/paths.py).

The property: whatever id a case file carries, it is either refused at load with one printable
line naming the file, or its fixtures round-trip through the regen's writer and the check, and no
writer (the fixture store, `--dump`) creates a file outside its root. The CLI tests then run the
real `parity fixtures regen` and `check` on ids at the edges of the rule, and on hostile ids.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from cli_run import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.core.errors import InputError
from parity.core.paths import CASE_ID_RULE, inside
from parity.golden.store import FixtureStore
from parity.stages.embeddings import Embeddings
from parity.stages.outputs import StageOutputs, write_outputs
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.cases import load_case_file

ROOT = Path(__file__).parents[1]
HOSTILE = [
    "../../escaped", "/tmp/escaped-absolute", "a/b", "", ".", "..", "x" * 300, "a\nb", "a\x1b[31mred", "A-Upper",
    "trailing.", "-leading", "nul\x00byte", "back\\slash", "caf\u00e9", "sp ace", "golden/../..",
]


def outputs() -> StageOutputs:
    rows = Embeddings(torch.arange(8, dtype=torch.float32).reshape(2, 4), torch.ones(2, dtype=torch.bool))
    return StageOutputs(template=Template("t"), tokens=Tokens([1, 2], [1, 1]), embeddings=rows)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


ids = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="./\\-_aZ0\n\x1b", max_size=12),
    st.from_regex(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?", fullmatch=True),
    st.sampled_from(HOSTILE),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case_id=ids)
def test_an_id_is_refused_in_one_line_or_round_trips_and_no_writer_leaves_its_root(case_id):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        fixtures, dump = sandbox / "area" / "fixtures", sandbox / "area" / "dump"
        (fixtures / "cases").mkdir(parents=True)
        case_file = fixtures / "cases" / "c.toml"
        # JSON string escapes are TOML basic-string escapes; a lone surrogate makes the file malformed.
        case_file.write_text(f"[[case]]\nid = {json.dumps(case_id)}\nprompt = 'A cat'\n", encoding="utf-8")
        try:
            (case,) = load_case_file(case_file)
        except InputError as e:
            message = str(e)
            assert message.isprintable() and message.startswith("c.toml: "), message
            assert files_under(sandbox) == {case_file}
            return
        assert case.id == case_id and case_id not in HOSTILE
        store = FixtureStore(fixtures)
        store.write(case, "ref", outputs(), {"p": 1})
        store.commit()
        write_outputs(inside(dump, case.id), "adapter", outputs())
        assert FixtureStore(fixtures).check_all() == []
        assert FixtureStore(fixtures).load(case, "ref").tokens == Tokens([1, 2], [1, 1])
        created = files_under(sandbox) - {case_file, fixtures / "manifest.json"}
        assert created and all(
            p.parent in (fixtures / "golden" / case.id, dump / case.id) for p in created
        ), created


def test_inside_refuses_dot_dot_absolute_parts_and_links_that_point_away(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "away").symlink_to(tmp_path)
    assert inside(root, "a", "b.json") == root / "a" / "b.json"
    for parts in (("..", "x"), ("/etc", "passwd"), ("a", "../../x"), ("away", "x")):
        with pytest.raises(InputError, match="outside"):
            inside(root, *parts)


@pytest.fixture
def fx(tmp_path) -> Path:
    root = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", root)
    return root


def text_case(fx: Path, case_id: str) -> None:
    text = f'[[case]]\nid = {json.dumps(case_id)}\nstages = ["template", "tokens"]\nprompt = "A fox"\n'
    (fx / "cases" / "0-new.toml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("case_id", ["a", "x.y_z-0", "9" * 64])
def test_ids_at_the_edges_of_the_rule_round_trip_through_the_real_regen_and_check(fx, tmp_path, case_id):
    text_case(fx, case_id)
    regen = invoke("fixtures", "regen", "--fixtures", fx, "--cases", case_id, "--changelog", tmp_path / "cl.md")
    assert regen.rc == 1, regen  # new fixtures count as moved
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0
    assert {p.parent for p in files_under(fx / "golden") if case_id in p.parts} == {fx / "golden" / case_id}
    run = invoke("run", "--fixtures", fx, "--cases", case_id, "--adapters", "inhouse", "--dump", tmp_path / "d")
    # The pack's think block, not declared for this new case: what matters here is where the dump went.
    assert run.rc == 1, run
    assert {p.parent for p in files_under(tmp_path / "d")} == {tmp_path / "d" / case_id}


@pytest.mark.parametrize("case_id", HOSTILE)
def test_a_hostile_id_is_refused_by_regen_and_run_in_one_line_and_nothing_is_written(fx, tmp_path, case_id):
    text_case(fx, case_id)
    before = {p: p.read_bytes() for p in files_under(tmp_path)}
    for args in (
        ("fixtures", "regen", "--fixtures", fx, "--changelog", tmp_path / "cl.md"),
        ("run", "--fixtures", fx, "--dump", tmp_path / "dump", "--json", tmp_path / "r.json"),
    ):
        result = invoke(*args)
        assert result.rc == 2, result
        (line,) = result.err.splitlines()
        assert line.startswith("parity: error: 0-new.toml: case id ") and CASE_ID_RULE in line and line.isprintable()
    assert {p: p.read_bytes() for p in files_under(tmp_path)} == before
    assert not Path("/tmp/escaped-absolute").exists() and not (tmp_path.parent / "escaped").exists()


def test_a_manifest_key_that_is_a_path_is_refused_before_anything_is_read_or_written(fx, tmp_path):
    manifest = json.loads((fx / "manifest.json").read_text(encoding="utf-8"))
    manifest["fixtures"]["../../outside/diffusers"] = manifest["fixtures"]["short/diffusers"]
    (fx / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = invoke("fixtures", "check", "--fixtures", fx)
    assert result.rc == 2
    assert "manifest.json: entry '../../outside/diffusers' needs a '<case id>/<reference>' key" in result.err


def test_the_rule_admits_every_case_id_of_the_suite():
    for path in sorted((ROOT / "fixtures" / "cases").glob("*.toml")):
        assert load_case_file(path)  # raises InputError on an id the rule refuses
