"""``python -m zoo.infer``: see :mod:`zoo.cli.infer` (the command) and
:mod:`zoo.engine.predictions`. The names scripts import from ``zoo.infer`` stay here."""

from zoo.cli.infer import main
from zoo.engine.predictions import GEO_TAGS, infer_file

__all__ = ["GEO_TAGS", "infer_file", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
