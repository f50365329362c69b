"""The one place where uhrops launches a Triton kernel.

:func:`launch` runs ``kernel[grid](*args, **meta)`` and turns anything that goes wrong while
Triton compiles or launches it (compiler error, shared memory or registers out of resources,
an architecture Triton cannot target, a grid beyond CUDA's limits) into
:class:`uhrops._backend.KernelLaunchError`, which names the kernel and its specialisation.
The ops catch it: under "auto" they warn and run the PyTorch path, under "triton" (or with
``UHROPS_STRICT_KERNELS=1``) it propagates. A specialisation that failed under "auto" is not
handed to the compiler again in the same process.

The compile check (:mod:`uhrops.kernels.compile_check`) records launches here instead of
running them: the ops then run their host code on CPU tensors, with every launch-time choice
made as on a GPU (:func:`plans_for_gpu`), and each launch is passed to the recorder.

Convention:
    CUDA grid limits: axis 0 up to 2**31 - 1 blocks, axes 1 and 2 up to 65535. A launcher
    must fold any size that can exceed them into axis 0 (or loop); :func:`launch` refuses a
    grid past them with a KernelLaunchError rather than let the driver fail obscurely.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch

from uhrops._backend import KernelLaunchError, _recorder, kernel_failed, recording_launches

GRID_LIMITS: tuple[int, int, int] = (2**31 - 1, 65535, 65535)


def plans_for_gpu(t: torch.Tensor) -> bool:
    """True when launch choices (blocks, warps) should be the GPU's: CUDA tensors, or any
    tensor while the compile check records launches."""
    return t.device.type == "cuda" or recording_launches()


def interpreted(t: torch.Tensor) -> bool:
    """True when ``t``'s kernels run in the Triton interpreter (CPU, ``TRITON_INTERPRET=1``)."""
    return (t.device.type == "cpu" and not recording_launches()
            and os.environ.get("TRITON_INTERPRET", "0") == "1")


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
    recorder: Callable[..., None] | None = _recorder.get()
    if recorder is not None:
        recorder(kernel, grid, args, meta)
        return
    if min(grid, default=1) == 0:
        return  # nothing to do; CUDA refuses empty grids
    name = kernel_name(kernel)
    key = specialisation_key(args, meta)
    known = kernel_failed(name, key)
    if known is not None:
        raise KernelLaunchError(name, key, known)
    problem = grid_problem(grid)
    if problem is not None:
        raise KernelLaunchError(name, key, problem)
    try:
        kernel[grid](*args, **meta)
    except Exception as exc:  # compiler, ptxas, resources, driver: all one failure to the op
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 400:
            reason = reason[:400] + " ..."
        raise KernelLaunchError(name, key, reason) from exc
