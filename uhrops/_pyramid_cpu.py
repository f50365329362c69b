"""CPU forward of pyr_down / pyr_up (/ pyr_up_add): whole-map passes along rows, the other axis
through a transposed copy.

The reference PyTorch path (uhrops.pyramid) filters with shifted strided slices and in-place
adds, row block by row block, and its step-2 slices along the last axis do not vectorise. Here
each axis is one pass over whole rows (the same taps and the same order of operations), the
column pass running on a transposed copy; at 2464² (3 planes, 2 threads) pyr_down takes ~0.3x
the CPU time of the single-channel oneDNN convolutions this path used before. Forward only:
the backward passes stay the reference adjoints.

The padded operand is built from the reference path's index maps (reflect-101, cv2's
borders), so every size, odd ones included, gives the reference geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["usable", "down", "up"]


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


def _dec_rows(a: Tensor, m: int) -> Tensor:
    """out[i] = ((a[2i] + a[2i+4]) + 6a[2i+2] + 4a[2i+1] + 4a[2i+3]) / 16 along the rows of
    (N, 1, 2m + 3, c): whole rows at a time (contiguous, so every add vectorises), the
    reference path's order of operations."""
    ev, od = a[:, :, 0::2], a[:, :, 1::2]
    out = torch.add(ev[:, :, 0:m], ev[:, :, 2 : m + 2])
    out.add_(ev[:, :, 1 : m + 1], alpha=6)
    out.add_(od[:, :, 0:m], alpha=4)
    out.add_(od[:, :, 1 : m + 1], alpha=4)
    return out.mul_(1.0 / 16.0)


def _exp_rows(a: Tensor, out: Tensor) -> Tensor:
    """Rows 2i of ``out`` = ((a[i] + a[i+2]) + 6a[i+1]) / 8, rows 2i+1 = (a[i+1] + a[i+2]) / 2
    for a (N, 1, h + 2, c) and out (N, 1, 2h or 2h - 1, c) (the reference path's order)."""
    even, odd = out[:, :, 0::2], out[:, :, 1::2]
    ne, no = even.shape[2], odd.shape[2]
    torch.add(a[:, :, 0:ne], a[:, :, 2 : ne + 2], out=even)
    even.add_(a[:, :, 1 : ne + 1], alpha=6)
    even.mul_(0.125)
    if no:
        torch.add(a[:, :, 1 : no + 1], a[:, :, 2 : no + 2], out=odd)
        odd.mul_(0.5)
    return out


def _t(a: Tensor) -> Tensor:
    """Rows and columns swapped, in memory: the pass along columns then runs on whole rows
    (a step-2 slice along the last axis does not vectorise; a 1-channel oneDNN convolution
    was 2-5x slower than these passes plus the transposes)."""
    return a.transpose(2, 3).contiguous()


def down(x: Tensor, rmap: list[int], cmap: list[int], m: int, mw: int) -> Tensor:
    """Blur + decimate: (.., H, W) -> (.., m, mw) with the reference path's padding maps."""
    p = _down_padded(x, rmap, cmap)  # (N, 1, 2m + 3, 2mw + 3)
    y = _dec_rows(_t(_dec_rows(p, m)), mw)  # (N, 1, mw, m)
    return y.transpose(2, 3)[:, 0].reshape(*x.shape[:-2], m, mw).contiguous()


def up(x: Tensor, rmap: list[int], cmap: list[int], Ho: int, Wo: int,
       base: Tensor | None = None, sign: float = 1.0) -> Tensor:
    """Expand (zero insertion + 4x the kernel): (.., h, w) -> (.., Ho, Wo); with ``base``,
    base + sign * expand (fused into the last pass's output, as the reference path does)."""
    p = _up_padded(x, rmap, cmap)  # (N, 1, h + 2, w + 2)
    N = p.shape[0]
    # columns first, on the coarse map (the small transpose), then rows at full size, so the
    # output comes out in its own layout
    cols = _exp_rows(_t(p), p.new_empty(N, 1, Wo, p.shape[2]))  # (N, 1, Wo, h + 2)
    out = _exp_rows(_t(cols), p.new_empty(N, 1, Ho, Wo))
    y = out[:, 0].reshape(*x.shape[:-2], Ho, Wo)
    if base is not None:
        torch.add(base, y, alpha=sign, out=y)
    return y
