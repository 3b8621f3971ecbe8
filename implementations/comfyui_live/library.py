"""ComfyUI from a checkout: checked, imported once, with its device fixed before its first import.

ComfyUI is not on the package registries; people run it from a git checkout, so the harness imports
it from one (`--comfyui DIR`, or `ZIMAGE_PARITY_COMFYUI`). Nothing here imports ComfyUI until a
stage needs it.

ComfyUI is an application, not a library: its modules are top-level names (`comfy`, `nodes`,
`folder_paths`, `comfy_extras`), it chooses its device once, when `comfy.model_management` is first
imported (from `comfy.cli_args.args`, which it parses from an empty argument list unless told
otherwise), and it keeps that state for the process. So the checkout goes first on `sys.path` as
it would be when ComfyUI runs from its own folder, `args.cpu` is set for a CPU run before that first
import, and a second checkout or another device in the same process is an error, not a silent mix.
"""

from __future__ import annotations

import importlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from parity.core.errors import InputError

# What a ComfyUI checkout has, and what one with Z-Image support has besides.
COMFYUI_FILES = ("nodes.py", "comfy/sd.py", "comfy/samplers.py", "comfy/model_management.py")
ZIMAGE_FILES = ("comfy/text_encoders/z_image.py", "comfy/ldm/lumina/model.py")
_VERSION = re.compile(r"""__version__\s*=\s*["']([^"']+)["']""")


def problem(root: Path) -> str | None:
    """Why `root` is not a ComfyUI checkout that knows Z-Image (None: it is)."""
    if not root.is_dir():
        return "not a directory"
    missing = [f for f in COMFYUI_FILES if not (root / f).is_file()]
    if missing:
        return f"not a ComfyUI checkout (no {missing[0]})"
    missing = [f for f in ZIMAGE_FILES if not (root / f).is_file()]
    if missing:
        return f"this ComfyUI has no Z-Image support (no {missing[0]}); update it"
    return None


def describe(root: Path) -> dict[str, str]:
    """Where the code came from, for the fixtures' provenance: its version file, and the repository,
    commit and commit date of a git checkout."""
    found = {}
    version_file = root / "comfyui_version.py"
    match = _VERSION.search(version_file.read_text(encoding="utf-8")) if version_file.is_file() else None
    if match:
        found["comfyui_version"] = match.group(1)
    return found | git_origin(root, "comfyui")


def git_origin(root: Path, prefix: str) -> dict[str, str]:
    """`<prefix>_repository`, `_commit`, `_commit_date` of the checkout at `root` (git's own answer)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    try:
        commit, date = git("log", "-1", "--format=%H %cI").split()
        remote = git("remote", "get-url", "origin")
    except (OSError, subprocess.SubprocessError, ValueError):
        return {f"{prefix}_commit": "unknown (not a git checkout)"}
    return {f"{prefix}_repository": remote, f"{prefix}_commit": commit, f"{prefix}_commit_date": date}


@contextmanager
def quiet_logging() -> Iterator[None]:
    """ComfyUI's warnings (through the root logger) held back: they concern what the harness leaves
    out on purpose (audio models, the VAE's encoder), and stderr carries the run's progress."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


@cache
def load(root: Path, device_type: str) -> SimpleNamespace:
    """ComfyUI's modules the live adapters drive, imported from `root` on a `device_type` device."""
    loaded = sys.modules.get("comfy")
    if loaded is not None and Path(loaded.__file__ or "").resolve().parent.parent != root.resolve():
        raise InputError(f"{root}: another ComfyUI ({loaded.__file__}) is already imported in this process")
    sys.path.insert(0, str(root))
    from comfy.cli_args import args

    if "comfy.model_management" not in sys.modules:
        args.cpu = device_type == "cpu"
    elif args.cpu != (device_type == "cpu"):
        raise InputError(f"ComfyUI chose its device when first imported; this process cannot move it to {device_type}")
    names = (
        "comfy.sd", "comfy.sd1_clip", "comfy.model_management", "comfy.model_patcher", "comfy.model_detection",
        "comfy.supported_models", "comfy.supported_models_base", "comfy.samplers", "comfy.sample", "comfy.ops",
        "comfy.latent_formats", "comfy.k_diffusion.sampling", "comfy.text_encoders.z_image",
        "comfy.text_encoders.llama", "comfy.ldm.modules.diffusionmodules.mmdit", "comfy_extras.nodes_model_advanced",
        "comfy_extras.nodes_sd3", "nodes", "folder_paths",
    )
    with quiet_logging():
        return SimpleNamespace(**{name.rsplit(".", 1)[-1]: importlib.import_module(name) for name in names})
