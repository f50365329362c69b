"""The model families as tasks; the code lives in :mod:`zoo.engine` (``task``, ``families``,
``wsdnet_task``, ``fctl_task``), these names stay importable from here."""

from zoo.engine.families import family_names, make_task
from zoo.engine.fctl_task import FCtLTask, RefineTask
from zoo.engine.task import Task
from zoo.engine.wsdnet_task import WSDNetTask

__all__ = ["FCtLTask", "RefineTask", "Task", "WSDNetTask", "family_names", "make_task"]
