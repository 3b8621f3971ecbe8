"""Source trees given by path: declared by adapters, checked before anything runs, and the stored
outputs of the real code they hold judging the re-implementations that model it (no checkout needed)."""

from pathlib import Path

import pytest
from cli_run import bad_input, invoke

from parity.analysis.probe_runner import ProbeRunner
from parity.core.errors import InputError
from parity.core.labels import fidelity_label, split_label
from parity.core.status import MATCH, UNEXPECTED
from parity.golden.expectations import load_expectations
from parity.golden.store import FixtureStore
from parity.run.judge import Runner
from parity.stages import STAGES
from parity.stages.template import Template
from parity.suite.adapter import registered_adapters, unavailable_adapters
from parity.suite.checkouts import declared, resolve

ROOT = Path(__file__).parents[1]
COMFYUI_FILES = ("nodes.py", "comfy/sd.py", "comfy/samplers.py", "comfy/model_management.py")


def fake_comfyui(root: Path, zimage: bool) -> Path:
    files = [*COMFYUI_FILES, *(("comfy/text_encoders/z_image.py", "comfy/ldm/lumina/model.py") if zimage else ())]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_the_live_comfyui_adapter_declares_its_checkout_and_is_unavailable_without_one():
    assert "comfyui" in declared()
    reason = unavailable_adapters({})["comfyui_live"]
    assert "--comfyui DIR" in reason and "ZIMAGE_PARITY_COMFYUI" in reason
    assert "comfyui_live" not in registered_adapters({})


@pytest.mark.parametrize(
    ("tree", "says"),
    [
        (lambda tmp: tmp / "absent", "not a directory"),
        (lambda tmp: tmp, "not a ComfyUI checkout (no nodes.py)"),
        (lambda tmp: fake_comfyui(tmp, zimage=False), "no Z-Image support"),
    ],
)
def test_a_tree_that_is_not_a_comfyui_with_zimage_is_one_line_naming_where_it_came_from(tmp_path, tree, says):
    path = tree(tmp_path)
    with pytest.raises(InputError) as given:
        resolve({"comfyui": path}, environ={})
    assert str(given.value).startswith(f"--comfyui {path}: ") and says in str(given.value)
    with pytest.raises(InputError) as variable:
        resolve({}, environ={"ZIMAGE_PARITY_COMFYUI": str(path)})
    assert str(variable.value).startswith(f"ZIMAGE_PARITY_COMFYUI {path}: ") and says in str(variable.value)


def test_the_option_wins_over_the_environment_variable(tmp_path):
    given = fake_comfyui(tmp_path / "given", zimage=True)
    assert resolve({"comfyui": given}, environ={"ZIMAGE_PARITY_COMFYUI": str(tmp_path / "elsewhere")}) == {
        "comfyui": given
    }
    assert resolve({}, environ={}) == {}


def test_the_command_refuses_a_checkout_that_is_not_comfyui(tmp_path):
    bad_input(invoke("run", "--cases", "turbo", "--comfyui", tmp_path), "--comfyui", "not a ComfyUI checkout")
    bad_input(invoke("schedule", "--adapter", "comfyui_live", "--steps", "2"), "comfyui_live", "--comfyui DIR")
    bad_input(invoke("tables", "--comfyui", tmp_path), "--comfyui", "not a ComfyUI checkout")


def test_the_tables_build_the_live_adapters_on_the_checkouts_they_are_given(tmp_path):
    given = {"comfyui": fake_comfyui(tmp_path, zimage=True)}
    lab = ProbeRunner(checkouts=given)
    assert "comfyui_live" in lab.default_names() and lab.context("bf16").checkouts == given
    assert "comfyui_live" not in ProbeRunner().default_names()


@pytest.mark.parametrize(("adapter", "reference"), [("comfyui_style", "comfyui_live"), ("a", "b")])
def test_fidelity_labels_split_back(adapter, reference):
    assert split_label(fidelity_label(adapter, reference)) == (adapter, reference)
    assert split_label(adapter) == (adapter, None)


def _runner(context, adapters):
    classes = registered_adapters()
    references = {n: c(context) for n, c in classes.items() if c.is_reference()}
    return Runner(
        context, adapters, references, FixtureStore(ROOT / "fixtures"),
        load_expectations(ROOT / "fixtures" / "expectations.toml"), STAGES, progress=lambda line: None,
    )


def test_comfyui_style_is_judged_against_the_stored_real_comfyui_on_every_stage(context, suite_cases):
    adapter = registered_adapters()["comfyui_style"](context)
    result = _runner(context, {"comfyui_style": adapter}).run([suite_cases["turbo"]])
    label = fidelity_label("comfyui_style", "comfyui_live")
    rows = {r.stage: r.status for r in result.results if r.adapter == label}
    assert rows == dict.fromkeys(STAGES, MATCH)
    assert label in result.adapters


def test_a_re_implementation_that_parts_from_the_real_code_fails(context, suite_cases):
    adapter = registered_adapters()["comfyui_style"](context)
    real = adapter.template
    adapter.template = lambda case: Template(real(case).text + " ")
    result = _runner(context, {"comfyui_style": adapter}).run([suite_cases["short"]])
    label = fidelity_label("comfyui_style", "comfyui_live")
    failed = [r for r in result.failures if r.adapter == label]
    assert failed and failed[0].stage == "template" and failed[0].status == UNEXPECTED
    assert result.exit_code == 1


def test_a_tree_that_is_not_the_node_pack_is_one_line(tmp_path):
    with pytest.raises(InputError) as raised:
        resolve({"inhouse_pack": tmp_path}, environ={})
    assert str(raised.value).startswith(f"--inhouse-pack {tmp_path}: not the QwenImageWanBridge node pack")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "z_image_encoder.py").write_text("class Other: ...\n")
    (tmp_path / "nodes" / "qwen_vl_helpers.py").write_text("class ZImageEmptyLatent: ...\n")
    with pytest.raises(InputError, match="has no Z-Image nodes"):
        resolve({"inhouse_pack": tmp_path}, environ={})
    reason = unavailable_adapters({})["inhouse_live"]
    assert "--comfyui DIR" in reason or "--inhouse-pack DIR" in reason
