"""Weights and normalisers of overlapping patches, and the placement of one patch.

A merged pixel is Σ_k w_k·patch_k / Σ_k w_k over the patches covering it. The normaliser
1/Σw is derived from the grid one row of patches at a time (an outer product of per-axis
inverse counts for constant weights), never accumulated from a buffer of all patches, and
each patch is placed with its per-pixel factor w/Σw: the first patch covering a cell writes
it, the others add to it, so no zero fill and no normalisation pass is needed. Every merge
(:func:`~uhrops.tiling.merge_patches`, both sliding-window paths) uses these helpers in the
same order, which is why their results are bitwise equal.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from uhrops import checks
from uhrops.tiling.buffers import empty_buffer, zeros_buffer
from uhrops.tiling.grid import IntPair, as_pair

__all__ = ["PatchPlacer", "cover_splits", "gaussian_weight", "hann_weight", "inverse_norm_band",
           "invert_nonzero_", "patch_factor", "place_patch", "uncovered_spans", "weight_map",
           "weight_sum_rows", "zero_uncovered"]


def gaussian_weight(patch_size: IntPair, sigma_scale: float = 0.125, *,
                    device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """MONAI's Gaussian importance map for one patch.

    Convention:
        Equal to ``monai.data.utils.compute_importance_map(patch, mode="gaussian",
        sigma_scale=0.125)``: per axis exp(-x²/(2σ²)) with x measured from the centre
        (p - 1)/2 and σ = sigma_scale·p, the outer product of the two axes (peak 1 for odd
        sizes), then clamped from below at max(min(map), 1e-3) so that no pixel gets a zero
        weight. The clamp makes the map non-separable. Computed in float64, then cast.

    Args:
        patch_size: p or (ph, pw).
        sigma_scale: σ as a fraction of the patch size.
        device: device of the result.
        dtype: dtype of the result.

    Returns:
        (ph, pw) tensor.

    Example:
        >>> gaussian_weight(8).shape
        torch.Size([8, 8])
    """
    op = "gaussian_weight"
    ph, pw = as_pair(patch_size, "patch_size", op)
    if isinstance(sigma_scale, bool) or not isinstance(sigma_scale, (int, float)):
        raise TypeError(f"{op}(): `sigma_scale` must be a number; got "
                        f"{type(sigma_scale).__name__} {sigma_scale!r}. Fix: e.g. 0.125.")
    if not (math.isfinite(sigma_scale) and sigma_scale > 0):
        raise ValueError(f"{op}(): `sigma_scale` must be a positive finite number (sigma as a "
                         f"fraction of the patch size); got {sigma_scale}. Fix: e.g. 0.125.")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{op}(): `dtype` must be a floating torch.dtype; got {dtype!r}. "
                        f"Fix: e.g. dtype=torch.float32.")
    if device is not None:
        device = checks.check_device(device, "device", op)
    axes = []
    for p in (ph, pw):
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2.0
        axes.append(torch.exp(-(x * x) / (2.0 * (sigma_scale * p) ** 2)))
    w = axes[0][:, None] * axes[1][None, :]
    w = w.clamp(min=max(float(w.min()), 1e-3))
    return w.to(device=device, dtype=dtype)


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
    ph, pw = as_pair(patch_size, "patch_size", op)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{op}(): `dtype` must be a floating torch.dtype; got {dtype!r}. "
                        f"Fix: e.g. dtype=torch.float32.")
    if device is not None:
        device = checks.check_device(device, "device", op)
    axes = [torch.sin(math.pi * (torch.arange(p, dtype=torch.float64) + 0.5) / p) ** 2
            for p in (ph, pw)]
    return (axes[0][:, None] * axes[1][None, :]).to(device=device, dtype=dtype)


def weight_map(weight: object, patch: tuple[int, int], ref: Tensor, op: str,
                mean: bool = False) -> Tensor | None:
    """None, "gaussian", "hann" or a (ph, pw) tensor -> None or a weight tensor on ref's device.

    ``mean``: the weights only enter as w/Σw, so a tensor is rescaled by a power of two that
    brings its maximum into [0.5, 1): exact, so results are unchanged wherever they were
    right, but Σw no longer overflows (a constant 1e38 gave 0) and 1/Σw no longer does
    (a constant 1e-39 gave NaN), and float64 weights far outside float32 survive the cast."""
    wdtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    if weight is None or (isinstance(weight, str) and weight == "constant"):
        return None
    if isinstance(weight, str):
        if weight == "hann":
            return hann_weight(patch, device=ref.device, dtype=wdtype)
        if weight != "gaussian":
            raise ValueError(f"{op}(): `weight` must be None, \"constant\", \"gaussian\", "
                             f"\"hann\" or a (ph, pw) tensor; got {weight!r}.")
        return gaussian_weight(patch, device=ref.device, dtype=wdtype)
    w = checks.check_tensor(weight, "weight", op)
    checks.check_float(w, "weight", op)
    if tuple(w.shape) != patch:
        raise ValueError(f"{op}(): `weight` must have the patch shape {patch}; got "
                         f"{tuple(w.shape)}. Fix: pass a (ph, pw) map of per-pixel weights.")
    checks.check_same_device(op, ref=ref, weight=w)
    if w.device.type != "meta" and not bool(((w >= 0) & torch.isfinite(w)).all()):
        raise ValueError(f"{op}(): `weight` must hold finite, non-negative weights; got values "
                         f"in [{float(w.min())}, {float(w.max())}]. Fix: e.g. weight.clamp(min=0) "
                         f"or weight=\"gaussian\".")
    w = w.detach()
    if mean and w.device.type != "meta" and w.numel():
        top = float(w.max())
        if top > 0:
            e = -math.frexp(top)[1]  # top * 2**e is in [0.5, 1)
            # in float64, in two factors: 2**1074 (a subnormal maximum) overflows as one
            w = w.to(torch.float64) * 2.0 ** (e // 2) * 2.0 ** (e - e // 2)
    return w.to(wdtype).contiguous()


def _axis_counts(starts: Sequence[int], p: int, size: int, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    c = torch.zeros(size, dtype=dtype, device=device)
    for s in starts:
        c[s:min(s + p, size)] += 1
    return c


def weight_sum_rows(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               w: Tensor | None, r0: int, r1: int, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    """Σ of the weights of all patches over rows r0:r1 of the image, (r1 - r0, W)."""
    if w is None:  # constant weights: the count map is separable
        cy = _axis_counts(ys, ph, H, dtype, device)[r0:r1]
        cx = _axis_counts(xs, pw, W, dtype, device)
        out = empty_buffer((r1 - r0, W), dtype, device)
        return torch.mul(cy[:, None], cx[None, :], out=out)
    w = w.to(dtype=dtype, device=device)
    norm = zeros_buffer((r1 - r0, W), dtype, device)
    for y in ys:
        a, b = max(y, r0), min(y + ph, r1, H)
        if a >= b:
            continue
        rows = w[a - y:b - y]
        band = norm[a - r0:b - r0]
        for x in xs:
            e = min(x + pw, W)
            band[:, x:e] += rows[:, :e - x]
    return norm


def invert_nonzero_(norm: Tensor, positive: bool = False) -> Tensor:
    """1 / norm where norm > 0, else 0, in place (``positive``: norm > 0 wherever it is read)."""
    if not positive:
        norm.masked_fill_(norm <= 0, math.inf)
    return norm.reciprocal_()


def _norm_band(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               weight: Tensor, r0: int, r1: int, dtype: torch.dtype, device: torch.device,
               positive: bool) -> Tensor:
    """1 / Σw over rows r0:r1 (weighted case), (r1 - r0, W)."""
    return invert_nonzero_(weight_sum_rows(ys, xs, ph, pw, H, W, weight, r0, r1, dtype, device), positive)


def _inv_counts(starts: Sequence[int], p: int, size: int, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """1 / (number of patches covering each position) along one axis (constant weights)."""
    return invert_nonzero_(_axis_counts(starts, p, size, dtype, device))


def cover_splits(starts: Sequence[int], p: int, size: int) -> list[tuple[int, int, int]]:
    """Per start i: (s, f, e) with e = min(s + p, size): [s, f) is also covered by earlier
    starts (a later patch adds to it), [f, e) by no earlier start (this patch writes it)."""
    ends = [min(s + p, size) for s in starts]
    out = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        f = s if i == 0 else min(max(s, ends[i - 1]), e)
        out.append((s, f, e))
    return out


def uncovered_spans(starts: Sequence[int], p: int, size: int) -> list[tuple[int, int]]:
    """Intervals of [0, size) that no patch covers (empty for every factory-made grid)."""
    gaps, pos = [], 0
    for s in starts:
        if s > pos:
            gaps.append((pos, s))
        pos = max(pos, min(s + p, size))
    if pos < size:
        gaps.append((pos, size))
    return gaps


def patch_factor(band: Tensor | None, weight: Tensor | None, x: int, hh: int,
            ww: int) -> Tensor | None:
    """Per-pixel factor of one patch: weight * inverse normaliser (None means 1)."""
    fac = band[:, x:x + ww] if band is not None else None
    if weight is not None:
        wv = weight[:hh, :ww]
        fac = wv if fac is None else fac * wv
    return fac


def place_patch(dst: Tensor, src: Tensor, fac: Tensor | None, ysplit: tuple[int, int, int],
           xsplit: tuple[int, int, int]) -> None:
    """Accumulate one patch: dst[..., box] (=|+=) fac * src, in at most three rectangles.

    Patches arrive in row-major order, so the part of the box no earlier patch covers (the
    bottom-right rectangle [fy, ey) x [fx, ex)) is written and the L-shaped rest is added to:
    the output needs no zero fill, and with ``fac`` holding w/Σw no normalisation pass."""
    y, fy, ey = ysplit
    x, fx, ex = xsplit
    for ya, yb, xa, xb, write in ((fy, ey, fx, ex, True), (y, fy, x, ex, False),
                                  (fy, ey, x, fx, False)):
        if ya >= yb or xa >= xb:
            continue
        d = dst[:, :, ya:yb, xa:xb]
        s = src[:, :, ya - y:yb - y, xa - x:xb - x]
        if fac is None:
            if write:
                d.copy_(s)
            else:
                d.add_(s)
        else:
            f = fac[ya - y:yb - y, xa - x:xb - x]
            if write:
                torch.mul(s, f, out=d)
            else:
                d.addcmul_(s, f)


def inverse_norm_band(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               weight: Tensor | None, r0: int, r1: int, dtype: torch.dtype,
               device: torch.device, out: Tensor | None = None) -> Tensor:
    """1 / Σw over rows r0:r1, (r1 - r0, W): the outer product of the inverse patch counts
    per axis for constant weights, else summed from the weights of the patches there.
    ``out``: a buffer of at least r1 - r0 rows to write it into (constant weights)."""
    if weight is None:
        icy = _inv_counts(ys, ph, H, dtype, device)[r0:r1]
        icx = _inv_counts(xs, pw, W, dtype, device)
        dst = empty_buffer((r1 - r0, W), dtype, device) if out is None else out[:r1 - r0]
        return torch.mul(icy[:, None], icx[None, :], out=dst)
    return _norm_band(ys, xs, ph, pw, H, W, weight, r0, r1, dtype, device, False)


def zero_uncovered(acc: Tensor, ys: Sequence[int], xs: Sequence[int], ph: int, pw: int) -> None:
    H, W = acc.shape[-2:]
    for a, b in uncovered_spans(ys, ph, H):
        acc[..., a:b, :].zero_()
    for a, b in uncovered_spans(xs, pw, W):
        acc[..., :, a:b].zero_()


class PatchPlacer:
    """Places patch outputs into an accumulator with their per-pixel factors w/Σw, Σw built
    for one patch row at a time (never a full-size normaliser).

    The one place of the merge arithmetic of :func:`~uhrops.tiling.sliding_window`: in memory
    the accumulator is the whole output, streamed it is one patch row's band, and both place
    every patch through :meth:`place` in the same order, so the two give the same bits.
    ``ref`` gives the accumulator's dtype and device; ``norm_out`` (optional) a (ph, W)
    buffer that holds the constant-weight normaliser between rows."""

    def __init__(self, grid: Any, weight: object, reduction: str, ref: Tensor, op: str) -> None:
        self.ys, self.xs = list(grid.ys), list(grid.xs)
        self.ph, self.pw = grid.patch_size
        self.H, self.W = grid.image_size
        self.ysp = cover_splits(self.ys, self.ph, self.H)
        self.xsp = cover_splits(self.xs, self.pw, self.W)
        self.mean = reduction == "mean"
        self.weight = weight_map(weight, (self.ph, self.pw), ref, op, mean=self.mean)
        self.dtype, self.device = ref.dtype, ref.device
        self.norm_out: Tensor | None = None
        self._norm: Tensor | None = None  # 1 / Σw over the rows of patch row `_norm_row`
        self._norm_row = -1

    @property
    def needs_norm_buffer(self) -> bool:
        """True when a constant-weight mean normaliser is built row by row (``norm_out``
        would hold it)."""
        return self.mean and self.weight is None

    def place(self, dst: Tensor, top: int, src: Tensor, index: int) -> None:
        """Accumulate ``src`` (1, C, ph, pw), the output of patch ``index`` (row-major in
        the grid), into ``dst`` whose first row is image row ``top``."""
        gi, gj = divmod(index, len(self.xs))
        y, x = self.ys[gi], self.xs[gj]
        hh, ww = min(self.ph, self.H - y), min(self.pw, self.W - x)
        if self.mean and self._norm_row != gi:
            self._norm = inverse_norm_band(self.ys, self.xs, self.ph, self.pw, self.H, self.W,
                                           self.weight, y, y + hh, self.dtype, self.device,
                                           self.norm_out)
            self._norm_row = gi
        s, f, e = self.ysp[gi]
        place_patch(dst, src, patch_factor(self._norm, self.weight, x, hh, ww),
                    (s - top, f - top, e - top), self.xsp[gj])

    def release(self) -> Tensor | None:
        """Drop the normaliser view and return ``norm_out`` (for the caller's pool)."""
        self._norm, out, self.norm_out = None, self.norm_out, None
        return out
