"""Every example in the documentation runs: the ``>>>`` examples of every docstring in
``uhrops`` and ``zoo``, those of the guides under ``docs/``, and the README's Python block."""

from __future__ import annotations

import doctest
import glob
import importlib
import os
import pkgutil
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _modules() -> list[str]:
    names = []
    for package in ("uhrops", "zoo"):
        pkg = importlib.import_module(package)
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, package + ".")]
    return sorted(names)


def _report(runner: doctest.DocTestRunner, what: str) -> None:
    assert runner.failures == 0, f"{what}: {runner.failures} of {runner.tries} examples failed"


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(mod, module):
        if test.filename and os.path.abspath(test.filename) != os.path.abspath(mod.__file__):
            continue  # a name imported from another module: tested there
        runner.run(test)
    _report(runner, module)


GUIDES = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def test_guides_hold_examples():
    with_examples = [g for g in GUIDES if ">>> " in open(g, encoding="utf-8").read()]
    assert len(with_examples) >= 5, with_examples  # backends and the four op families


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: os.path.relpath(p, ROOT))
def test_guide_examples(path):
    torch.manual_seed(0)
    failed, tried = doctest.testfile(path, module_relative=False, optionflags=doctest.ELLIPSIS,
                                     verbose=False, report=False)
    assert failed == 0, f"{os.path.relpath(path, ROOT)}: {failed} of {tried} examples failed"


def test_readme_example_runs():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README shows how to use the ops in a model"
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    block = scope["WaveletBlock"](3)
    x = torch.rand(2, 3, 16, 12)
    assert block(x).shape == x.shape
