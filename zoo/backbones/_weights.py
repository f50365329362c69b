"""Reading backbone weight files safely: safetensors, or torch.load(weights_only=True).

Shared by every backbone loader (VGG16, ResNet18-V1c, STDC1). Nothing is downloaded: the
loaders take local files, and a file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["WeightsError", "WeightsFileNotFoundError", "read_state_dict"]

# Prefixes that wrappers put in front of the backbone's own keys (DataParallel, mmseg
# segmentors); they are removed before matching.
_WRAPPER_PREFIXES = ("module.", "backbone.")


class WeightsError(ValueError):
    """A weights file cannot be read, or does not fit the model it is loaded into.

    The message names the file (when there is one), the offending keys and the fix.
    """


class WeightsFileNotFoundError(WeightsError, FileNotFoundError):
    """The weights file does not exist (nothing is ever downloaded in its place)."""




def read_state_dict(source: str | os.PathLike | Mapping[str, Tensor],
                    strip_prefixes: Sequence[str] = _WRAPPER_PREFIXES) -> dict[str, Tensor]:
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
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"read_state_dict(): expected a dict of tensors{where}; got "
                           f"{type(obj).__name__}. Fix: save model.state_dict(), not the model.")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise WeightsError(f"read_state_dict(): entry {key!r}{where} is a "
                               f"{type(value).__name__}, not a tensor. Fix: pass a state dict "
                               f"(or a checkpoint with one under 'state_dict').")
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for p in strip_prefixes:
                if name.startswith(p):
                    name, stripped = name[len(p):], True
        out[name] = value
    return out
