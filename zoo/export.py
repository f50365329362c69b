"""``python -m zoo.export``: see :mod:`zoo.cli.export` (the command) and
:mod:`zoo.engine.onnx_export`."""

from zoo.cli.export import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
