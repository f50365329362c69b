"""Optional oracle packages (PyWavelets, OpenCV, ...), imported inside the tests that use them.

A module-level ``pytest.importorskip`` skips a whole test module when its oracle is missing,
taking with it every test that needs no oracle (the Triton-versus-PyTorch tests among them).
``oracle("pywt")`` instead returns a stand-in whose first attribute access imports the package
inside the running test, and skips only that test when the package is absent.
"""

from __future__ import annotations

import types
from typing import Any

import pytest


class LazyOracle:
    """The package ``name``, imported on first use inside a test (that test skips without
    it). Attribute access only: ``oracle("pywt").dwt2(...)``."""

    def __init__(self, name: str) -> None:
        self._name = name

    def module(self) -> types.ModuleType:
        return pytest.importorskip(self._name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # introspection (pytest, hypothesis, copy) sees no module
            raise AttributeError(attr)
        return getattr(self.module(), attr)

    def __repr__(self) -> str:
        return f"<oracle {self._name!r}, imported on first use>"


def oracle(name: str) -> LazyOracle:
    return LazyOracle(name)
