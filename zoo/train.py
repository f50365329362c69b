"""``python -m zoo.train``: the command is :func:`zoo.cli.train.main`."""
from zoo.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
