"""The model families the commands know, in one place.

Each built-in family is declared here by name with the module that defines its task (the
module registers the class with :func:`zoo.engine.task.register_family` when imported). The
modules are imported only when :func:`make_task` needs one, so checking a config's ``family``
(:func:`family_names`) loads no model code; a family registered by a user's own module is
known as soon as that module is imported.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from zoo.core.errors import ConfigError
from zoo.engine.task import FAMILIES, Task

__all__ = ["BUILTIN_FAMILIES", "family_names", "make_task"]

#: family name -> the module whose import registers its task, in the order names are listed
BUILTIN_FAMILIES: dict[str, str] = {
    "wsdnet": "zoo.engine.wsdnet_task",
    "fctl": "zoo.engine.fctl_task",
    "fctl_refine": "zoo.engine.fctl_task",
}


def family_names() -> tuple[str, ...]:
    """Every family a config may name: the built-in ones, then those registered since."""
    return tuple(dict.fromkeys([*BUILTIN_FAMILIES, *FAMILIES]))


def make_task(cfg: Mapping[str, Any]) -> Task:
    """The task of ``cfg["family"]``: the :class:`~zoo.engine.task.Task` subclass registered
    under that name, built on ``cfg`` (a built-in family's module is imported on first use)."""
    name = cfg["family"]
    if name not in FAMILIES and name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name])
    if name not in FAMILIES:
        raise ConfigError(f"family: unknown family {name!r}; known: "
                          f"{', '.join(family_names())}.")
    return FAMILIES[name](cfg)
