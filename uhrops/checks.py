"""Argument checks with clear messages, for uhrops ops and for ops written on top of them.

Convention:
    Every check takes the value, the argument's ``name`` and the calling function's name
    ``op`` (without parentheses), returns the checked value where that is useful, and raises
    ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong rank, size, range
    or option) with ONE message that names the function, the argument, the value given, what
    is expected and how to fix it, e.g.::

        haar_dwt2d(): `x` must be a 4-D tensor (B, C, H, W); got shape (3, 64, 64) (3-D).
        Fix: add a batch dimension with x.unsqueeze(0).

    The checks read only shapes, dtypes and devices (never tensor values), so they cost no
    device-to-host synchronisation and are safe inside a training step. Every public uhrops
    function runs them first; the model zoo (``zoo/``) uses the same ones, and so can a user
    writing an op::

        from uhrops import checks

        def my_op(x, k=3):
            x = checks.check_image(x, "x", "my_op")
            checks.check_int(k, "k", "my_op", minimum=1)

Example:
    >>> import torch
    >>> from uhrops import checks
    >>> checks.check_image(torch.zeros(3, 8, 8), "x", "my_op")
    Traceback (most recent call last):
    ...
    ValueError: my_op(): `x` must be a 4-D tensor (B, C, H, W); got shape (3, 8, 8) (3-D). Fix: add a batch dimension with x.unsqueeze(0).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

__all__ = [
    "FLOAT_DTYPES",
    "check_choice",
    "check_device",
    "check_float",
    "check_image",
    "check_int",
    "check_rank",
    "check_same_device",
    "check_same_dtype",
    "check_sequence_of_tensors",
    "check_tensor",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(x: object, name: str, op: str) -> torch.Tensor:
    """``x`` itself when it is a ``torch.Tensor``; TypeError otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}(): `{name}` must be a torch.Tensor; got {type(x).__name__}. "
                        f"Fix: convert it with torch.as_tensor({name}).")
    return x


def check_float(x: torch.Tensor, name: str, op: str) -> None:
    """TypeError unless ``x`` is float16, bfloat16, float32 or float64."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{op}(): `{name}` must have a floating dtype (float16, bfloat16, float32 or "
            f"float64); got {x.dtype}. Fix: convert it, e.g. {name}.float() (for uint8 images "
            f"also scale, e.g. {name}.float() / 255)."
        )


# The fix for the common rank mistakes of a (B, C, H, W) argument.
_RANK_FIX = {
    4: {3: "add a batch dimension with {name}.unsqueeze(0)",
        2: "add batch and channel dimensions with {name}[None, None]",
        5: "fold the extra dimension into the batch with {name}.flatten(0, 1)"},
}


def check_rank(x: torch.Tensor, name: str, op: str, ndim: int, layout: str) -> None:
    """ValueError unless ``x`` has ``ndim`` dimensions; ``layout`` names them, e.g.
    ``"(B, H, W)"``."""
    if x.dim() != ndim:
        fix = _RANK_FIX.get(ndim, {}).get(x.dim(), f"reshape it to {layout}").format(name=name)
        raise ValueError(
            f"{op}(): `{name}` must be a {ndim}-D tensor {layout}; got shape {_shape(x)} "
            f"({x.dim()}-D). Fix: {fix}."
        )


def check_image(x: object, name: str, op: str) -> torch.Tensor:
    """``x`` when it is a (B, C, H, W) floating tensor; TypeError/ValueError otherwise."""
    t = check_tensor(x, name, op)
    check_rank(t, name, op, 4, "(B, C, H, W)")
    check_float(t, name, op)
    return t


def check_same_device(op: str, **tensors: torch.Tensor) -> None:
    """ValueError unless every keyword tensor is on the device of the first one."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}(): `{name}` is on {t.device} but `{first_name}` is on {first.device}. "
                f"Fix: move them to one device, e.g. {name}.to({first_name}.device)."
            )


def check_same_dtype(op: str, **tensors: torch.Tensor) -> None:
    """TypeError unless every keyword tensor has the dtype of the first one."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{op}(): `{name}` has dtype {t.dtype} but `{first_name}` has {first.dtype}. "
                f"Fix: cast one of them, e.g. {name}.to({first_name}.dtype)."
            )


def check_int(value: object, name: str, op: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` when it is an int (not a bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}(): `{name}` must be an int; got {type(value).__name__} "
                        f"{value!r}. Fix: pass a whole number, e.g. {name}=int({name}).")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}(): `{name}` must be >= {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{op}(): `{name}` must be <= {maximum}; got {value}.")
    return value


def check_choice(value: object, name: str, op: str, choices: Iterable[object]) -> object:
    """``value`` when it is one of ``choices``; ValueError listing them otherwise."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{op}(): `{name}` must be one of {listed}; got {value!r}.")
    return value


def check_device(value: object, name: str, op: str, usable: bool = False) -> torch.device:
    """A torch.device from a device or a string such as "cpu" or "cuda:0".

    With ``usable=True`` a device that cannot hold tensors here (e.g. "cuda" without a GPU)
    is refused too, before any work is done."""
    if isinstance(value, bool) or not isinstance(value, (str, torch.device, int)):
        raise TypeError(f"{op}(): `{name}` must be a torch.device or a string like 'cpu' or "
                        f"'cuda:0'; got {type(value).__name__} {value!r}.")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"{op}(): `{name}`={value!r} is not a device ({exc}). Fix: pass e.g. "
                         f"{name}='cpu' or {name}='cuda:0'.") from None
    if usable:
        try:
            torch.empty(0, device=dev)
        except Exception as exc:  # no CUDA build, index past the GPUs, ...
            raise ValueError(f"{op}(): `{name}`={value!r} cannot be used on this machine "
                             f"({type(exc).__name__}: {exc}). Fix: pass an available device, "
                             f"e.g. {name}='cpu'.") from None
    return dev


def check_sequence_of_tensors(seq: object, name: str, op: str,
                              min_len: int = 0) -> Sequence[torch.Tensor]:
    """``seq`` when it is a list or tuple of at least ``min_len`` tensors."""
    if not isinstance(seq, (list, tuple)):
        raise TypeError(f"{op}(): `{name}` must be a list or tuple of tensors; got "
                        f"{type(seq).__name__}.")
    if len(seq) < min_len:
        raise ValueError(f"{op}(): `{name}` must hold at least {min_len} tensor(s); "
                         f"got {len(seq)}.")
    for i, t in enumerate(seq):
        check_tensor(t, f"{name}[{i}]", op)
    return seq
