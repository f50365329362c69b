"""The zoo's structure, read from its source (ast): the imports between its modules form no
cycle, and no file outside uhrops/ imports a private uhrops module (``uhrops._x``); zoo and
the benchmarks use the public names, ``uhrops.checks`` included."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _modules(package: str) -> dict[str, str]:
    """Dotted module name -> file, for every .py file under ROOT/package."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in filenames:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def _imports(path: str, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``path`` names (``from a import b`` gives
    ``a`` and ``a.b``: b may be a submodule)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    mods = _modules("zoo")
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target in _imports(path, name, path.endswith("__init__.py")):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                # importing a.b.c runs the packages a and a.b first, except the ones this
                # module is inside of (they are already being imported)
                if dep in mods and dep != name and not name.startswith(dep + "."):
                    edges.add(dep)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_zoo_import_graph_has_no_cycle():
    graph = _graph()
    assert "zoo.engine.trainer" in graph and "zoo.core.errors" in graph
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_is_the_bottom_layer():
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("zoo.core"):
            assert all(d.startswith("zoo.core") or d == "zoo" for d in deps), (name, deps)


def test_no_private_uhrops_import_outside_uhrops():
    offenders = []
    for package in ("zoo", "benchmarks"):
        for name, path in _modules(package).items():
            for target in _imports(path, name, path.endswith("__init__.py")):
                parts = target.split(".")
                private = [p for p in parts[1:2] if p.startswith("_") and not p.startswith("__")]
                if parts[0] == "uhrops" and private:
                    offenders.append(f"{os.path.relpath(path, ROOT)}: {target}")
    assert not offenders, offenders
