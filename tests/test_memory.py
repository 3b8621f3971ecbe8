"""Bounded memory: the text encoder makes way for the DiT when the device cannot hold both.

The runner runs every stage before the denoise stage for every case first, so once the DiT is
needed the text encoder never is again; these tests make memory "short" by reporting 1 byte free.
"""

from pathlib import Path

import pytest

from parity.core import memory
from parity.golden.expectations import load_expectations
from parity.golden.store import FixtureStore
from parity.models.context import Context
from parity.run.judge import Runner
from parity.stages import STAGES
from parity.suite.adapter import registered_adapters

ROOT = Path(__file__).parents[1]
ADAPTERS = ("diffusers", "diffsynth_style", "comfyui_style", "inhouse", "qwen3_chat")


def run(context, cases, mode="free"):
    classes = registered_adapters()
    adapters = {n: classes[n](context) for n in ADAPTERS}
    references = {n: adapters.get(n) or c(context) for n, c in classes.items() if c.is_reference()}
    lines: list[str] = []
    runner = Runner(context, adapters, references, FixtureStore(ROOT / "fixtures"),
                    load_expectations(ROOT / "fixtures" / "expectations.toml"), STAGES, mode,
                    blocks=True, progress=lines.append)
    return runner.run(cases), lines


class WatchedContext(Context):
    """Records which model each access asks for, in order."""

    def __getattribute__(self, name):
        if name in ("text_encoder", "dit_state_dict"):
            object.__getattribute__(self, "__dict__").setdefault("_asked", []).append(name)
        return object.__getattribute__(self, name)


@pytest.fixture
def cases(suite_cases):
    return [suite_cases[i] for i in ("short", "turbo", "cfg-on", "own-noise")]


@pytest.mark.parametrize("mode", ["free", "forced"])
def test_short_memory_releases_the_encoder_once_and_changes_no_result(cases, monkeypatch, mode):
    plenty, _ = run(Context(), cases, mode)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    context = WatchedContext()
    short, lines = run(context, cases, mode)
    assert [line for line in lines if line.startswith("memory:")] == [
        next(line for line in lines if "the text encoder was released" in line)
    ]
    asked = context.__dict__["_asked"]
    first_dit = asked.index("dit_state_dict")
    assert "text_encoder" in asked[:first_dit] and "text_encoder" not in asked[first_dit:]
    assert "text_encoder" not in context.__dict__
    assert [r.__dict__ for r in short.results] == [r.__dict__ for r in plenty.results]


def test_plenty_of_memory_keeps_the_encoder(cases, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**50)
    context = Context()
    _, lines = run(context, cases[:2])
    assert not any(line.startswith("memory:") for line in lines)
    assert "text_encoder" in context.__dict__


@pytest.mark.parametrize(
    ("needed", "available", "short"),
    [(100, None, False), (100, 1000, False), (100, 110, True), (100, 120, False), (100, 119, True)],
)
def test_is_short_leaves_headroom_and_trusts_an_unknown_amount(needed, available, short):
    assert memory.is_short(needed, available) is short


def test_available_bytes_reads_this_machine():
    free = memory.available_bytes("cpu")
    assert free is None or free > 0
    assert memory.available_bytes("mps") is None


@pytest.mark.parametrize("name", ["diffsynth_style", "comfyui_style", "inhouse"])
def test_stages_build_no_autograd_graph(suite_cases, name):
    """A graph would keep what a backward needs, e.g. every layer's fused qkv weight: a second copy."""
    from parity.run.execute import execute

    adapter = registered_adapters()[name](Context())
    outputs, _ = execute(adapter, suite_cases["turbo"], "denoise")
    assert not outputs.denoise.model_out.requires_grad
    assert not outputs.embeddings.hidden.requires_grad


def test_both_modes_never_hold_the_encoder_beside_the_dit(cases, monkeypatch):
    """`--with-forced` runs the forced mode's text stages after the free mode's DiT stages: a context
    whose encoder made way for the DiT is replaced rather than loading the encoder beside the DiT."""
    from parity.run import plan as suite
    from parity.run.plan import Options, RunPlan, Suite

    both_at_once: list[str] = []

    class OneModelAtATime(Context):
        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if name in ("text_encoder", "dit_state_dict"):
                loaded = object.__getattribute__(self, "__dict__")
                if "text_encoder" in loaded and "dit_state_dict" in loaded:
                    both_at_once.append(name)
            return value

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    monkeypatch.setattr(suite, "Context", OneModelAtATime)
    plan = RunPlan(fixtures=ROOT / "fixtures", adapters=list(ADAPTERS), stages=STAGES, mode="free",
                   with_forced=True, reference=None, dump=None, blocks=False, options=Options())
    run_suite = Suite(plan, progress=lambda line: None)
    short = [run_suite.run(cases, mode) for mode in plan.modes]
    assert both_at_once == []
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**50)
    plenty_suite = Suite(plan, progress=lambda line: None)
    plenty = [plenty_suite.run(cases, mode) for mode in plan.modes]
    assert [[r.__dict__ for r in m.results] for m in short] == [[r.__dict__ for r in m.results] for m in plenty]
