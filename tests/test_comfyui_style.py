r"""Stock ComfyUI's text path: template bytes, whole-string tokens, `\(` escapes, references, mask.

Expected ids are published facts (ZIMAGE_REFERENCE.md §0-1); the reference and mask cases follow
ComfyUI's `comfy/sd1_clip.py` (upstream 4b1444f) as read, not this code's output.
"""

import pytest
import torch

from implementations.comfyui_style.adapter import ComfyUILegacyTokenizerAdapter, ComfyUIStyleAdapter
from implementations.comfyui_style.text import attention_mask, unescape_parentheses
from parity.models.context import Context
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case, Message

PROMPT_IDS = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
TAIL_IDS = [151645, 198, 151644, 77091, 198]  # <|im_end|>\n<|im_start|>assistant\n


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Context:
    return Context(cache_dir=tmp_path_factory.mktemp("tokenizer-cache"))


@pytest.fixture(scope="module")
def comfy(context) -> ComfyUIStyleAdapter:
    return ComfyUIStyleAdapter(context)


@pytest.fixture(scope="module")
def legacy(context) -> ComfyUILegacyTokenizerAdapter:
    return ComfyUILegacyTokenizerAdapter(context)


def run(adapter, prompt: str):
    case = Case(id="t", prompt=prompt)
    adapter.check_supported(case)
    template = adapter.template(case)
    return template, adapter.tokens(case, template)


def test_plain_prompt_template_bytes_and_ids(comfy):
    template, tokens = run(comfy, "A cat sleeping")
    assert template.text == "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
    assert tokens.input_ids == PROMPT_IDS
    assert tokens.attention_mask == [1] * len(PROMPT_IDS)


def test_escaped_parentheses_are_unescaped_by_the_tokenizer_and_weights_stay_text(comfy):
    template, tokens = run(comfy, r"A \(very\) detailed portrait, (soft light:1.2)")
    # The template is the string handed to the tokenizer; ComfyUI's tokenizer undoes the escapes.
    assert "user\nA \\(very\\) detailed portrait" in template.text
    unescaped = "<|im_start|>user\nA (very) detailed portrait, (soft light:1.2)<|im_end|>\n<|im_start|>assistant\n"
    assert tokens.input_ids == comfy.tokenizer(unescaped)["input_ids"]


def test_unescape_keeps_comfyuis_control_pair_quirk():
    assert unescape_parentheses("a\0\1b\0\2c") == "a)b(c"
    assert unescape_parentheses(r"\\(x\)") == "\\(x)"


def test_no_truncation_beyond_600_tokens(comfy):
    _, tokens = run(comfy, " ".join(["a lighthouse on a cliff at dusk"] * 100))
    assert len(tokens.input_ids) > 600
    assert tokens.input_ids[-len(TAIL_IDS):] == TAIL_IDS
    assert tokens.attention_mask == [1] * len(tokens.input_ids)


def test_no_padding(comfy, context):
    template, tokens = run(comfy, "A cat sleeping, moonlight")
    assert tokens.input_ids == context.tokenizer(template.text)["input_ids"]
    assert 151643 not in tokens.input_ids


def test_think_is_one_token_now(comfy):
    _, tokens = run(comfy, "<think> and </think>")
    assert tokens.input_ids[3:7] == [151667, 323, 220, 151668]


def test_think_was_three_tokens_before_2025_12_01(legacy):
    _, tokens = run(legacy, "<think>")
    assert tokens.input_ids == [151644, 872, 198, 13708, 766, 29, *TAIL_IDS]
    _, tokens = run(legacy, "</think>")
    assert tokens.input_ids == [151644, 872, 198, 522, 26865, 29, *TAIL_IDS]


def test_legacy_tokenizer_is_built_once_per_adapter(legacy, context):
    assert legacy.tokenizer is legacy.tokenizer
    assert legacy.tokenizer is not context.tokenizer
    assert legacy.tokenizer.convert_tokens_to_ids("<|meta|>") == 151667
    assert ComfyUILegacyTokenizerAdapter.in_default_run is False


def test_missing_embedding_reference_is_dropped_as_comfyui_does(comfy, context):
    # ComfyUI splits at " embedding:", drops the unknown name, re-joins the rest with single spaces
    # (so the template's "\n" after <|im_end|> becomes a space and the final "\n" is stripped).
    _, tokens = run(comfy, "a photo of embedding:foo sleeping")
    pieces = ["<|im_start|>user\na photo of", "sleeping<|im_end|> <|im_start|>assistant"]
    expected = [i for p in pieces for i in context.tokenizer(p)["input_ids"]]
    assert tokens.input_ids == expected


def test_endoftext_in_a_prompt_ends_the_mask(comfy):
    _, tokens = run(comfy, "x <|endoftext|> y")
    end = tokens.input_ids.index(151643)
    assert tokens.attention_mask == [1] * end + [0] * (len(tokens.input_ids) - end)


def test_leading_pads_are_left_padding():
    assert attention_mask([151643, 151643, 5, 151643, 6], 151643) == [0, 0, 1, 0, 0]


def test_embeddings_keep_the_whole_sequence_and_mask(comfy):
    case = Case(id="t", prompt="A cat sleeping")
    tokens = comfy.tokens(case, comfy.template(case))
    embeddings = comfy.embeddings(case, tokens)
    assert embeddings.hidden.shape[0] == len(PROMPT_IDS)
    assert torch.equal(embeddings.mask, torch.ones(len(PROMPT_IDS), dtype=torch.bool))


@pytest.mark.parametrize(
    "case",
    [
        Case(id="s", prompt="A cat", system_prompt="Be vivid."),
        Case(id="m", messages=(Message("user", "A cat"),)),
        Case(id="t", prompt="A cat", thinking="hmm"),
        Case(id="r", prompt="A cat", raw_prompt=True),
    ],
    ids=["system_prompt", "messages", "thinking", "raw_prompt"],
)
def test_anything_but_one_plain_prompt_is_unsupported(comfy, case, request):
    with pytest.raises(Unsupported, match=request.node.callspec.id):
        comfy.check_supported(case)
