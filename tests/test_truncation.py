"""Saying when an implementation cut the prompt: its attended tokens are a proper prefix of its template's."""

from implementations.comfyui_style.text import tokenize as comfy_tokenize
from implementations.zimage.chat import MAX_SEQUENCE_LENGTH, tokenize_padded
from parity.stages.template import Template
from parity.stages.tokens import truncation


def test_a_prompt_within_the_limit_is_not_cut(context):
    template = Template("<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n")
    assert truncation(context.tokenizer, template, tokenize_padded(context.tokenizer, template.text)) is None


def test_the_references_cut_at_512_and_the_count_is_what_was_dropped(context, suite_cases):
    text = suite_cases["long-over-512"].prompt
    template = Template(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")
    total = len(context.tokenizer(template.text)["input_ids"])
    cut = truncation(context.tokenizer, template, tokenize_padded(context.tokenizer, template.text))
    assert cut is not None and (cut.total, cut.kept) == (total, MAX_SEQUENCE_LENGTH)
    assert cut.dropped == total - MAX_SEQUENCE_LENGTH > 0
    assert f"{cut.dropped:,} dropped" in cut.describe()
    # ComfyUI's path keeps every token: nothing to say.
    assert truncation(context.tokenizer, template, comfy_tokenize(context.tokenizer, template.text)) is None


def test_tokens_that_differ_otherwise_are_not_called_a_cut(context):
    # ComfyUI drops an `embedding:` reference from the middle: fewer tokens, but not a prefix.
    template = Template("A cat embedding:missing sleeping on a mat")
    tokens = comfy_tokenize(context.tokenizer, template.text)
    assert len(tokens.input_ids) < len(context.tokenizer(template.text)["input_ids"])
    assert truncation(context.tokenizer, template, tokens) is None


def test_a_run_says_which_adapters_cut_the_prompt(tmp_path, capsys):
    import json
    from pathlib import Path

    from parity.cli import main

    results = tmp_path / "results.json"
    fixtures = Path(__file__).parents[1] / "fixtures"
    assert main(["run", "--cases", "long-over-512", "--fixtures", str(fixtures), "--json", str(results)]) == 0
    err = capsys.readouterr().err
    warnings = json.loads(results.read_text())["warnings"]
    for name in ("diffusers", "diffsynth_style", "qwen3_chat"):
        line = next(w for w in warnings if f"{name} truncates the prompt" in w)
        assert "case 'long-over-512'" in line and "512 kept" in line and line in err
    assert not any("comfyui_style truncates" in w for w in warnings)
