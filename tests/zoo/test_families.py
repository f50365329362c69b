"""Model families: one import path for make_task, and a config check that loads no model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_loading_a_config_imports_no_model_family():
    out = _fresh("import sys\nfrom zoo.config import load_config\n"
                 "load_config('wsdnet_deepglobe'); load_config('fctl_deepglobe_global')\n"
                 "print(sorted(m for m in sys.modules if m.startswith(('zoo.wsdnet', 'zoo.fctl',"
                 " 'zoo.engine.wsdnet_task', 'zoo.engine.fctl_task'))))")
    assert out.strip() == "[]"


def test_make_task_needs_no_other_import_first():
    out = _fresh("from zoo.engine.families import make_task\nfrom zoo.config import load_config\n"
                 "print(type(make_task(load_config('fctl_deepglobe_refine'))).__name__)")
    assert out.strip() == "RefineTask"


def test_builtin_table_names_the_modules_that_register_each_family():
    from zoo.engine import fctl_task, wsdnet_task  # noqa: F401 - registers every built-in
    from zoo.engine.families import BUILTIN_FAMILIES, family_names
    from zoo.engine.task import FAMILIES

    assert {name: cls.__module__ for name, cls in FAMILIES.items()} == BUILTIN_FAMILIES
    assert family_names()[:3] == ("wsdnet", "fctl", "fctl_refine")


def test_unknown_family_lists_the_known_ones():
    from zoo.core.errors import ConfigError
    from zoo.engine.families import make_task

    with pytest.raises(ConfigError, match="unknown family 'nope'; known: wsdnet, fctl, fctl_refine"):
        make_task({"family": "nope"})
