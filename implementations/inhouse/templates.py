"""Prompt templates in the pack's format: Markdown with YAML front matter; the body is a system prompt.

    ---
    name: z_image_photographic
    description: ...
    model: z-image
    category: photography
    add_think_block: true          # optional
    thinking_content: |            # optional
      ...
    assistant_content: ...         # optional (read by the pack's loader and UI, used by none it ships)
    ---
    The system prompt.

The pack's dropdown lists templates by file stem, not by front-matter `name`, so a case selects one
by stem. The pack reads these files leniently (a broken file is skipped, bad YAML becomes empty
metadata); here a malformed template is an error that names the file and the key. The bodies are
plain text in the pack, never rendered as Jinja, so nothing here renders them either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from parity.core.errors import InputError
from parity.core.files import read_text

TEMPLATES_DIR = Path(__file__).parent / "templates"
FENCE = "---"
REQUIRED: dict[str, type] = {"name": str, "description": str, "model": str, "category": str}
OPTIONAL: dict[str, type] = {"add_think_block": bool, "thinking_content": str, "assistant_content": str}


@dataclass(frozen=True)
class PromptTemplate:
    key: str
    name: str
    description: str
    model: str
    category: str
    system_prompt: str
    # Loaded for completeness: the pack's UI turns the think block on for every template it fills
    # in, so this flag never changes a prompt.
    add_think_block: bool = False
    thinking_content: str = ""
    assistant_content: str = ""
    source: Path | None = None


def _front_matter(text: str, where: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise InputError(f"{where}: a template must start with a '{FENCE}' line of YAML front matter")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == FENCE:
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    raise InputError(f"{where}: front matter has no closing '{FENCE}' line")


def _metadata(raw: str, where: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise InputError(f"{where}: front matter is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(meta, dict):
        raise InputError(f"{where}: front matter must be a mapping of keys to values")
    unknown = sorted(str(k) for k in set(meta) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InputError(f"{where}: unknown front matter key {unknown[0]!r}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InputError(f"{where}: front matter is missing key {missing[0]!r}")
    for key, value in meta.items():
        wanted = {**REQUIRED, **OPTIONAL}[key]
        if not isinstance(value, wanted):
            got = type(value).__name__
            raise InputError(f"{where}: front matter key {key!r} must be {wanted.__name__}, got {got}")
    return meta


def parse_template(text: str, source: Path) -> PromptTemplate:
    """One template file's text; `source` names it in errors and gives it its key (the stem)."""
    raw_meta, body = _front_matter(text, source.name)
    meta = _metadata(raw_meta, source.name)
    return PromptTemplate(key=source.stem, system_prompt=body.strip(), source=source, **meta)


def load_template(path: Path) -> PromptTemplate:
    return parse_template(read_text(path, "template"), path)


def load_templates(directory: Path = TEMPLATES_DIR) -> dict[str, PromptTemplate]:
    """Every `*.md` template in `directory`, by file stem."""
    return {path.stem: load_template(path) for path in sorted(directory.glob("*.md"))}


def select_template(key: str, directory: Path = TEMPLATES_DIR) -> PromptTemplate:
    """The template a case names; an unknown name lists the known ones."""
    known = sorted(path.stem for path in directory.glob("*.md"))
    if key not in known:
        raise InputError(f"unknown template {key!r} (known: {', '.join(known) or 'none'})")
    return load_template(directory / f"{key}.md")
