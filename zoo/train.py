"""``python -m zoo.train``: see :mod:`zoo.cli.train` (the command) and
:mod:`zoo.engine.trainer` (the loop). The names scripts import from ``zoo.train`` stay here."""

from zoo.cli.train import main, parse_args
from zoo.core.runtime import make_autocast, pick_device
from zoo.engine.runlog import JsonlLog
from zoo.engine.samples import poly_lr
from zoo.engine.trainer import Interrupted, build_optimizer, train

__all__ = ["Interrupted", "JsonlLog", "build_optimizer", "main", "make_autocast", "parse_args",
           "pick_device", "poly_lr", "train"]

if __name__ == "__main__":
    raise SystemExit(main())
