"""The one place where uhrops launches a Triton kernel.

:func:`launch` runs ``kernel[grid](*args, **meta)`` and turns anything that goes wrong while
Triton compiles or launches it (compiler error, shared memory or registers out of resources,
an architecture Triton cannot target, a grid beyond CUDA's limits) into
:class:`uhrops._backend.KernelLaunchError`, which names the kernel and its specialisation.
The ops catch it: under "auto" they warn and run the PyTorch path, under "triton" (or with
``UHROPS_STRICT_KERNELS=1``) it propagates. A specialisation that failed under "auto" is not
handed to the compiler again in the same process.

Inside :func:`recording`, launches are recorded here instead of run: the ops then run their
host code on CPU tensors, with every launch-time choice made as on a GPU
(:func:`plans_for_gpu`), and each launch is appended to a list as a :class:`Launch`. The
build tools (``tools/kernels``: the ahead-of-time compile check, the static figures, the
matmul-work model) and the alignment-promise tests read the host's choices that way.

Convention:
    CUDA grid limits: axis 0 up to 2**31 - 1 blocks, axes 1 and 2 up to 65535. A launcher
    must fold any size that can exceed them into axis 0 (or loop); :func:`launch` refuses a
    grid past them with a KernelLaunchError rather than let the driver fail obscurely.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator, Sequence

import torch

from uhrops._backend import (KernelLaunchError, launch_recorder, any_kernel_failed, kernel_failed,
                             recording_launches, use_backend)

GRID_LIMITS: tuple[int, int, int] = (2**31 - 1, 65535, 65535)


def plans_for_gpu(t: torch.Tensor) -> bool:
    """True when launch choices (blocks, warps) should be the GPU's: CUDA tensors, or any
    tensor while the compile check records launches."""
    return t.device.type == "cuda" or recording_launches()


def interpreted(t: torch.Tensor) -> bool:
    """True when ``t``'s kernels run in the Triton interpreter (CPU, ``TRITON_INTERPRET=1``)."""
    return (t.device.type == "cpu" and not recording_launches()
            and os.environ.get("TRITON_INTERPRET", "0") == "1")


def vector_width(t: torch.Tensor, tile_cols: int, *steps: int) -> int:
    """The widest vector a kernel may use on ``t``'s rows: in elements, at most 16 bytes and
    one tile row, dividing every start, width and stride in ``steps`` and ``t``'s storage
    offset (so every group of that many columns starts 16-byte aligned when the allocation
    does; Triton checks the pointer itself); 1 unless ``t``'s columns are unit-stride. The
    kernel passes it as a constexpr and hints its offsets with it: Triton infers such
    alignment on its own only for multiples of 16 elements (not 1224 or 508)."""
    if t.stride(-1) != 1 and t.shape[-1] > 1:
        return 1
    vec = max(1, 16 // t.element_size())
    values = [int(v) for v in steps] + [t.storage_offset()]
    while vec > 1 and (vec > tile_cols or any(v % vec for v in values)):
        vec //= 2
    return vec


def kernel_name(kernel: Any) -> str:
    fn = getattr(kernel, "fn", None)
    return getattr(fn, "__name__", None) or getattr(kernel, "__name__", repr(kernel))


def specialisation_key(args: Sequence[Any], meta: dict[str, Any]) -> tuple:
    """What makes two launches of a kernel compile to different code, as far as a failure is
    concerned: the constexpr/meta values and the dtypes of the tensor arguments."""
    consts = tuple(sorted((k, v) for k, v in meta.items()
                          if isinstance(v, (bool, int, float, str))))
    dtypes = tuple(str(a.dtype).replace("torch.", "") for a in args
                   if isinstance(a, torch.Tensor))
    return (consts, dtypes)


def grid_problem(grid: Sequence[int]) -> str | None:
    """Why CUDA would refuse ``grid``, or None."""
    if len(grid) > 3:
        return f"grid {tuple(grid)} has more than 3 axes"
    for axis, (n, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if n > limit:
            return f"grid axis {axis} has {n} blocks, over CUDA's limit of {limit}"
    return None


def launch(kernel: Any, grid: Sequence[int], *args: Any, **meta: Any) -> None:
    """Launch ``kernel`` over ``grid`` (a tuple of ints) with ``args`` and ``meta``
    (constexprs and launch options such as ``num_warps``)."""
    grid = tuple(int(g) for g in grid)
    recorder: Callable[..., None] | None = launch_recorder.get()
    if recorder is not None:
        recorder(kernel, grid, args, meta)
        return
    if min(grid, default=1) == 0:
        return  # nothing to do; CUDA refuses empty grids
    # The specialisation key is built only when something failed (this is every launch's
    # path; a healthy process never needs it).
    if any_kernel_failed():
        key = specialisation_key(args, meta)
        known = kernel_failed(kernel_name(kernel), key)
        if known is not None:
            raise KernelLaunchError(kernel_name(kernel), key, known)
    problem = grid_problem(grid)
    if problem is not None:
        raise KernelLaunchError(kernel_name(kernel), specialisation_key(args, meta), problem)
    try:
        kernel[grid](*args, **meta)
    except Exception as exc:  # compiler, ptxas, resources, driver: all one failure to the op
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 400:
            reason = reason[:400] + " ..."
        raise KernelLaunchError(kernel_name(kernel), specialisation_key(args, meta),
                                reason) from exc


@dataclasses.dataclass
class Launch:
    """One recorded launch: ``kernel[grid](*args, **meta)`` as the host code would run it."""
    kernel: Any  # a triton JITFunction
    grid: tuple[int, ...]
    args: tuple
    meta: dict
    case: str


@contextlib.contextmanager
def recording(sink: list[Launch], case: str) -> Iterator[None]:
    """Inside, every uhrops kernel launch is appended to ``sink`` (labelled ``case``) instead
    of running, with the launch choices of a CUDA device and the default backend ("auto")."""

    def record(kernel: Any, grid: tuple[int, ...], args: tuple, meta: dict) -> None:
        sink.append(Launch(kernel, grid, args, dict(meta), case))

    token = launch_recorder.set(record)
    try:
        with use_backend("auto"):  # what a default call on a GPU runs
            yield
    finally:
        launch_recorder.reset(token)
