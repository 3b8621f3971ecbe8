"""Bounded memory: the text encoder makes way for the DiT, and the DiT for the VAE, when the device
cannot hold them together.

The runner runs every case's text stages, then every case's denoise stage, then every case's decode
stage, so once a model is needed the one before it never is again (but for a trace, a rerun of a
denoise step, which brings the DiT back); these tests make memory "short" by reporting 1 byte free.
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


def run(make_context, cases, mode="free"):
    """A run on a context `make_context(say=...)` builds, and every line it printed (the memory lines
    come from the context)."""
    lines: list[str] = []
    context = make_context(say=lines.append)
    classes = registered_adapters()
    adapters = {n: classes[n](context) for n in ADAPTERS}
    references = {n: adapters.get(n) or c(context) for n, c in classes.items() if c.is_reference()}
    runner = Runner(context, adapters, references, FixtureStore(ROOT / "fixtures"),
                    load_expectations(ROOT / "fixtures" / "expectations.toml"), STAGES, mode,
                    blocks=True, progress=lines.append)
    return runner.run(cases), lines, context


MODELS = ("text_encoder", "dit_state_dict", "vae_state_dict")


class WatchedContext(Context):
    """Records which model each access asks for, in order, and any access made while two are loaded."""

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name in MODELS:
            loaded = object.__getattribute__(self, "__dict__")
            loaded.setdefault("_asked", []).append(name)
            if sum(m in loaded for m in MODELS) > 1:
                loaded.setdefault("_together", []).append(name)
        return value


@pytest.fixture
def cases(suite_cases):
    return [suite_cases[i] for i in ("short", "turbo", "cfg-on", "own-noise")]


@pytest.mark.parametrize("mode", ["free", "forced"])
def test_short_memory_holds_one_model_at_a_time_and_changes_no_result(cases, monkeypatch, mode):
    plenty, _, _ = run(Context, cases, mode)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    short, lines, context = run(WatchedContext, cases, mode)
    released = [line.split("; released ")[1].split(" (")[0] for line in lines if line.startswith("memory:")]
    # Each phase's model makes way for the next; a trace after the decode phase brings the DiT back.
    assert released[:2] == ["the text encoder", "the DiT"] and set(released[2:]) <= {"the VAE"}
    asked = context.__dict__["_asked"]
    first_dit, first_vae = asked.index("dit_state_dict"), asked.index("vae_state_dict")
    assert "text_encoder" in asked[:first_dit] and "text_encoder" not in asked[first_dit:]
    assert "dit_state_dict" in asked[first_dit:first_vae]
    assert context.__dict__.get("_together", []) == []
    assert [r.__dict__ for r in short.results] == [r.__dict__ for r in plenty.results]


def test_plenty_of_memory_keeps_the_encoder(cases, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**50)
    _, lines, context = run(Context, cases[:2])
    assert not any(line.startswith("memory:") for line in lines)
    assert all(m in context.__dict__ for m in MODELS)


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


def test_both_modes_never_hold_two_models_at_once(cases, monkeypatch):
    """`--with-forced` runs the forced mode's text stages after the free mode's decode stages: a context
    whose models made way is replaced rather than loading the encoder beside the others."""
    from parity.run import plan as suite
    from parity.run.plan import Options, RunPlan, Suite

    contexts: list[WatchedContext] = []

    def watched(*args, **kwargs):
        contexts.append(WatchedContext(*args, **kwargs))
        return contexts[-1]

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    monkeypatch.setattr(suite, "Context", watched)
    plan = RunPlan(fixtures=ROOT / "fixtures", adapters=list(ADAPTERS), stages=STAGES, mode="free",
                   with_forced=True, reference=None, dump=None, blocks=False, options=Options())
    run_suite = Suite(plan, progress=lambda line: None)
    short = [run_suite.run(cases, mode) for mode in plan.modes]
    assert contexts and all(c.__dict__.get("_together", []) == [] for c in contexts)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**50)
    plenty_suite = Suite(plan, progress=lambda line: None)
    plenty = [plenty_suite.run(cases, mode) for mode in plan.modes]
    assert [[r.__dict__ for r in m.results] for m in short] == [[r.__dict__ for r in m.results] for m in plenty]
