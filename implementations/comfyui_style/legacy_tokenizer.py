"""ComfyUI's Qwen tokenizer as it was before 2025-12-01: four Qwen3 ids held other tokens.

ComfyUI encodes every Qwen-family prompt with one bundled config,
`comfy/text_encoders/qwen25_tokenizer/tokenizer_config.json`, written for Qwen2.5-VL. Z-Image
arrived on 2025-11-25 (commit e9aae31) using it as is. Until commit 2640acb (2025-12-01, "Update
qwen tokenizer to add qwen 3 tokens") its added tokens at 151665-151668 were `<|img|>`,
`<|endofimg|>`, `<|meta|>` and `<|endofmeta|>` (all special) instead of Qwen3's `<tool_response>`,
`</tool_response>`, `<think>` and `</think>`; ids 151643-151664 were already Qwen3's. So in those
days `<think>` in a prompt went through BPE as `<th`, `ink`, `>`.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from parity.suite.adapter import Unsupported

LEGACY_ADDED_TOKENS = {151665: "<|img|>", 151666: "<|endofimg|>", 151667: "<|meta|>", 151668: "<|endofmeta|>"}


def legacy_tokenizer(current: PreTrainedTokenizerBase) -> PreTrainedTokenizerFast:
    """`current` with the pre-2025-12-01 tokens at ids 151665-151668; everything else unchanged."""
    spec = json.loads(current.backend_tokenizer.to_str())
    replaced = set()
    for token in spec["added_tokens"]:
        if token["id"] in LEGACY_ADDED_TOKENS:
            token["content"] = LEGACY_ADDED_TOKENS[token["id"]]
            token["special"] = True
            replaced.add(token["id"])
    if replaced != set(LEGACY_ADDED_TOKENS):
        raise Unsupported("the tokenizer has no added tokens at 151665-151668 to turn into the old ones")
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=None,
        eos_token=current.eos_token,
        pad_token=current.pad_token,
        unk_token=None,
        model_max_length=current.model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
