"""The HTML report: self-contained, escaped, small, and it renders in a real browser without errors.

The default suite is run once for the module (in-process, about 10 s) and its report checked as a
maintainer gets it from CI. The browser check opens it in headless Chromium (Debian's `chromium`
package; `nox -s tests` installs it when missing), saves a screenshot to reports/report.png and
reads Chromium's log for console messages; a copy with an injected script error proves that the
check sees one.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import time
from html import unescape
from pathlib import Path

import pytest

from parity.cli import main
from parity.drawing import diffs
from parity.report.html import render_html
from parity.stages.template import TEMPLATE, Template

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "reports" / "report.png"
XSS = "<script>alert(1)</script>"
THINK_BLOCK = [151667, 271, 151668, 271]  # <think> \n\n </think> \n\n (ZIMAGE_REFERENCE.md §1)
MAX_BYTES = 5 * 1024 * 1024


def invoke(*args: object) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    assert rc in (0, 1), err.getvalue()
    return rc


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The default suite's results and report, as `nox -s parity` writes them."""
    out = tmp_path_factory.mktemp("suite")
    rc = invoke("run", "--fixtures", ROOT / "fixtures", "--json", out / "parity.json", "--report", out / "parity.html")
    assert rc == 0
    data = json.loads((out / "parity.json").read_text(encoding="utf-8"))
    return data, out / "parity.html"


def section(html: str, case: str) -> str:
    """The HTML of one case's section."""
    match = re.search(rf'<section class="case" id="case-\d+">\s*<h3>{re.escape(case)} <small>.*?</section>', html, re.S)
    assert match, f"no section for case {case!r}"
    return match.group(0)


# --- self-contained, small, fast ------------------------------------------------------------------------


def test_the_report_is_one_self_contained_file(suite):
    _, path = suite
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"<link\b|@import|url\(", html, re.I), "external CSS or resources"
    for attr, value in re.findall(r"""\b(src|href)\s*=\s*["']?([^"'\s>]*)""", html, re.I):
        if attr.lower() == "src":
            assert value.startswith("data:image/png;base64,"), value[:80]
        else:
            assert value.startswith("#"), value
    assert not re.search(r"https?://", html), "a network address in the report"
    assert html.count('<img class="plot"') >= 10, "the default suite's plots are missing"


def test_the_default_suite_report_stays_small_and_renders_in_seconds(suite):
    data, path = suite
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{size / 1e6:.2f} MB"
    start = time.perf_counter()
    again = render_html(data)
    seconds = time.perf_counter() - start
    print(f"default suite report: {size / 1e6:.2f} MB, rendered from JSON in {seconds:.1f} s")
    assert again == path.read_text(encoding="utf-8"), "the report is not a pure function of the results"
    assert seconds < 60


# --- what a maintainer reads ------------------------------------------------------------------------------


def test_the_think_block_token_diff_highlights_its_four_ids(suite):
    _, path = suite
    short = section(path.read_text(encoding="utf-8"), "short")
    tables = re.findall(r'<table class="tokdiff">.*?</table>', short, re.S)
    assert tables, "no token diff for the short case"
    (table,) = [t for t in tables if "inhouse" in t]
    highlighted = re.findall(r'<tr class="tk-insert">(.*?)</tr>', table, re.S)
    ids = [int(i) for row in highlighted for i in re.findall(r'<td class="id o">(\d+)</td>', row)]
    assert ids == THINK_BLOCK
    tokens = [unescape(t) for row in highlighted for t in re.findall(r'<td class="tok o">(.*?)</td>', row)]
    assert tokens == ["<think>", "↵↵", "</think>", "↵↵"]


def test_the_template_diff_shows_the_think_block_with_whitespace_visible(suite):
    _, path = suite
    short = section(path.read_text(encoding="utf-8"), "short")
    (table,) = re.findall(r'<table class="sbs">.*?</table>', short, re.S)
    marked = [unescape(m) for m in re.findall(r"<mark>(.*?)</mark>", table)]
    assert marked == ["<think>↵", "↵", "</think>↵", "↵"]


def test_every_case_and_divergence_is_reachable_from_the_top(suite):
    data, path = suite
    html = path.read_text(encoding="utf-8")
    top = html[: html.index("<h2>Cases</h2>")]
    for case in {r["case"] for r in data["results"]}:
        assert f">{case}</a>" in top, case
    assert "First divergences" in top
    # Each row says how to reproduce it.
    assert html.count("$ parity run --cases") >= len({(r["case"], r["adapter"]) for r in data["results"]})


def test_comfyuis_bf16_sampling_rows_say_they_model_a_gpu_run(suite):
    """ComfyUI runs bf16 only on a GPU, so the re-implementation's bf16 sampling and decode rows, and
    their judgement against the stored real code (recorded on a CPU), carry that caveat; a float32
    case and the text stages carry none."""
    data, path = suite
    caveats = {(r["case"], r["adapter"], r["stage"]): r["caveat"] for r in data["results"]}
    for adapter in ("comfyui_style", "comfyui_style@comfyui_live"):
        for stage in ("denoise", "decode"):
            assert "models ComfyUI on a GPU, unconfirmed" in caveats[("turbo-bf16", adapter, stage)], (adapter, stage)
        assert caveats[("turbo-bf16", adapter, "embeddings")] == ""
        assert caveats[("turbo", adapter, "denoise")] == ""
    assert caveats[("turbo-bf16", "diffusers", "denoise")] == ""
    case = section(path.read_text(encoding="utf-8"), "turbo-bf16")
    assert '<p class="caveat">* denoise, decode: models ComfyUI on a GPU, unconfirmed' in case


def test_sampling_cases_have_schedule_denoise_plots_and_a_metric_table(suite):
    _, path = suite
    case = section(path.read_text(encoding="utf-8"), "comfy-workflow-9")
    assert 'alt="sigma schedules"' in case and 'alt="per-step denoise error"' in case
    assert "Free-running only" in case  # no teacher-forced run in these results: said, not hidden
    assert '<table class="dataframe metrics">' in case and "min atol to pass" in case


def test_char_diff_makes_differing_whitespace_visible():
    left, right = diffs.char_diff("a  b", "a b")
    assert ("␣", True) in left and all(not changed for _, changed in right)
    detail = TEMPLATE.check(Template("x \ny"), Template("x\ny"), None, "fp32").detail
    assert (detail.first_diff, detail.line, detail.window_start) == (1, 1, 0)
    view = diffs.template_diff(detail)
    changed = [row for row in view["rows"] if row["kind"] == "change"]
    assert changed[0]["right"][1] == [("x", False), ("·", True), ("↵", False)]


# --- escaping -----------------------------------------------------------------------------------------------


def test_a_prompt_with_a_script_tag_renders_as_text(tmp_path):
    fx = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", fx)
    (fx / "cases" / "xss.toml").write_text(
        f'[[case]]\nid = "xss"\nprompt = "{XSS}"\nstages = ["template", "tokens", "embeddings"]\n', encoding="utf-8"
    )
    with (fx / "expectations.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[[divergence]]\nadapter = "inhouse"\ncases = ["xss"]\nstages = ["template"]\n'
                f"reason = '''the think block; {XSS}'''\n")
    invoke("fixtures", "regen", "--cases", "xss", "--fixtures", fx, "--changelog", tmp_path / "changelog.md")
    rc = invoke("run", "--cases", "xss", "--adapters", "inhouse,diffusers", "--fixtures", fx,
                "--report", tmp_path / "r.html")
    assert rc == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "</script" not in html.lower()
    xss = section(html, "xss")
    (template_diff,) = re.findall(r'<table class="sbs">.*?</table>', xss, re.S)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in template_diff  # the prompt, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in xss.split('<table class="sbs">')[0]  # the reason


# --- a real browser -----------------------------------------------------------------------------------------


def chromium(html: Path, screenshot: Path, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}",
            "--window-size=1400,2000", html.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console: Chromium logs each message as an INFO:CONSOLE line."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian package chromium)")
def test_the_report_renders_in_headless_chromium_without_console_errors(suite, tmp_path):
    _, path = suite
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    proc = chromium(path, SCREENSHOT, tmp_path / "profile")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert console_messages(proc.stderr) == []
    from PIL import Image

    with Image.open(SCREENSHOT) as image:
        assert image.size == (1400, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) blank"

    # The check is real: the same report with a script that throws is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(path.read_text(encoding="utf-8").replace(
        "</body>", "<script>throw new Error('injected')</script></body>"), encoding="utf-8")
    proc = chromium(broken, tmp_path / "broken.png", tmp_path / "profile-broken")
    assert any("injected" in line for line in console_messages(proc.stderr)), proc.stderr[-2000:]
