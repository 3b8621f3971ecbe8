"""ComfyUI's encode path for a Z-Image prompt string (`comfy/sd1_clip.py`, `text_encoders/z_image.py`).

Stock ComfyUI and node packs built on it (the in-house encoder) hand their string to the same
tokenizer, so this path is written once. Z-Image's tokenizer is a subclass of ComfyUI's SDTokenizer
and its encoder of SDClipModel, so three rules written for CLIP reach its prompt: parenthesis
escapes, textual-inversion references, and the attention mask built from the pad token. Each
function here reproduces one of them (as of ComfyUI upstream 2026-04, commit 4b1444f); `tokenize`
applies them in ComfyUI's order: no BOS/EOS, no padding, no truncation.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase

from parity.stages.tokens import Tokens
from parity.suite.adapter import Unsupported

# Hard-coded in ComfyUI's Qwen3-4B encoder as its pad token, whatever the tokenizer says.
PAD_ID = 151643
EMBEDDING_PREFIX = "embedding:"
# ComfyUI looks for a reference only after a space or a newline, and that character is consumed.
_REFERENCE_SPLIT = re.compile(r"[ \n]" + re.escape(EMBEDDING_PREFIX))
# Stand-ins ComfyUI puts in place of `\)` and `\(` while it parses prompt weights.
_CLOSE_MARK, _OPEN_MARK = "\0\1", "\0\2"


def unescape_parentheses(text: str) -> str:
    r"""`\(` and `\)` become `(` and `)`, even with prompt weights disabled.

    ComfyUI swaps the escapes for control-character pairs before it parses weights and swaps every
    such pair back for a bare parenthesis afterwards, so a prompt that already contains NUL+SOH or
    NUL+STX gets a parenthesis there too; doing it the same two-step way keeps that.
    """
    marked = text.replace("\\)", _CLOSE_MARK).replace("\\(", _OPEN_MARK)
    return marked.replace(_CLOSE_MARK, ")").replace(_OPEN_MARK, "(")


def _after_missing_embedding(reference: str) -> str:
    """What ComfyUI goes on to tokenize after `embedding:<reference>` names no embedding file."""
    # The name is the first whitespace-separated word; the rest is re-joined with single spaces,
    # so newlines and runs of whitespace after a reference (the template's own "\n"s included) collapse.
    words = reference.split()
    if not words:
        raise Unsupported("ComfyUI fails (IndexError) on an 'embedding:' reference with no name")
    name, rest = words[0], " ".join(words[1:])
    bare = name.strip(",")
    if len(bare) < len(name):
        # It retries the name without commas and hands back the characters it cut, a space, the rest.
        return f"{name[len(bare):]} {rest}"
    return rest


def split_embedding_references(text: str) -> list[str]:
    """The pieces ComfyUI tokenizes one by one, with every `embedding:NAME` dropped as missing.

    A reference starts at `embedding:` preceded by a space or newline (or at the very start); the
    space or newline before it is lost even when nothing is found. The harness has no embedding
    folder, so every reference is missing, and ComfyUI then logs a warning and drops the name.
    """
    first, *references = _REFERENCE_SPLIT.split(text)
    pieces = []
    for piece in [first, *(EMBEDDING_PREFIX + r for r in references)]:
        if piece.startswith(EMBEDDING_PREFIX):
            piece = _after_missing_embedding(piece[len(EMBEDDING_PREFIX) :])
        if piece:
            pieces.append(piece)
    return pieces


def attention_mask(input_ids: list[int], pad_id: int) -> list[int]:
    """ComfyUI's mask for an encoder with a pad token and no end token.

    Leading pad tokens are left padding (masked). After real text, the first pad token ends the
    prompt: it and everything after it are masked, though still fed to the encoder. A prompt that
    never contains the pad token's text gets all ones.
    """
    mask = []
    leading, ended = True, False
    for token in input_ids:
        if leading and token == pad_id:
            mask.append(0)
            continue
        leading = False
        ended = ended or token == pad_id
        mask.append(0 if ended else 1)
    return mask


def tokenize(tokenizer: PreTrainedTokenizerBase, text: str) -> Tokens:
    """The string as ComfyUI tokenizes it: unescaped, split at references, any length."""
    # Called with its default arguments, as ComfyUI calls it; a Qwen tokenizer adds no BOS/EOS.
    pieces = split_embedding_references(unescape_parentheses(text))
    ids = [i for piece in pieces for i in tokenizer(piece)["input_ids"]]
    return Tokens(input_ids=ids, attention_mask=attention_mask(ids, PAD_ID))
