"""The node pack checkout the live in-house adapter imports (declared apart from the adapter, so the
command line can offer `--inhouse-pack DIR` without importing it)."""

from __future__ import annotations

from pathlib import Path

from parity.suite.checkouts import Checkout

# The modules the adapter loads, and the marker each must hold.
NODE_FILES = {
    "nodes/z_image_encoder.py": "class ZImageTextEncoder",
    "nodes/qwen_vl_helpers.py": "class ZImageEmptyLatent",
}
TEMPLATES = Path("nodes/templates/z_image")


def problem(root: Path) -> str | None:
    """Why `root` is not a QwenImageWanBridge checkout with its Z-Image nodes (None: it is)."""
    if not root.is_dir():
        return "not a directory"
    for name, marker in NODE_FILES.items():
        path = root / name
        if not path.is_file():
            return f"not the QwenImageWanBridge node pack (no {name})"
        if marker not in path.read_text(encoding="utf-8", errors="replace"):
            return f"this node pack has no Z-Image nodes ({name} has no {marker.split()[1]}); update it"
    if not (root / TEMPLATES).is_dir():
        return f"this node pack has no Z-Image templates folder ({TEMPLATES})"
    return None


PACK = Checkout("inhouse_pack", "a QwenImageWanBridge node pack checkout", problem)
