"""The `parity` command as a user runs it: exit codes, one-line errors, and the output contracts.

Contracts (DESIGN.md, "Contracts others rely on"): exit 0 = success / no unexpected divergence,
1 = unexpected divergence (or fixtures that moved on regen), 2 = bad input with exactly one line on
stderr and no traceback. Expected token ids come from the reference doc (ZIMAGE_REFERENCE.md §0-1),
not from what the code prints.

Checks call `parity.cli.main` in-process (seconds instead of a fresh interpreter each). The table
of bad inputs (unknown keys, damaged fixtures, unsafe templates, ...), some rows in a real process,
is tests/test_bad_inputs.py. Every check that changes fixtures works on a copy under tmp_path,
never on the repository's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from cli_run import Result, bad_input, invoke

from parity.golden.store import FixtureStore
from parity.stages import TEXT_STAGES
from parity.stages.template import Template
from parity.suite.cases import load_case_file, load_cases

ROOT = Path(__file__).parents[1]
PROMPTS = ROOT / "fixtures" / "cases" / "prompts.toml"
CHAT = ROOT / "fixtures" / "cases" / "chat.toml"

# ZIMAGE_REFERENCE.md §0: the references' template for "A cat sleeping", and §1: the think block the
# node pack appends by default (the Qwen3 enable_thinking=False prompt).
CAT_TEMPLATE = "<|im_start|>user\nA cat sleeping<|im_end|>\n<|im_start|>assistant\n"
CAT_IDS = [151644, 872, 198, 32, 8251, 21127, 151645, 198, 151644, 77091, 198]
THINK_BLOCK = [151667, 271, 151668, 271]
THINK, END_THINK, NEWLINE2 = 151667, 151668, 271
PLAIN_ADAPTERS = {"diffusers", "diffsynth_style", "comfyui_style", "inhouse", "qwen3_chat"}
XSS = "<script>alert(1)</script>"


# --- helpers ----------------------------------------------------------------------------------------


def stdin_of(text: str) -> io.TextIOWrapper:
    """A standard input holding `text`: `parity tokenize --stdin` reads its bytes (`.buffer`)."""
    return io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8")


def manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def fixture_file(root: Path, key: str, suffix: str) -> Path:
    """The file of fixture `key` ending in `suffix`, found through the manifest (names may carry hashes)."""
    case_id = key.split("/", 1)[0]
    (name,) = [n for n in manifest(root)["fixtures"][key]["files"] if n.endswith(suffix)]
    return root / "golden" / case_id / name


def split_tables(text: str, header: str) -> tuple[str, list[str]]:
    """A TOML file of `[[header]]` tables as (preamble, [each table's text])."""
    marker = f"[[{header}]]"
    head, *chunks = text.split(marker)
    return head, [marker + c for c in chunks]


def table(chunk: str, header: str) -> dict:
    return tomllib.loads(chunk)[header][0]


def edit_case_file(path: Path, keep=lambda case: True, edit=lambda case, chunk: chunk) -> None:
    head, chunks = split_tables(path.read_text(encoding="utf-8"), "case")
    kept = [edit(table(c, "case"), c) for c in chunks if keep(table(c, "case"))]
    path.write_text(head + "".join(kept), encoding="utf-8")


def declare(root: Path, adapter: str, case: str, stage: str, reason: str) -> None:
    with (root / "expectations.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[[divergence]]\nadapter = "{adapter}"\ncases = ["{case}"]\nstages = ["{stage}"]\n'
                f"reason = '''{reason}'''\n")


# --- shared, module-scoped work ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One snapshot of the repository's fixtures; tests copy it again before changing anything."""
    root = tmp_path_factory.mktemp("pristine") / "fixtures"
    shutil.copytree(ROOT / "fixtures", root)
    return root


@pytest.fixture
def fx(pristine, tmp_path) -> Path:
    """A private, writable copy of the fixtures."""
    root = tmp_path / "fixtures"
    shutil.copytree(pristine, root)
    return root


@pytest.fixture(scope="module")
def short_run(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("short-run")
    res = invoke("run", "--cases", "short", "--fixtures", pristine,
                 "--json", out / "out.json", "--report", out / "out.html")
    return res, out


# --- 1. bad input (more in test_bad_inputs.py) ------------------------------------------------------


def test_a_control_character_in_a_file_name_cannot_split_the_error_line(fx):
    odd = fx / "cases" / "odd\n\x1b[2Jname.toml"
    odd.write_text('[[case]]\nid = "x"\nprompt = "y"\ncolour = 1\n', encoding="utf-8")
    line = bad_input(invoke("run", "--fixtures", fx), "'colour'")
    assert "odd\\n\\x1b[2Jname.toml" in line and line.isprintable()


def crash(_args: object) -> int:
    raise ValueError("a bug\nsecond line")


@pytest.mark.parametrize("debug", ["flag", "variable", None])
def test_an_internal_error_has_its_own_exit_status_and_says_how_to_get_the_traceback(monkeypatch, capsys, debug):
    from parity import cli, commands

    monkeypatch.setattr(commands, "tokenize", crash)
    if debug == "variable":
        monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    rc = cli.main([*(["--debug"] if debug == "flag" else []), "tokenize", "--text", "x"])
    err = capsys.readouterr().err
    assert rc == cli.INTERNAL_ERROR == 3  # never 1, which CI reads as an unexpected divergence
    assert err.splitlines()[-1] == (
        "parity: internal error: ValueError: a bug (a failure of parity itself, not a divergence; rerun with "
        "`parity --debug tokenize ...` or PARITY_DEBUG=1 for the traceback)"
    )
    assert ("Traceback (most recent call last)" in err) == (debug is not None)


def test_case_changed_since_its_fixture_was_made(fx):
    edit_case_file(fx / "cases" / "prompts.toml",
                   edit=lambda case, chunk: chunk.replace("A cat sleeping", "A dog sleeping") if case["id"] == "short"
                   else chunk)
    line = bad_input(invoke("run", "--cases", "short", "--adapters", "inhouse", "--fixtures", fx), "short")
    assert "regen" in line


def test_checkpoint_without_tokenizer_folder(tmp_path):
    bad_input(invoke("tokenize", "--checkpoint", tmp_path, "--text", "x"), str(tmp_path), "tokenizer")


@pytest.mark.parametrize("command", [["tokenize", "--text", "x"], ["run", "--cases", "short"]])
def test_checkpoint_that_does_not_exist(tmp_path, pristine, command):
    missing = tmp_path / "no-such-checkpoint"
    extra = ["--fixtures", pristine] if command[0] == "run" else []
    bad_input(invoke(*command, *extra, "--checkpoint", missing), str(missing))


def test_render_unknown_case_id():
    bad_input(invoke("render", "--adapter", "inhouse", "--case", PROMPTS, "--case-id", "no-such-case"), "no-such-case")


def test_render_unknown_adapter():
    bad_input(invoke("render", "--adapter", "nope", "--case", PROMPTS, "--case-id", "short"), "'nope'")


def test_render_missing_case_file(tmp_path):
    missing = tmp_path / "none.toml"
    bad_input(invoke("render", "--adapter", "inhouse", "--case", missing), "none.toml")


def test_render_case_the_adapter_cannot_express():
    # diffusers' ZImagePipeline takes one user prompt: a system prompt is beyond it (reference doc §1).
    bad_input(invoke("render", "--adapter", "diffusers", "--case", CHAT, "--case-id", "system-prompt"),
              "diffusers", "system-prompt")


def test_report_without_results_file(tmp_path):
    missing = tmp_path / "missing.json"
    bad_input(invoke("report", "--json", missing, "--out", tmp_path / "r.html"), "missing.json")
    assert not (tmp_path / "r.html").exists()


def test_report_with_unreadable_results(tmp_path):
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    bad_input(invoke("report", "--json", tmp_path / "bad.json", "--out", tmp_path / "r.html"), "bad.json")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("second_line", ["not json", "123"])
def test_tokenize_jsonl_rejects_a_line_that_is_not_a_json_string(monkeypatch, second_line):
    monkeypatch.setattr(sys, "stdin", stdin_of(f'"A cat"\n{second_line}\n'))
    bad_input(invoke("tokenize", "--stdin", "--jsonl"), "line 2")


# --- 2. contracts --------------------------------------------------------------------------------------


def _spelled(tokens: list[str]) -> str:
    # Byte-level BPE shows a leading space as "Ġ"; either spelling reads back to the text.
    return "".join(tokens).replace("Ġ", " ")


def test_tokenize_text_json():
    res = invoke("tokenize", "--text", "A cat sleeping", "--json")
    assert res.rc == 0, res
    (line,) = res.out.splitlines()
    out = json.loads(line)
    assert set(out) == {"ids", "tokens"}
    assert out["ids"] == [32, 8251, 21127]
    assert len(out["tokens"]) == 3 and _spelled(out["tokens"]) == "A cat sleeping"


def test_tokenize_the_whole_template_and_the_think_tokens():
    out = json.loads(invoke("tokenize", "--text", CAT_TEMPLATE, "--json").out)
    assert out["ids"] == CAT_IDS
    assert json.loads(invoke("tokenize", "--text", "<think>", "--json").out)["ids"] == [THINK]


def test_tokenize_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", stdin_of("A cat sleeping"))
    res = invoke("tokenize", "--stdin", "--json")
    assert res.rc == 0 and json.loads(res.out)["ids"] == [32, 8251, 21127]


def test_tokenize_stdin_jsonl_one_object_per_line(monkeypatch):
    texts = ["A cat sleeping", "<think>", "\n\n", "</think>"]
    monkeypatch.setattr(sys, "stdin", stdin_of("".join(json.dumps(t) + "\n" for t in texts)))
    res = invoke("tokenize", "--stdin", "--jsonl")
    assert res.rc == 0, res
    objects = [json.loads(line) for line in res.out.splitlines()]
    assert [o["ids"] for o in objects] == [[32, 8251, 21127], [THINK], [NEWLINE2], [END_THINK]]
    assert all(set(o) == {"ids", "tokens"} and len(o["tokens"]) == len(o["ids"]) for o in objects)


def _render(adapter: str, case_id: str) -> dict:
    res = invoke("render", "--adapter", adapter, "--case", PROMPTS, "--case-id", case_id, "--json")
    assert res.rc == 0, res
    return json.loads(res.out)


def test_render_inhouse_default_appends_the_think_block():
    out = _render("inhouse", "short")
    assert {"text", "ids"} <= set(out)
    assert out["text"] == CAT_TEMPLATE + "<think>\n\n</think>\n\n"
    assert out["ids"][-4:] == THINK_BLOCK
    assert out["ids"] == CAT_IDS + THINK_BLOCK


def test_render_think_off_equals_the_diffusers_reference():
    inhouse, diffusers = _render("inhouse", "think-off"), _render("diffusers", "think-off")
    assert inhouse["ids"] == diffusers["ids"] == CAT_IDS
    assert inhouse["text"] == diffusers["text"] == CAT_TEMPLATE


def test_schedule_diffusers_matches_the_published_sigmas():
    res = invoke("schedule", "--adapter", "diffusers", "--steps", 8, "--json")
    assert res.rc == 0, res
    out = json.loads(res.out)
    assert set(out) == {"sampler", "sigmas", "model_t"} and out["sampler"] == "euler"
    # Reference doc §3: diffusers >= 0.39, 8 steps, shift 3, terminal 0; the DiT is fed 1 - sigma.
    assert out["sigmas"] == pytest.approx([1, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3, 0], abs=1e-6)
    assert out["model_t"] == pytest.approx([1 - s for s in out["sigmas"][:-1]], abs=1e-6)


def test_schedule_names_the_sampler_and_refuses_one_the_adapter_lacks():
    res = invoke("schedule", "--adapter", "comfyui_style", "--steps", 8, "--sampler", "res_multistep")
    assert res.rc == 0 and res.out.splitlines()[0] == "sampler: res_multistep", res
    bad_input(invoke("schedule", "--adapter", "diffusers", "--steps", 8, "--sampler", "res_multistep"),
              "diffusers", "res_multistep")
    bad_input(invoke("schedule", "--adapter", "comfyui_style", "--steps", 8, "--sampler", "dpmpp_2m"),
              "dpmpp_2m", "euler", "res_multistep")


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--steps", "8", "--denoise", "1.5"],
                                 ["--steps", "8", "--shift", "0"]])
def test_schedule_rejects_bad_numbers(bad):
    bad_input(invoke("schedule", "--adapter", "diffusers", *bad, "--json"))


def test_run_writes_json_and_html_covering_every_adapter_and_stage(short_run):
    res, out = short_run
    assert res.rc == 0, res
    data = json.loads((out / "out.json").read_text(encoding="utf-8"))
    assert set(data["adapters"]) >= PLAIN_ADAPTERS
    assert set(data["stages"]) >= set(TEXT_STAGES)  # the default: every implemented stage
    # One result per adapter and stage, for the stages the case exercises (a case may limit them).
    (short,) = [c for c in load_case_file(PROMPTS) if c.id == "short"]
    exercised = [s for s in data["stages"] if s in getattr(short, "stages", TEXT_STAGES)]
    assert set(TEXT_STAGES) <= set(exercised)
    pairs = [(r["adapter"], r["stage"]) for r in data["results"] if r["case"] == "short"]
    assert sorted(pairs) == sorted((a, s) for a in data["adapters"] for s in exercised)
    status = {(r["adapter"], r["stage"]): r["status"] for r in data["results"]}
    # Reference doc §1: every plain-prompt implementation but the pack's default renders the same bytes.
    for adapter in PLAIN_ADAPTERS - {"inhouse"}:
        assert status[adapter, "template"] == "match", adapter
    assert status["inhouse", "template"] == "declared"
    html = (out / "out.html").read_text(encoding="utf-8")
    assert re.search(r"151667\D+271\D+151668\D+271", html), "the think-block ids are not in the report"
    assert "<script" not in html.lower() and not re.search(r"""src=["']?https?:""", html)


def test_report_rebuilds_the_same_html_from_the_json(short_run, tmp_path):
    _, out = short_run
    again = invoke("report", "--json", out / "out.json", "--out", tmp_path / "again.html")
    assert again.rc == 0, again
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == (out / "out.html").read_text(encoding="utf-8")


def test_run_forced_mode(pristine, tmp_path):
    res = invoke("run", "--mode", "forced", "--cases", "short", "--fixtures", pristine, "--json", tmp_path / "f.json")
    assert res.rc == 0, res
    data = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))
    assert data["mode"] == "forced"
    assert {r["status"] for r in data["results"]} <= {"match", "declared"}


def test_fixtures_check_passes_on_the_repository():
    res = invoke("fixtures", "check", "--fixtures", ROOT / "fixtures")
    assert res.rc == 0, res


def test_fixtures_check_names_a_corrupted_file(fx):
    path = fixture_file(fx, "unicode/qwen3_chat", ".json")
    path.write_bytes(path.read_bytes().replace(b"{", b"[", 1))
    res = invoke("fixtures", "check", "--fixtures", fx)
    assert res.rc == 1, res
    assert path.name in res.out and "unicode/qwen3_chat" in res.out


# Regen is limited to `short` (its two fixtures: diffusers, qwen3_chat) to keep the model work small;
# every other fixture in the copy is a bystander that must not move.


def _entries(root: Path) -> dict:
    return {k: v["files"] for k, v in manifest(root)["fixtures"].items()}


def _golden_bytes(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted((root / "golden").rglob("*")) if p.is_file()}


def regen_short(root: Path, changelog: Path) -> Result:
    return invoke("fixtures", "regen", "--cases", "short", "--fixtures", root, "--changelog", changelog)


def settled(root: Path, changelog: Path) -> None:
    """Regenerate `short` once on this machine: the stored bits came from the machine and torch that
    recorded them (a CPU with other kernels moves the last bit of an embedding), and what the tests
    below prove is that a second regen on one machine changes nothing it should not."""
    assert regen_short(root, changelog).rc in (0, 1)


def test_regen_on_unchanged_fixtures_changes_nothing(fx, tmp_path):
    settled(fx, tmp_path / "settle.md")
    before_entries, before_bytes = _entries(fx), _golden_bytes(fx)
    res = regen_short(fx, tmp_path / "cl.md")
    assert res.rc == 0, res
    assert re.search(r"\b0\b[^\n]*changed", res.out), res.out
    assert _entries(fx) == before_entries and _golden_bytes(fx) == before_bytes


def _perturb_through_the_store(root: Path, key: str) -> str:
    """Store a different template for `key` the way a regen would, so the fixture still verifies."""
    case_id, reference = key.split("/")
    (case,) = [c for c in load_cases(root / "cases") if c.id == case_id]
    store = FixtureStore(root)
    outputs = store.load(case, reference)
    original = outputs.template.text
    outputs.template = Template(original + " tampered")
    store.write(case, reference, outputs, manifest(root)["fixtures"][key]["provenance"])
    store.commit()
    return original


def test_regen_rewrites_only_what_moved_and_writes_a_changelog(fx, tmp_path):
    settled(fx, tmp_path / "settle.md")
    original = _perturb_through_the_store(fx, "short/diffusers")
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0  # the perturbed store is consistent
    before = _entries(fx)
    changelog = tmp_path / "cl.md"
    res = regen_short(fx, changelog)
    assert res.rc == 1, res
    after = _entries(fx)
    assert set(after) == set(before)
    assert {k for k in before if after[k] != before[k]} == {"short/diffusers"}
    restored = json.loads(fixture_file(fx, "short/diffusers", ".json").read_text(encoding="utf-8"))
    assert restored["template.text"] == original
    log = changelog.read_text(encoding="utf-8")
    assert "short/diffusers" in log and "template" in log
    assert "short/qwen3_chat" not in log
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0


def test_regen_notices_a_hand_edited_fixture(fx, tmp_path):
    """A golden JSON edited by hand, with the manifest's sha256 updated so it still verifies."""
    path = fixture_file(fx, "short/diffusers", ".json")
    data = json.loads(path.read_text(encoding="utf-8"))
    original = data["template.text"]
    data["template.text"] = original + " tampered"
    blob = (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()
    path.write_bytes(blob)
    m = manifest(fx)
    m["fixtures"]["short/diffusers"]["files"][path.name] = hashlib.sha256(blob).hexdigest()
    (fx / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True), encoding="utf-8")
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0  # it verifies
    res = regen_short(fx, tmp_path / "cl.md")
    assert res.rc == 1, res
    restored = json.loads(fixture_file(fx, "short/diffusers", ".json").read_text(encoding="utf-8"))
    assert restored["template.text"] == original
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0


def test_fixtures_stale_lists_the_fixtures_of_a_removed_case(fx):
    edit_case_file(fx / "cases" / "prompts.toml", keep=lambda case: case["id"] != "think-off")
    res = invoke("fixtures", "stale", "--fixtures", fx)
    assert res.rc == 0, res
    assert sorted(res.out.split()) == ["think-off/diffusers", "think-off/qwen3_chat"]


# --- 3. expectations: only the undeclared fails ----------------------------------------------------


def test_an_undeclared_divergence_exits_1(fx):
    path = fx / "expectations.toml"
    head, chunks = split_tables(path.read_text(encoding="utf-8"), "divergence")

    def think_block(chunk: str) -> bool:
        d = table(chunk, "divergence")
        adapters = [d["adapter"]] if isinstance(d["adapter"], str) else d["adapter"]
        return "inhouse" in adapters and "short" in d["cases"] and "template" in d["stages"]

    kept = [c for c in chunks if not think_block(c)]
    assert len(kept) < len(chunks)
    path.write_text(head + "".join(kept), encoding="utf-8")
    res = invoke("run", "--cases", "short", "--adapters", "inhouse", "--fixtures", fx)
    assert res.rc == 1, res
    assert "UNEXPECTED short / inhouse / template" in res.out


def test_a_declared_divergence_that_no_longer_happens_exits_1(fx):
    declare(fx, "inhouse", "think-off", "template", "declared for the test: think-off really matches")
    res = invoke("run", "--cases", "think-off", "--adapters", "inhouse", "--fixtures", fx)
    assert res.rc == 1, res
    assert "think-off / inhouse / template" in res.out


# --- 4. the HTML report escapes what users write ---------------------------------------------------------


def test_report_escapes_user_text(fx, tmp_path):
    (fx / "cases" / "xss.toml").write_text(
        f'[[case]]\nid = "xss"\nprompt = "{XSS}"\nstages = ["template", "tokens", "embeddings"]\n', encoding="utf-8"
    )
    declare(fx, "inhouse", "xss", "template", f"the think block, and a reason that says {XSS}")
    made = invoke("fixtures", "regen", "--cases", "xss", "--fixtures", fx, "--changelog", tmp_path / "cl.md")
    assert made.rc == 1, made  # new fixtures count as moved
    res = invoke("run", "--cases", "xss", "--adapters", "inhouse,diffusers", "--fixtures", fx,
                 "--report", tmp_path / "r.html")
    assert res.rc == 0, res
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "</script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
