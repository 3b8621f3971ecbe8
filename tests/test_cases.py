"""Case files: every bad key or value is one clear InputError naming the problem."""

from pathlib import Path

import pytest

from parity.core.errors import InputError
from parity.suite.cases import load_case_file, load_cases

SUITE = Path(__file__).parents[1] / "fixtures" / "cases"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_suite_loads_with_unique_ids():
    cases = load_cases(SUITE)
    assert len({c.id for c in cases}) == len(cases) >= 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[case]]\nid = "a"\nprompt = "x"\npromt = "typo"\n', "unknown key 'promt'"),
        ('[[case]]\nid = "a"\n', "exactly one of 'prompt' or 'messages'"),
        ('[[case]]\nid = "a"\nprompt = "x"\nsteps = "8"\n', "'steps' must be int"),
        ('[[case]]\nid = "a"\nprompt = "x"\nencoder = "fancy"\n', "encoder must be one of"),
        ('[[case]]\nid = "a"\nprompt = "x"\nheight = 0\n', "height and width must be positive"),
        ('[[case]]\nid = "a"\nprompt = "x"\nseed = -1\n', "seed must not be negative"),
        ('[[case]]\nid = "a"\nprompt = "x"\ndenoise = 1.5\n', "denoise must be in (0, 1]"),
        ('[[case]]\nid = "a"\nprompt = "x"\nadd_think_block = 1\n', "'add_think_block' must be bool"),
        ('[[case]]\nid = "a"\nmessages = [{ role = "bot", content = "x" }]\n', "message role must be"),
        ("[[case]\nid = 1\n", "malformed TOML"),
        ("title = 'x'\n", "unknown top-level key 'title'"),
        ("", "no [[case]] tables"),
    ],
)
def test_bad_case_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(InputError, match=None) as err:
        load_case_file(write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_non_utf8_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'[[case]]\nid = "a"\nprompt = "\xff"\n')
    with pytest.raises(InputError, match="not UTF-8"):
        load_case_file(path)


def test_glob_selects_by_id_and_unmatched_glob_is_an_error(tmp_path):
    write(tmp_path, '[[case]]\nid = "alpha"\nprompt = "a"\n[[case]]\nid = "beta"\nprompt = "b"\n')
    assert [c.id for c in load_cases(tmp_path, "al*")] == ["alpha"]
    with pytest.raises(InputError, match="no case matches"):
        load_cases(tmp_path, "gamma")


def test_content_hash_changes_with_inputs_only(tmp_path):
    a = load_case_file(write(tmp_path, '[[case]]\nid = "a"\nprompt = "x"\n'))[0]
    b = load_case_file(write(tmp_path, '[[case]]\nid = "a"\nprompt = "x"\n\n'))[0]
    c = load_case_file(write(tmp_path, '[[case]]\nid = "a"\nprompt = "y"\n'))[0]
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_every_case_field_has_a_declared_type():
    from dataclasses import fields

    from parity.suite.cases import _TYPES, Case

    assert set(_TYPES) == {f.name for f in fields(Case)} - {"source"}


def test_a_non_utf8_expectations_file_is_one_clear_error(tmp_path):
    from parity.golden.expectations import load_expectations

    path = tmp_path / "expectations.toml"
    path.write_bytes(b'[[divergence]]\nreason = "\xff"\n')
    with pytest.raises(InputError, match=r"expectations\.toml: not UTF-8"):
        load_expectations(path)
