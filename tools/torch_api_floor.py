"""Check that every torch API uhrops/ and zoo/ name exists in an older torch's sources.

``setup.py`` claims torch >= 2.11 (the GPU machine has 2.11; CI pins 2.13). Installing 2.11
here is not needed to check the claim: this reads every dotted ``torch.*`` name the code uses
(attribute chains on ``torch`` and on aliases such as ``F`` for ``torch.nn.functional``, and
``from torch... import ...``), and looks each one up in the Python sources and type stubs of
that torch (an unpacked wheel: ``unzip torch-2.11.0-*.whl 'torch/*.py' 'torch/*.pyi'
'torchgen/packaged/ATen/native/native_functions.yaml' -d DIR``).
A name is found when its module is a file or package there, or the name is defined, assigned,
imported or listed in ``__all__`` in its module (``.py`` or ``.pyi``), or, for the C
extension's names (``torch._C``), when it appears in the stubs or in the sources; an aten
operator (``torch.ops.aten.X``) when native_functions.yaml declares it; names re-exported by
a package are found where the package (two levels deep) defines them. What it cannot place is
printed for a manual check; exit 1 then. Not covered: methods called on tensors or modules
(``x.foo()``) and keyword arguments; those need the changelogs.

Usage: ``python -m tools.torch_api_floor DIR`` (DIR holds the unpacked ``torch/``).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from functools import lru_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("uhrops", "zoo")
NATIVE_FUNCTIONS = ("torchgen", "packaged", "ATen", "native", "native_functions.yaml")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def used_names(root: str = REPO) -> dict[str, set[str]]:
    """Dotted torch names used, each with the files that use it."""
    found: dict[str, set[str]] = {}
    for top in SCANNED:
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for fname in files:
                if not fname.endswith(".py"):
                    continue
                path = os.path.join(dirpath, fname)
                rel = os.path.relpath(path, root)
                tree = ast.parse(open(path, encoding="utf-8").read())
                alias = {"torch": "torch"}
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        for a in node.names:
                            if a.name.split(".")[0] == "torch":
                                alias[a.asname or a.name.split(".")[0]] = (
                                    a.name if a.asname else "torch")
                                found.setdefault(a.name, set()).add(rel)
                    elif isinstance(node, ast.ImportFrom) and node.module and \
                            node.module.split(".")[0] == "torch" and not node.level:
                        for a in node.names:
                            full = f"{node.module}.{a.name}"
                            alias[a.asname or a.name] = full
                            found.setdefault(full, set()).add(rel)
                for node in ast.walk(tree):
                    if isinstance(node, ast.Attribute) and not isinstance(
                            getattr(node, "_parent_attr", None), ast.Attribute):
                        name = _dotted(node)
                        if name is None:
                            continue
                        head, _, rest = name.partition(".")
                        if head in alias and rest:
                            found.setdefault(f"{alias[head]}.{rest}", set()).add(rel)
    # Keep only the longest chains' prefixes that are names (a.b.c gives a.b and a.b.c).
    return found


@lru_cache(maxsize=None)
def _text(path: str) -> str:
    try:
        return open(path, encoding="utf-8").read()
    except OSError:
        return ""


def _defines(module_files: list[str], name: str) -> bool:
    pat = re.compile(rf"^\s*(?:def|class|async def)\s+{re.escape(name)}\b|"
                     rf"^\s*{re.escape(name)}\s*[:=]|"
                     rf"\bimport\b[^\n]*\b{re.escape(name)}\b|"
                     rf"^\s*{re.escape(name)}\s*,|"
                     rf"[\"']{re.escape(name)}[\"']", re.M)
    return any(pat.search(_text(f)) for f in module_files)


def _module_files(base: str) -> list[str]:
    out = [base + ".py", base + ".pyi", os.path.join(base, "__init__.py"),
           os.path.join(base, "__init__.pyi")]
    return [f for f in out if os.path.exists(f)]


def resolve(name: str, src: str) -> bool:
    """True when ``name`` (dotted, starting with torch) exists in the torch tree at ``src``."""
    parts = name.split(".")
    if parts[:3] == ["torch", "ops", "aten"] and len(parts) > 3:
        # aten's operators are declared in native_functions.yaml (packaged with torchgen)
        yaml = _text(os.path.join(src, *NATIVE_FUNCTIONS))
        return bool(re.search(rf"^- func: {re.escape(parts[3])}[.(]", yaml, re.M))
    base = os.path.join(src, parts[0])
    for i, part in enumerate(parts[1:], 1):
        sub = os.path.join(base, part)
        if _module_files(sub):
            base = sub
            continue
        files = _module_files(base)
        if part in ("Tensor",) or _defines(files, part):
            return True  # an attribute of a defined object: the object is what we check
        # Packages re-export their submodules' names (torch.nn.Conv2d from nn/modules/conv.py,
        # torch.einsum from functional.py, torch.distributed.* from distributed_c10d.py): a
        # definition anywhere inside the package counts.
        if os.path.isdir(base) and _defined_in_package(base, part):
            return True
        if parts[:2] in (["torch", "ops"], ["torch", "_C"]) or parts[:2] == ["torch", "_VF"]:
            stubs = [os.path.join(src, "torch", "_C", f) for f in
                     os.listdir(os.path.join(src, "torch", "_C")) if f.endswith(".pyi")]
            return any(re.search(rf"\b{re.escape(parts[-1])}\b", _text(f)) for f in stubs) or \
                _grep_tree(src, parts[-1])
        # torch/__init__ re-exports the C extension's functions (torch.cat, torch.float16)
        if i == 1:
            stubs = [os.path.join(src, "torch", "_C", f) for f in ("__init__.pyi",
                                                                   "_VariableFunctions.pyi")]
            return any(re.search(rf"\b{re.escape(part)}\b", _text(f)) for f in stubs)
        return False
    return True


@lru_cache(maxsize=None)
def _defined_in_package(base: str, name: str) -> bool:
    pat = re.compile(rf"^\s*(?:def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]", re.M)
    depth0 = base.count(os.sep)
    for dirpath, _, files in os.walk(base):
        if dirpath.count(os.sep) - depth0 > 2:
            continue
        for f in files:
            if f.endswith((".py", ".pyi")) and pat.search(_text(os.path.join(dirpath, f))):
                return True
    return False


@lru_cache(maxsize=None)
def _grep_tree(src: str, word: str) -> bool:
    pat = re.compile(rf"\b{re.escape(word)}\b")
    for dirpath, _, files in os.walk(os.path.join(src, "torch")):
        for f in files:
            if f.endswith((".py", ".pyi")) and pat.search(_text(os.path.join(dirpath, f))):
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(os.path.join(argv[0], "torch")):
        print(__doc__.strip().splitlines()[-1])
        return 2
    src = argv[0]
    names = used_names()
    missing = {n: f for n, f in sorted(names.items()) if not resolve(n, src)}
    print(f"{len(names)} dotted torch names used in {', '.join(SCANNED)}; "
          f"{len(names) - len(missing)} found in {src}")
    for n, files in missing.items():
        print(f"NOT FOUND: {n}  ({', '.join(sorted(files)[:3])})")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
