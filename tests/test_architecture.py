"""Rules of the code's structure that a change could break without any behaviour test noticing:
no import cycles inside the project, a harness (parity/) that knows no implementation by name, no
module over 400 lines, and a harness that iterates the stage registry instead of naming stages.
Every import counts, type-only ones included: the graph is the one a reader follows.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("parity", "implementations")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each project module's imports of project modules, at any depth of its code."""
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_inside_the_project():
    assert cycles(imports()) == []


def test_the_harness_imports_no_implementation():
    graph = imports()
    named = {m: sorted(i for i in graph[m] if i.startswith("implementations")) for m in graph if m.startswith("parity")}
    assert {m: i for m, i in named.items() if i} == {}


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def stage_comparisons(source: str) -> list[int]:
    """The lines of `source` that compare something with a stage's name."""
    from parity.stages import STAGES

    def names_a_stage(node: ast.AST) -> bool:
        operands = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
        return any(isinstance(o, ast.Constant) and o.value in STAGES for o in operands)

    return [n.lineno for n in ast.walk(ast.parse(source)) if names_a_stage(n)]


def test_a_stage_comparison_is_found():
    assert stage_comparisons('x = "denoise"\nif stage == "denoise":\n    pass\nok = "tokens" in wanted\n') == [2, 4]


def test_only_the_stage_modules_tell_stages_apart():
    """Outside parity/stages/ (and the analysis probes, which observe particular stages on purpose),
    the harness goes through the registry: a comparison with a stage's name (`stage == "denoise"`,
    `"denoise" in wanted`) would be a chain that a new stage has to be added to, and that sends a
    stage nobody added to the wrong branch."""
    found = {}
    for path in (ROOT / "parity").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(("parity/stages/", "parity/analysis/")):
            continue
        lines = stage_comparisons(path.read_text(encoding="utf-8"))
        if lines:
            found[relative] = lines
    assert found == {}
