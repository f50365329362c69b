"""Weight files and state dicts cleaned in one place: reading a file without unpickling
objects, unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints, removing the
prefixes that wrappers put in front of the keys (``module.`` of DataParallel/DDP,
``backbone.`` of mmseg segmentors, ``model.`` of zoo checkpoints), and unwrapping a DDP
model. Every backbone loader, the official FCtL loader and the checkpoint reader use these.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoo.core.errors import WeightsError, WeightsFileNotFoundError

__all__ = ["WRAPPER_PREFIXES", "copy_state", "list_keys", "read_state_dict", "strip_prefixes",
           "unwrap_module", "unwrap_state"]

# Prefixes that wrappers put in front of a backbone's own keys (DataParallel, mmseg
# segmentors); removed before matching.
WRAPPER_PREFIXES = ("module.", "backbone.")


def unwrap_module(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel / DistributedDataParallel wrapper (or ``model``)."""
    return model.module if hasattr(model, "module") else model


def unwrap_state(obj: Any) -> Any:
    """The state dict inside a training checkpoint: ``obj["state_dict"]`` or ``obj["model"]``
    when it is a mapping (mmcv, STDC-Seg, most training scripts), else ``obj``."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    return obj


def strip_prefixes(state: Mapping[str, Any], prefixes: Sequence[str] = ("module.",),
                   repeat: bool = True) -> dict[str, Any]:
    """``state`` with each key's leading ``prefixes`` removed (as long as one matches when
    ``repeat``, else at most one), values untouched."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for p in prefixes:
                if name.startswith(p):
                    name, stripped = name[len(p):], repeat
                    break
        out[name] = value
    return out


def read_state_dict(source: str | os.PathLike | Mapping[str, Tensor],
                    strip_prefixes: Sequence[str] = WRAPPER_PREFIXES) -> dict[str, Tensor]:
    """Read a state dict from a local file (or take a mapping) without unpickling objects.

    Convention:
        - ``*.safetensors`` files are read with :func:`safetensors.torch.load_file`; anything
          else with ``torch.load(path, map_location="cpu", weights_only=True)`` (plain tensors
          and containers only; a file that needs arbitrary unpickling is refused).
        - a checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` (mmcv,
          STDC-Seg and most training scripts) is unwrapped.
        - every key loses the prefixes in ``strip_prefixes`` (``module.``, ``backbone.``) as
          long as one matches.
        - every value must be a tensor.

    Args:
        source: path of the file, or an already loaded mapping.
        strip_prefixes: key prefixes removed before matching.

    Returns:
        ``dict`` key -> tensor (on the CPU for files).

    Raises:
        WeightsError: the file is missing, unreadable or not a dict of tensors.

    Example:
        >>> sd = read_state_dict({"module.conv1.weight": torch.zeros(1)})
        >>> list(sd)
        ['conv1.weight']
    """
    prefixes = strip_prefixes
    where = ""
    if isinstance(source, Mapping):
        obj: object = source
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        where = f" in {path}"
        if not os.path.isfile(path):
            raise WeightsFileNotFoundError(
                f"read_state_dict(): weights file not found: {path}. Nothing is downloaded: pass "
                f"the path of a local .pth/.pt/.tar or .safetensors file.")
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                obj = load_file(path, device="cpu")
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt file, pickle with objects, wrong format, ...
            raise WeightsError(
                f"read_state_dict(): cannot read weights file {path}: {type(exc).__name__}: "
                f"{exc}. Fix: check that the file is complete and is a state dict saved with "
                f"torch.save (plain tensors) or safetensors.") from exc
    else:
        raise TypeError(f"read_state_dict(): `source` must be a path or a mapping of tensors; "
                        f"got {type(source).__name__}.")
    obj = unwrap_state(obj)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"read_state_dict(): expected a dict of tensors{where}; got "
                           f"{type(obj).__name__}. Fix: save model.state_dict(), not the model.")
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"read_state_dict(): entry {key!r}{where} is a "
                               f"{type(value).__name__}, not a tensor. Fix: pass a state dict "
                               f"(or a checkpoint with one under 'state_dict').")
    return _strip(obj, prefixes)


_strip = strip_prefixes  # read_state_dict's argument shadows the function's name inside it


def copy_state(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Copy ``tensors`` into ``model``'s parameters and buffers of the same names, in place
    (keys and shapes already checked by the caller's loader)."""
    own = model.state_dict()
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value)


def list_keys(keys: Sequence[str], limit: int = 8) -> str:
    """The first ``limit`` of ``keys`` in sorted order, for an error message."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
