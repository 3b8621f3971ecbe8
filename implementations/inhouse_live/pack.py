"""The node pack's Z-Image nodes, imported from its checkout without running the pack's `__init__`.

A ComfyUI node pack is imported by ComfyUI as a package whose `__init__` registers every node it
ships (here Qwen-Image, Wan and HunyuanVideo nodes too, and web routes on ComfyUI's server). The
harness needs only the Z-Image encoders and the empty latent, so it loads those two modules as
members of a package named for the pack, whose `__init__` is not run: the modules' own relative
imports still resolve inside the checkout. ComfyUI is imported first (`comfyui_live.library`), as
the modules import it.
"""

from __future__ import annotations

import importlib
import sys
import types
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from implementations.comfyui_live import library
from parity.core.errors import InputError

PACKAGE = "zimage_parity_node_pack"


@cache
def load(root: Path, comfyui: Path, device_type: str) -> SimpleNamespace:
    """The pack's Z-Image encoder module and its helpers module, from the checkout at `root`, over
    the ComfyUI at `comfyui` (imported first: the modules import it)."""
    library.load(comfyui, device_type)
    loaded = sys.modules.get(PACKAGE)
    if loaded is not None and Path(loaded.__path__[0]) != root.resolve():
        raise InputError(f"{root}: another node pack ({loaded.__path__[0]}) is already imported in this process")
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(root.resolve())]
    sys.modules[PACKAGE] = package
    return SimpleNamespace(
        encoder=importlib.import_module(f"{PACKAGE}.nodes.z_image_encoder"),
        helpers=importlib.import_module(f"{PACKAGE}.nodes.qwen_vl_helpers"),
    )
