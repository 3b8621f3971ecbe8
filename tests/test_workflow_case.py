"""`parity case --from-workflow`: a ComfyUI workflow read into a case file.

The workflows are built here (tests/workflows.py) in the shapes of the official Z-Image-Turbo
template and the node pack's example: the template's package declares MIT in its metadata but ships
no licence text or copyright line, so the file itself is not committed.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from cli_run import bad_input, invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflows import PACK_TEXT, Level, Settings, api_shape, official_shape, pack_shape, ui

from implementations.comfyui_style.workflow_file import read_workflow
from parity.core.paths import is_case_id
from parity.models.context import Context
from parity.suite.adapter import registered_adapters
from parity.suite.cases import load_cases
from parity.suite.workflow_reader import case_id_for, case_toml, registered_readers


def write(tmp_path: Path, data: object, name: str = "workflow.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_reader_is_registered_as_an_entry_point():
    assert registered_readers()["comfyui"] is read_workflow


def test_the_official_shape_reads_into_its_settings():
    found = read_workflow(official_shape(Settings()))
    assert found.fields == Settings().fields()
    assert list(found.fields)[:3] == ["prompt", "negative_conditioning", "sampler"]
    assert found.not_understood == ()
    assert "scheduler 'simple': the case format has no scheduler key" in found.notes
    assert any("EmptySD3LatentImage 57:13" in n for n in found.notes)
    assert any("seed control 'randomize'" in n for n in found.notes)


def test_the_api_format_reads_the_same():
    assert read_workflow(api_shape(Settings())).fields == Settings().fields()


def test_the_command_writes_the_case_file(tmp_path):
    source = write(tmp_path, official_shape(Settings(prompt="A lighthouse", seed=42)), "Z-Image Turbo!.json")
    out = tmp_path / "case.toml"
    res = invoke("case", "--from-workflow", source, "--out", out)
    assert (res.rc, res.err) == (0, "")
    text = out.read_text(encoding="utf-8")
    [case] = tomllib.loads(text)["case"]
    assert case == {
        "id": "z-image-turbo",
        "description": "From Z-Image Turbo!.json: KSampler 57:3, 8 steps of res_multistep (simple).",
        **Settings(prompt="A lighthouse", seed=42).fields(),
    }
    assert "# Every node in the workflow was understood." in text
    assert "scheduler 'simple'" in text


def test_without_out_the_case_goes_to_stdout(tmp_path):
    res = invoke("case", "--from-workflow", write(tmp_path, api_shape(Settings())), "--id", "mine")
    assert res.rc == 0
    assert tomllib.loads(res.out)["case"][0]["id"] == "mine"


def test_an_encoded_negative():
    found = read_workflow(official_shape(Settings(negative_prompt="blurry", cfg=4.0)))
    assert found.fields["negative_conditioning"] == "encoded"
    assert found.fields["negative_prompt"] == "blurry"


def test_the_pack_example_rounds_its_latent_and_reads_its_encoder():
    # 1000 / 16 = 62.5 rounds to even (992), as the node's Python round() does; 1211 becomes 1216.
    found = read_workflow(ui(pack_shape(width=1000, height=1211)))
    assert (found.fields["width"], found.fields["height"]) == (992, 1216)
    assert any("ZImageEmptyLatent 73, which rounds 1000x1211 to 992x1216" in n for n in found.notes)
    assert {k: found.fields[k] for k in ("prompt", "system_prompt", "thinking", "sampler", "steps", "seed")} == {
        "prompt": "A cat sleeping", "system_prompt": "You are a photographer.", "thinking": "Soft light.",
        "sampler": "euler", "steps": 9, "seed": 6741}
    assert (found.fields["add_think_block"], found.fields["filter_padding"]) == (True, True)
    assert "assistant" not in found.fields and "trigger_words" not in found.fields
    assert found.not_understood == ()


def test_a_template_preset_without_a_system_prompt_is_the_case_template():
    widgets = ["A cat", "", "photographic", "", True, "", "", "", False, True]
    fields = read_workflow(ui(pack_shape(encoder_widgets=widgets))).fields
    assert (fields["template"], fields["thinking"], fields["assistant"]) == ("photographic", "", "")
    assert "system_prompt" not in fields


def test_raw_mode_sends_the_raw_prompt():
    widgets = [*PACK_TEXT[:7], "<|im_start|>user\nraw<|im_end|>", False, True]
    fields = read_workflow(ui(pack_shape(encoder_widgets=widgets))).fields
    assert (fields["prompt"], fields["raw_prompt"]) == ("<|im_start|>user\nraw<|im_end|>", True)
    assert "system_prompt" not in fields


# ZImageTurnBuilder's widgets: user_prompt, thinking_content, assistant_content, is_final, strip_key_quotes,
# filter_padding.
TURNS = (["Now at night.", "Moonlight.", "A cat under the moon.", False, False, True],
         ["Add an owl.", "", "", True, False, False])


def test_a_conversation_through_turn_builders_is_a_message_list_case(tmp_path):
    found = read_workflow(ui(pack_shape(turns=TURNS)))
    fields = found.fields
    assert fields["messages"] == [
        {"role": "user", "content": "A cat sleeping"},
        {"role": "assistant", "content": "", "thinking": "Soft light."},
        {"role": "user", "content": "Now at night."},
        {"role": "assistant", "content": "A cat under the moon.", "thinking": "Moonlight."},
        {"role": "user", "content": "Add an owl."},
        {"role": "assistant", "content": ""},
    ]
    # The last turn builder encodes, so its filter_padding is the case's; the encoder's goes unused.
    assert (fields["encoder"], fields["filter_padding"], fields["negative_conditioning"]) == ("turns", False, "zeroed")
    assert fields["system_prompt"] == "You are a photographer." and "prompt" not in fields
    assert found.not_understood == ()
    path = tmp_path / "turns.toml"
    path.write_text(case_toml({"id": "turns", **fields}), encoding="utf-8")
    (case,) = load_cases(tmp_path)
    assert [m.content for m in case.messages] == [m["content"] for m in fields["messages"]]
    rendered = registered_adapters()["inhouse"](Context()).template(case).text
    typed = ("A cat sleeping", "Moonlight.", "A cat under the moon.", "Add an owl.")
    positions = [rendered.index(text) for text in typed]
    assert positions == sorted(positions) and rendered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_a_turn_builder_whose_think_block_is_off_drops_its_thinking_and_says_so():
    widgets = [*PACK_TEXT[:4], False, *PACK_TEXT[5:]]
    found = read_workflow(ui(pack_shape(encoder_widgets=widgets, turns=TURNS)))
    assert "thinking" not in found.fields["messages"][3]
    assert any("ZImageTurnBuilder 77: its thinking_content, which it drops" in n for n in found.notes)


def _turns_refused(change) -> dict:
    turns = [list(t) for t in TURNS]
    change(turns)
    return ui(pack_shape(turns=tuple(turns)))


def test_conversations_a_case_cannot_hold_are_refused(tmp_path):
    def open_end(turns):
        turns[-1][3] = False

    def stripped(turns):
        turns[0][4] = True

    for change, fragment in ((open_end, "is_final is off"), (stripped, "strip key quotes differently")):
        bad_input(invoke("case", "--from-workflow", write(tmp_path, _turns_refused(change))), fragment)


def test_values_through_primitives_reroutes_and_a_bypassed_node():
    level = pack_shape()
    level.add(90, "PrimitiveNode", [1234, "fixed"])
    level.add(91, "Reroute", input=(56, 0))
    level.add(92, "LoraLoaderModelOnly", ["style.safetensors", 1.0], mode=4, outputs=("MODEL",), model=(11, 0))
    sampler = next(n for n in level.nodes if n["id"] == 3)
    by_name = {i["name"]: i for i in sampler["inputs"]}
    by_name["seed"] = {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": level.link(90, 0, 3, 4)}
    by_name["positive"]["link"] = level.link(91, 0, 3, 1)
    by_name["model"]["link"] = level.link(92, 0, 3, 0)
    sampler["inputs"] = list(by_name.values())
    found = read_workflow(ui(level))
    assert (found.fields["seed"], found.fields["prompt"], found.fields["shift"]) == (1234, "A cat sleeping", 3.0)
    assert found.not_understood == ("LoraLoaderModelOnly 92 (bypassed)",)


def test_nodes_not_understood_are_listed_on_stderr_and_in_the_file(tmp_path):
    level = pack_shape()
    level.add(95, "ImageUpscaleWithModel", image=(3, 0))
    level.add(96, "LoraLoaderModelOnly", ["style.safetensors", 1.0], model=(31, 0))
    out = tmp_path / "case.toml"
    res = invoke("case", "--from-workflow", write(tmp_path, ui(level)), "--out", out)
    assert res.rc == 0
    assert res.err.splitlines() == [
        "parity: 2 node(s) not understood, not read into the case:",
        "  ImageUpscaleWithModel 95",
        "  LoraLoaderModelOnly 96",
    ]
    text = out.read_text(encoding="utf-8")
    assert "#   ImageUpscaleWithModel 95\n#   LoraLoaderModelOnly 96\n" in text


def test_custom_samplers_read_their_parts():
    level = Level(objects=False)
    level.add(1, "UNETLoader", ["z.safetensors", "default"])
    level.add(2, "ModelSamplingAuraFlow", [2.5], model=(1, 0))
    level.add(3, "CLIPLoader", ["q.safetensors", "lumina2", "default"])
    level.add(4, "CLIPTextEncode", ["A fox"], clip=(3, 0))
    level.add(5, "ConditioningZeroOut", conditioning=(4, 0))
    level.add(6, "EmptySD3LatentImage", [512, 768, 1])
    level.add(7, "KSamplerSelect", ["euler"])
    level.add(8, "BasicScheduler", ["simple", 6, 0.75], model=(2, 0))
    level.add(9, "RandomNoise", [77, "fixed"])
    level.add(10, "CFGGuider", [2.0], model=(2, 0), positive=(4, 0), negative=(5, 0))
    level.add(11, "SamplerCustomAdvanced", noise=(9, 0), guider=(10, 0), sampler=(7, 0), sigmas=(8, 0),
              latent_image=(6, 0))
    assert read_workflow(ui(level)).fields == {
        "prompt": "A fox", "negative_conditioning": "zeroed", "sampler": "euler", "steps": 6, "cfg": 2.0, "seed": 77,
        "shift": 2.5, "denoise": 0.75, "height": 768, "width": 512}


def _drop(level: Level, node_id: int) -> Level:
    level.nodes = [n for n in level.nodes if n["id"] != node_id]
    return level


def _self_nesting() -> dict:
    data = official_shape(Settings())
    data["definitions"]["subgraphs"][0]["nodes"].append({"id": 99, "type": data["nodes"][0]["type"], "inputs": []})
    return data


def _reroute_loop() -> dict:
    level = pack_shape()
    level.add(91, "Reroute", input=(92, 0))
    level.add(92, "Reroute", input=(91, 0))
    sampler = next(n for n in level.nodes if n["id"] == 3)
    sampler["inputs"][1]["link"] = level.link(92, 0, 3, 1)
    return ui(level)


def _two_samplers() -> dict:
    level = pack_shape()
    level.add(4, "KSampler", [1, "fixed", 9, 1, "euler", "simple", 1])
    return ui(level)


def _sampler_widgets(values: list) -> dict:
    level = pack_shape()
    next(n for n in level.nodes if n["id"] == 3)["widgets_values"] = values
    return ui(level)


BAD = {
    "not-json": ("{'nodes': [", "not JSON"),
    "nan": ('{"nodes": [], "x": NaN}', "NaN is not a JSON number"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "not-a-workflow": ([1, 2, 3], "not a workflow any reader knows (readers: comfyui)"),
    "no-sampler": (ui(_drop(pack_shape(), 3)), "no sampler node (the reader reads KSampler, KSamplerAdvanced"),
    "two-samplers": (_two_samplers(), "2 sampler nodes (KSampler 3, KSampler 4)"),
    "reroute-cycle": (_reroute_loop(), "form a cycle"),
    "subgraph-in-itself": (_self_nesting(), "contains itself"),
    "other-sampler": (_sampler_widgets([1, "fixed", 9, 1, "dpmpp_2m", "simple", 1]), "sampler 'dpmpp_2m'"),
    "bad-steps": (_sampler_widgets([1, "fixed", "nine", 1, "euler", "simple", 1]), "its steps must be int"),
    "zero-steps": (_sampler_widgets([1, "fixed", 0, 1, "euler", "simple", 1]), "steps must be at least 1"),
    "dangling-link": ({"nodes": [{"id": 1, "type": "KSampler", "inputs": [{"name": "model", "link": 5}]}],
                       "links": []}, "names link 5, which does not exist"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_workflows_are_one_line_and_exit_2(tmp_path, name):
    content, fragment = BAD[name]
    path = tmp_path / f"{name}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    bad_input(invoke("case", "--from-workflow", path), fragment)


def test_a_missing_file_and_an_out_that_is_the_input(tmp_path):
    bad_input(invoke("case", "--from-workflow", tmp_path / "absent.json"), "workflow file not found")
    source = write(tmp_path, api_shape(Settings()))
    bad_input(invoke("case", "--from-workflow", source, "--out", source), "are the same file")


def test_a_zeroed_negative_of_another_conditioning_is_refused(tmp_path):
    level = pack_shape()
    level.add(57, "CLIPTextEncode", ["other"], clip=(18, 0))
    zero = next(n for n in level.nodes if n["id"] == 76)
    zero["inputs"][0]["link"] = level.link(57, 0, 76, 0)
    bad_input(invoke("case", "--from-workflow", write(tmp_path, ui(level))), "zeroes CLIPTextEncode 57")


texts = st.text(max_size=40)
every_setting = st.builds(
    Settings,
    prompt=texts,
    negative_prompt=st.none() | texts,
    seed=st.integers(0, 2**64 - 1),
    steps=st.integers(1, 100),
    cfg=st.floats(1.0, 20.0),
    sampler=st.sampled_from(["euler", "res_multistep"]),
    scheduler=st.sampled_from(["simple", "normal", "beta"]),
    denoise=st.floats(0.01, 1.0),
    shift=st.floats(0.1, 10.0),
    width=st.integers(16, 4096),
    height=st.integers(16, 4096),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=every_setting, api=st.booleans())
def test_a_generated_workflows_settings_round_trip_through_the_case_file(s, api):
    found = read_workflow(api_shape(s) if api else official_shape(s))
    assert found.fields == s.fields()
    table = {"id": "generated", **found.fields}
    assert tomllib.loads(case_toml(table, ["a comment\nwith a newline"]))["case"] == [table]


@settings(max_examples=200, deadline=None)
@given(stem=st.text(max_size=100))
def test_every_file_name_gives_a_valid_case_id(stem):
    assert is_case_id(case_id_for(Path(f"{stem.replace('/', '')}.json")))


def test_a_subgraph_inside_a_subgraph_feeds_the_sampler_through_its_output():
    """The encoder sits two subgraphs deep; the sampler outside takes the conditioning from the
    outer instance's output, and the prompt comes from a primitive node outside both."""
    innermost = Level(objects=True)
    innermost.add(1, "CLIPTextEncode", ["unused"], clip=(-10, 0), text=(-10, 1))
    innermost.link(1, 0, -20, 0, "CONDITIONING")
    middle = Level(objects=True)
    middle.add(5, "inner-sg", clip=(-10, 0), text=(-10, 1))
    middle.link(5, 0, -20, 0, "CONDITIONING")
    definitions = [
        {"id": "inner-sg", "inputs": [{"name": "clip"}, {"name": "text"}], "nodes": innermost.nodes,
         "links": innermost.links},
        {"id": "middle-sg", "inputs": [{"name": "clip"}, {"name": "text"}], "nodes": middle.nodes,
         "links": middle.links},
    ]
    level = pack_shape()
    level.add(80, "PrimitiveStringMultiline", ["A heron at dawn"])
    level.add(81, "middle-sg", clip=(18, 0), text=(80, 0))
    sampler = next(n for n in level.nodes if n["id"] == 3)
    sampler["inputs"][1]["link"] = level.link(81, 0, 3, 1)
    zero = next(n for n in level.nodes if n["id"] == 76)
    zero["inputs"][0]["link"] = level.link(81, 0, 76, 0)
    found = read_workflow({**ui(level), "definitions": {"subgraphs": definitions}})
    assert found.fields["prompt"] == "A heron at dawn"
    assert found.fields["negative_conditioning"] == "zeroed"
    assert "add_think_block" not in found.fields


@pytest.mark.parametrize("mode", [2, 4])
def test_a_sampler_inside_a_muted_or_bypassed_subgraph_does_not_run(mode):
    official = official_shape(Settings())
    data = {**ui(pack_shape()), "definitions": official["definitions"]}
    data["nodes"].append({**official["nodes"][0], "mode": mode})
    found = read_workflow(data)
    assert (found.fields["sampler"], found.fields["steps"]) == ("euler", 9)
