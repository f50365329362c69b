"""Helpers for registering uhrops ops with torch.library."""

from __future__ import annotations

NAMESPACE = "uhrops"


def opname(name: str) -> str:
    """Fully qualified custom-op name, e.g. ``uhrops::haar_dwt2d``."""
    return f"{NAMESPACE}::{name}"
