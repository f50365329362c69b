"""Backend choice for every uhrops op: "auto" | "torch" | "triton".

Each op has a PyTorch implementation (the reference: any device, any float dtype) and, where
it pays, a Triton implementation. The choice is process-wide (``set_backend``) or scoped
(``use_backend``, a context manager built on a ``ContextVar`` so threads and tasks do not
leak into each other). Ops call :func:`resolve` with their tensors and get back the name of
the path to run, or a ``BackendUnavailableError`` that says exactly why Triton cannot run.

Convention:
    - "auto": Triton for CUDA tensors when Triton imports and the op has a kernel; PyTorch
      otherwise (CPU tensors always take PyTorch under "auto", interpreter or not).
    - "torch": always the PyTorch path.
    - "triton": the Triton path or an error. CPU tensors run only under the Triton
      interpreter (environment variable ``TRITON_INTERPRET=1`` set before Triton is
      imported); without it the error names the variable.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Iterator, Literal

import torch

BackendName = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

_process_default: str = os.environ.get("UHROPS_BACKEND", "auto")
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("uhrops_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """Raised when the requested backend cannot run for the given tensors."""


def _validate_name(name: object, op: str = "set_backend") -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(
            f"{op}(): `name` must be one of {', '.join(repr(b) for b in BACKENDS)}; got "
            f"{name!r}. Fix: use \"auto\" (Triton on CUDA when available), \"torch\" or "
            f"\"triton\"."
        )
    return name


if _process_default not in BACKENDS:  # a bad environment value must not break import
    _process_default = "auto"


def set_backend(name: BackendName) -> None:
    """Set the process-wide backend ("auto", "torch" or "triton")."""
    global _process_default
    _process_default = _validate_name(name)


def get_backend() -> str:
    """The backend in force here: the innermost ``use_backend`` scope, else the process default."""
    scoped = _scoped.get()
    return scoped if scoped is not None else _process_default


@contextlib.contextmanager
def use_backend(name: BackendName) -> Iterator[None]:
    """Run the enclosed ops with ``name`` as the backend; restores the previous one on exit.

    Example:
        >>> import uhrops
        >>> with uhrops.use_backend("torch"):
        ...     uhrops.get_backend()
        'torch'
    """
    token = _scoped.set(_validate_name(name, "use_backend"))
    try:
        yield
    finally:
        _scoped.reset(token)


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return (
            f"triton does not import ({type(exc).__name__}: {exc}); "
            "install it with `pip install 'uhrops[triton]'`"
        )
    return None


def interpreter_enabled() -> bool:
    """True when the Triton interpreter is switched on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unavailable_reason(device: torch.device | str) -> str | None:
    """Why the Triton path cannot run on ``device``, or None when it can."""
    from uhrops._checks import check_device

    device = check_device(device, "device", "triton_unavailable_reason")
    reason = _triton_import_error()
    if reason is not None:
        return reason
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if interpreter_enabled():
            return None
        return (
            "the tensors are on the CPU and the Triton interpreter is off; set the environment "
            "variable TRITON_INTERPRET=1 before Python starts (slow, for testing), move the "
            'tensors to a CUDA device, or use uhrops.use_backend("torch")'
        )
    return (
        f"Triton kernels run on CUDA devices (or the CPU interpreter), not on {device.type!r}; "
        'use uhrops.use_backend("torch")'
    )


def resolve(op: str, *tensors: torch.Tensor, has_triton: bool = True) -> str:
    """Pick the path ("torch" or "triton") that ``op`` runs for ``tensors``.

    ``has_triton=False`` says the op has no Triton kernel for these arguments; "triton" then
    raises, "auto" quietly takes PyTorch.
    """
    device_type = tensors[0].device.type if tensors else "cpu"
    what = f"{tensors[0].dtype} tensors on {device_type}" if tensors else ""
    return _resolve_for(op, device_type, has_triton, what)


# torch.compile cannot trace ContextVar or os.environ reads; the choice depends only on
# constants (the setting, the device type), so the compiler may take it as one. A graph
# compiled under one backend is not re-checked if the setting changes later: recompile
# (torch._dynamo.reset()) after switching backends around compiled code.
@torch.compiler.assume_constant_result
def _resolve_for(op: str, device_type: str, has_triton: bool, what: str = "") -> str:
    choice = get_backend()
    if choice == "torch":
        return "torch"
    if choice == "auto":
        if has_triton and device_type == "cuda" and _triton_import_error() is None:
            return "triton"
        return "torch"
    if not has_triton:
        raise BackendUnavailableError(
            f"{op}: the Triton backend has no kernel for these arguments"
            f"{f' ({what})' if what else ''}; use uhrops.use_backend(\"torch\") or \"auto\""
        )
    reason = triton_unavailable_reason(device_type)
    if reason is not None:
        raise BackendUnavailableError(f"{op}: the Triton backend cannot run: {reason}")
    return "triton"
