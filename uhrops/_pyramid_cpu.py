"""CPU forward of pyr_down / pyr_up (/ pyr_up_add) as single-channel strided convolutions.

The reference PyTorch path (uhrops.pyramid) filters with shifted strided slices and in-place
adds, row block by row block: ~10 passes over memory per axis, and the step-2 slices along the
last axis do not vectorise. On the CPU a 5-tap (or 3-tap) convolution per axis with oneDNN is
3-4x less CPU time for the same result (same padded operand, same taps; the sums differ only
in their order: ~1 ulp). Forward only: the backward passes stay the reference adjoints.

The padded operand is built from the reference path's index maps (reflect-101, cv2's
borders), so every size, odd ones included, gives the reference geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["usable", "down", "up"]

_DOWN = (1.0, 4.0, 6.0, 4.0, 1.0)


def usable(x: Tensor) -> bool:
    """CPU float32/float64 tensors with elements (fp16/bf16 keep the reference path, which
    computes in float32 block by block; meta/CUDA tensors keep it too)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) \
        and x.numel() > 0


def _padded(x: Tensor, rmap: list[int], cmap: list[int]) -> Tensor:
    """(N, 1, len(rmap), len(cmap)): every plane of x padded by the maps (a gather; the
    common sizes take the F.pad shortcuts below, a gather along the last axis being slow)."""
    H, W = x.shape[-2:]
    planes = x.reshape(-1, 1, H, W)
    r = torch.tensor(rmap, dtype=torch.long)
    c = torch.tensor(cmap, dtype=torch.long)
    return planes.index_select(2, r).index_select(3, c)


def _down_padded(x: Tensor, rmap: list[int], cmap: list[int]) -> Tensor:
    """The maps of blur+decimate are reflect-101 by 2 before and 1 (even) or 2 (odd) after:
    F.pad's "reflect" where the side is long enough for it."""
    H, W = x.shape[-2:]
    if H < 3 or W < 3:
        return _padded(x, rmap, cmap)
    pads = (2, len(cmap) - W - 2, 2, len(rmap) - H - 2)
    return F.pad(x.reshape(-1, 1, H, W), pads, mode="reflect")


def _up_padded(x: Tensor, rmap: list[int], cmap: list[int]) -> Tensor:
    """The maps of the expand are x[1] before (reflect-101 of the zero-inserted signal) and
    x[n - 1] after: a replicate pad whose first row and column are then set to the third."""
    H, W = x.shape[-2:]
    p = F.pad(x.reshape(-1, 1, H, W), (1, 1, 1, 1), mode="replicate")
    p[:, :, 0, :] = p[:, :, 2, :]  # H == 1: row 2 is the replicated x[0], as the map says
    p[:, :, :, 0] = p[:, :, :, 2]
    return p


def down(x: Tensor, rmap: list[int], cmap: list[int], m: int, mw: int) -> Tensor:
    """Blur + decimate: (.., H, W) -> (.., m, mw) with the reference path's padding maps."""
    p = _down_padded(x, rmap, cmap)
    k = torch.tensor(_DOWN, dtype=x.dtype) / 16.0
    v = F.conv2d(p, k.view(1, 1, 5, 1), stride=(2, 1))
    y = F.conv2d(v, k.view(1, 1, 1, 5), stride=(1, 2))
    return y[:, 0, :m, :mw].reshape(*x.shape[:-2], m, mw)


def _expand_axis(p: Tensor, dim: int, n_out: int) -> Tensor:
    """Even/odd taps ((1, 6, 1) / 8 and (0, 1, 1) / 2) along dim (2 = rows, 3 = columns) of
    (N, 1, h + 2, .) -> (N, 1, n_out, .) interleaved, n_out <= 2h."""
    k = torch.tensor([[0.125, 0.75, 0.125], [0.0, 0.5, 0.5]], dtype=p.dtype)
    w = k.view(2, 1, 3, 1) if dim == 2 else k.view(2, 1, 1, 3)
    y = F.conv2d(p, w)  # (N, 2, h, .) or (N, 2, ., w)
    N = y.shape[0]
    if dim == 2:
        h, c = y.shape[2], y.shape[3]
        out = y.permute(0, 2, 1, 3).reshape(N, 1, 2 * h, c)
        return out[:, :, :n_out]
    r, w_ = y.shape[2], y.shape[3]
    out = y.permute(0, 2, 3, 1).reshape(N, 1, r, 2 * w_)
    return out[..., :n_out]


def up(x: Tensor, rmap: list[int], cmap: list[int], Ho: int, Wo: int,
       base: Tensor | None = None, sign: float = 1.0) -> Tensor:
    """Expand (zero insertion + 4x the kernel): (.., h, w) -> (.., Ho, Wo); with ``base``,
    base + sign * expand."""
    p = _up_padded(x, rmap, cmap)
    y = _expand_axis(_expand_axis(p, 2, Ho), 3, Wo)
    y = y[:, 0].reshape(*x.shape[:-2], Ho, Wo)
    if base is not None:
        return torch.add(base, y, alpha=sign)
    return y
