"""Case files: every bad key or value is one clear InputError naming the problem."""

from dataclasses import replace
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
        ('[[case]]\nid = "a"\nprompt = "x"\nsampler = "dpmpp_2m"\n',
         "sampler must be one of euler, res_multistep, not 'dpmpp_2m'"),
        ('[[case]]\nid = "a"\nprompt = "x"\nsampler = "Euler"\n', "sampler must be one of euler, res_multistep"),
        ('[[case]]\nid = "a"\nprompt = "x"\nsampler = 1\n', "'sampler' must be str"),
        ('[[case]]\nid = "a"\nprompt = "x"\nnegative_conditioning = "none"\n',
         "negative_conditioning must be one of zeroed, encoded, not 'none'"),
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


def test_the_sampling_keys_default_to_euler_and_the_zeroed_positive(tmp_path):
    case = load_case_file(write(tmp_path, '[[case]]\nid = "a"\nprompt = "x"\n'))[0]
    assert (case.sampler, case.negative_conditioning) == ("euler", "zeroed")
    given = '[[case]]\nid = "a"\nprompt = "x"\nsampler = "res_multistep"\nnegative_conditioning = "encoded"\n'
    case = load_case_file(write(tmp_path, given))[0]
    assert (case.sampler, case.negative_conditioning) == ("res_multistep", "encoded")


def test_the_sampling_keys_at_their_defaults_keep_the_recorded_fixtures_valid(tmp_path):
    """The fixtures were recorded before these keys existed: a case that leaves them (or spells out
    their defaults) must still load its fixture, and one that changes them must not."""
    from parity.golden.store import FixtureStore

    store = FixtureStore(SUITE.parent)
    turbo = next(c for c in load_cases(SUITE, "turbo") if c.id == "turbo")
    store.load(turbo, "diffusers")
    spelled = replace(turbo, sampler="euler", negative_conditioning="zeroed")
    assert spelled.content_hash() == turbo.content_hash()
    for changed in (replace(turbo, sampler="res_multistep"), replace(turbo, negative_conditioning="encoded")):
        assert changed.content_hash() != turbo.content_hash()
        with pytest.raises(InputError, match="other case inputs"):
            store.load(changed, "diffusers")


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
