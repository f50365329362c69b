"""Build the dataset a config names for a split; the datasets are declared in
:mod:`zoo.data.registry` and each family may bring its own samples (FCtL's refine stage reads
crude masks), so this asks the config's family."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from zoo.data.registry import SYNTHETIC_VAL_SEED_OFFSET
from zoo.engine.families import make_task

__all__ = ["SYNTHETIC_VAL_SEED_OFFSET", "build_dataset"]


def build_dataset(cfg: Mapping[str, Any], split: str, transform: Callable | None = None) -> Any:
    """The dataset of ``split`` ("train", "val" or "test") for ``cfg``."""
    return make_task(cfg).build_dataset(split, transform)
