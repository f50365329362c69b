"""``python -m zoo.evaluate``: the command is :func:`zoo.cli.evaluate.main`."""
from zoo.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
