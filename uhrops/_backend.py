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
import warnings
from typing import Callable, Iterator, Literal, TypeVar

import torch

BackendName = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
T = TypeVar("T")

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
    """Why the Triton path cannot run on ``device``, or None when it can.

    On a CUDA device where some kernels failed to compile or launch under "auto" (see
    :func:`run_with_fallback`), the reason names those kernels and why; the other kernels
    still run there.
    """
    from uhrops.checks import check_device

    device = check_device(device, "device", "triton_unavailable_reason")
    reason = _device_reason(device)
    if reason is None and device.type == "cuda" and _failed:
        listed = "; ".join(f"{name} {dict(key[0]) if key else ''}: {why}"
                           for (name, key), why in sorted(_failed.items(), key=str))
        return (f"these Triton kernels failed on this GPU and \"auto\" runs the PyTorch path "
                f"for them: {listed}")
    return reason


# Set by the compile check (tools.kernels.compile_check) while it records the launches the
# host code makes: CPU tensors then plan and "launch" as if on a GPU, and nothing runs.
launch_recorder: contextvars.ContextVar = contextvars.ContextVar("uhrops_kernel_recorder",
                                                                default=None)


def recording_launches() -> bool:
    """True inside the compile check's recording (launches are captured, not run)."""
    return launch_recorder.get() is not None


def _device_reason(device: torch.device) -> str | None:
    reason = _triton_import_error()
    if reason is not None:
        return reason
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if interpreter_enabled() or recording_launches():
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


def resolve(op: str, *tensors: torch.Tensor, no_kernel: str | None = None,
            has_triton: bool = True) -> str:
    """Pick the path that ``op`` runs for ``tensors``: "torch", "triton" (asked for: a kernel
    failure raises) or ``AUTO_TRITON`` (chosen by "auto": a kernel failure falls back to
    PyTorch with a warning, see :func:`run_with_fallback`).

    ``no_kernel``: why the op's kernel family cannot take these arguments (each family says
    it in one place, its ``why_no_kernel``), or None when it can; "triton" then raises with
    that reason, "auto" quietly takes PyTorch. ``has_triton=False``: the same without a
    reason.
    """
    device_type = tensors[0].device.type if tensors else "cpu"
    what = f"{tensors[0].dtype} tensors on {device_type}" if tensors else ""
    if no_kernel is not None:
        what = f"{what}: {no_kernel}" if what else no_kernel
    return _resolve_for(op, device_type, has_triton and no_kernel is None, what)


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
        if has_triton and (device_type == "cuda" or recording_launches()) \
                and _triton_import_error() is None:
            return AUTO_TRITON
        return "torch"
    if not has_triton:
        raise BackendUnavailableError(
            f"{op}: the Triton backend has no kernel for these arguments"
            f"{f' ({what})' if what else ''}; use uhrops.use_backend(\"torch\") or \"auto\""
        )
    reason = _device_reason(torch.device(device_type))
    if reason is not None:
        raise BackendUnavailableError(f"{op}: the Triton backend cannot run: {reason}")
    return "triton"


# --------------------------------------------------------------------------------------------
# Kernel failures under "auto": warn once, run PyTorch instead.
# --------------------------------------------------------------------------------------------
# The backend string an op receives says who chose Triton. "triton" (asked for by the user)
# raises on a kernel failure; AUTO_TRITON (chosen by "auto") falls back to PyTorch. The string
# travels into the custom ops and their saved backward context, so a backward pass running on
# autograd's device thread (where the caller's use_backend scope is not visible) keeps the
# forward's policy.
AUTO_TRITON = "auto:triton"

STRICT_ENV = "UHROPS_STRICT_KERNELS"


class KernelLaunchError(RuntimeError):
    """A Triton kernel failed to compile or launch (compiler error, out of resources, an
    architecture Triton does not support, a grid beyond CUDA's limits).

    ``kernel`` names the Triton function, ``key`` identifies its specialisation (constexpr
    values, warps, argument dtypes) and ``reason`` is the underlying error in one line.
    """

    def __init__(self, kernel: str, key: tuple, reason: str):
        self.kernel, self.key, self.reason = kernel, key, reason
        super().__init__(f"Triton kernel {kernel} failed: {reason}")


def is_triton(backend: str) -> bool:
    """True for both ways of running the Triton path ("triton" and "auto"'s choice)."""
    return backend == "triton" or backend == AUTO_TRITON


def strict_kernels() -> bool:
    """``UHROPS_STRICT_KERNELS=1``: a kernel failure raises under "auto" too (tests, benchmarks)."""
    return os.environ.get(STRICT_ENV, "0") not in ("", "0")


# (kernel, specialisation key) -> one-line reason, for kernels that failed under "auto".
_failed: dict[tuple[str, tuple], str] = {}


def any_kernel_failed() -> bool:
    """True once some kernel failed under "auto" in this process (cheap: every launch asks)."""
    return bool(_failed)


def kernel_failed(kernel: str, key: tuple) -> str | None:
    """The recorded reason when this specialisation already failed under "auto", else None."""
    return _failed.get((kernel, key))


def run_with_fallback(op: str, backend: str, run: "Callable[[str], T]",
                      example: torch.Tensor | None = None) -> "T":
    """``run(path)`` with path "triton", or with "torch" when "auto"'s kernel fails.

    ``run`` must be pure (no mutated inputs), so running it again on the other path is safe.
    The first failure of each (kernel, specialisation) warns, naming the kernel, the op's input
    shape and dtype and the reason; later calls of the same specialisation fall back quietly
    (the launcher does not retry the compiler).
    """
    if not is_triton(backend):
        return run("torch")
    try:
        return run("triton")
    except KernelLaunchError as exc:
        if backend == "triton" or strict_kernels():
            raise
        where = "" if example is None else \
            f" for input of shape {tuple(example.shape)} and dtype {example.dtype}"
        if (exc.kernel, exc.key) not in _failed:
            _failed[(exc.kernel, exc.key)] = exc.reason
            warnings.warn(
                f"uhrops.{op}: Triton kernel {exc.kernel} could not run{where} "
                f"({exc.reason}); running the PyTorch path instead (same op, slower). Set "
                f"{STRICT_ENV}=1 to make this an error, or use uhrops.use_backend(\"torch\") "
                "to silence it.",
                RuntimeWarning, stacklevel=3,
            )
        return run("torch")


def failed_kernels() -> dict[tuple[str, tuple], str]:
    """The kernels that failed under "auto" in this process (a copy), with their reasons."""
    return dict(_failed)
