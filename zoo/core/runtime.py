"""Where and in what precision the zoo runs: the device a config names, and autocast."""

from __future__ import annotations

import contextlib
import os
from typing import Callable, ContextManager

import torch

from zoo.core.errors import ConfigError

__all__ = ["make_autocast", "pick_device"]


def pick_device(name: str) -> torch.device:
    """The device of ``train.device``: "auto" (this process's GPU under torchrun, else the
    first GPU, else the CPU), "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use "
                          f"--set train.device=cpu.")
    return dev


def make_autocast(amp: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of autocast contexts for ``train.amp`` ("none", "bf16" or "fp16")."""
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
