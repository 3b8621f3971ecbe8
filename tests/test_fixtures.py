"""The fixture store: verified reads, change-only writes, and writes that cannot be half done."""

import json
import os
from pathlib import Path

import pytest
import torch

from parity.core.errors import InputError
from parity.core.files import atomic_write_bytes
from parity.golden.store import FixtureStore
from parity.stages.embeddings import Embeddings
from parity.stages.outputs import StageOutputs
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.cases import Case

CASE = Case(id="c", prompt="A cat")


def outputs(scale: float = 1.0) -> StageOutputs:
    hidden = torch.arange(12, dtype=torch.float32).reshape(3, 4) * scale
    embeddings = Embeddings(hidden, torch.ones(3, dtype=torch.bool))
    return StageOutputs(template=Template("t"), tokens=Tokens([1, 2, 3], [1, 1, 1]), embeddings=embeddings)


def stored(root: Path, out: StageOutputs | None = None) -> FixtureStore:
    store = FixtureStore(root)
    store.write(CASE, "ref", out or outputs(), {"p": 1})
    store.commit()
    return store


def test_round_trip_and_change_detection(tmp_path):
    store = stored(tmp_path)
    back = FixtureStore(tmp_path).load(CASE, "ref")
    assert back.template == Template("t") and back.tokens == Tokens([1, 2, 3], [1, 1, 1])
    assert torch.equal(back.embeddings.hidden, outputs().embeddings.hidden)
    assert not store.write(CASE, "ref", outputs(), {"p": 1}).changed
    moved = store.write(CASE, "ref", outputs(2.0), {"p": 1})
    assert moved.changed and torch.equal(moved.previous.embeddings.hidden, outputs().embeddings.hidden)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_fixture_files_are_named(tmp_path, damage):
    stored(tmp_path)
    (path,) = (tmp_path / "golden" / "c").glob("ref.*.safetensors")
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    with pytest.raises(InputError, match=path.name) as err:
        FixtureStore(tmp_path).load(CASE, "ref")
    assert ("missing" if damage == "delete" else "corrupted or truncated") in str(err.value)
    assert FixtureStore(tmp_path).check_all()


def test_a_missing_fixture_says_how_to_make_it(tmp_path):
    with pytest.raises(InputError, match="parity fixtures regen"):
        FixtureStore(tmp_path).load(CASE, "ref")


def test_an_edited_case_makes_its_fixture_stale(tmp_path):
    stored(tmp_path)
    with pytest.raises(InputError, match="other case inputs"):
        FixtureStore(tmp_path).load(Case(id="c", prompt="A dog"), "ref")


def test_a_write_killed_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_regen_killed_before_commit_leaves_the_previous_fixtures(tmp_path):
    stored(tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "golden" / "c").iterdir()}
    FixtureStore(tmp_path).write(CASE, "ref", outputs(3.0), {"p": 1})  # killed here: no commit
    after = FixtureStore(tmp_path)
    assert torch.equal(after.load(CASE, "ref").embeddings.hidden, outputs().embeddings.hidden)
    assert all((tmp_path / "golden" / "c" / n).read_bytes() == b for n, b in before.items())
    # The next look says what happened, and the next regen tidies up.
    stray = after.check_all()
    assert len(stray) == 3 and all("interrupted regen" in s for s in stray)
    after.write(CASE, "ref", outputs(3.0), {"p": 1})
    after.commit()
    assert FixtureStore(tmp_path).check_all() == []
    assert len(list((tmp_path / "golden" / "c").iterdir())) == 2


def test_swapped_fixtures_are_caught_by_the_check_and_by_a_read(tmp_path):
    store = FixtureStore(tmp_path)
    other = Case(id="d", prompt="A dog")
    store.write(CASE, "ref", outputs(), {"p": 1})
    store.write(other, "ref", outputs(2.0), {"p": 1})
    store.commit()
    # Swap the two cases' files and their manifest entries' file lists: every sha256 still matches.
    data = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    manifest = data["fixtures"]
    mine, theirs = manifest["c/ref"]["files"], manifest["d/ref"]["files"]
    for name in mine:
        os.replace(tmp_path / "golden" / "c" / name, tmp_path / "golden" / "d" / name)
    for name in theirs:
        os.replace(tmp_path / "golden" / "d" / name, tmp_path / "golden" / "c" / name)
    manifest["c/ref"]["files"], manifest["d/ref"]["files"] = theirs, mine
    (tmp_path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    problems = FixtureStore(tmp_path).check_all()
    assert problems == [
        "fixture c/ref: its files say they are fixture 'd'/'ref' (swapped or misfiled: restore them, or run "
        "`parity fixtures regen`)",
        "fixture d/ref: its files say they are fixture 'c'/'ref' (swapped or misfiled: restore them, or run "
        "`parity fixtures regen`)",
    ]
    with pytest.raises(InputError, match="its files say they are fixture 'd'/'ref'"):
        FixtureStore(tmp_path).load(CASE, "ref")

