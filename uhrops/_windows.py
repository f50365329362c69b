"""Blending windows for merging overlapping patches (the Gaussian one lives in tiling.py)."""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from torch import Tensor

from uhrops import _checks

__all__ = ["hann_weight"]

IntPair = Union[int, Sequence[int]]


def hann_weight(patch_size: IntPair, *, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Hann (raised-cosine) blending window for one patch, with no zero weight.

    Convention:
        - Per axis w[i] = sin²(π (i + ½) / p), i = 0 … p - 1: the Hann window sampled at the
          pixel *centres* of a window whose zeros sit half a pixel outside the patch, so every
          pixel, the outermost ones included, gets a positive weight (sin²(π/2p) ≈ 2.5/p² at
          the border). A pixel of the image that only one patch covers (the image border)
          therefore keeps that patch's value under ``reduction="mean"`` instead of the 0/0 a
          textbook Hann (``numpy.hanning``, zero at both ends) would give it.
        - The 2-D map is the outer product of the two axes (peak ≈ 1 at the centre).
        - Partition of unity: at stride p/2 (even p) the windows of neighbouring patches add
          up to exactly 1 along that axis (sin² + cos²), as in overlap-add blending.
        - Computed in float64, then cast.

    Args:
        patch_size: p or (ph, pw).
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        (ph, pw) tensor.

    Example:
        >>> w = hann_weight((4, 1), dtype=torch.float64)[:, 0]  # one axis
        >>> bool((w > 0).all()), round(float(w[0] + w[2]), 6)  # stride 2 = p/2: sums to 1
        (True, 1.0)
    """
    op = "hann_weight"
    from uhrops.tiling import _pair  # tiling imports this module

    ph, pw = _pair(patch_size, "patch_size", op)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{op}(): `dtype` must be a floating torch.dtype; got {dtype!r}. "
                        f"Fix: e.g. dtype=torch.float32.")
    if device is not None:
        device = _checks.check_device(device, "device", op)
    axes = [torch.sin(math.pi * (torch.arange(p, dtype=torch.float64) + 0.5) / p) ** 2
            for p in (ph, pw)]
    return (axes[0][:, None] * axes[1][None, :]).to(device=device, dtype=dtype)
