"""The model families the commands know, in one place: importing this module registers
them (each family's module declares itself with :func:`zoo.engine.task.register_family`)."""

from __future__ import annotations

from zoo.engine import wsdnet_task  # noqa: F401 - imported for its registration
from zoo.engine import fctl_task  # noqa: F401,I001 - after wsdnet: the order the names are listed
from zoo.engine.task import FAMILIES, Task, make_task

__all__ = ["FAMILIES", "Task", "family_names", "make_task"]


def family_names() -> tuple[str, ...]:
    return tuple(FAMILIES)
