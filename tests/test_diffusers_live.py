"""The live diffusers adapter observes the installed pipeline; these facts come from the reference doc."""

import pytest

from implementations.diffusers_live.adapter import DiffusersAdapter
from parity.stages.template import Template
from parity.stages.tokens import Tokens
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case

A_CAT = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def live(context):
    return DiffusersAdapter(context)


def test_template_tokens_and_rows_of_a_short_prompt(live):
    case = Case(id="t", prompt="A cat sleeping")
    template = live.template(case)
    assert template.text == "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
    tokens = live.tokens(case, template)
    assert len(tokens.input_ids) == 512  # padding="max_length", max_length=512
    assert tokens.input_ids[:11] == A_CAT and set(tokens.input_ids[11:]) == {151643}
    assert tokens.attention_mask == [1] * 11 + [0] * 501
    embeddings = live.embeddings(case, tokens)
    assert embeddings.hidden.shape == (11, 80) and bool(embeddings.mask.all())


def test_the_512_limit_includes_the_template(live):
    case = Case(id="long", prompt="lighthouse " * 800)
    tokens = live.tokens(case, live.template(case))
    assert len(tokens.input_ids) == 512 and all(tokens.attention_mask)
    # Truncation cuts the closing `<|im_end|>\n<|im_start|>assistant\n` off.
    assert 151645 not in tokens.input_ids and tokens.input_ids[:3] == [151644, 872, 198]


def test_it_refuses_to_be_fed_another_implementations_upstream(live):
    case = Case(id="t2", prompt="A cat sleeping")
    with pytest.raises(Unsupported):
        live.tokens(case, Template("<|im_start|>user\nsomething else<|im_end|>\n"))
    with pytest.raises(Unsupported):
        live.embeddings(case, Tokens([1, 2, 3], [1, 1, 1]))


def test_only_a_single_plain_prompt_is_supported(live):
    with pytest.raises(Unsupported):
        live.check_supported(Case(id="s", prompt="x", system_prompt="y"))
