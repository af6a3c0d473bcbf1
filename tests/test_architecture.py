"""The import graph of `suite/`, read from the source (no import runs): circles are found, never assumed away.

Any circle fails, and so does a module below the executors that imports them (the cell kernel, the resume
rule and the records are what every executor builds on). `rules.py` is a leaf, so the tasks that declare
gate rules and the gate that applies them never import each other's way up.
"""

from __future__ import annotations

import ast
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "suite"

# none left: a circle found here is new
KNOWN_CIRCLES: list[set[str]] = []


def _modules() -> dict[str, Path]:
    found = {}
    for path in SUITE.rglob("*.py"):
        parts = path.relative_to(SUITE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the suite modules it imports (at any depth of its body, functions included)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                resolved = resolve(target) if target.startswith("suite") else None
                if resolved and resolved != name:
                    graph[name].add(resolved)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan; the graph is a few dozen modules deep at most)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_but_the_known_ones():
    found = circles(import_graph())
    unexpected = [c for c in found if c not in KNOWN_CIRCLES]
    assert not unexpected, f"new import circle(s): {[sorted(c) for c in unexpected]}"


def test_the_gate_rules_are_a_leaf_that_the_tasks_and_the_spec_import():
    graph = import_graph()
    assert graph["suite.rules"] == set()
    for name, imports in graph.items():
        if name.startswith("suite.tasks"):
            assert "suite.gate" not in imports, f"{name} imports the gate"
    assert "suite.rules" in graph["suite.spec"] and "suite.gate" not in graph["suite.spec"]


def test_the_graph_reader_sees_a_circle():
    """The check can fail: a made-up graph with one circle and one chain."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [{"a", "b", "c"}]


def test_nothing_below_the_executors_imports_them():
    """The cell kernel (suite/cell.py), the resume rule and the records serve every executor: only the
    executors themselves and the CLI above them may import suite.executors."""
    for name, imports in import_graph().items():
        if name.startswith("suite.executors") or name.startswith("suite.cli"):
            continue
        assert not any(i.startswith("suite.executors") for i in imports), f"{name} imports an executor module"
