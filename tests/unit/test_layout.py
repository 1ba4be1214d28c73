"""The folder listing is the architecture: no import cycle between pghad's folders, and the
decision imports nothing that does I/O."""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import pghad

PACKAGE = Path(pghad.__file__).parent
TOP_MODULES = {"errors", "__init__", "__main__"}
DECIDE_MAY_IMPORT = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "enum",
    "math",
    "re",
    "typing",
}


def part_of(module: str) -> str | None:
    """The folder of `pghad.<folder>...`, or None for a module outside pghad or at its top."""
    names = module.split(".")
    if names[0] != "pghad" or len(names) < 2 or names[1] in TOP_MODULES:
        return None
    return names[1]


def imports_of(path: Path) -> Iterator[str]:
    """Every module a file imports, at any depth (functions and TYPE_CHECKING blocks included)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def folder_graph() -> dict[str, dict[str, list[str]]]:
    """folder -> imported folder -> the files that make the edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue
        source = rel.parts[0]
        for module in imports_of(path):
            target = part_of(module)
            if target is not None and target != source and (PACKAGE / target).is_dir():
                graph.setdefault(source, {}).setdefault(target, []).append(str(rel))
    return graph


def cycle_in(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, {})):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_no_import_cycle_between_folders() -> None:
    graph = folder_graph()
    cycle = cycle_in(graph)
    if cycle:
        edges = [f"{a} -> {b}: {sorted(set(graph[a][b]))}" for a, b in itertools.pairwise(cycle)]
        pytest.fail("import cycle between folders:\n" + "\n".join(edges))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}) == [
        "a",
        "b",
        "c",
        "a",
    ]
    assert cycle_in({"a": {"b": ["x"]}, "b": {"c": ["y"]}}) is None


def test_decide_imports_nothing_that_does_io() -> None:
    wrong = []
    for path in sorted((PACKAGE / "decide").rglob("*.py")):
        for module in imports_of(path):
            top = module.split(".")[0]
            if top == "pghad":
                if part_of(module) not in {None, "decide", "config"}:
                    wrong.append(f"{path.name}: {module}")
            elif top not in DECIDE_MAY_IMPORT:
                wrong.append(f"{path.name}: {module}")
    assert wrong == []


def layout_sections() -> dict[str, str]:
    """docs/design.md's layout block: each top folder's text (its line and the ones under it)."""
    text = (PACKAGE.parent / "docs" / "design.md").read_text()
    block = text.split("## Parts: the folder listing is the architecture", 1)[1]
    block = block.split("```", 2)[1]
    sections: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        head = re.match(r"^  (\w+)/\s", line)
        if head:
            current = head.group(1)
        if current:
            sections[current] = sections.get(current, "") + " " + line
    return sections


def test_the_design_documents_every_module_in_its_folder() -> None:
    sections = layout_sections()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2 or path.stem == "__init__":
            continue
        words = set(re.findall(r"\w+", sections.get(rel.parts[0], "")))
        if path.stem not in words:
            missing.append(str(rel))
    assert missing == [], "add these to docs/design.md's layout"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert set(sections) == folders
