"""`parity tables`: the 'Implementation differences' and 'Capabilities' tables, computed by running the adapters.

The expected values are published facts (ZIMAGE_REFERENCE.md), not what the code printed:
§1 the in-house default ends in `151667, 271, 151668, 271`, the references cut at 512 tokens and
ComfyUI never does; §2 everyone takes `hidden_states[-2]`; §3 the 9-step ComfyUI schedule and
DiffSynth's bf16 time input; §4 diffusers refuses sizes not divisible by 16. One lab (one memo)
serves the whole module, so every probe runs once.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from parity.analysis import capabilities, differences
from parity.analysis import text_observations as text
from parity.analysis.markdown import code, plain, prose, table
from parity.analysis.probe_runner import ProbeRunner
from parity.analysis.tables_command import build_report, tables_command
from parity.core.errors import InputError
from parity.suite.adapter import registered_adapters

ROOT = Path(__file__).parents[1]
ROWS = [
    "thinking tokens", "system prompt", "chat template source", "embedding layer", "padding handling",
    "max sequence length", "resolution alignment", "schedule (sigmas)", "time input (model_t × 1000, 8 steps)",
    "sampler", "guidance formula", "noise", "dtype casts",
]
# ZIMAGE_REFERENCE.md §1: "A cat sleeping" with the pack's defaults ends in these ids.
INHOUSE_THINK_TAIL = [151667, 271, 151668, 271]
COMFY_9_STEPS = "[1, 0.960043, 0.913146, 0.857326, 0.789773, 0.706349, 0.600719, 0.462656, 0.27451, 0]"
DIFFSYNTH_BF16_TIME = "[0, 44, 100, 168, 248, 356, 500, 700]"


@pytest.fixture(scope="module")
def lab() -> ProbeRunner:
    return ProbeRunner()


@pytest.fixture(scope="module")
def names(lab: ProbeRunner) -> list[str]:
    return lab.default_names()


@pytest.fixture(scope="module")
def diff_table(lab: ProbeRunner, names: list[str]) -> dict[str, dict[str, str]]:
    header, rows = differences.differences(lab, names)
    assert header == ["difference", *names]
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}


@pytest.fixture(scope="module")
def cap_table(lab: ProbeRunner, names: list[str]) -> dict[str, dict[str, str]]:
    header, rows = capabilities.capabilities(lab, names)
    assert header == ["capability", *names]
    return {row[0]: dict(zip(names, row[1:], strict=True)) for row in rows}


def unescape(cell: str) -> str:
    return cell.replace("\\|", "|").replace("&lt;", "<").replace("&gt;", ">")


# --- shape -----------------------------------------------------------------------------------------


def test_one_column_per_default_adapter_and_the_listed_rows(lab, names, diff_table):
    assert names == sorted(n for n, c in registered_adapters().items() if c.in_default_run)
    assert {"diffusers", "comfyui_style", "inhouse", "diffsynth_style", "qwen3_chat"} <= set(names)
    assert list(diff_table) == [plain(r) for r in ROWS]


def test_no_cell_is_empty_or_an_error(diff_table, cap_table):
    for table_ in (diff_table, cap_table):
        for row, cells in table_.items():
            for name, cell in cells.items():
                assert cell.strip(), (row, name)
                assert not cell.startswith("error"), (row, name, cell)


def test_an_adapter_without_a_sampler_says_so_in_every_sampling_row(diff_table):
    for row in ("resolution alignment", "schedule (sigmas)", "sampler", "guidance formula", "noise", "dtype casts"):
        cell = diff_table[plain(row)]["qwen3_chat"]
        assert cell.startswith("not supported: ") and ("no sampler" in cell or "no noise" in cell), cell


# --- cells against published facts --------------------------------------------------------------------


def test_inhouse_thinking_tokens_end_in_the_enable_thinking_false_block(lab, diff_table):
    seen = text.think_tokens(lab, "inhouse")
    assert seen.ids[-4:] == INHOUSE_THINK_TAIL
    assert seen.positions == [len(seen.ids) - 4]
    cell = unescape(diff_table["thinking tokens"]["inhouse"])
    assert "(151667) at position 11 of 15 ids" in cell and str(INHOUSE_THINK_TAIL) in cell
    for name in ("diffusers", "diffsynth_style", "comfyui_style", "qwen3_chat"):
        assert diff_table["thinking tokens"][name].startswith("none"), name


def test_max_sequence_length_diffusers_512_comfyui_none(diff_table):
    row = diff_table["max sequence length"]
    assert row["diffusers"].startswith("512: a 700-token prompt is cut at 512 tokens")
    assert row["diffsynth_style"].startswith("512:")
    assert row["comfyui_style"].startswith("none: a 700-token prompt gives 708 tokens")
    assert row["inhouse"].startswith("none:")


def test_template_source_and_system_prompt(diff_table):
    source = diff_table["chat template source"]
    assert source["diffusers"].startswith("the tokenizer's chat template")
    assert source["comfyui_style"] == "hard-coded; bytes = the official template with enable_thinking=True"
    assert source["inhouse"] == "hard-coded; bytes = the official template with enable_thinking=False"
    system = diff_table["system prompt"]
    assert system["diffusers"].startswith("not supported: ")
    assert system["qwen3_chat"].startswith("yes: ") and system["inhouse"].startswith("yes: ")


def test_everyone_hands_on_hidden_states_minus_2(diff_table):
    for name, cell in diff_table["embedding layer"].items():
        assert cell.startswith("`hidden_states[-2]` of") and "exact" in cell, (name, cell)


def test_padding(diff_table):
    row = diff_table["padding handling"]
    assert row["diffusers"].startswith("pads to 512 on the right with [151643] (501 pad tokens)")
    assert row["comfyui_style"].startswith("no padding (11 tokens)")
    assert "rows kept with the mask" in row["comfyui_style"]
    assert "masked rows dropped" in row["inhouse"]


def test_sampling_rows(diff_table):
    assert diff_table[plain("resolution alignment")]["diffusers"].startswith("multiple of 16. 132, 136 px: refused")
    assert "rounded up to 144" in diff_table[plain("resolution alignment")]["diffsynth_style"]
    schedule = diff_table[plain("schedule (sigmas)")]
    assert schedule["comfyui_style"].startswith("8 steps: = diffusers")
    assert f"9 steps: ≠ diffusers (max abs diff 1.8e-03): {COMFY_9_STEPS}" in schedule["comfyui_style"]
    time_row = diff_table[plain("time input (model_t × 1000, 8 steps)")]
    assert time_row["diffsynth_style"].endswith(f"bf16: {DIFFSYNTH_BF16_TIME}")
    assert time_row["diffusers"].startswith("fp32 and bf16: [0, 45.4546, 100, 166.6667, 250, 357.1429, 500, 700]")
    # ComfyUI's res_multistep takes an Euler first step (comfy/k_diffusion/sampling.py); diffusers'
    # scheduler and DiffSynth's step are Euler only.
    sampler = diff_table["sampler"]
    assert sampler["comfyui_style"].startswith("euler; res_multistep (")
    assert "first step max abs diff 0.0e+00" in sampler["comfyui_style"]
    assert sampler["inhouse"].startswith("euler; res_multistep (")
    for name in ("diffusers", "diffsynth_style"):
        assert sampler[name].startswith("euler; res_multistep: not supported (") and "Euler" in sampler[name]
    guidance = diff_table["guidance formula"]
    assert guidance["diffusers"].startswith("v = u + 3·(pos − u) = pos + 2·(pos − u) at cfg 3, u = the negative prompt")
    assert "u = zeros" in guidance["comfyui_style"]
    assert "at cfg 1 with a negative given: 1" in guidance["comfyui_style"]
    assert "fp32 pipeline: time MLP in bf16" in diff_table["dtype casts"]["diffsynth_style"]
    assert "fp32 pipeline: time MLP in fp32" in diff_table["dtype casts"]["diffsynth_style_fp32_time"]
    assert "128² bf16: (1, 16, 16, 16) bf16 ≠ the shared draw" in diff_table["noise"]["diffsynth_style"]


def test_capabilities(cap_table):
    assert cap_table["system prompt"]["inhouse"] == "yes"
    assert cap_table["system prompt"]["diffusers"].startswith("not supported: ")
    assert cap_table[plain("guidance (cfg > 1)")]["comfyui_style"].startswith("yes")
    assert cap_table["cfg_truncation"]["diffusers"] == "yes (changes the velocity)"
    assert cap_table["cfg_truncation"]["comfyui_style"] == "accepted, no effect"
    assert cap_table["denoise strength &lt; 1"]["diffusers"] == "accepted, no effect"
    assert cap_table["size not a multiple of 16 (136 px)"]["diffusers"].startswith("not supported: diffusers refuses")
    assert cap_table["padding filter switch (filter_padding)"]["inhouse"].startswith("yes")


def test_comfyuis_bf16_sampling_cells_say_they_model_a_gpu_run(cap_table, diff_table):
    for name in ("comfyui_style", "inhouse"):
        assert "models ComfyUI on a GPU, unconfirmed" in cap_table["sampling in bf16"][name], name
        assert "models ComfyUI on a GPU, unconfirmed" not in cap_table["sampling in fp32"][name], name
        casts = diff_table["dtype casts"][name]
        assert casts.index("models ComfyUI on a GPU, unconfirmed") > casts.index("bf16 pipeline"), name
    assert "GPU" not in cap_table["sampling in bf16"]["diffusers"]


# --- Markdown ------------------------------------------------------------------------------------------

_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _tables(markdown: str) -> list[list[str]]:
    found, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def _outside_code(cell: str) -> str:
    return re.sub(r"``.*?``|`[^`]*`", "", cell)


def test_markdown_is_well_formed(lab, names):
    report = build_report(lab, names, ROOT / "fixtures" / "claims.toml")
    tables = _tables(report.markdown)
    assert len(tables) == 3  # differences, capabilities, claims
    for lines, columns in zip(tables, (len(names) + 1, len(names) + 1, 6), strict=True):
        widths = {len(_CELL_SPLIT.split(line)) for line in lines}
        assert widths == {columns + 2}, widths  # plus the empty pieces before the first and after the last pipe
        assert re.fullmatch(r"\|(---\|)+", lines[1])
        for line in lines:
            assert line.startswith("| ") or line == lines[1]
            assert line.endswith("|")
            outside = _outside_code(line)
            assert "<" not in outside and ">" not in outside, line  # no raw HTML outside code spans
            assert line.count("`") % 2 == 0, line


def test_markdown_helpers():
    assert code("<|im_start|>a\nb") == "`<\\|im_start\\|>a\\nb`"
    assert plain("a <b> | c\n d") == "a &lt;b&gt; \\| c d"
    assert prose("x `<think>` y") == "x `<think>` y"
    assert prose("unpaired ` <") == "unpaired ` &lt;"
    assert table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    with pytest.raises(ValueError):
        table(["a", "b"], [["1"]])


# --- the command ---------------------------------------------------------------------------------------


def _args(tmp_path: Path, **extra) -> argparse.Namespace:
    values = dict(adapters=None, claims=None, out=tmp_path / "tables.md", check=True, checkpoint=None,
                  device="cpu", fixtures=ROOT / "fixtures")
    return argparse.Namespace(**(values | extra))


def test_tables_command_prints_and_writes_the_same_markdown(lab, tmp_path, capsys):
    assert tables_command(_args(tmp_path), lab=lab) == 0
    out = capsys.readouterr()
    written = (tmp_path / "tables.md").read_text(encoding="utf-8")
    assert out.out == written
    assert "## Implementation differences" in written and "## Capabilities" in written and "## Claims" in written
    assert "differ from the ledger" not in written
    assert "claims (" in out.err


def test_tables_command_bad_input(lab, tmp_path):
    with pytest.raises(InputError, match="unknown adapter 'nope'"):
        tables_command(_args(tmp_path, adapters=["nope"]), lab=lab)
    with pytest.raises(InputError, match="claims ledger not found"):
        tables_command(_args(tmp_path, claims=tmp_path / "missing.toml"), lab=lab)
    with pytest.raises(InputError, match="checkpoint folder not found"):
        tables_command(_args(tmp_path, checkpoint=tmp_path / "nowhere"), lab=lab)


def test_a_variant_column_when_named(lab, tmp_path, capsys):
    args = _args(tmp_path, adapters=["comfyui_style_pre20251201", "diffusers_legacy_schedule"], out=None)
    assert tables_command(args, lab=lab) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| difference"))
    assert header == "| difference | comfyui_style_pre20251201 | diffusers_legacy_schedule |"
    # The legacy schedule (diffusers 0.36-0.38, ZIMAGE_REFERENCE.md §3): 9 steps end in a wasted step, 0, 0.
    legacy = next(line for line in out.splitlines() if line.startswith("| schedule (sigmas)")).split(" | ")[2]
    assert "9 steps: ≠ diffusers" in legacy and legacy.rstrip(" |").endswith("0.5, 0.3, 0, 0]")
    assert "the adapter does not sample" in out
