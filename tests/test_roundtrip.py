"""Properties that hold for every adapter's text path, on arbitrary prompts."""

import unicodedata

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from parity.suite.adapter import registered_adapters
from parity.suite.cases import Case

# Prompts without backslashes (ComfyUI's tokenizer rewrites `\(`), special-token text or the
# `embedding:` keyword (both change tokenization on purpose, and are tested where they are modelled).
PROMPTS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\\<>"), max_size=60
).filter(lambda s: "embedding:" not in s)
ADAPTERS = ["diffusers", "diffsynth_style", "comfyui_style", "inhouse", "qwen3_chat"]


@pytest.fixture(scope="module")
def adapters(context):
    classes = registered_adapters()
    return {name: classes[name](context) for name in ADAPTERS}


@pytest.mark.parametrize("name", ADAPTERS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=PROMPTS)
def test_ids_decode_back_to_the_rendered_template(adapters, context, name, prompt):
    adapter = adapters[name]
    case = Case(id=f"p{abs(hash(prompt))}", prompt=prompt)
    template = adapter.template(case)
    tokens = adapter.tokens(case, template)
    decoded = context.tokenizer.decode(tokens.attended)
    # The tokenizer NFC-normalises, so the round trip holds up to NFC.
    assert decoded == unicodedata.normalize("NFC", template.text)
    assert unicodedata.normalize("NFC", prompt) in decoded
