"""Faults from outside the input: a regen killed mid-way, two runs writing the same reports, a
destination that cannot be written.

What must hold (DESIGN.md, "nothing half-written is left behind"): the fixture manifest is the one
commit point, so a killed regen leaves every listed fixture intact and the next look names what it
left; every output file is written beside its destination and renamed into place, so a reader
finds one complete run's output; an unwritable destination is one line and exit 2.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import Result, invoke

from parity.golden.store import FixtureStore

ROOT = Path(__file__).parents[1]
PARITY = Path(sys.executable).with_name("parity")
# A file name in golden/ that a regen writes into place (its temporary files start with a dot).
FIXTURE_FILE = re.compile(r"^[^.].*\.(safetensors|json)$")
# A quick run that reads the repository's fixtures and writes nothing there.
SHORT = ("run", "--fixtures", ROOT / "fixtures", "--cases", "short", "--adapters", "inhouse")


def parity(*args: object) -> list[str]:
    return [str(a) for a in (PARITY, *args)]


@pytest.fixture
def fx(tmp_path) -> Path:
    root = tmp_path / "fixtures"
    shutil.copytree(ROOT / "fixtures", root)
    return root


def tree(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- a regen killed mid-way ------------------------------------------------------------------------------


def add_case(fx: Path) -> str:
    """A new text-only case, in a file sorted first, so a full regen writes its fixtures before any other work."""
    text = '[[case]]\nid = "killed"\nstages = ["template", "tokens", "embeddings"]\nprompt = "A fox"\n'
    (fx / "cases" / "0-killed.toml").write_text(text, encoding="utf-8")
    return "killed"


def kill_after_the_first_new_fixture_file(fx: Path, changelog: Path) -> list[Path]:
    """Start a full regen, SIGKILL it once a new fixture file is in place, return the new files then."""
    golden = fx / "golden"
    before = set(golden.rglob("*"))
    proc = subprocess.Popen(
        parity("fixtures", "regen", "--fixtures", fx, "--changelog", changelog),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    written: list[Path] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            written = [p for p in set(golden.rglob("*")) - before if p.is_file() and FIXTURE_FILE.match(p.name)]
            if written:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and not written:
            proc.kill()
        proc.wait(timeout=30)
    # The rest of the suite (the sampling cases above all) takes far longer than one poll: the
    # regen cannot have reached its commit.
    assert proc.returncode == -signal.SIGKILL, "the regen ended before it was killed"
    return written


def test_a_regen_killed_mid_way_leaves_the_fixtures_intact_and_the_next_regen_says_so(fx, tmp_path):
    new = add_case(fx)
    before = tree(fx)
    written = kill_after_the_first_new_fixture_file(fx, tmp_path / "cl.md")

    # The manifest did not move, and every file it lists is the file it was.
    after = tree(fx)
    assert after[Path("manifest.json")] == before[Path("manifest.json")]
    assert {p: b for p, b in after.items() if p in before} == before
    assert not (tmp_path / "cl.md").exists()

    # `fixtures check` verifies every fixture and names each file the regen left, and nothing else.
    check = invoke("fixtures", "check", "--fixtures", fx)
    assert check.rc == 1, check
    left = sorted(str(p) for p in after if p not in before)
    assert left and all(str(p.relative_to(fx)) in left for p in written)
    assert sorted(line.split(":", 1)[0] for line in check.out.splitlines()) == left
    assert all("interrupted regen" in line for line in check.out.splitlines())
    # A run still compares against the intact fixtures.
    assert invoke("run", "--cases", "short", "--adapters", "inhouse", "--fixtures", fx).rc == 0

    # The next regen names what the killed one left, then commits and tidies up.
    again = invoke("fixtures", "regen", "--cases", new, "--fixtures", fx, "--changelog", tmp_path / "cl.md")
    assert again.rc == 1, again  # the new case's fixtures are new: that counts as moved
    (note,) = [line for line in again.err.splitlines() if line.startswith("note: ")]
    assert "interrupted regen" in note and all(name in note for name in left if name != ".regen-journal")
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0
    manifest = json.loads((fx / "manifest.json").read_text(encoding="utf-8"))
    assert {f"{new}/diffusers", f"{new}/qwen3_chat"} <= set(manifest["fixtures"])


def test_a_temporary_manifest_left_behind_is_named_and_removed(tmp_path):
    """A regen killed while writing the manifest leaves its temporary file, which its journal names;
    the manifest itself is whole."""
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    store = FixtureStore(tmp_path / "fixtures")
    leftover = tmp_path / "fixtures" / ".manifest.json.k1ll3d.tmp"
    store.journal.record(leftover)  # as the killed regen did before writing a byte of it
    leftover.write_bytes(b'{"format": 1, "fixt')
    journal, problem = store.check_all()
    assert journal.startswith(".regen-journal: the journal of an interrupted regen")
    assert problem.startswith(".manifest.json.k1ll3d.tmp: not in the manifest, left by an interrupted regen")
    store.commit()
    assert not leftover.exists() and store.check_all() == []


def test_a_store_named_by_a_relative_path_journals_the_absolute_temporary_paths(tmp_path, monkeypatch):
    """`parity fixtures regen` from the project root names the store `fixtures`; the temporary files
    it journals are absolute (mkstemp's), and are written in the journal relative to the root."""
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    monkeypatch.chdir(tmp_path)
    store = FixtureStore(Path("fixtures"))
    store.journal.record(tmp_path / "fixtures" / "golden" / "short" / ".x.tmp")
    assert store.journal.entries() == [Path("fixtures") / "golden" / "short" / ".x.tmp"]


def test_a_temporary_manifest_no_regen_of_this_store_wrote_is_named_and_kept(tmp_path):
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    store = FixtureStore(tmp_path / "fixtures")
    foreign = tmp_path / "fixtures" / ".manifest.json.s0m30n3.tmp"
    foreign.write_bytes(b"someone else's")
    (problem,) = store.check_all()
    assert problem.startswith(".manifest.json.s0m30n3.tmp: not in the manifest, and no regen of this store wrote it")
    store.begin_regen()
    store.commit()
    assert foreign.read_bytes() == b"someone else's"


# --- two regens at once, and what a regen may delete ----------------------------------------------------


def held_by_another_process(root: Path) -> bool:
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_regen_while_one_runs_is_refused_in_one_line_and_the_lock_dies_with_its_holder(fx, tmp_path):
    before = tree(fx)
    first = subprocess.Popen(
        parity("fixtures", "regen", "--fixtures", fx, "--changelog", tmp_path / "a.md"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not held_by_another_process(fx):
            assert first.poll() is None and time.monotonic() < deadline, "the first regen never took the lock"
            time.sleep(0.01)
        second = subprocess.run(
            parity("fixtures", "regen", "--fixtures", fx, "--cases", "short", "--changelog", tmp_path / "b.md"),
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert first.poll() is None, "the first regen ended before the second one started: nothing was tested"
    finally:
        first.kill()
        first.wait(timeout=30)
    assert second.returncode == 2, second
    (line,) = second.stderr.splitlines()
    assert line.startswith("parity: error: another regen or rebuild is writing the fixtures in ")
    assert not (tmp_path / "b.md").exists()
    # The killed holder took its lock with it, and left the listed fixtures as they were.
    assert not held_by_another_process(fx)
    assert {p: b for p, b in tree(fx).items() if p in before} == before


def test_regen_refuses_a_store_whose_manifest_is_lost_and_rebuild_restores_it(fx, tmp_path):
    manifest = fx / "manifest.json"
    original = json.loads(manifest.read_text(encoding="utf-8"))
    golden = tree(fx / "golden")
    regen = ("fixtures", "regen", "--fixtures", fx, "--cases", "short", "--changelog", tmp_path / "cl.md")
    for lost in ("missing", "empty table", "empty file"):
        if lost == "missing":
            manifest.unlink()
        else:
            manifest.write_text('{"format": 1, "fixtures": {}}' if lost == "empty table" else "", encoding="utf-8")
        line = one_error_line(invoke(*regen))
        assert "manifest.json" in line and "parity fixtures rebuild" in line, line
        assert tree(fx / "golden") == golden, f"regen deleted fixtures of other cases (manifest {lost})"
    rebuild = invoke("fixtures", "rebuild", "--fixtures", fx)
    assert rebuild.rc == 0, rebuild
    assert (fx / "manifest.json.unreadable").read_bytes() == b""  # the unreadable one is kept, not overwritten
    rebuilt = json.loads(manifest.read_text(encoding="utf-8"))["fixtures"]
    assert set(rebuilt) == set(original["fixtures"])
    for key, entry in rebuilt.items():
        assert (entry["files"], entry["case_hash"]) == (original["fixtures"][key]["files"],
                                                       original["fixtures"][key]["case_hash"])
    assert invoke("fixtures", "check", "--fixtures", fx).rc == 0
    assert invoke(*SHORT[:1], "--fixtures", fx, *SHORT[3:]).rc == 0


def test_a_regen_deletes_only_what_it_superseded_or_journalled(fx, tmp_path):
    # A fixture file whose entry was lost, and a file someone put there: not the regen's to delete.
    manifest = json.loads((fx / "manifest.json").read_text(encoding="utf-8"))
    orphaned = [fx / "golden" / "unicode" / name for name in manifest["fixtures"].pop("unicode/diffusers")["files"]]
    (fx / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    planted = fx / "golden" / "short" / "notes.txt"
    planted.write_text("mine\n", encoding="utf-8")
    kept = {p: p.read_bytes() for p in [*orphaned, planted]}
    check = invoke("fixtures", "check", "--fixtures", fx)
    assert check.rc == 1 and all(
        f"{p.relative_to(fx)}: not in the manifest, and no regen of this store wrote it" in check.out for p in kept
    ), check.out
    # Move one fixture, so the regen supersedes its files: those, and only those, go.
    case = fx / "cases" / "prompts.toml"
    case.write_text(case.read_text(encoding="utf-8").replace('prompt = "A cat sleeping"', 'prompt = "A cat asleep"'),
                    encoding="utf-8")
    superseded = [fx / "golden" / "short" / name for name in manifest["fixtures"]["short/diffusers"]["files"]]
    regen = invoke("fixtures", "regen", "--fixtures", fx, "--cases", "short", "--changelog", tmp_path / "cl.md")
    assert regen.rc == 1, regen
    assert {p: p.read_bytes() for p in kept} == kept
    assert not any(p.exists() for p in superseded)
    assert not (fx / ".regen-journal").exists()


# --- two runs writing the same reports -------------------------------------------------------------------


def cases_in_json(path: Path) -> set[str]:
    return {r["case"] for r in json.loads(path.read_text(encoding="utf-8"))["results"]}


def cases_in_html(path: Path) -> set[str]:
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert html.count("<!doctype html>") == 1 and html.count("</html>") == 1
    return set(re.findall(r"<h3>([^<]+?) <small>reference:", html))


def test_two_runs_writing_the_same_reports_leave_one_complete_run_in_each_file(tmp_path):
    out = tmp_path / "reports"
    report, results = out / "parity.html", out / "parity.json"
    runs = [
        subprocess.Popen(
            parity("run", "--fixtures", ROOT / "fixtures", "--cases", case, "--adapters", "inhouse",
                   "--stages", "template,tokens", "--json", results, "--report", report),
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for case in ("short", "unicode")
    ]
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert cases_in_json(results) in ({"short"}, {"unicode"})
    assert cases_in_html(report) in ({"short"}, {"unicode"})
    assert sorted(p.name for p in out.iterdir()) == ["parity.html", "parity.json"]  # no temporary file left


# --- a destination that cannot be written ----------------------------------------------------------------


def one_error_line(result: Result) -> str:
    assert result.rc == 2, result
    assert "Traceback" not in result.err
    (line,) = [line for line in result.err.splitlines() if line.startswith("parity: error: ")]
    assert result.err.splitlines()[-1] == line
    return line


@pytest.mark.parametrize("option", ["--report", "--json"])
def test_a_report_path_under_a_regular_file_is_one_line(tmp_path, option):
    # Works as root too (root writes into read-only folders, but no one makes a folder inside a file).
    blocker = tmp_path / "reports"
    blocker.write_text("a file, not a folder\n", encoding="utf-8")
    target = blocker / "parity.out"
    line = one_error_line(invoke(*SHORT, option, target))
    assert f"cannot write {target}" in line and f"{blocker} is a file, not a folder" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_a_read_only_reports_folder_is_one_line(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_error_line(invoke(*SHORT, "--report", folder / "p.html"))
    finally:
        folder.chmod(0o755)
    assert f"cannot write {folder / 'p.html'}" in line and "Permission denied" in line


def test_report_command_to_an_unwritable_path_is_one_line(tmp_path):
    results = tmp_path / "results.json"
    assert invoke(*SHORT, "--json", results).rc == 0
    (tmp_path / "taken").write_text("x", encoding="utf-8")
    line = one_error_line(invoke("report", "--json", results, "--out", tmp_path / "taken" / "r.html"))
    assert "is a file, not a folder" in line


def not_regular_outputs(tmp_path: Path) -> list[tuple[str, Path]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    folder = tmp_path / "folder.html"
    folder.mkdir()
    kinds = [("a named pipe", fifo), ("a symlink", link), ("a folder", folder)]
    if os.geteuid() == 0:
        # What `--json /dev/null` is, made here so that a regression cannot break the machine's own /dev/null.
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        kinds.append(("a character device", null))
    return kinds


@pytest.mark.parametrize("option", ["--report", "--json"])
def test_an_output_path_that_is_not_a_regular_file_is_refused_and_left_as_it_was(tmp_path, option):
    for kind, path in not_regular_outputs(tmp_path):
        mode = os.lstat(path).st_mode
        line = one_error_line(invoke(*SHORT, option, path))
        assert f"cannot write {path}: it exists and is not a regular file" in line, kind
        assert os.lstat(path).st_mode == mode, f"{kind} was replaced"
    assert not (tmp_path / "elsewhere.json").exists()

