"""No import cycles among fanout's modules, function-level imports included.

A cycle works until someone moves an import, and hides which module really depends on
which; the one this guards against was ``_client → _plugins → providers → testing →
_client``. The graph is read from the source with ``ast``, so imports inside functions and
``if TYPE_CHECKING:`` blocks count too (the latter are left out: they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fanout

ROOT = Path(fanout.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    skip.add(id(sub))
    return skip


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base)
                    mod = f"{prefix}.{node.module}" if node.module else prefix
                else:
                    mod = node.module or ""
                # ``from . import x`` imports the submodule x when there is one.
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
                targets = subs or [mod]
            for target in targets:
                # ``import fanout.x.y`` also runs fanout/__init__ and fanout/x/__init__.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                    # Importing a submodule first imports its parent packages.
                    parent = target.rpartition(".")[0]
                    while parent:
                        if parent in modules and parent != name and not name.startswith(
                            parent + "."
                        ):
                            graph[name].add(parent)
                        parent = parent.rpartition(".")[0]
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_fanout_has_no_import_cycles() -> None:
    graph = import_graph()
    assert graph["fanout._client"], "the graph reader found no imports at all"
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = import_graph()
    graph["fanout._events"].add("fanout._client")  # _client imports _events already
    assert any({"fanout._client", "fanout._events"} <= set(c) for c in find_cycles(graph))


def test_function_level_imports_are_edges() -> None:
    # fanout._plugins imports the built-in providers inside load_registry().
    assert "fanout.providers" in import_graph()["fanout._plugins"]
