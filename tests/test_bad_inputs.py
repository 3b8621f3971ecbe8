"""Bad input, one row each: the `parity` command as a user meets it, expecting exit 2 and one
`parity: error:` line on stderr that names the problem (the key, the file, the fixture), and no
traceback. A few rows are legal input the harness must still handle well (a 200,000-character
prompt, a Jinja payload in an in-house template, a NaN inside the model): those say what they
expect instead, and why.

Each row builds its input under tmp_path (a copy of fixtures/ when it damages one, a copy of an
exported checkpoint when it plants a template or a weight) and runs `parity.cli.main`; the rows
marked `subprocess` run the installed `parity` script in a real process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from implementations.inhouse.adapter import InHouseAdapter
from parity import tokenizer as tokenizer_module
from parity.cli import main
from parity.errors import InputError
from parity.models.export import export_diffusers

ROOT = Path(__file__).parents[1]
PARITY = Path(sys.executable).with_name("parity")
# Jinja that would run a shell command if the sandbox let it out; the command leaves a file behind.
ESCAPE = "{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}"
SUBCLASS_WALK = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
LONG_PROMPT_CHARS = 200_000
TEXT_STAGES_WITHIN_S = 20.0


@dataclass
class Outcome:
    rc: int
    out: str
    err: str
    seconds: float


@dataclass(frozen=True)
class Expect:
    """What a row runs and what must come of it."""

    args: list[object]
    fragments: tuple[str, ...]
    rc: int = 2
    # Where the fragments are looked for when the row is not an exit-2 row.
    stream: str = "err"
    # Paths that must not exist afterwards: outputs not half-written, commands not run.
    absent: tuple[Path, ...] = ()
    within_s: float | None = None


class Workspace:
    """One row's scratch space: tmp_path, and on request a private copy of fixtures/ or of a checkpoint."""

    def __init__(self, tmp: Path, pristine: Path, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self._pristine, self._exported, self.monkeypatch = tmp, pristine, exported, monkeypatch

    @property
    def fixtures(self) -> Path:
        root = self.tmp / "fixtures"
        if not root.exists():
            shutil.copytree(self._pristine, root)
        return root

    def checkpoint(self) -> Path:
        """A checkpoint folder whose files are hard links to the exported one: replace, never edit, a file."""
        folder = self.tmp / "checkpoint"
        shutil.copytree(self._exported, folder, copy_function=os.link)
        return folder

    def case_file(self, name: str, text: str) -> Path:
        path = self.fixtures / "cases" / name
        path.write_text(text, encoding="utf-8")
        return path

    def fixture_file(self, key: str, suffix: str) -> Path:
        """The file of fixture `key` ending in `suffix`, found through the manifest (names carry hashes)."""
        (name,) = [n for n in self.manifest()["fixtures"][key]["files"] if n.endswith(suffix)]
        return self.fixtures / "golden" / key.split("/", 1)[0] / name

    def manifest(self) -> dict:
        return json.loads((self.fixtures / "manifest.json").read_text(encoding="utf-8"))

    def write_manifest(self, data: dict) -> None:
        (self.fixtures / "manifest.json").write_text(json.dumps(data), encoding="utf-8")


def replace(path: Path, data: bytes) -> None:
    """Give `path` new content without touching the file it may be hard-linked to."""
    path.unlink()
    path.write_bytes(data)


def run_short(ws: Workspace, *extra: object) -> list[object]:
    return ["run", "--cases", "short", "--fixtures", ws.fixtures, *extra]


# --- the rows ------------------------------------------------------------------------------------------


def unknown_case_key(ws: Workspace) -> Expect:
    ws.case_file("extra.toml", '[[case]]\nid = "x"\nprompt = "y"\ncolour = "red"\n')
    return Expect(run_short(ws), ("extra.toml", "'colour'"))


def malformed_toml(ws: Workspace) -> Expect:
    ws.case_file("broken.toml", '[[case]]\nid = "x"\nprompt = "unterminated\n')
    return Expect(run_short(ws), ("broken.toml", "malformed TOML"))


def case_written_as_a_single_table(ws: Workspace) -> Expect:
    ws.case_file("single.toml", '[case]\nid = "x"\nprompt = "y"\n')
    return Expect(run_short(ws), ("single.toml", "[[case]]"))


def empty_case_file(ws: Workspace) -> Expect:
    ws.case_file("empty.toml", "# cases to come\n")
    return Expect(run_short(ws), ("empty.toml", "no [[case]] tables"))


def non_utf8_case_file(ws: Workspace) -> Expect:
    (ws.fixtures / "cases" / "latin1.toml").write_bytes('[[case]]\nid = "x"\nprompt = "café"\n'.encode("latin-1"))
    return Expect(run_short(ws), ("latin1.toml", "not UTF-8"))


def unknown_adapter(ws: Workspace) -> Expect:
    return Expect(run_short(ws, "--adapters", "nope"), ("unknown adapter 'nope'",))


def unknown_stage(ws: Workspace) -> Expect:
    return Expect(run_short(ws, "--stages", "nope"), ("unknown stage 'nope'",))


def sized_case(ws: Workspace, key: str, value: str) -> Expect:
    ws.case_file("sized.toml", f'[[case]]\nid = "sized"\nprompt = "A cat"\n{key} = {value}\n')
    return Expect(run_short(ws), ("sized.toml", "case 'sized'", "height and width"))


def zero_height(ws: Workspace) -> Expect:
    return sized_case(ws, "height", "0")


def negative_width(ws: Workspace) -> Expect:
    return sized_case(ws, "width", "-16")


def width_below_one_latent_patch(ws: Workspace) -> Expect:
    # 8 pixels make a 1x1 latent and an empty shared one (diffusers draws 2 * (8 // 16) = 0 rows):
    # before this was refused, every sampler crashed with a reshape error. Sizes that are not
    # multiples of 16 (say 136) are legal: diffusers refuses them, DiffSynth rounds up, ComfyUI pads,
    # and that difference is a finding (the suite's `size-not-16` case), not bad input.
    return sized_case(ws, "width", "8")


def negative_seed(ws: Workspace) -> Expect:
    # torch.Generator().manual_seed(-1) is accepted and is the same draw as 2**64 - 1, so the
    # harness could pass it on; but ComfyUI's seed widget stops at 0 and the case hash would tell two
    # spellings of one draw apart, so a negative seed is refused rather than given a meaning.
    ws.case_file("seeded.toml", '[[case]]\nid = "seeded"\nprompt = "A cat"\nseed = -1\n')
    return Expect(run_short(ws), ("seeded.toml", "seed must not be negative", str(2**64 - 1)))


def seed_beyond_the_generator(ws: Workspace) -> Expect:
    # TOML integers here are arbitrary-precision; torch's manual_seed overflowed on 2**64 (a traceback).
    ws.case_file("seeded.toml", f'[[case]]\nid = "seeded"\nprompt = "A cat"\nseed = {2**64}\n')
    return Expect(run_short(ws), ("seeded.toml", "seed must be at most 2**64 - 1"))


def missing_fixture_file(ws: Workspace) -> Expect:
    path = ws.fixture_file("short/diffusers", ".safetensors")
    path.unlink()
    return Expect(run_short(ws, "--adapters", "inhouse"), ("short/diffusers", path.name, "missing"))


def missing_manifest_entry(ws: Workspace) -> Expect:
    data = ws.manifest()
    del data["fixtures"]["short/diffusers"]
    ws.write_manifest(data)
    return Expect(run_short(ws, "--adapters", "inhouse"), ("missing fixture short/diffusers", "regen"))


def damaged_fixture(ws: Workspace, damage: Callable[[bytes], bytes]) -> Expect:
    path = ws.fixture_file("short/diffusers", ".safetensors")
    path.write_bytes(damage(path.read_bytes()))
    outputs = (ws.tmp / "out.json", ws.tmp / "out.html")
    args = run_short(ws, "--adapters", "inhouse", "--json", outputs[0], "--report", outputs[1])
    # "Nothing half-written is left behind": the run stops before any report is written.
    return Expect(args, ("short/diffusers", path.name, "corrupted or truncated"), absent=outputs)


def corrupted_fixture(ws: Workspace) -> Expect:
    return damaged_fixture(ws, lambda data: data[:-1] + bytes([data[-1] ^ 0x01]))


def truncated_fixture(ws: Workspace) -> Expect:
    return damaged_fixture(ws, lambda data: data[: len(data) // 2])


def corrupted_fixture_of_another_reference(ws: Workspace) -> Expect:
    path = ws.fixture_file("short/qwen3_chat", ".safetensors")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # short's reference is diffusers; --reference makes the run read the damaged qwen3_chat fixture.
    args = run_short(ws, "--adapters", "inhouse", "--reference", "qwen3_chat")
    return Expect(args, ("short/qwen3_chat", path.name, "corrupted or truncated"))


def manifest_sha256_mismatch(ws: Workspace) -> Expect:
    path = ws.fixture_file("short/diffusers", ".json")
    data = ws.manifest()
    data["fixtures"]["short/diffusers"]["files"][path.name] = "0" * 64
    ws.write_manifest(data)
    return Expect(run_short(ws, "--adapters", "inhouse"), (path.name, "manifest says 000000000000"))


def manifest_entry_without_files(ws: Workspace) -> Expect:
    data = ws.manifest()
    del data["fixtures"]["short/diffusers"]["files"]
    ws.write_manifest(data)
    return Expect(run_short(ws, "--adapters", "inhouse"), ("manifest.json", "'short/diffusers'", "'files'"))


def tampered_reference_files(tmp: Path, which: str) -> tuple[tokenizer_module.ReferenceFiles, Path]:
    """The pinned reference files with `which` replaced by a copy one byte longer."""
    real = tokenizer_module.default_reference_files()
    pinned = getattr(real, which)
    copy = tmp / pinned.path.name
    copy.write_bytes(pinned.path.read_bytes() + b"\n")
    tampered = tokenizer_module.PinnedFile(copy, pinned.sha256, pinned.package, pinned.install)
    fields = {"ranks": real.ranks, "chat_template": real.chat_template, which: tampered}
    return tokenizer_module.ReferenceFiles(**fields), copy


def tokenizer_data_with_wrong_sha256(ws: Workspace) -> Expect:
    # The CLI has no flag for the reference files; the only way in is the module's own default.
    files, copy = tampered_reference_files(ws.tmp, "chat_template")
    ws.monkeypatch.setattr(tokenizer_module, "default_reference_files", lambda: files)
    return Expect(["tokenize", "--text", "A cat sleeping", "--json"], (str(copy), "sha256", "reinstall"))


def checkpoint_template_escape(ws: Workspace) -> Expect:
    # The harness renders the checkpoint's own chat template (transformers, inside jinja2's
    # ImmutableSandboxedEnvironment), never silently the official one: the sandbox must hold.
    folder, marker = ws.checkpoint(), ws.tmp / "escaped"
    replace(folder / "tokenizer" / "chat_template.jinja", ESCAPE.format(marker=marker).encode())
    args = run_short(ws, "--checkpoint", folder)
    return Expect(args, ("tokenizer/chat_template.jinja", "attempted unsafe access"), absent=(marker,))


def checkpoint_config_template_escape(ws: Workspace) -> Expect:
    folder = ws.checkpoint()
    tokenizer = folder / "tokenizer"
    (tokenizer / "chat_template.jinja").unlink()
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    replace(tokenizer / "tokenizer_config.json", json.dumps(config | {"chat_template": SUBCLASS_WALK}).encode())
    return Expect(
        ["tokenize", "--checkpoint", folder, "--text", "A cat"], ("tokenizer_config.json", "attempted unsafe access")
    )


def checkpoint_template_escape_on_one_prompt(ws: Workspace, adapter: str) -> Expect:
    # Unsafe only for this case's prompt, so the load-time probe renders it cleanly and the refusal
    # has to come from the render an implementation makes: our own (diffsynth_style) or the
    # installed library's (diffusers renders the template itself).
    folder, marker = ws.checkpoint(), ws.tmp / "escaped"
    template = folder / "tokenizer" / "chat_template.jinja"
    trap = "{% if messages[0].content == 'A cat sleeping' %}" + ESCAPE.format(marker=marker) + "{% endif %}"
    replace(template, trap.encode() + template.read_bytes())
    args = run_short(ws, "--adapters", adapter, "--checkpoint", folder)
    return Expect(args, ("tokenizer/chat_template.jinja", "attempted unsafe access"), absent=(marker,))


def jinja_in_an_inhouse_template(ws: Workspace) -> Expect:
    # Not bad input: the node pack's Markdown templates are plain text and are never rendered as
    # Jinja (neither by the pack nor here), so a payload in one reaches the prompt verbatim.
    marker = ws.tmp / "escaped"
    payload = ESCAPE.format(marker=marker)
    templates = ws.tmp / "templates"
    templates.mkdir()
    (templates / "payload.md").write_text(
        f"---\nname: payload\ndescription: d\nmodel: z-image\ncategory: test\n---\n{payload}\n", encoding="utf-8"
    )
    ws.monkeypatch.setattr(InHouseAdapter, "templates_dir", templates)
    case = ws.tmp / "case.toml"
    case.write_text('[[case]]\nid = "payload"\nprompt = "A cat"\ntemplate = "payload"\n', encoding="utf-8")
    args = ["render", "--adapter", "inhouse", "--case", case, "--json"]
    return Expect(args, (payload,), rc=0, stream="out", absent=(marker,))


def long_prompt(ws: Workspace) -> Expect:
    # Legal input, so not exit 2: a new case's regen exits 1 (its fixtures are new). What must hold
    # is that the text stages stay bounded (the references stop at 512 tokens) and that the cut is
    # said: each reference's 512 kept tokens and how many of the template's it dropped. (A
    # ComfyUI-style implementation encodes all ~55,000 tokens, as ComfyUI does; its embeddings stage
    # then takes about a minute on 2 cores, so it is left out of the bound.)
    prompt = ("A lighthouse on a basalt cliff at dusk. " * (LONG_PROMPT_CHARS // 40 + 1))[:LONG_PROMPT_CHARS]
    text_only = 'stages = ["template", "tokens", "embeddings"]'
    ws.case_file("huge.toml", f'[[case]]\nid = "huge"\n{text_only}\nprompt = "{prompt}"\n')
    args = ["fixtures", "regen", "--cases", "huge", "--fixtures", ws.fixtures, "--changelog", ws.tmp / "cl.md"]
    fragments = ("warning: case 'huge': diffusers truncates the prompt", "512 kept", "dropped from the end")
    return Expect(args, fragments, rc=1, within_s=TEXT_STAGES_WITHIN_S)


def nan_in_the_model(ws: Workspace) -> Expect:
    # A checkpoint with one NaN weight in DiT block layers.1 is a valid checkpoint whose model
    # diverges: exit 1 (unexpected divergence), not 2, with the step and the block named.
    folder = ws.checkpoint()
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    poisoned = state["layers.1.feed_forward.w2.weight"].clone()
    poisoned[3, 5] = math.nan
    weights.unlink()
    save_file(state | {"layers.1.feed_forward.w2.weight": poisoned}, weights)
    args = ["run", "--cases", "turbo", "--adapters", "comfyui_style", "--fixtures", ws.fixtures, "--checkpoint", folder]
    fragments = ("UNEXPECTED turbo / comfyui_style / denoise", "non-finite model output at step 0", "block layers.1")
    return Expect(args, fragments, rc=1, stream="out")


IN_PROCESS, SUBPROCESS = "in-process", "subprocess"
ROWS = [
    pytest.param(unknown_case_key, IN_PROCESS, id="unknown-case-key"),
    pytest.param(malformed_toml, IN_PROCESS, id="malformed-toml"),
    pytest.param(case_written_as_a_single_table, IN_PROCESS, id="single-[case]-table"),
    pytest.param(empty_case_file, IN_PROCESS, id="empty-case-file"),
    pytest.param(non_utf8_case_file, SUBPROCESS, id="non-utf8-case-file"),
    pytest.param(unknown_adapter, SUBPROCESS, id="unknown-adapter"),
    pytest.param(unknown_stage, IN_PROCESS, id="unknown-stage"),
    pytest.param(zero_height, IN_PROCESS, id="height-0"),
    pytest.param(negative_width, IN_PROCESS, id="width-negative"),
    pytest.param(width_below_one_latent_patch, IN_PROCESS, id="width-8"),
    pytest.param(negative_seed, IN_PROCESS, id="seed-negative"),
    pytest.param(seed_beyond_the_generator, IN_PROCESS, id="seed-2**64"),
    pytest.param(missing_fixture_file, IN_PROCESS, id="fixture-file-missing"),
    pytest.param(missing_manifest_entry, IN_PROCESS, id="fixture-entry-missing"),
    pytest.param(corrupted_fixture, IN_PROCESS, id="fixture-corrupted"),
    pytest.param(truncated_fixture, IN_PROCESS, id="fixture-truncated"),
    pytest.param(corrupted_fixture_of_another_reference, SUBPROCESS, id="fixture-corrupted-other-reference"),
    pytest.param(manifest_sha256_mismatch, IN_PROCESS, id="manifest-sha256-mismatch"),
    pytest.param(manifest_entry_without_files, IN_PROCESS, id="manifest-entry-malformed"),
    pytest.param(tokenizer_data_with_wrong_sha256, IN_PROCESS, id="tokenizer-data-sha256"),
    pytest.param(checkpoint_template_escape, SUBPROCESS, id="jinja-escape-chat_template.jinja"),
    pytest.param(checkpoint_config_template_escape, IN_PROCESS, id="jinja-escape-tokenizer_config"),
    pytest.param(partial(checkpoint_template_escape_on_one_prompt, adapter="diffsynth_style"), IN_PROCESS,
                 id="jinja-escape-on-one-prompt"),
    pytest.param(partial(checkpoint_template_escape_on_one_prompt, adapter="diffusers"), IN_PROCESS,
                 id="jinja-escape-in-live-diffusers"),
    pytest.param(jinja_in_an_inhouse_template, IN_PROCESS, id="jinja-in-inhouse-template-verbatim"),
    pytest.param(long_prompt, IN_PROCESS, id="prompt-200k-chars"),
    pytest.param(nan_in_the_model, IN_PROCESS, id="nan-weight"),
]


# --- running a row -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """One snapshot of the repository's fixtures; rows copy it again before changing anything."""
    root = tmp_path_factory.mktemp("pristine") / "fixtures"
    shutil.copytree(ROOT / "fixtures", root)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    return export_diffusers(tmp_path_factory.mktemp("export") / "checkpoint")


def invoke(args: list[object]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return Outcome(rc, out.getvalue(), err.getvalue(), time.perf_counter() - start)


def spawn(args: list[object]) -> Outcome:
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in (PARITY, *args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


def the_error_line(outcome: Outcome) -> str:
    """The one `parity: error:` line, last on stderr (progress and warnings may come before it)."""
    lines = outcome.err.splitlines()
    errors = [line for line in lines if line.startswith("parity: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.err
    return errors[0]


@pytest.mark.parametrize(("row", "how"), ROWS)
def test_bad_input(row, how, tmp_path, pristine, exported, monkeypatch):
    expect = row(Workspace(tmp_path, pristine, exported, monkeypatch))
    outcome = (invoke if how == IN_PROCESS else spawn)(expect.args)
    assert outcome.rc == expect.rc, outcome
    assert "Traceback" not in outcome.err, outcome.err
    text = the_error_line(outcome) if expect.rc == 2 else {"out": outcome.out, "err": outcome.err}[expect.stream]
    for fragment in expect.fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    if expect.rc == 2:
        assert outcome.out == "", outcome.out
    for path in expect.absent:
        assert not path.exists(), path
    if expect.within_s is not None:
        assert outcome.seconds < expect.within_s, outcome.seconds


@pytest.mark.parametrize("which", ["ranks", "chat_template"])
def test_reference_data_with_wrong_sha256_is_refused_before_anything_is_cached(tmp_path, which):
    files, copy = tampered_reference_files(tmp_path, which)
    with pytest.raises(InputError, match="sha256") as err:
        tokenizer_module.load_reference_tokenizer(files=files, cache_dir=tmp_path / "cache")
    assert str(copy) in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))
