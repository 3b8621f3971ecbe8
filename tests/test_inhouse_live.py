"""The live node-pack adapter on real checkouts (`nox -s references -- --comfyui DIR --inhouse-pack DIR`).

Expected values come from the stored fixtures of the real code and from the pack's own files (its
templates folder), never from what the adapter printed.
"""

import os
from pathlib import Path

import pytest

from parity.core.status import MATCH
from parity.golden.expectations import Expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.judge import Runner
from parity.stages import STAGES, TEXT_STAGES
from parity.suite.adapter import Unsupported, registered_adapters
from parity.suite.cases import Case
from parity.suite.checkouts import resolve

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
