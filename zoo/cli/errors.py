"""How every command reports bad input: one line ``<prog>: error: <message>`` on stderr, no
traceback, and the exit status the error carries (:attr:`zoo.core.errors.ZooError.exit_code`).
"""

from __future__ import annotations

import sys

from zoo.core.errors import ZooError

__all__ = ["report"]


def report(prog: str, exc: BaseException) -> int:
    """Print ``exc`` for a command-line user; returns the command's exit status."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, ZooError) else 2
