"""The import graph of `suite/`, read from the source (no import runs): circles are found, never assumed away.

Any circle fails, and so does an import that runs up the layers (LAYERS, the README's "Layout" diagram):
the cell kernel, the resume rule and the records are what every executor builds on, so nothing below the
executors imports them; `rules.py` is a leaf, so the tasks that declare gate rules and the gate that applies
them never import each other's way up. Modules stay under 400 lines, and a `suite` import inside a function
(which hides an edge from a reader) needs a comment that says which import time it saves.
"""

from __future__ import annotations

import ast
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "suite"

# none left: a circle found here is new
KNOWN_CIRCLES: list[set[str]] = []

# Bottom to top: a module may import its own layer and those below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("suite", "suite.registry", "suite.rules", "suite.strict", "suite.records", "suite.lock", "suite.measure",
     "suite.checkpoint", "suite.precision", "suite.scaling", "suite.deadline"),
    ("suite.engine",),
    ("suite.data", "suite.models", "suite.references"),
    ("suite.backends",),
    ("suite.tasks",),
    ("suite.spec_schema", "suite.spec"),
    ("suite.cell", "suite.resume", "suite.baseline", "suite.gate", "suite.report"),
    ("suite.executors",),
    ("suite.cli", "suite.__main__"),
]
MAX_LINES = 400


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


def layer_of(module: str) -> int:
    """The layer of the longest LAYERS prefix that names the module or a package above it."""
    best, best_len = None, -1
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and the README's Layout)"
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_no_import_runs_up_the_layers():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_can_fail():
    assert upward_imports({"suite.tasks.soc": {"suite.cli.run"}, "suite.cli.run": {"suite.tasks"}}) == [
        ("suite.tasks.soc", "suite.cli.run")]


def function_level_imports() -> list[str]:
    """`suite` imports inside function bodies without a comment saying what import time they save."""
    found = []
    for name, path in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                if any(n == "suite" or n.startswith("suite.") for n in names) and \
                        "import time" not in lines[node.lineno - 1]:
                    found.append(f"{name}:{node.lineno}")
    return found


def test_no_suite_import_hides_inside_a_function():
    assert function_level_imports() == []


def test_every_module_is_under_the_line_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more (split them by their jobs): {long}"


def test_the_cli_progress_bar_is_a_run_reporter():
    """Executors know the reporter only as the RunReporter Protocol; the CLI's rich one must satisfy it."""
    from suite.cli import Reporter
    from suite.executors.reporter import RunReporter

    assert isinstance(Reporter(), RunReporter)
    assert not isinstance(object(), RunReporter)
