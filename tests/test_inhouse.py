"""The node pack re-implementation, checked against ZIMAGE_REFERENCE.md §1-§2 and the pack's source.

Every expected string below is written out from those facts (the pack's v2.9.12 node code at
fblissjr/ComfyUI-QwenImageWanBridge@8a275a2, `nodes/z_image_encoder.py`), never from running the code
under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Qwen3Config, Qwen3Model

from implementations.inhouse.adapter import InHouseAdapter
from implementations.inhouse.conversation import ChatMessage, Conversation, render_conversation
from implementations.inhouse.key_quotes import strip_key_quotes
from implementations.inhouse.prompt import EncoderFields, render_full, render_simple
from implementations.inhouse.templates import (
    TEMPLATES_DIR,
    load_template,
    load_templates,
    parse_template,
    select_template,
)
from implementations.inhouse.workflow import render_case
from parity.core.errors import InputError
from parity.models.context import Context
from parity.stages.template import Template
from parity.suite.adapter import Unsupported
from parity.suite.cases import Case, Message

# ZIMAGE_REFERENCE.md §0: the reference string for "A cat sleeping".
REFERENCE = "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
USER_PART = "<|im_start|>user\nA cat sleeping<|im_end|>"
# §1: the think block with empty thinking (<think>, \n\n, </think>, \n\n) and the simple encoder's.
EMPTY_THINK = "<think>\n\n</think>\n\n"
SIMPLE_EMPTY_THINK = "<think>\n</think>\n"

text = st.text(max_size=60)
trigger = st.text(max_size=20)


def case(**fields) -> Case:
    fields.setdefault("prompt", "A cat sleeping")
    return Case(id="t", **fields)


def chat(*messages: tuple[str, str] | tuple[str, str, str], **fields) -> Case:
    return Case(id="t", messages=tuple(Message(*m) for m in messages), **fields)


def two_step_key_filter(s: str) -> str:
    """PromptKeyFilter as ZIMAGE_REFERENCE.md §1 states it: `"key":` -> `key:`, then every `"` removed."""
    return re.sub(r'"([^"]+)":', r"\1:", s).replace('"', "")


# -- full encoder (ZImageTextEncoder) ------------------------------------------------------------


def test_full_default_is_the_enable_thinking_false_prompt():
    assert render_case(case(), None) == REFERENCE + EMPTY_THINK


def test_full_think_off_equals_the_reference():
    assert render_case(case(add_think_block=False), None) == REFERENCE


def test_full_system_part_comes_first_and_only_when_not_blank():
    with_system = render_case(case(system_prompt="  Be precise.\n"), None)
    assert with_system == "<|im_start|>system\nBe precise.<|im_end|>\n" + REFERENCE + EMPTY_THINK
    assert render_case(case(system_prompt=" \n\t"), None) == REFERENCE + EMPTY_THINK


def test_thinking_forces_the_think_block_on():
    out = render_case(case(add_think_block=False, thinking=" fur, light \n"), None)
    assert out == REFERENCE + "<think>\nfur, light\n</think>\n\n"


def test_blank_thinking_does_not_force_the_think_block():
    assert render_case(case(add_think_block=False, thinking="  \n"), None) == REFERENCE


def test_full_assistant_content_closes_the_turn():
    assert render_case(case(assistant=" A tabby. "), None) == REFERENCE + EMPTY_THINK + "A tabby.<|im_end|>"
    off = render_case(case(assistant="A tabby.", add_think_block=False), None)
    assert off == REFERENCE + "A tabby.<|im_end|>"


def test_full_keeps_the_user_prompt_unstripped():
    out = render_case(case(prompt="  A cat sleeping \n"), None)
    assert out.startswith("<|im_start|>user\n  A cat sleeping \n<|im_end|>\n")


def test_raw_prompt_is_sent_unchanged_ignoring_trigger_and_key_filter():
    raw = '  <|im_start|>user\n{"a": "b"}<|im_end|>\n'
    c = case(prompt=raw, raw_prompt=True, trigger_words="tw", strip_key_quotes=True)
    assert render_case(c, None) == raw


def test_blank_raw_prompt_falls_back_to_direct_mode():
    out = render_case(case(prompt=" \n", raw_prompt=True, add_think_block=False), None)
    assert out == "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"


def test_trigger_words_are_prepended_with_one_space():
    out = render_case(case(trigger_words="  ohwx style "), None)
    assert out.startswith("<|im_start|>user\nohwx style A cat sleeping<|im_end|>")
    assert render_case(case(trigger_words="  "), None) == REFERENCE + EMPTY_THINK


def test_full_key_filter_covers_user_thinking_and_assistant_but_not_system():
    out = render_full(
        EncoderFields(
            user_prompt='{"subject": "fox"}',
            system_prompt='"sys"',
            thinking_content='"t": "x"',
            assistant_content='say "hi"',
            trigger_words='"tw"',
        ),
        strip_quotes=True,
    )
    assert out == (
        '<|im_start|>system\n"sys"<|im_end|>\n<|im_start|>user\ntw {subject: fox}<|im_end|>\n'
        "<|im_start|>assistant\n<think>\nt: x\n</think>\n\nsay hi<|im_end|>"
    )


# -- simple encoder (ZImageTextEncoderSimple) -----------------------------------------------------


def test_simple_default_ends_with_a_single_newline_think_block():
    out = render_case(case(encoder="simple"), None)
    assert out == USER_PART + "\n<|im_start|>assistant\n" + SIMPLE_EMPTY_THINK


def test_simple_think_off_ends_without_a_newline():
    out = render_case(case(encoder="simple", add_think_block=False), None)
    assert out == USER_PART + "\n<|im_start|>assistant"


def test_simple_assistant_content_gets_an_extra_newline_before_im_end():
    on = render_case(case(encoder="simple", assistant="A tabby."), None)
    assert on == USER_PART + "\n<|im_start|>assistant\n<think>\n</think>\n\nA tabby.\n<|im_end|>"
    off = render_case(case(encoder="simple", assistant="A tabby.", add_think_block=False), None)
    assert off == USER_PART + "\n<|im_start|>assistant\nA tabby.\n<|im_end|>"


def test_simple_thinking_sits_on_its_own_line_and_forces_the_block():
    out = render_case(case(encoder="simple", thinking=" fur ", add_think_block=False), None)
    assert out == USER_PART + "\n<|im_start|>assistant\n<think>\nfur\n</think>\n"


def test_simple_strips_the_user_prompt_after_prepending_trigger_words():
    # `f"{trigger} {user}"` comes first and only then the whole is stripped, so the user prompt's
    # leading spaces stay between the trigger and the text.
    out = render_case(case(encoder="simple", prompt="  A cat sleeping\n", trigger_words="tw"), None)
    assert out.startswith("<|im_start|>user\ntw   A cat sleeping<|im_end|>\n")


def test_simple_key_filter_is_a_prompt_key_filter_node_before_the_trigger():
    c = case(encoder="simple", prompt='{"a": "b"}', trigger_words='"tw"', add_think_block=False)
    out = render_case(Case(**{**c.__dict__, "strip_key_quotes": True}), None)
    assert out == '<|im_start|>user\n"tw" {a: b}<|im_end|>\n<|im_start|>assistant'


def test_the_two_encoders_write_different_bytes():
    assert render_case(case(), None) != render_case(case(encoder="simple"), None)


# -- turns (ZImageTextEncoder + ZImageTurnBuilder) ------------------------------------------------


def test_turns_render_each_message_and_leave_the_last_open():
    c = chat(
        ("system", "You write prompts."),
        ("user", "A cat"),
        ("assistant", "A tabby.", "Keep it short."),
        ("user", "At night"),
        encoder="turns",
    )
    assert render_case(c, None) == (
        "<|im_start|>system\nYou write prompts.<|im_end|>\n"
        "<|im_start|>user\nA cat<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nKeep it short.\n</think>\n\nA tabby.<|im_end|>\n"
        "<|im_start|>user\nAt night<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_turns_think_off_has_no_think_blocks():
    c = chat(("user", "A cat"), ("assistant", "A tabby."), ("user", "At night"), add_think_block=False)
    assert render_case(c, None) == (
        "<|im_start|>user\nA cat<|im_end|>\n<|im_start|>assistant\nA tabby.<|im_end|>\n"
        "<|im_start|>user\nAt night<|im_end|>\n<|im_start|>assistant\n"
    )


def test_turns_ending_with_an_assistant_leave_it_open():
    c = chat(("user", "A cat"), ("assistant", " A tabby. "), encoder="turns", add_think_block=False)
    assert render_case(c, None) == "<|im_start|>user\nA cat<|im_end|>\n<|im_start|>assistant\nA tabby."


def test_not_final_closes_every_message():
    conv = Conversation(False, (ChatMessage("user", "u"), ChatMessage("assistant", "a")), is_final=False)
    assert render_conversation(conv) == "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>"


def test_first_turn_thinking_turns_the_conversation_thinking_on():
    c = chat(("user", "u1"), ("assistant", "a1", "t1"), ("user", "u2"), add_think_block=False)
    tail = "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n" + EMPTY_THINK
    assert render_case(c, None).endswith(tail)


def test_full_encoder_renders_a_message_list_as_a_conversation():
    messages = (("user", "u1"), ("assistant", "a1"), ("user", "u2"))
    assert render_case(chat(*messages), None) == render_case(chat(*messages, encoder="turns"), None)


def test_turns_trigger_words_go_on_the_first_user_turn_only():
    c = chat(("user", "u1"), ("assistant", "a1"), ("user", "u2"), encoder="turns", trigger_words="tw")
    out = render_case(c, None)
    assert "<|im_start|>user\ntw u1<|im_end|>" in out and "<|im_start|>user\nu2<|im_end|>" in out


def test_turns_key_filter_applies_to_every_turn_but_not_the_system():
    c = chat(("system", '"s"'), ("user", '"a": 1'), ("assistant", '"x"'), ("user", '"b": 2'), encoder="turns")
    out = render_case(Case(**{**c.__dict__, "strip_key_quotes": True}), None)
    assert '<|im_start|>system\n"s"<|im_end|>' in out
    assert "user\na: 1<|im_end|>" in out and "\n\nx<|im_end|>" in out and "user\nb: 2<|im_end|>" in out


@pytest.mark.parametrize(
    ("c", "reason"),
    [
        (case(encoder="turns"), "message list"),
        (chat(("user", "u"), encoder="simple"), "conversation"),
        (case(encoder="simple", raw_prompt=True), "raw"),
        (chat(("user", "u"), raw_prompt=True), "raw"),
        (chat(("user", "u1"), ("user", "u2"), encoder="turns"), "assistant message after every user"),
        (chat(("assistant", "a"), ("user", "u"), encoder="turns"), "must follow a user"),
        (chat(("user", "u"), ("system", "s"), encoder="turns"), "before the first user turn"),
        (chat(("system", "s"), ("user", "u"), encoder="turns", system_prompt="t"), "two system prompts"),
        (chat(("user", "u", "t"), encoder="turns"), "user messages"),
        (chat(("system", "s"), encoder="turns"), "needs a user message"),
        (chat(("user", "u"), encoder="turns", thinking="t"), "belong on the messages"),
        (
            chat(
                ("user", "1"),
                ("assistant", "a"),
                ("user", "2"),
                ("assistant", "b", "t"),
                add_think_block=False,
            ),
            "drops thinking",
        ),
    ],
)
def test_what_the_pack_cannot_express_is_unsupported(c: Case, reason: str):
    with pytest.raises(Unsupported, match=reason):
        render_case(c, None)


# -- PromptKeyFilter -----------------------------------------------------------------------------


def test_key_filter_removes_key_and_value_quotes():
    out = strip_key_quotes('{"subject": "a man juggling", "style": "photo"}')
    assert out == "{subject: a man juggling, style: photo}"


@given(text)
def test_key_filter_matches_its_two_step_definition(s: str):
    assert strip_key_quotes(s) == two_step_key_filter(s)


@given(st.text(alphabet='"abc: \n{}', max_size=40))
def test_key_filter_on_json_like_text(s: str):
    assert strip_key_quotes(s) == two_step_key_filter(s)
    assert '"' not in strip_key_quotes(s)


# -- templates -----------------------------------------------------------------------------------

GOOD = """---
name: z_image_demo
description: A demo
model: z-image
category: test
add_think_block: true
thinking_content: |
  Think about light.
---

Be a camera.
"""


def test_template_front_matter_and_body():
    t = parse_template(GOOD, Path("demo.md"))
    assert (t.key, t.name, t.description) == ("demo", "z_image_demo", "A demo")
    assert (t.model, t.category) == ("z-image", "test")
    assert t.add_think_block is True
    assert t.thinking_content == "Think about light.\n"
    assert t.assistant_content == ""
    assert t.system_prompt == "Be a camera."


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD.replace("model: z-image\n", ""), "missing key 'model'"),
        (
            GOOD.replace("category: test\n", "category: test\ncolour: red\n"),
            "unknown front matter key 'colour",
        ),
        (GOOD.replace("add_think_block: true", "add_think_block: 1"), "'add_think_block' must be bool"),
        (GOOD.replace("category: test", "category: 2024"), "'category' must be str"),
        ("no front matter\n", "must start with"),
        (GOOD.replace("---\n\nBe", "\nBe"), "no closing"),
        ("---\nname: [unclosed\n---\nbody\n", "not valid YAML"),
        ("---\n- a list\n---\nbody\n", "must be a mapping"),
    ],
)
def test_bad_templates_name_the_file_and_key(tmp_path: Path, content: str, message: str):
    path = tmp_path / "broken.md"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as err:
        load_template(path)
    assert str(err.value).startswith("broken.md:")


def test_unknown_template_lists_known_ones(tmp_path: Path):
    (tmp_path / "alpha.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "beta.md").write_text(GOOD, encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown template 'gamma' \(known: alpha, beta\)"):
        select_template("gamma", tmp_path)
    assert select_template("beta", tmp_path).key == "beta"


def test_shipped_templates_all_load_and_are_selected_by_file_stem():
    templates = load_templates()
    assert 4 <= len(templates) <= 6
    for key, t in templates.items():
        assert (TEMPLATES_DIR / f"{key}.md").is_file() and t.key == key and t.model == "z-image"
    assert any(t.thinking_content for t in templates.values())
    assert any(t.system_prompt == "" for t in templates.values())


def test_picking_a_template_fills_system_thinking_and_turns_the_think_block_on(tmp_path: Path):
    # The front matter's own add_think_block is ignored: the pack's UI ticks the box on any pick.
    (tmp_path / "demo.md").write_text(
        GOOD.replace("add_think_block: true", "add_think_block: false"), "utf-8"
    )
    t = select_template("demo", tmp_path)
    system = "<|im_start|>system\nBe a camera.<|im_end|>\n"
    assert (
        render_case(case(template="demo"), t)
        == system + REFERENCE + "<think>\nThink about light.\n</think>\n\n"
    )
    # A case field that is set is the user's edit after picking: it wins over the template.
    edited = render_case(case(template="demo", system_prompt="", thinking="", add_think_block=False), t)
    assert edited == REFERENCE


def test_template_assistant_content_fills_the_assistant_widget():
    t = select_template("product_card")
    assert t.assistant_content
    out = render_case(case(template="product_card"), t)
    assert out.endswith(f"</think>\n\n{t.assistant_content.strip()}<|im_end|>")


# -- properties ----------------------------------------------------------------------------------


def with_trigger(user: str, tw: str) -> str:
    return f"{tw.strip()} {user}" if tw.strip() else user


@given(text, trigger, st.booleans(), st.booleans())
def test_full_never_loses_user_text(user: str, tw: str, think: bool, quotes: bool):
    expected = with_trigger(user, tw)
    if quotes:
        expected = expected.replace('"', "")
    out = render_full(EncoderFields(user, add_think_block=think, trigger_words=tw), strip_quotes=quotes)
    assert f"<|im_start|>user\n{expected}<|im_end|>\n" in out


@given(text, trigger, st.booleans())
def test_simple_never_loses_user_text(user: str, tw: str, think: bool):
    out = render_simple(EncoderFields(user, add_think_block=think, trigger_words=tw))
    assert f"<|im_start|>user\n{with_trigger(user, tw).strip()}<|im_end|>\n" in out


@given(text, st.text(min_size=1, max_size=20).filter(str.strip))
def test_trigger_words_prefix_the_user_turn(user: str, tw: str):
    out = render_full(EncoderFields(user, trigger_words=tw))
    assert f"<|im_start|>user\n{tw.strip()} {user}" in out


@given(text, text, text, text, st.booleans())
def test_full_and_simple_always_differ(user: str, system: str, thinking: str, assistant: str, think: bool):
    fields = EncoderFields(user, system, think, thinking, assistant)
    assert render_full(fields) != render_simple(fields)


@given(text, st.text(max_size=30).filter(str.strip))
def test_non_blank_thinking_always_forces_the_block(user: str, thinking: str):
    out = render_full(EncoderFields(user, add_think_block=False, thinking_content=thinking))
    assert out.endswith(f"<|im_start|>assistant\n<think>\n{thinking.strip()}\n</think>\n\n")


@given(st.lists(st.tuples(text, text, text), min_size=1, max_size=4), st.booleans())
def test_turns_never_lose_message_text(turns: list[tuple[str, str, str]], think: bool):
    messages = []
    for user, reply, thought in turns:
        messages += [("user", user), ("assistant", reply, thought if think else None)]
    messages.append(("user", "last"))
    given_messages = [m if m[-1] is not None else m[:2] for m in messages]
    out = render_case(chat(*given_messages, add_think_block=think), None)
    for user, reply, thought in turns:
        assert f"<|im_start|>user\n{user.strip()}<|im_end|>" in out
        assert f"{reply.strip()}<|im_end|>" in out
        if think:
            assert f"<think>\n{thought.strip()}\n</think>\n\n{reply.strip()}<|im_end|>" in out
    tail = "<|im_start|>user\nlast<|im_end|>\n<|im_start|>assistant\n"
    assert out.endswith(tail + (EMPTY_THINK if think else ""))


# -- the adapter on stand-in tokenizer and encoder -----------------------------------------------


class CharTokenizer:
    """One id per character and, like Qwen's, no BOS/EOS: enough to see padding and truncation."""

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % 500 for c in text]}


@pytest.fixture(scope="module")
def adapter() -> InHouseAdapter:
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=500,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    context = Context()
    context.tokenizer = CharTokenizer()
    context.text_encoder = Qwen3Model(config).eval()
    return InHouseAdapter(context)


def test_adapter_identity(adapter: InHouseAdapter):
    assert adapter.name == "inhouse" and adapter.summary and not adapter.is_reference()
    assert adapter.versions() == {"node_pack": "2.9.12 (re-implemented)"}


def test_adapter_tokenizes_whole_without_padding_or_truncation(adapter: InHouseAdapter):
    long = case(prompt="x" * 700)
    tokens = adapter.tokens(long, adapter.template(long))
    expected = [ord(c) % 500 for c in render_case(long, None)]
    assert tokens.input_ids == expected
    assert tokens.attention_mask == [1] * len(expected)


def test_adapter_embeddings_gathered_or_unfiltered_hold_the_same_rows(adapter: InHouseAdapter):
    c = case()
    tokens = adapter.tokens(c, Template(REFERENCE))
    default = adapter.embeddings(c, tokens)
    unfiltered = adapter.embeddings(case(filter_padding=False), tokens)
    assert default.hidden.shape == (len(REFERENCE), 32)
    assert bool(default.mask.all()) and bool(unfiltered.mask.all())
    torch.testing.assert_close(default.hidden, unfiltered.hidden, rtol=0, atol=0)


def test_adapter_check_supported(adapter: InHouseAdapter):
    adapter.check_supported(case())
    with pytest.raises(Unsupported):
        adapter.check_supported(case(encoder="turns"))
    with pytest.raises(InputError, match="unknown template 'nope'"):
        adapter.check_supported(case(template="nope"))


def test_adapter_uses_shipped_templates(adapter: InHouseAdapter):
    t = select_template("photographic")
    out = adapter.template(case(template="photographic")).text
    assert out.startswith(f"<|im_start|>system\n{t.system_prompt}<|im_end|>\n")
    assert f"<think>\n{t.thinking_content.strip()}\n</think>\n\n" in out


# -- the latent it samples from: ZImageEmptyLatent, against stock ComfyUI's EmptySD3LatentImage -----
# The node (`nodes/qwen_vl_helpers.py` at 8a275a2) aligns each side with `round(size / 16) * 16`, at
# least 16, then divides by 8; Python's round takes halves to the even neighbour (8.5 -> 8, 9.5 -> 10).
# Its docstring's own example: 1211 -> 1216; 512 and 768 are already aligned.


@pytest.mark.parametrize(
    ("side", "pixels"),
    [(1211, 1216), (512, 512), (768, 768), (136, 128), (152, 160), (1000, 992), (132, 128), (140, 144), (20, 16)],
)
def test_the_noise_follows_the_packs_16_pixel_rounding(adapter: InHouseAdapter, side: int, pixels: int):
    c = case(height=side, width=768)
    assert tuple(adapter.noise(c).shape) == (1, 16, pixels // 8, 768 // 8)


def test_where_stock_comfyui_floors_to_8_pixels_the_pack_rounds_to_16(adapter: InHouseAdapter):
    from implementations.comfyui_style.adapter import ComfyUIStyleAdapter
    from parity.core.noise import shared_noise

    c = case(height=136, width=136, seed=42)
    assert tuple(ComfyUIStyleAdapter(adapter.context).noise(c).shape) == (1, 16, 17, 17)
    # 128 px is a multiple of 16: ComfyUI's draw there is diffusers' draw for the seed.
    assert torch.equal(adapter.noise(c), shared_noise(42, 128, 128))


# -- token ids with the real reference tokenizer, where it can be built -------------------------


@pytest.fixture(scope="module")
def reference_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    tokenizer_module = pytest.importorskip("parity.core.tokenizer")
    try:
        return tokenizer_module.load_tokenizer(cache_dir=tmp_path_factory.mktemp("tokenizer"))
    except InputError as e:
        pytest.skip(f"reference tokenizer unavailable: {e}")


def test_token_ids_match_the_reference_doc(reference_tokenizer):
    context = Context()
    context.tokenizer = reference_tokenizer
    adapter = InHouseAdapter(context)

    def ids(c: Case) -> list[int]:
        return adapter.tokens(c, adapter.template(c)).input_ids

    # ZIMAGE_REFERENCE.md §0: the reference ids; §1: defaults end in <think> \n\n </think> \n\n,
    # and the simple encoder has 198 (\n) where the full one has 271 (\n\n).
    reference = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
    assert ids(case(add_think_block=False)) == reference
    assert ids(case()) == [*reference, 151667, 271, 151668, 271]
    assert ids(case(encoder="simple")) == [*reference, 151667, 198, 151668, 198]


def test_the_templates_are_the_packs_own_when_its_checkout_is_given_and_said_to_be_stand_ins_otherwise(tmp_path):
    built_in = InHouseAdapter(Context())
    assert built_in.templates_dir == TEMPLATES_DIR and "stand-ins" in built_in.templates_source()
    pack = InHouseAdapter(Context(checkouts={"inhouse_pack": tmp_path}))
    assert pack.templates_dir == tmp_path / "nodes" / "templates" / "z_image"
    assert "the pack's own" in pack.templates_source()
