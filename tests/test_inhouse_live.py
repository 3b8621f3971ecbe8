"""The live node-pack adapter on real checkouts (`nox -s references -- --comfyui DIR --inhouse-pack DIR`).

Expected values come from the stored fixtures of the real code and from the pack's own files (its
templates folder), never from what the adapter printed.
"""

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from implementations.comfyui_live import models
from implementations.comfyui_live.adapter import recording_tokenizer
from parity.core.status import MATCH
from parity.golden.expectations import Expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.judge import Runner
from parity.stages import STAGES, TEXT_STAGES
from parity.suite.adapter import Unsupported, registered_adapters
from parity.suite.cases import Case, load_cases
from parity.suite.checkouts import resolve
from parity.suite.workflow_reader import case_toml, read_workflow_file

pytest.importorskip("torchsde", reason="needs ComfyUI's requirements (nox -s references)")
NEEDED = ("ZIMAGE_PARITY_COMFYUI", "ZIMAGE_PARITY_INHOUSE_PACK")
CHECKOUTS = resolve({}) if all(os.environ.get(v) for v in NEEDED) else {}
pytestmark = pytest.mark.skipif(not CHECKOUTS, reason=f"needs both checkouts: {' and '.join(NEEDED)}")
ROOT = Path(__file__).parents[1]


def _adapters(dtype="fp32"):
    context = Context(dtype=dtype, checkouts=CHECKOUTS)
    classes = registered_adapters(CHECKOUTS)
    return context, {n: c(context) for n, c in classes.items() if c.is_reference()}


@pytest.mark.parametrize(
    "case_id", ["system-prompt", "multi-turn", "simple-encoder", "thinking-content", "turbo", "size-not-16"]
)
def test_it_reproduces_its_stored_fixtures(suite_cases, case_id):
    case = suite_cases[case_id]
    context, references = _adapters(case.dtype)
    runner = Runner(
        context, {"inhouse_live": references["inhouse_live"]}, references, FixtureStore(ROOT / "fixtures"),
        Expectations([]), STAGES, reference="inhouse_live", progress=lambda line: None,
    )
    result = runner.run([case])
    assert {r.stage: r.status for r in result.results} == {s: MATCH for s in case.stages}


def test_a_real_pack_template_renders_as_the_re_implementation_renders_it_from_the_same_folder():
    context, references = _adapters()
    live = references["inhouse_live"]
    folder = CHECKOUTS["inhouse_pack"] / "nodes" / "templates" / "z_image"
    names = sorted(p.stem for p in folder.glob("*.md"))
    assert len(names) > 100
    ours = registered_adapters(CHECKOUTS)["inhouse"](context)
    for name in names[:: len(names) // 8]:
        case = Case(id=f"t-{name}", prompt="A cat sleeping", template=name, stages=TEXT_STAGES)
        assert ours.template(case) == live.template(case), name


def test_a_template_the_pack_lacks_is_not_supported():
    _, references = _adapters()
    with pytest.raises(Unsupported, match="no template"):
        references["inhouse_live"].check_supported(Case(id="x", prompt="p", template="no-such-template"))


def test_the_empty_latent_rounds_each_side_as_the_node_does():
    """136 / 16 = 8.5: Python's round goes to the even 8, so 128 pixels, a 16x16 latent."""
    _, references = _adapters()
    noise = references["inhouse_live"].noise(Case(id="x", prompt="p", height=136, width=152))
    assert tuple(noise.shape) == (1, 16, 16, 20)


def _widget_names(node_class) -> list[str]:
    """A node's widgets in the order the UI saves their values: its inputs that are not links."""
    declared = node_class.INPUT_TYPES()
    return [name for section in ("required", "optional") for name, (kind, *_) in declared.get(section, {}).items()
            if isinstance(kind, list) or kind in ("STRING", "BOOLEAN", "INT", "FLOAT")]


def _as_saved(live, workflow: dict) -> str:
    """The string the workflow's own encoder and turn builders hand ComfyUI's tokenizer, called with
    the widget values the file holds, in its wiring (the CLIP on the node the sampler takes)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    origin = {link[0]: link[1] for link in workflow["links"]}
    sampler = next(n for n in nodes.values() if n["type"] == "KSampler")
    chain = [nodes[origin[next(i["link"] for i in sampler["inputs"] if i["name"] == "positive")]]]
    while chain[-1]["type"] == "ZImageTurnBuilder":
        chain.append(nodes[origin[next(i["link"] for i in chain[-1]["inputs"] if i["name"] == "previous")]])
    pack, clip = live.nodes.encoder, models.text_encoder(live.comfy, live.context)
    first, builders = chain[-1], chain[-2::-1]
    with recording_tokenizer(clip.tokenizer) as handed, contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        widgets = dict(zip(_widget_names(pack.ZImageTextEncoder), first["widgets_values"], strict=True))
        *_, conversation = pack.ZImageTextEncoder().encode(clip, **widgets)
        for n, node in enumerate(builders, 1):
            widgets = dict(zip(_widget_names(pack.ZImageTurnBuilder), node["widgets_values"], strict=True))
            conversation, *_ = pack.ZImageTurnBuilder().add_turn(
                conversation, clip=clip if n == len(builders) else None, **widgets
            )
    return handed[-1][0]


EXAMPLES = ["z-image_custom_nodes_workflow", "z-image_custom_nodes_multi-turn_builder_workflow"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_packs_own_example_workflows_read_into_cases_that_render_as_the_files_own_nodes_do(tmp_path, example):
    """`parity case --from-workflow` on the pack's shipped examples: the pack's nodes called with the
    file's own widget values, the pack's nodes given the case the reader made, and the
    re-implementation all hand ComfyUI the same string and ids."""
    source = CHECKOUTS["inhouse_pack"] / "example_workflows" / f"{example}.json"
    path = tmp_path / "case.toml"
    path.write_text(case_toml({"id": "example", **read_workflow_file(source).fields}), encoding="utf-8")
    (case,) = load_cases(tmp_path)
    context, references = _adapters()
    live, ours = references["inhouse_live"], registered_adapters(CHECKOUTS)["inhouse"](context)
    template = live.template(case)
    assert template.text == _as_saved(live, json.loads(source.read_text(encoding="utf-8")))
    assert ours.template(case) == template
    assert ours.tokens(case, template).input_ids == live.tokens(case, template).input_ids
