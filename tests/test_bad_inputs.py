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
import hashlib
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
import torch
from safetensors.torch import load, load_file, save, save_file

from implementations.inhouse.adapter import InHouseAdapter
from parity.cli import main
from parity.commands import MAX_TOKENIZE_BYTES
from parity.core import tokenizer as tokenizer_module
from parity.core.errors import InputError
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
    # A subprocess row's standard input: these bytes, or with stdin_closed none at all (fd 0 closed).
    stdin: bytes | None = None
    stdin_closed: bool = False


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

    def rewrite_fixture(self, key: str, suffix: str, data: bytes) -> None:
        """New content for a fixture file, with the manifest's sha256 to match: malformed, yet trusted."""
        path = self.fixture_file(key, suffix)
        replace(path, data)
        manifest = self.manifest()
        manifest["fixtures"][key]["files"][path.name] = hashlib.sha256(data).hexdigest()
        self.write_manifest(manifest)

    def results(self) -> dict:
        """A real results file, a fast one-shard run's (written once per module beside the pristine
        fixtures), for a row to damage: it reads as a plain results file and as a shard to merge."""
        path = self._pristine.parent / "results.json"
        if not path.exists():
            made = invoke(["run", "--cases", "short", "--adapters", "inhouse", "--stages", "template,tokens",
                           "--shard", "1/1", "--fixtures", self._pristine, "--json", path])
            assert made.rc == 0, made
        return json.loads(path.read_text(encoding="utf-8"))


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


def vae_row(ws: Workspace, damage: str) -> Expect:
    """A checkpoint whose VAE is unusable: one line naming it and exit 2, at the decode stage."""
    folder = ws.checkpoint()
    vae = folder / "vae"
    weights, config = vae / "diffusion_pytorch_model.safetensors", vae / "config.json"
    if damage == "missing":
        shutil.rmtree(vae)
        fragments: tuple[str, ...] = (str(folder), "vae/")
    elif damage == "truncated":
        data = weights.read_bytes()
        replace(weights, data[: len(data) // 2])
        fragments = (str(weights),)
    elif damage == "another-model":
        replace(weights, (folder / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes())
        fragments = (str(weights),)
    else:
        settings = json.loads(config.read_text(encoding="utf-8"))
        replace(config, json.dumps(settings | {"block_out_channels": [32, 64, 128, 256]}).encode())
        # The config's widths need a shortcut the weights do not hold.
        fragments = (str(weights), "lacks VAE decoder weights", "conv_shortcut")
    args = ["run", "--cases", "turbo", "--adapters", "comfyui_style", "--fixtures", ws.fixtures, "--checkpoint", folder]
    return Expect(args, fragments)


# Deeper than the interpreter's recursion limit: json.loads raises RecursionError on it.
NESTED = "[" * 100_000 + "]" * 100_000


def results_row(ws: Workspace, text: str, *fragments: str, merge: bool = False) -> Expect:
    """`text` as a results file, rendered (`parity report`) or merged as a shard (`--merge`)."""
    path, html, merged = ws.tmp / "results.json", ws.tmp / "report.html", ws.tmp / "merged.json"
    path.write_text(text, encoding="utf-8")
    args = ["report", "--merge", path, "--json", merged] if merge else ["report", "--json", path]
    return Expect([*args, "--out", html], ("results.json", *fragments), absent=(html, merged))


def edited_results(ws: Workspace, edit: Callable[[dict], object], *fragments: str, merge: bool = False) -> Expect:
    data = ws.results()
    edit(data)
    return results_row(ws, json.dumps(data), *fragments, merge=merge)


def results_unknown_status(ws: Workspace) -> Expect:
    return edited_results(ws, lambda d: d["results"][0].update(status="weird"),
                          "results[0].status: unknown status 'weird'")


def results_missing_key(ws: Workspace) -> Expect:
    return edited_results(ws, lambda d: d["results"][1].pop("stage"), "results[1]", "missing key 'stage'")


def results_wrong_type(ws: Workspace) -> Expect:
    return edited_results(ws, lambda d: d.update(seconds="fast"), "seconds: must be a finite number, got a string")


def results_nested_too_deep(ws: Workspace) -> Expect:
    return results_row(ws, '{"results": ' + NESTED + "}", "nested too deeply")


def results_not_an_object(ws: Workspace) -> Expect:
    return results_row(ws, json.dumps([ws.results()]), "an object")


def results_of_another_format(ws: Workspace) -> Expect:
    # A file from a parity whose results format moved on: refused by number, not misread.
    return edited_results(ws, lambda d: d.update(format=99), "results format 99")


def merge_nested_too_deep(ws: Workspace) -> Expect:
    return results_row(ws, NESTED, "nested too deeply", merge=True)


def merge_unknown_status(ws: Workspace) -> Expect:
    return edited_results(ws, lambda d: d["results"][1].update(status="weird"),
                          "results[1].status: unknown status 'weird'", merge=True)


def renamed_case(data: dict, new: str) -> None:
    """Every mention of the run's one case, `short`, renamed to `new`."""
    data["references"] = {new: data["references"].pop("short")}
    for entry in data["results"] + data["cross"]:
        entry["case"] = new
    data["fixtures"] = {key.replace("short/", f"{new}/"): value for key, value in data["fixtures"].items()}
    data["shard"]["cases"] = [new]


def results_case_id_a_path(ws: Workspace, merge: bool) -> Expect:
    # Case ids become file names wherever the harness writes per case: one that is a path is refused
    # in results files too, before the report or the merge writes anything.
    return edited_results(ws, lambda d: renamed_case(d, "../../escaped"), "references",
                          "'../../escaped' is not a case id", merge=merge)


def merge_environment_without_dtype(ws: Workspace) -> Expect:
    return edited_results(ws, lambda d: d["environment"].pop("dtype"), "environment", "missing key 'dtype'",
                          merge=True)


def merge_shard_cases_not_strings(ws: Workspace) -> Expect:
    # "short" first, so the case is among its run's; the list after it cannot key the merge's order.
    return edited_results(ws, lambda d: d["shard"].update(cases=["short", ["short"]]), "shard.cases[1]",
                          "a string", merge=True)


DECLARED = 'adapter = "inhouse"\ncases = ["short"]\nstages = ["template"]\nreason = "the think block"\n'


def expectations_row(ws: Workspace, text: str, *fragments: str) -> Expect:
    (ws.fixtures / "expectations.toml").write_text(text, encoding="utf-8")
    out = ws.tmp / "out.json"
    args = run_short(ws, "--adapters", "inhouse", "--stages", "template", "--json", out)
    return Expect(args, ("expectations.toml", *fragments), absent=(out,))


def expectations_reason_not_a_string(ws: Workspace) -> Expect:
    text = "[[divergence]]\n" + DECLARED.replace('"the think block"', "3")
    return expectations_row(ws, text, "divergence #1", "'reason'", "string")


def expectations_adapter_not_a_string(ws: Workspace) -> Expect:
    text = "[[divergence]]\n" + DECLARED.replace('"inhouse"', "3")
    return expectations_row(ws, text, "divergence #1", "'adapter'", "a string or a list of strings")


def expectations_cases_a_string(ws: Workspace) -> Expect:
    # Read as a list, "short" was the globs s, h, o, r, t: a declaration that covered nothing.
    text = "[[divergence]]\n" + DECLARED.replace('["short"]', '"short"')
    return expectations_row(ws, text, "divergence #1", "'cases'", "a list of strings")


def expectations_single_table(ws: Workspace) -> Expect:
    return expectations_row(ws, "[divergence]\n" + DECLARED, "[[divergence]]")


def expectations_unknown_top_level_key(ws: Workspace) -> Expect:
    return expectations_row(ws, "[[divergance]]\n" + DECLARED, "unknown top-level key 'divergance'")


def fixture_row(ws: Workspace, suffix: str, data: bytes, *fragments: str) -> Expect:
    """short/diffusers's `suffix` file replaced by `data`, with the manifest's sha256 to match."""
    ws.rewrite_fixture("short/diffusers", suffix, data)
    out = ws.tmp / "out.json"
    args = run_short(ws, "--adapters", "inhouse", "--stages", "template,tokens", "--json", out)
    return Expect(args, ("short/diffusers", *fragments), absent=(out,))


def edited_fixture_json(ws: Workspace, edit: Callable[[dict], object], *fragments: str) -> Expect:
    strings = json.loads(ws.fixture_file("short/diffusers", ".json").read_text(encoding="utf-8"))
    edit(strings)
    return fixture_row(ws, ".json", json.dumps(strings).encode(), *fragments)


def edited_fixture_tensors(ws: Workspace, edit: Callable[[dict], object], *fragments: str) -> Expect:
    tensors = load(ws.fixture_file("short/diffusers", ".safetensors").read_bytes())
    edit(tensors)
    return fixture_row(ws, ".safetensors", save(tensors), *fragments)


def fixture_json_nested_too_deep(ws: Workspace) -> Expect:
    return fixture_row(ws, ".json", ('{"meta": ' + NESTED + "}").encode(), "nested too deeply")


def fixture_json_a_list(ws: Workspace) -> Expect:
    return fixture_row(ws, ".json", b"[]", "an object")


def fixture_json_nan_skipped(ws: Workspace) -> Expect:
    return edited_fixture_json(ws, lambda s: s["meta"].update(skipped=math.nan), "meta.skipped", "an object")


def fixture_json_nan_template_text(ws: Workspace) -> Expect:
    return edited_fixture_json(ws, lambda s: s.update({"template.text": math.nan}), "template.text", "a string")


def fixture_input_ids_2d(ws: Workspace) -> Expect:
    def edit(t: dict) -> None:
        t["tokens.input_ids"] = t["tokens.input_ids"].unsqueeze(0)

    return edited_fixture_tensors(ws, edit, "tokens.input_ids", "1-D")


def fixture_input_ids_float(ws: Workspace) -> Expect:
    def edit(t: dict) -> None:
        t["tokens.input_ids"] = t["tokens.input_ids"].double()

    return edited_fixture_tensors(ws, edit, "tokens.input_ids", "int64", "float64")


# A checkpoint's chat template renders for at most 5 s (parity.core.chat_template.RENDER_SECONDS); the
# rest of these rows' budget is start-up on a busy 2-core machine.
TEMPLATE_BOUND_WITHIN_S = 20.0
# Three nested loops of the sandbox's largest range: 10**15 iterations, years of rendering.
NESTED_LOOPS = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)
# A config naming a million layers took minutes building the model (on the meta device) before any check.
CONFIG_WITHIN_S = 20.0


def planted_template(ws: Workspace, template: str) -> Path:
    """A checkpoint whose tokenizer/chat_template.jinja is `template`."""
    folder = ws.checkpoint()
    replace(folder / "tokenizer" / "chat_template.jinja", template.encode())
    return folder


def tokenize_with(folder: Path) -> list[object]:
    """A command that renders nothing itself: only the checkpoint's load-time checks meet the template."""
    return ["tokenize", "--checkpoint", folder, "--text", "A cat"]


def template_syntax_error(ws: Workspace) -> Expect:
    folder = planted_template(ws, "{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    return Expect(tokenize_with(folder), ("tokenizer/chat_template.jinja", "line 2", "unexpected '}'"))


def config_template_raises(ws: Workspace) -> Expect:
    # It refuses every conversation, so no implementation could render a prompt with it: refused
    # where the checkpoint loads, even by a command that renders nothing.
    folder = ws.checkpoint()
    tokenizer = folder / "tokenizer"
    (tokenizer / "chat_template.jinja").unlink()
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    raising = "{{ raise_exception('roles must alternate') }}"
    replace(tokenizer / "tokenizer_config.json", json.dumps(config | {"chat_template": raising}).encode())
    return Expect(tokenize_with(folder), ("tokenizer/tokenizer_config.json", "line 1", "roles must alternate"))


def template_range_too_big(ws: Workspace) -> Expect:
    folder = planted_template(ws, "{{ messages[0].content }}\n{% for i in range(10**9) %}{% endfor %}")
    return Expect(run_short(ws, "--checkpoint", folder), ("tokenizer/chat_template.jinja", "line 2", "MAX_RANGE"))


def template_nested_loops(ws: Workspace) -> Expect:
    folder = planted_template(ws, NESTED_LOOPS)
    fragments = ("tokenizer/chat_template.jinja", "still rendering after 5 s")
    return Expect(run_short(ws, "--checkpoint", folder), fragments, within_s=TEMPLATE_BOUND_WITHIN_S)


def template_huge_string(ws: Workspace) -> Expect:
    # 10 GB: Jinja folds the constant while compiling, before any render has started.
    folder = planted_template(ws, "{{ 'x' * 10**10 }}")
    fragments = ("tokenizer/chat_template.jinja", "more than 512 MiB")
    return Expect(tokenize_with(folder), fragments, within_s=TEMPLATE_BOUND_WITHIN_S)


def template_output_flood(ws: Workspace) -> Expect:
    # 100 million characters in pieces of a thousand: no allocation is large, the output is.
    folder = planted_template(ws, "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}")
    fragments = ("tokenizer/chat_template.jinja", "100,000,000 characters")
    return Expect(tokenize_with(folder), fragments, within_s=TEMPLATE_BOUND_WITHIN_S)


def template_trap_on_one_prompt(
    ws: Workspace, adapter: str, trap: str, fragments: tuple[str, ...], within_s: float | None = None
) -> Expect:
    # Sprung only by this case's prompt, so the load-time probe renders cleanly and the render that
    # meets it is an implementation's: our own (diffsynth_style) or the installed library's (diffusers
    # calls the tokenizer's apply_chat_template itself).
    folder = ws.checkpoint()
    template = folder / "tokenizer" / "chat_template.jinja"
    guarded = "{% if messages[0].content == 'A cat sleeping' %}" + trap + "{% endif %}"
    replace(template, guarded.encode() + template.read_bytes())
    args = run_short(ws, "--adapters", adapter, "--checkpoint", folder)
    return Expect(args, ("tokenizer/chat_template.jinja", *fragments), within_s=within_s)


def template_raises_on_one_prompt(ws: Workspace, adapter: str) -> Expect:
    return template_trap_on_one_prompt(ws, adapter, "{{ raise_exception('no cats') }}", ("line 1", "no cats"))


def template_loops_on_one_prompt(ws: Workspace, adapter: str) -> Expect:
    fragments = ("still rendering after 5 s",)
    return template_trap_on_one_prompt(ws, adapter, NESTED_LOOPS, fragments, TEMPLATE_BOUND_WITHIN_S)


def template_floods_on_one_prompt(ws: Workspace, adapter: str) -> Expect:
    # 14 GB, computed from the prompt at render time, so nothing folds it while compiling.
    trap = "{{ messages[0].content * 10**9 }}"
    return template_trap_on_one_prompt(ws, adapter, trap, ("line 1", "more than 512 MiB"), TEMPLATE_BOUND_WITHIN_S)


def edited_config(ws: Workspace, part: str, edit: Callable[[dict], None]) -> Path:
    """A checkpoint whose `part`/config.json is the exported one changed by `edit`."""
    folder = ws.checkpoint()
    path = folder / part / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    edit(config)
    replace(path, json.dumps(config).encode())
    return folder


def dit_config(ws: Workspace, changes: dict, *fragments: str, within_s: float | None = None) -> Expect:
    folder = edited_config(ws, "transformer", lambda config: config.update(changes))
    args = ["run", "--cases", "turbo", "--stages", "denoise", "--adapters", "diffsynth_style",
            "--fixtures", ws.fixtures, "--checkpoint", folder]
    return Expect(args, ("transformer/config.json", *fragments), within_s=within_s)


def dit_config_dim_1e6(ws: Workspace) -> Expect:
    return dit_config(ws, {"dim": 1_000_000}, "dim 1000000 / n_heads 2", "axes_dims [8, 12, 12]")


def dit_config_a_million_layers(ws: Workspace) -> Expect:
    return dit_config(ws, {"n_layers": 1_000_000}, "n_layers is 1000000", "hold 2", within_s=CONFIG_WITHIN_S)


def dit_config_no_heads(ws: Workspace) -> Expect:
    return dit_config(ws, {"n_heads": 0}, "n_heads", "a positive integer", "not 0")


def dit_config_fractional_layers(ws: Workspace) -> Expect:
    return dit_config(ws, {"n_layers": 2.5}, "n_layers", "a positive integer", "not 2.5")


def dit_config_heads_not_dividing_dim(ws: Workspace) -> Expect:
    return dit_config(ws, {"n_heads": 3}, "dim 64", "n_heads 3")


def encoder_config(
    ws: Workspace, edit: Callable[[dict], None], *fragments: str, within_s: float | None = None
) -> Expect:
    folder = edited_config(ws, "text_encoder", edit)
    args = run_short(ws, "--adapters", "diffsynth_style", "--checkpoint", folder)
    return Expect(args, ("text_encoder/config.json", *fragments), within_s=within_s)


def encoder_config_a_million_layers(ws: Workspace) -> Expect:
    def edit(config: dict) -> None:
        # Without layer_types (Qwen3-4B's own config.json has none) transformers derives it from the count.
        del config["layer_types"]
        config["num_hidden_layers"] = 1_000_000

    return encoder_config(ws, edit, "num_hidden_layers is 1000000", "hold 4", within_s=CONFIG_WITHIN_S)


def encoder_config_no_heads(ws: Workspace) -> Expect:
    return encoder_config(ws, lambda c: c.update(num_attention_heads=0), "num_attention_heads", "not 0")


def encoder_config_fractional_layers(ws: Workspace) -> Expect:
    return encoder_config(ws, lambda c: c.update(num_hidden_layers=2.5), "num_hidden_layers", "2.5")


def encoder_config_kv_heads_not_dividing(ws: Workspace) -> Expect:
    fragments = ("num_attention_heads 4", "num_key_value_heads 3")
    return encoder_config(ws, lambda c: c.update(num_key_value_heads=3), *fragments)


def case_folder_holds_a_directory(ws: Workspace) -> Expect:
    # glob("*.toml") lists folders too: skipping one would drop whatever the user meant it to hold.
    (ws.fixtures / "cases" / "x.toml").mkdir()
    return Expect(run_short(ws), ("x.toml", "Is a directory"))


def case_path_a_directory(ws: Workspace) -> Expect:
    folder = ws.tmp / "cases"
    folder.mkdir()
    return Expect(["render", "--adapter", "inhouse", "--case", folder], (str(folder), "Is a directory"))


def case_file_a_symlink_loop(ws: Workspace) -> Expect:
    loop = ws.fixtures / "cases" / "loop.toml"
    loop.symlink_to(loop)
    return Expect(run_short(ws), ("loop.toml", "Too many levels of symbolic links"))


def regen_row(ws: Workspace, text: str, *fragments: str) -> Expect:
    """`text` as the case file new.toml, regenerated: the path that builds every stage's inputs."""
    ws.case_file("new.toml", text)
    changelog = ws.tmp / "changelog.md"
    args = ["fixtures", "regen", "--cases", "new", "--fixtures", ws.fixtures, "--changelog", changelog]
    return Expect(args, ("new.toml", "case 'new'", *fragments), absent=(changelog, ws.fixtures / "golden" / "new"))


def messages_empty(ws: Workspace) -> Expect:
    # The chat reference (qwen3_chat) looked at the last message to decide whether the turn is open: IndexError.
    return regen_row(ws, '[[case]]\nid = "new"\nmessages = []\n', "'messages' must hold at least one message")


def size_a_billion_pixels(ws: Workspace) -> Expect:
    # The shared latent asked for 10**18 bytes (an allocation traceback). Written 1e9 the size is a
    # TOML float, which the type check already refused.
    text = '[[case]]\nid = "new"\nprompt = "A cat"\nwidth = 1000000000\nheight = 1000000000\n'
    return regen_row(ws, text, "height and width must be at most 4096")


def schedule_steps(adapter: str, steps: int) -> Expect:
    return Expect(["schedule", "--adapter", adapter, "--steps", steps], ("steps must be at most 1000",))


def schedule_a_trillion_steps(ws: Workspace) -> Expect:
    # diffusers' scheduler asked for a 4 TB tensor of timesteps.
    return schedule_steps("diffusers", 10**12)


def schedule_a_hundred_million_comfyui_steps(ws: Workspace) -> Expect:
    # ComfyUI's `simple` scheduler picks each sigma in a Python loop: no allocation error, minutes of work.
    return schedule_steps("comfyui_style", 10**8)


def schedule_tiny_comfyui_denoise(ws: Workspace) -> Expect:
    # 1 step at denoise 1e-9 is 10**9 scheduled steps in ComfyUI's KSampler, of which it keeps the last one.
    args = ["schedule", "--adapter", "comfyui_style", "--steps", "1", "--denoise", "1e-9", "--json"]
    return Expect(args, ("steps / denoise must be at most 1000",), within_s=30.0)


def device_row(ws: Workspace, device: str, *fragments: str) -> Expect:
    out = ws.tmp / "out.json"
    args = run_short(ws, "--adapters", "inhouse", "--device", device, "--json", out)
    return Expect(args, (f"--device {device}:", *fragments), absent=(out,))


def device_cuda_absent(ws: Workspace) -> Expect:
    return device_row(ws, "cuda", f"this torch ({torch.__version__}) sees no CUDA device", "available here: cpu")


def device_mps_absent(ws: Workspace) -> Expect:
    return device_row(ws, "mps", "sees no MPS device", "available here: cpu")


def device_bogus(ws: Workspace) -> Expect:
    return device_row(ws, "bogus", "not a device name torch knows", "available here: cpu")


def tables_device_bogus(ws: Workspace) -> Expect:
    out = ws.tmp / "tables.md"
    args = ["tables", "--device", "bogus", "--fixtures", ws.fixtures, "--out", out]
    return Expect(args, ("--device bogus:", "available here: cpu"), absent=(out,))


def json_and_report_one_file(ws: Workspace, spelled_twice: bool = False) -> Expect:
    # The HTML was written over the results, which were lost without a word.
    out = ws.tmp / "out"
    (ws.tmp / "sub").mkdir()
    report = ws.tmp / "sub" / ".." / "out" if spelled_twice else out
    args = run_short(ws, "--adapters", "inhouse", "--stages", "template", "--json", out, "--report", report)
    return Expect(args, ("--json", "--report", "the same file", str(out)), absent=(out,))


def report_over_its_results(ws: Workspace) -> Expect:
    # The HTML replaced the very results it was rendered from.
    path = ws.tmp / "results.json"
    path.write_text(json.dumps(ws.results()), encoding="utf-8")
    return Expect(["report", "--json", path, "--out", path], ("--json", "--out", "the same file", str(path)))


def merge_over_its_results(ws: Workspace) -> Expect:
    shard, merged = ws.tmp / "shard.json", ws.tmp / "merged.json"
    shard.write_text(json.dumps(ws.results()), encoding="utf-8")
    args = ["report", "--merge", shard, "--json", merged, "--out", merged]
    return Expect(args, ("--json", "--out", "the same file"), absent=(merged,))


def merge_over_a_shard(ws: Workspace) -> Expect:
    shard = ws.tmp / "shard.json"
    data = json.dumps(ws.results())
    shard.write_text(data, encoding="utf-8")
    return Expect(["report", "--merge", shard, "--out", shard], ("--merge", "--out", "the same file"))


TOKENIZE = ["tokenize", "--stdin", "--json"]


def tokenize_stdin_closed(ws: Workspace) -> Expect:
    # Python sets sys.stdin to None when fd 0 is closed (`parity tokenize --stdin <&-`).
    return Expect(TOKENIZE, ("--stdin", "standard input is closed"), stdin_closed=True)


def tokenize_stdin_not_utf8(ws: Workspace) -> Expect:
    # Python's stdin decodes with surrogateescape: the byte reached the tokenizer as a surrogate (TypeError).
    return Expect(TOKENIZE, ("stdin line 2", "not UTF-8", "byte 4"), stdin=b"A cat\ncaf\xe9\n")


def tokenize_jsonl_lone_surrogate(ws: Workspace) -> Expect:
    # Valid JSON, but no text: a lone surrogate has no UTF-8 form, and the tokenizer raised a TypeError.
    return Expect([*TOKENIZE, "--jsonl"], ("stdin line 1", "lone surrogate"), stdin=b'"A \\ud800 cat"\n')


def tokenize_text_lone_surrogate(ws: Workspace) -> Expect:
    # What Python makes of a command-line argument that is not UTF-8 (surrogateescape).
    return Expect(["tokenize", "--text", "caf\udce9"], ("--text", "lone surrogate"))


def tokenize_jsonl_line_past_the_limit(ws: Workspace) -> Expect:
    # A 100 MB line made the tokenizer abort the process in native code (an allocation failure).
    line = b'"' + b"a" * MAX_TOKENIZE_BYTES + b'"\n'
    return Expect([*TOKENIZE, "--jsonl"], ("stdin line 1", "longer than 4 MiB"), stdin=line)


def tokenize_stdin_past_the_limit(ws: Workspace) -> Expect:
    return Expect(TOKENIZE, ("standard input", "longer than 4 MiB"), stdin=b"a " * (MAX_TOKENIZE_BYTES // 2 + 1))


def export_shard_size_unit_unknown(ws: Workspace) -> Expect:
    out = ws.tmp / "checkpoint"
    args = ["export", "--format", "diffusers", "--out", out, "--max-shard-size", "300M"]
    return Expect(args, ("--max-shard-size '300M'", "KB, MB, GB or TB"), absent=(out,))


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
    *(pytest.param(partial(vae_row, damage=d), IN_PROCESS, id=f"vae-{d}")
      for d in ("missing", "truncated", "another-model", "config-disagrees")),
    pytest.param(results_unknown_status, IN_PROCESS, id="results-unknown-status"),
    pytest.param(results_missing_key, IN_PROCESS, id="results-missing-key"),
    pytest.param(results_wrong_type, IN_PROCESS, id="results-wrong-type"),
    pytest.param(results_nested_too_deep, IN_PROCESS, id="results-nested-too-deep"),
    pytest.param(results_not_an_object, IN_PROCESS, id="results-not-an-object"),
    pytest.param(results_of_another_format, IN_PROCESS, id="results-format-99"),
    pytest.param(merge_nested_too_deep, IN_PROCESS, id="merge-nested-too-deep"),
    pytest.param(merge_unknown_status, IN_PROCESS, id="merge-unknown-status"),
    pytest.param(merge_environment_without_dtype, IN_PROCESS, id="merge-environment-without-dtype"),
    pytest.param(merge_shard_cases_not_strings, IN_PROCESS, id="merge-shard-cases-not-strings"),
    pytest.param(expectations_reason_not_a_string, IN_PROCESS, id="expectations-reason-not-a-string"),
    pytest.param(expectations_adapter_not_a_string, IN_PROCESS, id="expectations-adapter-not-a-string"),
    pytest.param(expectations_cases_a_string, IN_PROCESS, id="expectations-cases-a-string"),
    pytest.param(expectations_single_table, IN_PROCESS, id="expectations-single-[divergence]-table"),
    pytest.param(expectations_unknown_top_level_key, IN_PROCESS, id="expectations-unknown-top-level-key"),
    pytest.param(fixture_json_nested_too_deep, IN_PROCESS, id="fixture-json-nested-too-deep"),
    pytest.param(fixture_json_a_list, IN_PROCESS, id="fixture-json-a-list"),
    pytest.param(fixture_json_nan_skipped, IN_PROCESS, id="fixture-json-nan-skipped"),
    pytest.param(fixture_json_nan_template_text, IN_PROCESS, id="fixture-json-nan-template-text"),
    pytest.param(fixture_input_ids_2d, IN_PROCESS, id="fixture-input-ids-2d"),
    pytest.param(fixture_input_ids_float, IN_PROCESS, id="fixture-input-ids-float"),
    pytest.param(template_syntax_error, IN_PROCESS, id="jinja-syntax-error"),
    pytest.param(config_template_raises, IN_PROCESS, id="jinja-raise-in-tokenizer_config"),
    pytest.param(template_range_too_big, SUBPROCESS, id="jinja-range-10**9"),
    pytest.param(template_nested_loops, IN_PROCESS, id="jinja-nested-loops"),
    pytest.param(template_huge_string, IN_PROCESS, id="jinja-10GB-string"),
    pytest.param(template_output_flood, IN_PROCESS, id="jinja-output-100M-chars"),
    pytest.param(partial(template_raises_on_one_prompt, adapter="diffsynth_style"), IN_PROCESS,
                 id="jinja-raise-on-one-prompt"),
    pytest.param(partial(template_raises_on_one_prompt, adapter="diffusers"), IN_PROCESS,
                 id="jinja-raise-in-live-diffusers"),
    pytest.param(partial(template_loops_on_one_prompt, adapter="diffsynth_style"), IN_PROCESS,
                 id="jinja-nested-loops-on-one-prompt"),
    pytest.param(partial(template_loops_on_one_prompt, adapter="diffusers"), IN_PROCESS,
                 id="jinja-nested-loops-in-live-diffusers"),
    pytest.param(partial(template_floods_on_one_prompt, adapter="diffusers"), IN_PROCESS,
                 id="jinja-14GB-string-in-live-diffusers"),
    pytest.param(dit_config_dim_1e6, IN_PROCESS, id="dit-config-dim-1e6"),
    pytest.param(dit_config_a_million_layers, IN_PROCESS, id="dit-config-n_layers-1e6"),
    pytest.param(dit_config_no_heads, IN_PROCESS, id="dit-config-n_heads-0"),
    pytest.param(dit_config_fractional_layers, IN_PROCESS, id="dit-config-n_layers-2.5"),
    pytest.param(dit_config_heads_not_dividing_dim, IN_PROCESS, id="dit-config-n_heads-not-dividing-dim"),
    pytest.param(encoder_config_a_million_layers, IN_PROCESS, id="encoder-config-num_hidden_layers-1e6"),
    pytest.param(encoder_config_no_heads, IN_PROCESS, id="encoder-config-num_attention_heads-0"),
    pytest.param(encoder_config_fractional_layers, IN_PROCESS, id="encoder-config-num_hidden_layers-2.5"),
    pytest.param(encoder_config_kv_heads_not_dividing, IN_PROCESS, id="encoder-config-kv-heads-not-dividing"),
    pytest.param(case_folder_holds_a_directory, IN_PROCESS, id="cases-folder-holds-x.toml-directory"),
    pytest.param(case_path_a_directory, IN_PROCESS, id="case-path-a-directory"),
    pytest.param(case_file_a_symlink_loop, IN_PROCESS, id="case-file-symlink-loop"),
    pytest.param(messages_empty, IN_PROCESS, id="messages-empty"),
    pytest.param(size_a_billion_pixels, IN_PROCESS, id="size-1e9"),
    pytest.param(schedule_a_trillion_steps, IN_PROCESS, id="schedule-steps-1e12"),
    pytest.param(schedule_a_hundred_million_comfyui_steps, SUBPROCESS, id="schedule-comfyui-steps-1e8"),
    pytest.param(schedule_tiny_comfyui_denoise, SUBPROCESS, id="schedule-comfyui-denoise-1e-9"),
    pytest.param(merge_over_a_shard, IN_PROCESS, id="merge-out-is-a-shard"),
    pytest.param(partial(results_case_id_a_path, merge=False), IN_PROCESS, id="results-case-id-a-path"),
    pytest.param(partial(results_case_id_a_path, merge=True), IN_PROCESS, id="merge-case-id-a-path"),
    pytest.param(device_cuda_absent, IN_PROCESS, id="device-cuda-absent",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
    pytest.param(device_mps_absent, IN_PROCESS, id="device-mps-absent",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")),
    pytest.param(device_bogus, IN_PROCESS, id="device-bogus"),
    pytest.param(tables_device_bogus, IN_PROCESS, id="tables-device-bogus"),
    pytest.param(json_and_report_one_file, IN_PROCESS, id="json-and-report-same-file"),
    pytest.param(partial(json_and_report_one_file, spelled_twice=True), IN_PROCESS,
                 id="json-and-report-same-file-spelled-twice"),
    pytest.param(report_over_its_results, IN_PROCESS, id="report-out-is-its-json"),
    pytest.param(merge_over_its_results, IN_PROCESS, id="merge-out-is-its-json"),
    pytest.param(tokenize_stdin_closed, SUBPROCESS, id="tokenize-stdin-closed"),
    pytest.param(tokenize_stdin_not_utf8, SUBPROCESS, id="tokenize-stdin-not-utf8"),
    pytest.param(tokenize_jsonl_lone_surrogate, SUBPROCESS, id="tokenize-jsonl-lone-surrogate"),
    pytest.param(tokenize_text_lone_surrogate, IN_PROCESS, id="tokenize-text-lone-surrogate"),
    pytest.param(tokenize_jsonl_line_past_the_limit, SUBPROCESS, id="tokenize-jsonl-line-past-4MiB"),
    pytest.param(tokenize_stdin_past_the_limit, SUBPROCESS, id="tokenize-stdin-past-4MiB"),
    pytest.param(export_shard_size_unit_unknown, IN_PROCESS, id="export-max-shard-size-300M"),
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


def spawn(args: list[object], stdin: bytes | None = None, stdin_closed: bool = False) -> Outcome:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(a) for a in (PARITY, *args)], cwd=ROOT, capture_output=True, input=stdin, timeout=300,
        preexec_fn=partial(os.close, 0) if stdin_closed else None,
    )
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    return Outcome(proc.returncode, out, err, time.perf_counter() - start)


def the_error_line(outcome: Outcome) -> str:
    """The one `parity: error:` line, last on stderr (progress and warnings may come before it)."""
    lines = outcome.err.splitlines()
    errors = [line for line in lines if line.startswith("parity: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], outcome.err
    return errors[0]


@pytest.mark.parametrize(("row", "how"), ROWS)
def test_bad_input(row, how, tmp_path, pristine, exported, monkeypatch):
    expect = row(Workspace(tmp_path, pristine, exported, monkeypatch))
    outcome = invoke(expect.args) if how == IN_PROCESS else spawn(expect.args, expect.stdin, expect.stdin_closed)
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
