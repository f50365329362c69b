"""``python -m zoo.export``: the command is :func:`zoo.cli.export.main`."""
from zoo.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
