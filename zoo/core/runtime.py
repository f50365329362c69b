"""Where and how the zoo runs: the device a config names, autocast, and the host allocator
setting that inference runs under."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import Callable, ContextManager, Iterator

import torch

from zoo.core.errors import ConfigError

__all__ = ["make_autocast", "pick_device", "reuse_freed_memory"]


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


# glibc's mallopt parameters, and its defaults (malloc/malloc.c): a block of 128 KiB or more is
# mapped on its own and unmapped when freed; the heap is trimmed above 128 KiB free at its top.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT = 128 * 1024
_KEEP = 2**31 - 1
_ENV_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                 "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_", "LD_PRELOAD")
_depth = 0


def _mallopt() -> tuple[Callable[[int, int], int] | None, Callable[[int], int] | None, str]:
    """(mallopt, malloc_trim, "") of this process's glibc, or (None, None, why not)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None, None, "not a glibc Linux process"
    set_by = [k for k in _ENV_SETTINGS if os.environ.get(k)]
    if set_by:  # the user chose an allocator or its settings: theirs stand
        return None, None, f"the environment sets {', '.join(set_by)}"
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt, libc.malloc_trim, ""
    except (OSError, AttributeError) as exc:
        return None, None, f"libc.so.6 has no mallopt ({exc})"


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[str | None]:
    """While open, freed host memory is kept by the allocator for the next tensors instead
    of being given back to the kernel at once.

    Why: glibc maps every block of 128 KiB or more on its own and unmaps it when freed, so each
    forward pass of a large image asks the kernel for fresh pages, which it faults in and
    zeroes one by one: about 1.4 s of the 3.7 s CPU time of a WSDNet forward at 2448² here (2
    threads; 1.2 s of it in the kernel; ``python -m benchmarks.host_allocator``), the gap to
    ONNX Runtime, whose arena keeps its memory. With large blocks
    taken from the heap and the heap not trimmed, the second and later images reuse the
    pages of the first.

    Convention:
        - Process-wide (the allocator is), re-entrant; on exit the defaults come back and
          the free memory is returned (``malloc_trim``), so the process shrinks as before.
        - The heap fragments: WSDNet's peak over four 2448² images was 1.39x glibc's
          (``python -m benchmarks.host_allocator``), and a 64 MiB block freed and asked
          for again grows the heap by up to five more blocks before it settles. Between
          images the resident size stays near the peak instead of dropping.
        - Nothing is changed (and the reason is yielded) outside glibc Linux, when
          ``enabled`` is False, or when the environment already sets the allocator
          (``GLIBC_TUNABLES``, ``MALLOC_*_`` variables, ``LD_PRELOAD`` of another malloc).

    Yields:
        None when the setting is in force, else why it is not.
    """
    global _depth
    if not enabled:
        yield "switched off"
        return
    mallopt, trim, why = _mallopt()
    if mallopt is None or trim is None:
        yield why
        return
    if _depth == 0:
        mallopt(_M_MMAP_THRESHOLD, _KEEP)
        mallopt(_M_TRIM_THRESHOLD, _KEEP)
    _depth += 1
    try:
        yield None
    finally:
        _depth -= 1
        if _depth == 0:
            mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
            mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
            trim(0)
