"""The repository's structure, read from its source (ast), for every package: ``uhrops``,
``zoo``, ``benchmarks`` and ``tools``.

- no import circle anywhere (a module-level graph; ``from a import b`` counts ``a.b`` when b
  is a module);
- ``uhrops`` never imports ``zoo``, ``benchmarks`` or ``tools``; ``zoo`` never imports
  ``benchmarks`` or ``tools``; ``zoo.core`` is the zoo's bottom layer;
- no file outside ``uhrops`` imports a private uhrops module (``uhrops._x``);
- no module imports a private name (``_x``) defined in another file, except the short
  allow-list below, each entry with the reason it still exists.
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("uhrops", "zoo", "benchmarks", "tools")

# (importing module, "defining module.name"): private names still shared across files.
PRIVATE_ALLOWED: set[tuple[str, str]] = set()


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


def _all_modules() -> dict[str, str]:
    mods: dict[str, str] = {}
    for package in PACKAGES:
        if os.path.isdir(os.path.join(ROOT, package)):
            mods.update(_modules(package))
    return mods


def _from_imports(path: str, module: str) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` in ``path``, relative imports
    resolved."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    here = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.extend((mod, a.name) for a in node.names)
    return out


def _imports(path: str, module: str) -> set[str]:
    """Every module name an import statement of ``path`` names (``from a import b`` gives
    ``a`` and ``a.b``: b may be a submodule)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    for mod, name in _from_imports(path, module):
        names.update((mod, f"{mod}.{name}"))
    return names


def _graph(mods: dict[str, str] | None = None) -> dict[str, set[str]]:
    mods = _all_modules() if mods is None else mods
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        edges = set()
        for target in _imports(path, name):
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


def test_import_graph_has_no_cycle():
    graph = _graph()
    assert "zoo.engine.trainer" in graph and "uhrops.wavelet" in graph
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_layers_import_only_downwards():
    below = {"uhrops": {"uhrops"}, "zoo": {"zoo", "uhrops"}}
    offenders = []
    for name, deps in _graph().items():
        top = name.split(".")[0]
        if top in below:
            offenders += [f"{name} -> {d}" for d in deps if d.split(".")[0] not in below[top]]
        if name.startswith("zoo.core"):
            offenders += [f"{name} -> {d}" for d in deps
                          if d.startswith("zoo") and not d.startswith("zoo.core") and d != "zoo"]
    assert not offenders, offenders


def test_no_private_uhrops_import_outside_uhrops():
    offenders = []
    for name, path in _all_modules().items():
        if name.split(".")[0] == "uhrops":
            continue
        for target in _imports(path, name):
            parts = target.split(".")
            private = [p for p in parts[1:2] if p.startswith("_") and not p.startswith("__")]
            if parts[0] == "uhrops" and private:
                offenders.append(f"{os.path.relpath(path, ROOT)}: {target}")
    assert not offenders, offenders


def test_no_private_name_imported_across_files():
    mods = _all_modules()
    offenders = []
    for name, path in mods.items():
        for mod, imported in _from_imports(path, name):
            is_module = f"{mod}.{imported}" in mods
            private = imported.startswith("_") and not imported.startswith("__")
            if private and not is_module and mod in mods and mod != name:
                if (name, f"{mod}.{imported}") not in PRIVATE_ALLOWED:
                    offenders.append(f"{name}: from {mod} import {imported}")
    assert not offenders, "\n".join(offenders)


def test_the_private_allow_list_is_still_needed():
    used = set()
    mods = _all_modules()
    for name, path in mods.items():
        used.update((name, f"{mod}.{imported}") for mod, imported in _from_imports(path, name))
    assert PRIVATE_ALLOWED <= used, sorted(PRIVATE_ALLOWED - used)
