"""The import graph keeps the layers of the README's "Layout": no circle, `seggpt_lab` never imports `datamodules`,
and the core imports nothing above it. Read from the source (`ast`), function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("seggpt_lab", "datamodules")
CORE = ("seggpt_lab.atomic", "seggpt_lab.model", "seggpt_lab.relpos_attention", "seggpt_lab.checkpoint",
        "seggpt_lab.canvas", "seggpt_lab.palette", "seggpt_lab.metrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}, a package's import resolved to its __init__ module."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets.update(next((n for n in (c,) if n in modules), None) for c in names)
        graph[name] = {t for t in targets if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def is_core(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in CORE)


def test_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_the_model_package_imports_no_data_package_and_the_core_nothing_above_it() -> None:
    graph = import_graph()
    upward = [(a, b) for a, targets in graph.items() for b in targets
              if (a.startswith("seggpt_lab") and b.startswith("datamodules")) or (is_core(a) and not is_core(b))]
    assert upward == []


def test_the_checks_see_the_imports() -> None:
    graph = import_graph()
    assert "seggpt_lab.canvas" in graph["seggpt_lab.metrics.fewshot"]
    assert "datamodules.pairing" in graph["datamodules.pretrain"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
