"""The package layout shows the architecture: no import cycles, a torch-free ``search``, small modules.

Import edges are read from the source with ``ast``: only statements at module level (including those
under ``if TYPE_CHECKING:``, which still say "this module depends on that one"); imports inside
functions and classes are deferred on purpose and are not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "mecharule"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _module_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements outside any function or class body (``if``/``try`` blocks included)."""
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    found = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            found.add(submodule)
        elif base in known:
            found.add(base)
    return found


def import_graph() -> dict[str, set[str]]:
    files = _module_files()
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _module_level_imports(tree):
            edges |= _targets(node, module, is_package, known)
        graph[module] = edges - {module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle through the component's first module, for the failure message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for succ in sorted(graph[node] & members):
            if succ == start:
                return [*paths[node], start]
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                frontier.append(succ)
    return component


def test_no_import_cycles_among_mecharule_modules():
    graph = import_graph()
    assert "mecharule.search.cha" in graph["mecharule.search"]
    cycles = [" -> ".join(one_cycle(graph, c)) for c in strongly_connected(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_search_imports_without_torch():
    modules = sorted(m for m in _module_files() if m.split(".")[:2] == ["mecharule", "search"])
    assert len(modules) > 5
    code = "import importlib, sys\nsys.modules['torch'] = None\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in modules
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_modules_are_small():
    sizes = {
        module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in _module_files().items()
    }
    too_long = {module: lines for module, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def function_lengths() -> dict[str, int]:
    """``{module:function: lines from its def to its last line}`` (decorators excluded), nested too."""
    lengths = {}
    for module, path in _module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths[f"{module}:{node.name}@{node.lineno}"] = (
                    (node.end_lineno or node.lineno) - node.lineno + 1
                )
    return lengths


def test_functions_are_short():
    too_long = {name: n for name, n in function_lengths().items() if n > MAX_FUNCTION_LINES}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_the_size_checks_can_fail(tmp_path, monkeypatch):
    """A planted 61-line function and 501-line module are reported."""
    layout = sys.modules[__name__]

    body = "def planted():\n" + "    x = 1\n" * 60
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "big.py").write_text(body + "\n" * (501 - 61))
    monkeypatch.setattr(layout, "SRC", tmp_path)
    assert layout.function_lengths() == {"mecharule.big:planted@1": 61}
    with pytest.raises(AssertionError, match=r"mecharule\.big"):
        layout.test_modules_are_small()
    with pytest.raises(AssertionError, match="planted"):
        layout.test_functions_are_short()
