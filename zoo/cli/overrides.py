"""Command-line flags as config overrides: a flag changes the config only when it is given."""

from __future__ import annotations

from typing import Sequence

__all__ = ["flag_overrides"]


def flag_overrides(sets: Sequence[str], **flags: object) -> list[str]:
    """``--set`` items followed by ``key=value`` for each flag that was given (not None),
    e.g. ``flag_overrides(args.overrides, **{"data.root": args.data_root})``."""
    out = list(sets)
    for key, value in flags.items():
        if value is not None:
            out.append(f"{key}={value}")
    return out
