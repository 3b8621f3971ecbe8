"""The live DiffSynth-Engine adapter on the installed `diffsynth_engine` (`nox -s references`).

Expected values come from the library's own functions and files, never from what the adapter
printed: its scheduler and `calculate_shift` composed as its `__call__` composes them
(`pipelines/z_image.py`), its shipped tokenizer files read by the `tokenizers` library, and the
published Qwen3 vocabulary (the ids of "A cat sleeping", ZIMAGE_REFERENCE.md §0).
"""

import hashlib
import json
import math
from functools import cache

import pytest
import torch
from cli_run import invoke
from hypothesis import given, settings
from hypothesis import strategies as st

from implementations.diffsynth_engine_live import library
from parity.core.tokenizer import CHAT_TEMPLATE_SHA256
from parity.models.context import Context
from parity.run.execute import execute
from parity.suite.adapter import registered_adapters
from parity.suite.cases import Case

# Its package `__init__` cannot be imported here (it loads every pipeline): only its Z-Image modules are.
if not library.available():
    pytest.skip("needs the references environment (nox -s references)", allow_module_level=True)

A_CAT = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
IM_END, PAD = 151645, 151643


def adapter(dtype: str = "fp32"):
    return registered_adapters()["diffsynth_engine_live"](Context(dtype=dtype))


def libraries_own_schedule(steps: int, height: int, width: int, dtype: torch.dtype) -> list[float]:
    """`ZImagePipeline.__call__`'s schedule, from its own pieces: `calculate_shift` of the image's
    token count, its scheduler's `schedule`, cast to the pipeline dtype (`prepare_latents`)."""
    from diffsynth_engine.pipelines.utils import calculate_shift

    pipe = adapter()._pipeline()
    mu = calculate_shift(math.ceil(height // 16) * math.ceil(width // 16), 256, 4096, 0.5, 1.15)
    sigmas, _ = pipe.noise_scheduler.schedule(steps, mu=mu, sigma_min=0, sigma_max=1.0)
    return sigmas.to(dtype).double().tolist()


@pytest.mark.parametrize("steps", [8, 9])
@pytest.mark.parametrize("side", [512, 1024])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_parity_schedule_is_the_librarys_own_and_depends_on_the_size(steps, side, dtype):
    result = invoke("schedule", "--adapter", "diffsynth_engine_live", "--steps", steps, "--height", side,
                    "--width", side, "--dtype", dtype, "--json")
    assert result.rc == 0 and result.err == "", result.err
    shown = json.loads(result.out)
    expected = libraries_own_schedule(steps, side, side, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype])
    assert shown["sigmas"] == expected
    # linspace(1, 0, N) shifted, then a 0 appended: the last DiT call steps by dt = 0.
    assert shown["sigmas"][-2:] == [0.0, 0.0] and len(shown["model_t"]) == steps
    other = libraries_own_schedule(steps, 2048 // side * 256, 2048 // side * 256, torch.float32)
    assert other[1] != expected[1]


def test_the_template_is_hard_coded_and_the_ids_padded_to_512():
    engine = adapter()
    case = Case(id="cat", prompt="A cat sleeping")
    template = engine.template(case)
    assert template.text == "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
    tokens = engine.tokens(case, template)
    assert tokens.input_ids == A_CAT + [PAD] * (512 - len(A_CAT))
    assert tokens.attention_mask == [1] * len(A_CAT) + [0] * (512 - len(A_CAT))


def test_a_prompt_over_512_tokens_has_its_512th_id_overwritten_with_im_end():
    engine = adapter()
    case = Case(id="long", prompt="cat " * 700)
    tokens = engine.tokens(case, engine.template(case))
    full = reference_tokenizer()(engine.template(case).text, add_special_tokens=False).input_ids
    assert len(tokens.input_ids) == 512 and sum(tokens.attention_mask) == 512
    assert tokens.input_ids[:511] == full[:511] and full[511] != IM_END and tokens.input_ids[511] == IM_END


def test_guidance_without_a_negative_prompt_does_not_run():
    """Called without a negative prompt (its default), it samples unguided whatever the scale; given
    one, the same scale changes every step."""
    outputs = {}
    for name, cfg, negative in (("plain", 1.0, ""), ("scaled", 4.0, ""), ("negative", 4.0, "blurry")):
        case = Case(id=name, prompt="A cat sleeping", height=64, width=64, steps=2, cfg=cfg, negative_prompt=negative)
        outputs[name], _ = execute(adapter(), case, "denoise")
    assert torch.equal(outputs["scaled"].denoise.model_out, outputs["plain"].denoise.model_out)
    assert not torch.equal(outputs["negative"].denoise.model_out, outputs["plain"].denoise.model_out)


def test_its_shipped_chat_template_is_the_official_one_it_never_uses():
    config = json.loads((library.load().tokenizer_folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert hashlib.sha256(config["chat_template"].encode("utf-8")).hexdigest() == CHAT_TEMPLATE_SHA256


@cache
def reference_tokenizer():
    return Context().tokenizer


@cache
def shipped_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(library.load().tokenizer_folder / "tokenizer.json"))


ADDED = [token.content for token in reference_tokenizer().added_tokens_decoder.values()]
NEAR_MISSES = [variant for token in ("<think>", "<|im_start|>", "<|endoftext|>")
               for variant in (token.replace("<", "< "), token.upper(), token[:-1], token + token[-1])]
pieces = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=8),
    st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=4),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(alphabet=" \t\n\r\u3000\xa0", min_size=1, max_size=8),
    st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=4),
    st.sampled_from(ADDED + NEAR_MISSES),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=6).map("".join))
def test_the_reference_tokenizer_and_its_shipped_tokenizer_json_agree(text):
    reference = reference_tokenizer()(text, add_special_tokens=False).input_ids
    assert shipped_tokenizer().encode(text, add_special_tokens=False).ids == reference
