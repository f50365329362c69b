"""``python -m zoo.infer``: the command is :func:`zoo.cli.infer.main`."""
from zoo.cli.infer import main

if __name__ == "__main__":
    raise SystemExit(main())
