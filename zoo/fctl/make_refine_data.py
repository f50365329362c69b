"""``python -m zoo.fctl.make_refine_data``: the command is :func:`zoo.cli.make_refine_data.main`."""
from zoo.cli.make_refine_data import main

if __name__ == "__main__":
    raise SystemExit(main())
