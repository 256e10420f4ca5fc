"""Every module imports, and the import graph of probe/ and analysis/ has no cycle (issue 10 part 6).

The graph counts every import statement, module-level or inside a function (a function-level
import hides a cycle from Python, not from the design): ``probe.cli ↔ analysis.cli`` and
``probe.control ↔ probe.helper.api`` were such hidden cycles. Imports under
``if TYPE_CHECKING:`` are left out: they never run. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``; importing a submodule is not counted as
importing its parent packages' ``__init__``.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("probe", "analysis")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def _resolve(module: str, name: str | None, level: int, importer: str) -> str | None:
    """The internal module an import names, or None for the standard library / third parties."""
    if level:
        base = importer.split(".")
        is_pkg = MODULES[importer].name == "__init__.py"
        base = base[: len(base) - level + (1 if is_pkg else 0)]
        module = ".".join(base + ([module] if module else []))
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, None, 0, mod) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = [_resolve(node.module or "", a.name, node.level, mod) for a in node.names]
            for t in targets:
                if t is not None and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_cycles() -> None:
    """The check itself can fail: a two-module and a three-module cycle are found, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_known_edges_are_seen() -> None:
    """Function-level imports count: probe.cli reaches analysis.cli only inside functions."""
    g = import_graph()
    assert "analysis.cli" in g["probe.cli"]
    assert "probe.helper.api" in g["probe.control"]
    assert "probe.names" in g["probe.measure.dns"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles (function-level imports included): " + "; ".join(
        " ↔ ".join(c) for c in found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)
