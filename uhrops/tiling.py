"""Overlap tiling: patch grids, context windows, merging and streaming inference.

Every ultra-high-resolution pipeline crops patches out of an image, crops larger context
windows around them, runs a network on them and merges the results back. This module does
the four steps for any grid of equally sized patches whose starts form a product of one
list of row starts and one list of column starts (every grid built here does):

- :class:`PatchGrid` holds the grid. ``PatchGrid.from_min_overlap`` is the FCtL/GLNet rule
  (6x6 patches at stride 388 on a 2448 image with 508 patches, 11x11 on 5000) and
  ``PatchGrid.from_stride`` mmsegmentation's "slide" rule (the last patch shifted back).
- :func:`extract_patches` gathers the patches, :func:`merge_patches` scatters them back with
  a sum or a weighted mean. The two are adjoint linear maps: the backward of one is the other,
  so nothing but the grid is saved for autograd and no ``CopySlices`` graph is ever recorded.
- :func:`extract_contexts` crops a window ``scale`` times the patch, centred on each patch,
  padded outside the image, and resizes it with (antialiased) bilinear filtering, as FCtL
  does with PIL.
- :func:`sliding_window` streams batches of patches (and contexts) through a callable and
  accumulates the results, so that peak memory is the output plus one batch.

The PyTorch path runs anywhere; the Triton path (CUDA, or the CPU interpreter) has a gather
kernel and an output-centric merge kernel (each output pixel sums the few patches that cover
it, no atomics), each being the other's backward. ``extract_contexts`` has a PyTorch path
only (separable resize: one H pass per row of windows, then one W pass per window).

On Linux, large CPU outputs are advised as transparent huge pages (``madvise``), which makes
the first touch of a fresh multi-MB buffer several times cheaper; nothing else changes.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops._backend import get_backend, resolve, run_with_fallback, use_backend

__all__ = [
    "PatchGrid",
    "extract_patches",
    "extract_contexts",
    "merge_patches",
    "sliding_window",
    "gaussian_weight",
    "ExtractContexts",
    "MergePatches",
]

_HALF = (torch.float16, torch.bfloat16)
IntPair = Union[int, Sequence[int]]


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------


def _pair(value: object, name: str, op: str, minimum: int | None = 1) -> tuple[int, int]:
    """An int or a 2-sequence of ints, as (h, w)."""
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{op}(): `{name}` must be an int or a pair (h, w); got {value!r} "
                             f"with {len(value)} entries. Fix: pass e.g. {name}=(512, 512).")
        h = checks.check_int(value[0], f"{name}[0]", op, minimum)
        w = checks.check_int(value[1], f"{name}[1]", op, minimum)
        return h, w
    v = checks.check_int(value, name, op, minimum)
    return v, v


def _axis_min_overlap(size: int, p: int, min_overlap: float) -> tuple[int, ...]:
    """GLNet's ``get_patch_info`` + ``global2patch`` along one axis."""
    if size <= p:
        return (0,)
    def ok(k: int) -> bool:  # GLNet's test, in the same float arithmetic
        return p - (size - p) / (k - 1) >= min_overlap

    n0 = max(-(-size // p), 2)  # smallest n with n * p >= size (>= 2 since size > p)
    # jump near the answer with the closed form, then settle with the exact (monotone) test
    n = max(n0, math.ceil((size - p) / (p - min_overlap)) - 1)
    while n > n0 and ok(n - 1):
        n -= 1
    while not ok(n):
        n += 1
    step = (size - p) / (n - 1)
    return tuple(int(round(i * step)) for i in range(n - 1)) + (size - p,)


def _axis_stride(size: int, p: int, stride: int) -> tuple[int, ...]:
    """mmsegmentation's ``slide_inference`` rule along one axis (last start shifted back)."""
    if size <= p:
        return (0,)
    n = max(size - p + stride - 1, 0) // stride + 1
    return tuple(max(min(i * stride + p, size) - p, 0) for i in range(n))


@dataclass(frozen=True)
class PatchGrid:
    """A grid of equally sized patches over an image: row starts x column starts.

    Convention:
        - Patch ``k`` (row-major: ``k = i * len(xs) + j``) covers rows ``ys[i] : ys[i] + ph``
          and columns ``xs[j] : xs[j] + pw``; ``boxes`` lists them as (y0, x0, y1, x1) with
          exclusive ends, in that order.
        - Starts are sorted and lie in ``[0, max(size - patch, 0)]``. When the image is
          smaller than the patch along an axis there is one patch at 0 that runs past the
          image: extraction pads it with zeros at the bottom/right, merging drops the part
          outside the image (``padded_size`` is the size the patches see).
        - Both factories cover every pixel. ``from_min_overlap`` reproduces FCtL/GLNet's
          ``get_patch_info`` exactly (starts rounded half to even, like ``np.round``);
          ``from_stride`` reproduces mmsegmentation's ``slide_inference`` (MONAI's grid for
          ``overlap`` is ``from_stride`` with ``stride = int(roi * (1 - overlap))``).

    Args:
        image_size: (H, W) of the image.
        patch_size: (ph, pw) of every patch.
        ys: row starts, sorted.
        xs: column starts, sorted.

    Example:
        >>> g = PatchGrid.from_min_overlap(2448, 508)
        >>> len(g), g.ys[:3]
        (36, (0, 388, 776))
    """

    image_size: tuple[int, int]
    patch_size: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __post_init__(self) -> None:
        op = "PatchGrid"
        object.__setattr__(self, "image_size", _pair(self.image_size, "image_size", op))
        object.__setattr__(self, "patch_size", _pair(self.patch_size, "patch_size", op))
        for name, starts, size, p in (("ys", self.ys, self.image_size[0], self.patch_size[0]),
                                      ("xs", self.xs, self.image_size[1], self.patch_size[1])):
            if not isinstance(starts, (list, tuple)) or len(starts) == 0:
                raise ValueError(f"{op}(): `{name}` must be a non-empty sequence of starts; got "
                                 f"{starts!r}.")
            starts = tuple(checks.check_int(s, f"{name}[i]", op, 0) for s in starts)
            hi = max(size - p, 0)
            if any(s > hi for s in starts) or any(b < a for a, b in zip(starts, starts[1:])):
                raise ValueError(
                    f"{op}(): `{name}` must be sorted starts in [0, {hi}] (image {size}, patch "
                    f"{p}); got {starts}. Fix: build the grid with PatchGrid.from_min_overlap "
                    "or PatchGrid.from_stride.")
            # a repeated start is a stride of 0: the same patch twice, run and merged twice
            dup = next((a for a, b in zip(starts, starts[1:]) if a == b), None)
            if dup is not None:
                raise ValueError(
                    f"{op}(): `{name}` repeats the start {dup} (a stride of 0 pixels: the same "
                    f"patch twice); got {starts}. Fix: pass strictly increasing starts, e.g. "
                    f"sorted(set({name})).")
            object.__setattr__(self, name, starts)

    @classmethod
    def from_min_overlap(cls, image_size: IntPair, patch_size: IntPair,
                         min_overlap: float = 50) -> "PatchGrid":
        """The FCtL/GLNet grid: per axis the fewest patches overlapping by >= ``min_overlap``.

        Convention:
            Per axis with size S > patch p: n is the smallest count with n·p >= S and
            p - (S - p)/(n - 1) >= min_overlap; starts are round(i·(S - p)/(n - 1)) for
            i < n - 1 and the last one is S - p (flush with the border). S <= p gives one
            patch at 0 (padded). 2448/508 -> 6 starts at stride 388 (overlap 120);
            5000/508 -> 11 starts at stride 449.2 (rounded per patch). The stride
            (S - p)/(n - 1) is at most p - min_overlap, so ``min_overlap`` above p - 1 would
            make it less than one pixel (repeated starts; 2.999 on 3-pixel patches of a
            10x10 image asked for 49 million patches): it is refused.

        Args:
            image_size: H or (H, W).
            patch_size: p or (ph, pw).
            min_overlap: minimal overlap in pixels, 0 <= min_overlap <= patch - 1
                (checked along the axes that need more than one patch).

        Returns:
            The grid.

        Example:
            >>> PatchGrid.from_min_overlap(5000, 508).grid_shape
            (11, 11)
        """
        op = "PatchGrid.from_min_overlap"
        size = _pair(image_size, "image_size", op)
        patch = _pair(patch_size, "patch_size", op)
        if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)):
            raise TypeError(f"{op}(): `min_overlap` must be a number of pixels; got "
                            f"{type(min_overlap).__name__} {min_overlap!r}.")
        # along an axis with more than one patch the overlap must stay below the patch size
        limit = min([p for p, sz in zip(patch, size) if sz > p], default=math.inf)
        if not (0 <= min_overlap < limit) or not math.isfinite(min_overlap):
            raise ValueError(f"{op}(): `min_overlap` must be in [0, {limit}) (below the patch "
                             f"size {patch} along axes the image {size} exceeds); got "
                             f"{min_overlap}. Fix: use a smaller overlap or a larger patch.")
        # The rule's stride is <= patch - min_overlap: below one pixel the starts repeat and
        # the patch count explodes (2.999 on a 3-pixel patch: 7000 starts per axis).
        if min_overlap > limit - 1:
            raise ValueError(f"{op}(): `min_overlap` {min_overlap} leaves a stride of at most "
                             f"{limit} - {min_overlap} = {limit - min_overlap:.3g} pixels "
                             f"between patches of {limit} (below one pixel, the starts repeat); "
                             f"got image {size}, patch {patch}. Fix: use "
                             f"min_overlap <= {limit - 1} (stride 1) or a larger patch.")
        return cls(size, patch, _axis_min_overlap(size[0], patch[0], min_overlap),
                   _axis_min_overlap(size[1], patch[1], min_overlap))

    @classmethod
    def from_stride(cls, image_size: IntPair, patch_size: IntPair,
                    stride: IntPair) -> "PatchGrid":
        """mmsegmentation's "slide" grid: starts every ``stride``, the last shifted back.

        Convention:
            Per axis: n = max(S - p + stride - 1, 0) // stride + 1 patches starting at
            i·stride, except that a patch that would run past the border is moved back to
            end at it (start S - p). S <= p gives one patch at 0 (padded; mmsegmentation
            would run the network on the whole smaller image instead). MONAI's
            ``sliding_window_inference(roi, overlap)`` uses this grid with
            ``stride = max(int(roi * (1 - overlap)), 1)``.

        Args:
            image_size: H or (H, W).
            patch_size: p or (ph, pw).
            stride: s or (sh, sw), 1 <= stride <= patch (a larger stride leaves gaps; a
                stride below one pixel would repeat starts).

        Returns:
            The grid.

        Example:
            >>> len(PatchGrid.from_stride(2448, 508, 381))
            49
        """
        op = "PatchGrid.from_stride"
        size = _pair(image_size, "image_size", op)
        patch = _pair(patch_size, "patch_size", op)
        st = _pair(stride, "stride", op, minimum=None)
        if st[0] < 1 or st[1] < 1:
            raise ValueError(f"{op}(): `stride` {st} has a step below one pixel (every patch "
                             "would start at the same place, or move backwards). Fix: use "
                             "1 <= stride <= patch_size (1 = a patch at every pixel).")
        if st[0] > patch[0] or st[1] > patch[1]:
            raise ValueError(f"{op}(): `stride` {st} is larger than `patch_size` {patch}, which "
                             "would leave pixels uncovered. Fix: use stride <= patch_size.")
        return cls(size, patch, _axis_stride(size[0], patch[0], st[0]),
                   _axis_stride(size[1], patch[1], st[1]))

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(number of patch rows, number of patch columns)."""
        return len(self.ys), len(self.xs)

    @property
    def padded_size(self) -> tuple[int, int]:
        """(max(H, ph), max(W, pw)): the extent the patches cover."""
        return (max(self.image_size[0], self.patch_size[0]),
                max(self.image_size[1], self.patch_size[1]))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def boxes(self) -> Tensor:
        """(N, 4) int64 tensor of (y0, x0, y1, x1), row-major, ends exclusive."""
        ph, pw = self.patch_size
        rows = [(y, x, y + ph, x + pw) for y in self.ys for x in self.xs]
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)


def _check_grid(grid: object, op: str) -> PatchGrid:
    if not isinstance(grid, PatchGrid):
        raise TypeError(f"{op}(): `grid` must be a uhrops PatchGrid; got {type(grid).__name__}. "
                        "Fix: build one with PatchGrid.from_min_overlap(image.shape[-2:], "
                        "patch_size) or PatchGrid.from_stride(...).")
    return grid


def _check_image_grid(image: Tensor, grid: PatchGrid, op: str, name: str = "image") -> None:
    hw = (image.shape[-2], image.shape[-1])
    if hw != grid.image_size:
        raise ValueError(f"{op}(): `{name}` is {hw[0]}x{hw[1]} but the grid was built for "
                         f"{grid.image_size[0]}x{grid.image_size[1]}. Fix: build the grid "
                         f"from {name}.shape[-2:].")


# --------------------------------------------------------------------------------------------
# Weights and normalisers
# --------------------------------------------------------------------------------------------


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
    ph, pw = _pair(patch_size, "patch_size", op)
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


def _weight_map(weight: object, patch: tuple[int, int], ref: Tensor, op: str,
                mean: bool = False) -> Tensor | None:
    """None, "gaussian" or a (ph, pw) tensor -> None or a weight tensor on ref's device.

    ``mean``: the weights only enter as w/Σw, so a tensor is rescaled by a power of two that
    brings its maximum into [0.5, 1): exact, so results are unchanged wherever they were
    right, but Σw no longer overflows (a constant 1e38 gave 0) and 1/Σw no longer does
    (a constant 1e-39 gave NaN), and float64 weights far outside float32 survive the cast."""
    wdtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
    if weight is None or (isinstance(weight, str) and weight == "constant"):
        return None
    if isinstance(weight, str):
        if weight != "gaussian":
            raise ValueError(f"{op}(): `weight` must be None, \"constant\", \"gaussian\" or a "
                             f"(ph, pw) tensor; got {weight!r}.")
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


def _norm_rows(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               w: Tensor | None, r0: int, r1: int, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    """Σ of the weights of all patches over rows r0:r1 of the image, (r1 - r0, W)."""
    if w is None:  # constant weights: the count map is separable
        cy = _axis_counts(ys, ph, H, dtype, device)[r0:r1]
        cx = _axis_counts(xs, pw, W, dtype, device)
        out = _empty((r1 - r0, W), dtype, device)
        return torch.mul(cy[:, None], cx[None, :], out=out)
    w = w.to(dtype=dtype, device=device)
    norm = _zeros((r1 - r0, W), dtype, device)
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


def _inv_(norm: Tensor, positive: bool = False) -> Tensor:
    """1 / norm where norm > 0, else 0, in place (``positive``: norm > 0 wherever it is read)."""
    if not positive:
        norm.masked_fill_(norm <= 0, math.inf)
    return norm.reciprocal_()


def _norm_band(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               weight: Tensor, r0: int, r1: int, dtype: torch.dtype, device: torch.device,
               positive: bool) -> Tensor:
    """1 / Σw over rows r0:r1 (weighted case), (r1 - r0, W)."""
    return _inv_(_norm_rows(ys, xs, ph, pw, H, W, weight, r0, r1, dtype, device), positive)


def _inv_counts(starts: Sequence[int], p: int, size: int, dtype: torch.dtype,
                device: torch.device) -> Tensor:
    """1 / (number of patches covering each position) along one axis (constant weights)."""
    return _inv_(_axis_counts(starts, p, size, dtype, device))


def _splits(starts: Sequence[int], p: int, size: int) -> list[tuple[int, int, int]]:
    """Per start i: (s, f, e) with e = min(s + p, size): [s, f) is also covered by earlier
    starts (a later patch adds to it), [f, e) by no earlier start (this patch writes it)."""
    ends = [min(s + p, size) for s in starts]
    out = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        f = s if i == 0 else min(max(s, ends[i - 1]), e)
        out.append((s, f, e))
    return out


def _uncovered(starts: Sequence[int], p: int, size: int) -> list[tuple[int, int]]:
    """Intervals of [0, size) that no patch covers (empty for every factory-made grid)."""
    gaps, pos = [], 0
    for s in starts:
        if s > pos:
            gaps.append((pos, s))
        pos = max(pos, min(s + p, size))
    if pos < size:
        gaps.append((pos, size))
    return gaps


def _factor(band: Tensor | None, weight: Tensor | None, x: int, hh: int,
            ww: int) -> Tensor | None:
    """Per-pixel factor of one patch: weight * inverse normaliser (None means 1)."""
    fac = band[:, x:x + ww] if band is not None else None
    if weight is not None:
        wv = weight[:hh, :ww]
        fac = wv if fac is None else fac * wv
    return fac


def _place(dst: Tensor, src: Tensor, fac: Tensor | None, ysplit: tuple[int, int, int],
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


def _mean_band(ys: Sequence[int], xs: Sequence[int], ph: int, pw: int, H: int, W: int,
               weight: Tensor | None, r0: int, r1: int, dtype: torch.dtype,
               device: torch.device, out: Tensor | None = None) -> Tensor:
    """1 / Σw over rows r0:r1, (r1 - r0, W): the outer product of the inverse patch counts
    per axis for constant weights, else summed from the weights of the patches there.
    ``out``: a buffer of at least r1 - r0 rows to write it into (constant weights)."""
    if weight is None:
        icy = _inv_counts(ys, ph, H, dtype, device)[r0:r1]
        icx = _inv_counts(xs, pw, W, dtype, device)
        dst = _empty((r1 - r0, W), dtype, device) if out is None else out[:r1 - r0]
        return torch.mul(icy[:, None], icx[None, :], out=dst)
    return _norm_band(ys, xs, ph, pw, H, W, weight, r0, r1, dtype, device, False)


def _zero_gaps(acc: Tensor, ys: Sequence[int], xs: Sequence[int], ph: int, pw: int) -> None:
    H, W = acc.shape[-2:]
    for a, b in _uncovered(ys, ph, H):
        acc[..., a:b, :].zero_()
    for a, b in _uncovered(xs, pw, W):
        acc[..., :, a:b].zero_()


def _fdtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Large CPU buffers. A fresh multi-MB tensor is an mmap whose 4 KiB pages fault in one by one on
# first touch; on Linux with transparent huge pages in "madvise" mode, advising the range as
# MADV_HUGEPAGE makes the first touch ~4x cheaper (what PyTorch's THP_MEM_ALLOC_ENABLE does
# for every allocation). Best effort: anything unexpected falls back to plain torch.empty.
# --------------------------------------------------------------------------------------------

_MADV_HUGEPAGE = 14
_HUGE_MIN_BYTES = 8 << 20
_madvise: Any = None


def _get_madvise() -> Any:
    global _madvise
    if _madvise is None:
        _madvise = False
        try:
            import ctypes
            import sys

            if sys.platform.startswith("linux"):
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
        except Exception:  # no libc / not Linux
            _madvise = False
    return _madvise


def _empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """torch.empty, with huge pages advised for large CPU buffers (outside torch.compile)."""
    t = torch.empty(tuple(shape), dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if t.device.type == "cpu" and nbytes >= _HUGE_MIN_BYTES \
            and not torch.compiler.is_compiling():
        fn = _get_madvise()
        if fn:
            p = t.data_ptr()
            a = (p + 4095) & ~4095
            length = ((p + nbytes) & ~4095) - a
            if length > 0:
                fn(a, length, _MADV_HUGEPAGE)  # advisory: the return value does not matter
    return t


def _zeros(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    return _empty(shape, dtype, device).zero_()


# Buffers kept between sliding_window calls. A fresh multi-MB CPU tensor is a fresh mmap:
# every page faults in on first touch and, under memory pressure, the kernel compacts memory
# for huge pages in the middle of the call (stalls of 2-3x the median call seen at 2448²).
# The output and the batch buffers of a call are kept here when it returns; a later call with
# the same shapes takes them back once nothing else references them (the caller dropped the
# output: checked on the Python object and on its storage), so a steady loop over images of
# one size touches no new page. Like PyTorch's CUDA caching allocator, this holds memory the
# caller has freed: at most _POOL_BYTES, CPU only; _release_buffers() frees it.
_POOL_BYTES = 1 << 30
_POOL_MIN_BYTES = 1 << 20  # smaller ones come from malloc's heap (no fresh mmap each time)
_pool: list[Tensor] = []
_pool_lock = threading.Lock()  # calls from several threads never get the same buffer


def _unreferenced(t: Tensor, extra: int) -> bool:
    """Only the pool (and ``extra`` local names) hold ``t`` and its storage."""
    try:
        # the list entry, getrefcount's argument, this frame's `t` and the caller's names
        if sys.getrefcount(t) > 3 + extra or t._base is not None:
            return False
        # 2: the tensor and the storage object made for this call
        return torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2
    except Exception:  # private API gone: never reuse
        return False


def _pooled_empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """_empty, or an idle pooled buffer of exactly that shape, dtype and device."""
    shape = tuple(int(v) for v in shape)
    with _pool_lock:
        for i in range(len(_pool)):  # (enumerate's tuple would hold one more reference)
            t = _pool[i]
            if t.shape == shape and t.dtype == dtype and t.device == device \
                    and _unreferenced(t, 1):
                return _pool.pop(i)
    return _empty(shape, dtype, device)


def _pool_keep(*tensors: Tensor | None) -> None:
    """Offer buffers for reuse by later calls (CPU, up to _POOL_BYTES, newest kept)."""
    with _pool_lock:
        _keep_locked(tensors)


def _keep_locked(tensors: Sequence[Tensor | None]) -> None:
    global _pool
    for t in tensors:
        if t is None or t.device.type != "cpu" or t.numel() * t.element_size() < _POOL_MIN_BYTES \
                or any(t is q for q in _pool):
            continue
        _pool.insert(0, t)
    total, kept = 0, []
    for t in _pool:
        total += t.numel() * t.element_size()
        if total <= _POOL_BYTES:
            kept.append(t)
    _pool = kept


def _release_buffers() -> None:
    """Drop the buffers sliding_window keeps for reuse (see _pool)."""
    with _pool_lock:
        _pool.clear()

# --------------------------------------------------------------------------------------------
# PyTorch reference path (no autograd inside: the custom ops provide the backward)
# --------------------------------------------------------------------------------------------


def _gather_torch(image: Tensor, weight: Tensor | None, ys: List[int], xs: List[int], ph: int,
                  pw: int, normalize: bool) -> Tensor:
    """out[b, i*nx + j] = f * image[b][ys[i]:+ph, xs[j]:+pw], zero outside the image, where
    f = weight (or 1), divided by Σw of all patches at that pixel when `normalize`."""
    B, C, H, W = image.shape
    n = len(ys) * len(xs)
    out = _empty((B, n, C, ph, pw), image.dtype, image.device)
    fd = _fdtype(image.dtype)
    k = 0
    for y in ys:
        hh = min(ph, H - y)
        band = (_mean_band(ys, xs, ph, pw, H, W, weight, y, y + hh, fd, image.device)
                if normalize else None)
        for x in xs:
            ww = min(pw, W - x)
            dst = out[:, k]
            k += 1
            if hh < ph or ww < pw:
                dst.zero_()
            src = image[:, :, y:y + hh, x:x + ww]
            d = dst[:, :, :hh, :ww]
            fac = _factor(band, weight, x, hh, ww)
            if fac is None:
                d.copy_(src)
            else:
                torch.mul(src, fac, out=d)
    return out.view(B * n, C, ph, pw)


def _scatter_torch(patches: Tensor, weight: Tensor | None, ys: List[int], xs: List[int], H: int,
                   W: int, normalize: bool) -> Tensor:
    """out[b] = Σ_k place_k(f * patches[b*N + k]) (f as in _gather_torch); parts outside the
    image are dropped. Cell by cell: first writer copies, the others add; one pass."""
    n = len(ys) * len(xs)
    BN, C, ph, pw = patches.shape
    B = BN // n
    acc_dtype = torch.float32 if patches.dtype in _HALF else patches.dtype
    acc = _empty((B, C, H, W), acc_dtype, patches.device)
    _zero_gaps(acc, ys, xs, ph, pw)
    p = patches.reshape(B, n, C, ph, pw)
    ysp, xsp = _splits(ys, ph, H), _splits(xs, pw, W)
    fd = _fdtype(patches.dtype)
    k = 0
    for i, y in enumerate(ys):
        hh = min(ph, H - y)
        band = (_mean_band(ys, xs, ph, pw, H, W, weight, y, y + hh, fd, patches.device)
                if normalize else None)
        for j, x in enumerate(xs):
            ww = min(pw, W - x)
            _place(acc, p[:, k], _factor(band, weight, x, hh, ww), ysp[i], xsp[j])
            k += 1
    return acc if acc_dtype == patches.dtype else acc.to(patches.dtype)


def _window_slices(y: int, L: int, size: int) -> tuple[int, int]:
    """Part [a, b) of the image inside the window [y, y + L) (a >= b when empty)."""
    return max(y, 0), min(y + L, size)


def _resize(t: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    if tuple(t.shape[-2:]) == size:
        return t
    if antialias and size[1] == 1 and t.shape[-2] != size[0]:
        # torch's antialiased forward ignores the H filter when the output is one column wide
        # (torch 2.4-2.13: (2, 1) -> (3, 1) copies row 0); resizing the transpose is exact.
        return F.interpolate(t.transpose(-1, -2), size=(size[1], size[0]), mode="bilinear",
                             align_corners=False, antialias=True).transpose(-1, -2)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def _resize_bwd(g: Tensor, in_shape: Sequence[int], antialias: bool) -> Tensor:
    if tuple(g.shape[-2:]) == tuple(in_shape[-2:]):
        return g
    back = (torch.ops.aten._upsample_bilinear2d_aa_backward if antialias
            else torch.ops.aten.upsample_bilinear2d_backward)
    return back(g.contiguous(), list(g.shape[-2:]), list(in_shape), False)


def _contexts_torch(image: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, oh: int,
                    ow: int, pad_value: float, antialias: bool) -> Tensor:
    """Padded windows [y, y+wh) x [x, x+ww) (product grid) resized to (oh, ow).

    The bilinear (antialiased) resize is separable, so each row of windows is first resized
    along H once for the whole image width (a pad_value row stays pad_value), then each
    window along W: about 3x less work than resizing every window in 2-D."""
    B, C, H, W = image.shape
    n = len(ys) * len(xs)
    out = _empty((B, n, C, oh, ow), image.dtype, image.device)
    cdtype = torch.float32 if image.dtype in _HALF else image.dtype
    k = 0
    for y in ys:
        a, b = _window_slices(y, wh, H)
        if a == y and b == y + wh:
            rows = image[:, :, a:b].to(cdtype)
        else:
            rows = torch.full((B, C, wh, W), pad_value, dtype=cdtype, device=image.device)
            if a < b:
                rows[:, :, a - y:b - y] = image[:, :, a:b]
        vert = _resize(rows, (oh, W), antialias)  # (B, C, oh, W)
        del rows
        for x in xs:
            c, d = _window_slices(x, ww, W)
            if c == x and d == x + ww:
                win = vert[:, :, :, c:d]
            else:
                win = torch.full((B, C, oh, ww), pad_value, dtype=cdtype, device=image.device)
                if c < d:
                    win[:, :, :, c - x:d - x] = vert[:, :, :, c:d]
            out[:, k] = _resize(win, (oh, ow), antialias)
            k += 1
    return out.view(B * n, C, oh, ow)


def _contexts_backward_torch(grad: Tensor, ys: List[int], xs: List[int], wh: int, ww: int,
                             H: int, W: int, antialias: bool) -> Tensor:
    """Adjoint of _contexts_torch (without the pad_value constant): W then H, per row."""
    n = len(ys) * len(xs)
    BN, C, oh, ow = grad.shape
    B = BN // n
    cdtype = torch.float32 if grad.dtype in _HALF else grad.dtype
    g = grad.reshape(B, n, C, oh, ow)
    acc = _zeros((B, C, H, W), cdtype, grad.device)
    k = 0
    for y in ys:
        a, b = _window_slices(y, wh, H)
        gvert = torch.zeros((B, C, oh, W), dtype=cdtype, device=grad.device)
        for x in xs:
            c, d = _window_slices(x, ww, W)
            gk = g[:, k].to(cdtype)
            k += 1
            if a >= b or c >= d:
                continue
            gw = _resize_bwd(gk, (B, C, oh, ww), antialias)
            gvert[:, :, :, c:d] += gw[:, :, :, c - x:d - x]
        if a >= b:
            continue
        grows = _resize_bwd(gvert, (B, C, wh, W), antialias)
        acc[:, :, a:b] += grows[:, :, a - y:b - y]
    return acc if cdtype == grad.dtype else acc.to(grad.dtype)


# --------------------------------------------------------------------------------------------
# Triton path helpers (the kernels live in uhrops/kernels/tiling.py)
# --------------------------------------------------------------------------------------------


def _tile_ranges(starts: List[int], p: int, size: int, block: int) -> tuple[list[int], list[int]]:
    """For each block of `block` output pixels, the range [lo, hi) of starts covering it."""
    ends = [s + p for s in starts]
    lo, hi = [], []
    for t0 in range(0, size, block):
        t1 = min(t0 + block, size)
        lo.append(bisect.bisect_right(ends, t0))  # first patch with end > t0
        hi.append(bisect.bisect_left(starts, t1))  # patches with start < t1
    return lo, hi


def _gather_triton(image: Tensor, weight: Tensor | None, ys: List[int], xs: List[int], ph: int,
                   pw: int, normalize: bool) -> Tensor:
    from uhrops.kernels import tiling as K

    H, W = image.shape[-2:]
    norm = None
    if normalize:
        norm = _inv_(_norm_rows(ys, xs, ph, pw, H, W, weight, 0, H, _fdtype(image.dtype),
                                image.device))
    return K.gather(image, weight, norm, ys, xs, ph, pw)


def _scatter_triton(patches: Tensor, weight: Tensor | None, ys: List[int], xs: List[int], H: int,
                    W: int, normalize: bool) -> Tensor:
    from uhrops.kernels import tiling as K

    bh, bw = K.SCATTER_BLOCK
    ylo, yhi = _tile_ranges(ys, patches.shape[-2], H, bh)
    xlo, xhi = _tile_ranges(xs, patches.shape[-1], W, bw)
    return K.scatter(patches, weight, normalize, ys, xs, H, W, ylo, yhi, xlo, xhi)


# --------------------------------------------------------------------------------------------
# Custom ops. gather and scatter (with the same weight and normalisation) are adjoint, so each
# one's backward is the other; the weight is a constant (no gradient), and the normaliser is
# derived from the grid inside the ops (nothing image-sized is saved for the backward).
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("uhrops::tile_gather", mutates_args=())
def _gather_op(image: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int], ph: int,
               pw: int, normalize: bool, backend: str) -> Tensor:
    return run_with_fallback("extract_patches", backend, lambda path: (
        _gather_triton if path == "triton" else _gather_torch)(
            image, weight, ys, xs, ph, pw, normalize), image)


@_gather_op.register_fake
def _(image, weight, ys, xs, ph, pw, normalize, backend):
    B, C = image.shape[0], image.shape[1]
    return image.new_empty((B * len(ys) * len(xs), C, ph, pw))


@torch.library.custom_op("uhrops::tile_scatter", mutates_args=())
def _scatter_op(patches: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int],
                height: int, width: int, normalize: bool, backend: str) -> Tensor:
    return run_with_fallback("merge_patches", backend, lambda path: (
        _scatter_triton if path == "triton" else _scatter_torch)(
            patches, weight, ys, xs, height, width, normalize), patches)


@_scatter_op.register_fake
def _(patches, weight, ys, xs, height, width, normalize, backend):
    n = len(ys) * len(xs)
    return patches.new_empty((patches.shape[0] // n, patches.shape[1], height, width))


def _gather_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    image, weight, ys, xs, ph, pw, normalize, backend = inputs
    ctx.args = (ys, xs, image.shape[-2], image.shape[-1], normalize, backend)
    ctx.save_for_backward(weight)


def _gather_bwd(ctx: Any, grad: Tensor):
    (weight,) = ctx.saved_tensors
    ys, xs, H, W, normalize, backend = ctx.args
    g = _scatter_op(grad.contiguous(), weight, ys, xs, H, W, normalize, backend)
    return g, None, None, None, None, None, None, None


def _scatter_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    patches, weight, ys, xs, height, width, normalize, backend = inputs
    ctx.args = (ys, xs, patches.shape[-2], patches.shape[-1], normalize, backend)
    ctx.save_for_backward(weight)


def _scatter_bwd(ctx: Any, grad: Tensor):
    (weight,) = ctx.saved_tensors
    ys, xs, ph, pw, normalize, backend = ctx.args
    g = _gather_op(grad.contiguous(), weight, ys, xs, ph, pw, normalize, backend)
    return g, None, None, None, None, None, None, None


_gather_op.register_autograd(_gather_bwd, setup_context=_gather_setup)
_scatter_op.register_autograd(_scatter_bwd, setup_context=_scatter_setup)


@torch.library.custom_op("uhrops::tile_contexts", mutates_args=())
def _contexts_op(image: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, oh: int, ow: int,
                 pad_value: float, antialias: bool, backend: str) -> Tensor:
    return _contexts_torch(image, ys, xs, wh, ww, oh, ow, pad_value, antialias)


@_contexts_op.register_fake
def _(image, ys, xs, wh, ww, oh, ow, pad_value, antialias, backend):
    return image.new_empty((image.shape[0] * len(ys) * len(xs), image.shape[1], oh, ow))


@torch.library.custom_op("uhrops::tile_contexts_backward", mutates_args=())
def _contexts_bwd_op(grad: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, height: int,
                     width: int, antialias: bool, backend: str) -> Tensor:
    return _contexts_backward_torch(grad, ys, xs, wh, ww, height, width, antialias)


@_contexts_bwd_op.register_fake
def _(grad, ys, xs, wh, ww, height, width, antialias, backend):
    n = len(ys) * len(xs)
    return grad.new_empty((grad.shape[0] // n, grad.shape[1], height, width))


def _contexts_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    image, ys, xs, wh, ww, oh, ow, pad_value, antialias, backend = inputs
    ctx.args = (ys, xs, wh, ww, image.shape[-2], image.shape[-1], antialias, backend)


def _contexts_bwd(ctx: Any, grad: Tensor):
    ys, xs, wh, ww, H, W, antialias, backend = ctx.args
    g = _contexts_bwd_op(grad.contiguous(), ys, xs, wh, ww, H, W, antialias, backend)
    return g, None, None, None, None, None, None, None, None, None


def _contexts_bwd_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    grad, ys, xs, wh, ww, height, width, antialias, backend = inputs
    ctx.args = (ys, xs, wh, ww, grad.shape[-2], grad.shape[-1], antialias, backend)


def _contexts_bwd_bwd(ctx: Any, gg: Tensor):
    # the backward is linear in `grad`; its adjoint is the forward without the padding constant
    ys, xs, wh, ww, oh, ow, antialias, backend = ctx.args
    g = _contexts_op(gg.contiguous(), ys, xs, wh, ww, oh, ow, 0.0, antialias, backend)
    return g, None, None, None, None, None, None, None, None


_contexts_op.register_autograd(_contexts_bwd, setup_context=_contexts_setup)
_contexts_bwd_op.register_autograd(_contexts_bwd_bwd, setup_context=_contexts_bwd_setup)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def extract_patches(image: Tensor, grid: PatchGrid) -> Tensor:
    """Crop every patch of ``grid`` out of ``image``.

    Convention:
        - image (B, C, H, W) -> (B·N, C, ph, pw), batch-major then row-major: patch k of
          image b is at ``b * len(grid) + k`` (k as in ``grid.boxes``).
        - Patches that run past a small image are zero-padded at the bottom/right.
        - Any float dtype; strided and channels_last inputs are read as they are; the output
          is a fresh contiguous tensor (never a view of ``image``). The Triton kernel
          computes in float32, so float64 takes the PyTorch path ("triton" raises).
        - Differentiable; the backward is :func:`merge_patches` with ``reduction="sum"``.
          Unlike kornia's ``extract_tensor_patches`` the grid need not be regular.

    Args:
        image: (B, C, H, W) floating tensor with (H, W) == ``grid.image_size``.
        grid: the patch grid.

    Returns:
        (B·N, C, ph, pw) tensor.

    Example:
        >>> x = torch.rand(1, 3, 64, 64)
        >>> extract_patches(x, PatchGrid.from_stride(64, 32, 16)).shape
        torch.Size([9, 3, 32, 32])
    """
    op = "extract_patches"
    image = checks.check_image(image, "image", op)
    grid = _check_grid(grid, op)
    _check_image_grid(image, grid, op)
    backend = resolve(op, image, has_triton=image.dtype != torch.float64)
    ph, pw = grid.patch_size
    return _gather_op(image, None, list(grid.ys), list(grid.xs), ph, pw, False, backend)


def merge_patches(patches: Tensor, grid: PatchGrid, reduction: str = "mean",
                  weight: Union[str, Tensor, None] = None) -> Tensor:
    """Put patches back into an image, summing or averaging where they overlap.

    Convention:
        - patches (B·N, C, ph, pw) in the order of :func:`extract_patches` -> (B, C, H, W).
        - ``reduction="sum"``: out = Σ_k w·patch_k (FCtL's summed logits when w is None).
          ``reduction="mean"``: out = Σ_k w·patch_k / Σ_k w, i.e. the weighted average of the
          patches covering each pixel (a pixel no patch covers would be 0).
        - ``weight``: None or "constant" (all ones), "gaussian" (MONAI's importance map,
          σ = 0.125·patch, floored at 1e-3; see :func:`gaussian_weight`) or a non-negative
          (ph, pw) tensor. The weight is a constant: no gradient flows into it.
        - The normaliser Σw is derived from the grid (per-cell patch counts for constant
          weights, one row of patches at a time otherwise), never accumulated from a fold
          buffer of all patches. The output is written cell by cell (cells = the pieces
          between patch borders): the first patch covering a cell writes w/Σw·patch, the
          others add theirs, so there is no zero fill and no separate normalisation pass.
          Parts of patches outside a small image are dropped.
        - fp16/bf16 patches are accumulated in float32 and returned in their dtype. The
          Triton kernel computes in float32, so float64 takes the PyTorch path.
        - Differentiable; the backward is the weighted crop of grad/Σw (one gather), so
          nothing is saved but the weight and the normaliser.

    Args:
        patches: (B·N, C, ph, pw) floating tensor, N = ``len(grid)``.
        grid: the grid the patches come from.
        reduction: "mean" or "sum".
        weight: None, "constant", "gaussian" or a (ph, pw) tensor.

    Returns:
        (B, C, H, W) tensor.

    Example:
        >>> g = PatchGrid.from_stride(64, 32, 16)
        >>> x = torch.rand(2, 3, 64, 64)
        >>> torch.allclose(merge_patches(extract_patches(x, g), g), x)
        True
    """
    op = "merge_patches"
    patches = checks.check_tensor(patches, "patches", op)
    checks.check_rank(patches, "patches", op, 4, "(B*N, C, ph, pw)")
    checks.check_float(patches, "patches", op)
    grid = _check_grid(grid, op)
    checks.check_choice(reduction, "reduction", op, ("mean", "sum"))
    n = len(grid)
    if tuple(patches.shape[-2:]) != grid.patch_size:
        raise ValueError(f"{op}(): `patches` are {patches.shape[-2]}x{patches.shape[-1]} but "
                         f"the grid's patch size is {grid.patch_size[0]}x{grid.patch_size[1]}. "
                         "Fix: resize the network output to the patch size first.")
    if patches.shape[0] == 0 or patches.shape[0] % n:
        raise ValueError(f"{op}(): `patches` holds {patches.shape[0]} patches, which is not a "
                         f"positive multiple of the grid's {n} patches. Fix: pass B*{n} "
                         "patches in the order extract_patches returns them.")
    w = _weight_map(weight, grid.patch_size, patches, op, mean=reduction == "mean")
    backend = resolve(op, patches, has_triton=patches.dtype != torch.float64)
    H, W = grid.image_size
    return _scatter_op(patches, w, list(grid.ys), list(grid.xs), H, W, reduction == "mean",
                       backend)


def _context_window(grid: PatchGrid, scale: float) -> tuple[int, int, int, int]:
    """(wh, ww, top offset, left offset) of the context window for ``scale``."""
    ph, pw = grid.patch_size
    wh = max(int(math.floor(scale * ph + 0.5)), 1)
    ww = max(int(math.floor(scale * pw + 0.5)), 1)
    return wh, ww, (wh - ph) // 2, (ww - pw) // 2


def _check_scale(scale: object, op: str, name: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{op}(): `{name}` must be a number (the context scale: its size as a "
                        f"multiple of the patch size); got {type(scale).__name__} {scale!r}.")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}(): `{name}` (a context scale) must be a positive finite number; "
                         f"got {scale}. Fix: e.g. 3 for FCtL's x3 context.")
    return float(scale)


def extract_contexts(image: Tensor, grid: PatchGrid, scale: float,
                     size: IntPair | None = None, pad_value: float = 0.0,
                     antialias: bool = True) -> Tensor:
    """Crop a window ``scale`` times the patch around every patch and resize it.

    Convention:
        - The window of patch (y0, x0) is Lh x Lw = round(scale·ph) x round(scale·pw) pixels
          starting at (y0 - ⌊(Lh - ph)/2⌋, x0 - ⌊(Lw - pw)/2⌋): exactly centred when Lh - ph
          is even (FCtL's x1.5 ... x4 on 508 px patches), otherwise with the extra pixel at the
          bottom/right. Pixels outside the image read ``pad_value`` (FCtL pads black, 0).
        - The window is resized to ``size`` (default the patch size) with bilinear filtering,
          half-pixel centres (align_corners=False); with ``antialias=True`` the filter is
          widened when shrinking, which is PIL's ``Image.resize(..., BILINEAR)`` (what FCtL
          uses; within 1-2/255 on uint8 images), with ``antialias=False`` it is
          ``F.interpolate(mode="bilinear")``.
        - Output (B·N, C, oh, ow), batch-major then row-major like :func:`extract_patches`.
        - fp16/bf16 are resized in float32. Differentiable with respect to ``image`` (the
          backward scatters the adjoint of each resize back into the image).
        - PyTorch path only (a Triton kernel did not pay here); ``use_backend("triton")``
          raises BackendUnavailableError.

    Args:
        image: (B, C, H, W) floating tensor with (H, W) == ``grid.image_size``.
        grid: the patch grid.
        scale: window size as a multiple of the patch size (> 0, need not be an integer).
        size: output size oh or (oh, ow); default ``grid.patch_size``.
        pad_value: value of the pixels outside the image.
        antialias: antialiased (PIL-like) bilinear when shrinking.

    Returns:
        (B·N, C, oh, ow) tensor.

    Example:
        >>> g = PatchGrid.from_min_overlap(96, 32, 8)
        >>> extract_contexts(torch.rand(1, 3, 96, 96), g, 3).shape
        torch.Size([16, 3, 32, 32])
    """
    op = "extract_contexts"
    image = checks.check_image(image, "image", op)
    grid = _check_grid(grid, op)
    _check_image_grid(image, grid, op)
    scale = _check_scale(scale, op)
    oh, ow = grid.patch_size if size is None else _pair(size, "size", op)
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
        raise TypeError(f"{op}(): `pad_value` must be a number; got {type(pad_value).__name__}.")
    if not isinstance(antialias, bool):
        raise TypeError(f"{op}(): `antialias` must be a bool; got {type(antialias).__name__}.")
    backend = resolve(op, image, has_triton=False)
    wh, ww, oy, ox = _context_window(grid, scale)
    ys = [y - oy for y in grid.ys]
    xs = [x - ox for x in grid.xs]
    return _contexts_op(image, ys, xs, wh, ww, oh, ow, float(pad_value), antialias, backend)


# --------------------------------------------------------------------------------------------
# Streaming inference
# --------------------------------------------------------------------------------------------


def _crop_boxes(image: Tensor, starts: Sequence[tuple[int, int]], ph: int, pw: int,
                out: Tensor) -> None:
    """Copy patches at `starts` of one image (1, C, H, W) into out (k, C, ph, pw)."""
    H, W = image.shape[-2:]
    for k, (y, x) in enumerate(starts):
        hh, ww = min(ph, H - y), min(pw, W - x)
        if hh < ph or ww < pw:
            out[k].zero_()
        out[k, :, :hh, :ww].copy_(image[0, :, y:y + hh, x:x + ww])


def _recycle(buf: Tensor) -> Tensor | None:
    """``buf`` if no one but the caller references it (so it can be refilled), else None.

    A fresh batch buffer costs page faults on every call; refilling the previous one is free,
    but only when ``fn`` kept no reference to it or to a view of it (checked on the Python
    object and on the storage; 3 = the caller's name, getrefcount's argument and ours)."""
    try:
        if sys.getrefcount(buf) > 3 or buf._base is not None:
            return None
        if torch._C._storage_Use_Count(buf.untyped_storage()._cdata) > 2:
            return None
    except Exception:  # private API gone: never reuse
        return None
    return buf


def _contexts_boxes(image: Tensor, grid: PatchGrid, starts: Sequence[tuple[int, int]],
                    scale: float) -> Tensor:
    """Contexts (scale) of the patches at `starts` of one image (1, C, H, W), no autograd."""
    wh, ww, oy, ox = _context_window(grid, scale)
    ph, pw = grid.patch_size
    runs: list[tuple[int, list[int]]] = []  # consecutive patches of one row share the H pass
    for y, x in starts:
        if runs and runs[-1][0] == y:
            runs[-1][1].append(x - ox)
        else:
            runs.append((y, [x - ox]))
    parts = [_contexts_torch(image, [y - oy], xs, wh, ww, ph, pw, 0.0, True) for y, xs in runs]
    return torch.cat(parts, 0) if len(parts) > 1 else parts[0]


def _torch_where_no_kernel(has_triton: bool) -> Any:
    """use_backend("torch") where "triton" is selected but the op has no kernel for the call.

    sliding_window has no kernel of its own and its no-grad path is plain PyTorch under every
    backend, so its differentiable path must not refuse (float64, contexts) what that path
    accepts."""
    if not has_triton and get_backend() == "triton":
        return use_backend("torch")
    return contextlib.nullcontext()


def sliding_window(fn: Callable[..., Tensor], image: Tensor, grid: PatchGrid, batch_size: int,
                   contexts: Sequence[Union[float, Callable[[Tensor, Tensor], Tensor]]] = (),
                   out_device: torch.device | str | None = None, progress: bool = False, *,
                   reduction: str = "mean", weight: Union[str, Tensor, None] = None,
                   device: torch.device | str | None = None,
                   sink: Callable[[int, Tensor], Any] | None = None,
                   rows: tuple[int, int] | None = None) -> Tensor | None:
    """Run ``fn`` over every patch of ``grid``, batch by batch, and merge the results.

    Convention:
        - Patches are taken in the order of :func:`extract_patches` (batch-major, row-major)
          and sent to ``fn`` ``batch_size`` at a time (a batch may span two images). Each
          batch is a fresh tensor on ``device`` (default ``image.device``), never a view, so
          ``fn`` may modify it freely (in place too, with or without gradients; with
          gradients the change is part of the graph); ``image`` itself is never written to.
        - ``contexts``: for each entry the matching batch is passed as an extra argument,
          ``fn(patches, ctx_1, ctx_2, ...)``. A number is a context scale (as in
          :func:`extract_contexts` with its defaults: patch-sized output, black padding,
          antialiased); a callable ``c(image_b, boxes)`` gets one image (1, C, H, W) and the
          (k, 4) int64 boxes of its patches in the batch and returns a (k, ...) tensor.
        - ``fn`` returns (k, C_out, ph, pw), with the same C_out, dtype and device for every
          batch (a change raises ValueError naming the batch). Its output is only read (never
          modified in place, unlike MONAI 1.6.1 which multiplies the predictor's output in
          place) and is accumulated into a (B, C_out, H, W) output on ``out_device`` (default
          ``image.device``) with per-pixel factors w/Σw (Σw derived from the grid for one row
          of patches at a time, so no full-size normaliser is ever built); the result equals
          ``merge_patches(fn(extract_patches(image, grid)), grid, reduction, weight)``.
        - Memory: the output plus one batch (and its contexts) plus the normaliser of one
          row of patches (ph x W); patches are never all held. fp16/bf16 outputs are accumulated in
          float32. If ``fn``'s output requires grad (grad mode on and ``fn`` has trainable
          parameters, or ``image`` requires grad), the outputs are kept and merged with the
          differentiable :func:`merge_patches` instead, which holds all patch outputs (the
          autograd graph holds them anyway). Under ``use_backend("triton")`` the steps that
          have no Triton kernel (float64, contexts) take the PyTorch path in both modes.
        - Streaming (images of any size): ``image`` may be a *reader*, any object with
          ``image_size`` = (H, W) and ``read(y0, x0, y1, x1)`` returning that window of one
          image as a (C, h, w) or (1, C, h, w) floating tensor (a file opened window by
          window, a memory map, ...), and/or ``sink`` a callable ``sink(y0, band)`` that
          receives the finished output rows ``y0 : y0 + band.shape[-2]`` as a
          (1, C_out, h, W) tensor, top to bottom, each row exactly once. Then only the
          windows of one batch (and their contexts, read window by window) and an
          accumulator of one patch row (ph x W) are held, whatever the image height: the
          rows of a patch row are handed to the sink as soon as the next patch row starts
          below them. ``band`` is a view of that accumulator, valid during the call only
          (copy what you keep). Same patches, same batches, same factors w/Σw, same
          accumulation order as the in-memory call: the merged rows are bitwise equal to
          it. Without ``sink`` the rows are gathered into the returned tensor; with one,
          the call returns None. No autograd (run under ``torch.no_grad``); one image
          (B = 1); callable contexts receive the reader (the tensor, for a tensor image).
        - ``rows=(r0, r1)`` (streaming only) computes only output rows r0:r1, bitwise equal
          to those rows of the full call: it runs the full call's batches that hold the
          patches covering those rows (so a band can be resumed, or bands of one image shared
          out between processes, recomputing at most the one patch row above r0).


    Args:
        fn: callable on a batch of patches (and contexts).
        image: (B, C, H, W) floating tensor, (H, W) == ``grid.image_size``; may stay on
            the CPU while ``fn`` runs elsewhere (see ``device``).
        grid: the patch grid.
        batch_size: patches per call of ``fn`` (>= 1).
        contexts: context scales and/or callables, one extra ``fn`` argument each.
        out_device: device of the merged output (default ``image.device``).
        progress: show a tqdm progress bar.
        reduction: "mean" or "sum", as in :func:`merge_patches`.
        weight: None, "constant", "gaussian" or a (ph, pw) tensor, as in :func:`merge_patches`.
        device: device the batches are sent to before ``fn`` (default ``image.device``;
            for a reader, where its windows are).
        sink: ``sink(y0, band)`` receiving finished row bands (streaming; see above).
        rows: (r0, r1): only these output rows (streaming; see above).

    Returns:
        (B, C_out, H, W) tensor on ``out_device``; None when a ``sink`` took the rows.

    Example:
        >>> g = PatchGrid.from_stride(64, 32, 16)
        >>> x = torch.rand(1, 3, 64, 64)
        >>> y = sliding_window(lambda p: p[:, :1] * 2, x, g, batch_size=4)
        >>> torch.allclose(y, 2 * x[:, :1])
        True

        A reader of your own (here over a memory map; a GeoTIFF read window by window
        works the same way) and a sink writing each finished band out:

        >>> import numpy as np
        >>> class MemmapReader:
        ...     def __init__(self, array):  # (C, H, W) uint8, e.g. np.memmap of a raw file
        ...         self.array, self.image_size = array, array.shape[1:]
        ...     def read(self, y0, x0, y1, x1):
        ...         return torch.from_numpy(self.array[:, y0:y1, x0:x1] / 255.0).float()
        >>> pixels = np.random.randint(0, 256, (3, 64, 48), dtype=np.uint8)
        >>> rows = []
        >>> sliding_window(lambda p: p[:, :1] * 2, MemmapReader(pixels),
        ...                PatchGrid.from_stride((64, 48), 32, 16), batch_size=4,
        ...                sink=lambda y0, band: rows.append((y0, band.clone())))
        >>> [(y0, tuple(b.shape)) for y0, b in rows]
        [(0, (1, 1, 16, 48)), (16, (1, 1, 16, 48)), (32, (1, 1, 32, 48))]
    """
    op = "sliding_window"
    if not callable(fn):
        raise TypeError(f"{op}(): `fn` must be callable (a model or function on a batch of "
                        f"patches); got {type(fn).__name__}.")
    if sink is not None or rows is not None or not isinstance(image, Tensor):
        return _sliding_window_streamed(fn, image, grid, batch_size, contexts, out_device,
                                        progress, reduction, weight, device, sink, rows)
    image = checks.check_image(image, "image", op)
    grid = _check_grid(grid, op)
    _check_image_grid(image, grid, op)
    batch_size = checks.check_int(batch_size, "batch_size", op, 1)
    checks.check_choice(reduction, "reduction", op, ("mean", "sum"))
    if not isinstance(contexts, (list, tuple)):
        raise TypeError(f"{op}(): `contexts` must be a list or tuple of scales or callables; "
                        f"got {type(contexts).__name__}.")
    ctx_specs: list[Any] = []
    for i, c in enumerate(contexts):
        if callable(c):
            ctx_specs.append(c)
        else:
            ctx_specs.append(_check_scale(c, op, f"contexts[{i}]"))
    out_device = image.device if out_device is None else checks.check_device(
        out_device, "out_device", op, usable=True)
    device = image.device if device is None else checks.check_device(device, "device", op,
                                                                      usable=True)
    # the weight is checked now, not at the first batch (no-grad) or in the final
    # merge_patches (with gradients: after every batch has run, under merge_patches' name)
    _weight_map(weight, grid.patch_size, torch.empty(0, device=out_device), op)
    if image.shape[0] == 0:
        raise ValueError(f"{op}(): `image` has batch size 0 (shape {tuple(image.shape)}): "
                         f"there is no patch to run `fn` on, so the output channels are unknown. "
                         f"Fix: skip the call for an empty batch.")

    B = image.shape[0]
    ph, pw = grid.patch_size
    H, W = grid.image_size
    n = len(grid)
    starts = [(y, x) for y in grid.ys for x in grid.xs]
    total = B * n
    differentiable = torch.is_grad_enabled() and image.requires_grad

    if differentiable:  # through the custom ops, so the image gets its gradient
        with _torch_where_no_kernel(image.dtype != torch.float64):
            all_patches = extract_patches(image, grid)
        with _torch_where_no_kernel(False):
            all_ctx = [extract_contexts(image, grid, c) if not callable(c) else None
                       for c in ctx_specs]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=op, unit="patch")

    nx = len(grid.xs)
    ysp, xsp = _splits(grid.ys, ph, H), _splits(grid.xs, pw, W)
    mean = reduction == "mean"
    band: Tensor | None = None  # inverse normaliser over the rows of patch row `band_row`
    band_row = -1
    band_buf: Tensor | None = None  # holds `band` (constant weights), kept between calls
    outs: list[Tensor] | None = None  # kept outputs (autograd mode)
    spare: Tensor | None = None  # last batch buffer, when nothing else holds it
    acc: Tensor | None = None
    w_acc: Tensor | None = None
    out_dtype: torch.dtype | None = None
    first: tuple[int, torch.dtype, torch.device] | None = None  # batch 0's C, dtype, device
    try:
        for k0 in range(0, total, batch_size):
            k1 = min(k0 + batch_size, total)
            segs = []  # (b, [patch index within image])
            for k in range(k0, k1):
                b, i = divmod(k, n)
                if segs and segs[-1][0] == b:
                    segs[-1][1].append(i)
                else:
                    segs.append((b, [i]))
            if differentiable:
                # a copy, not a slice: autograd forbids in-place changes to a view of a custom
                # op's output, and fn may modify its batch (one batch of extra memory)
                batch = all_patches[k0:k1].to(device, copy=True)
            else:
                with torch.no_grad():
                    if spare is not None and spare.shape[0] == k1 - k0:
                        batch, spare = spare, None
                    else:
                        _pool_keep(spare)  # the full-size batch, for the next call
                        spare = None
                        batch = _pooled_empty((k1 - k0, image.shape[1], ph, pw),
                                              image.dtype, image.device)
                    r = 0
                    for b, idx in segs:
                        _crop_boxes(image[b:b + 1], [starts[i] for i in idx], ph, pw,
                                    batch[r:r + len(idx)])
                        r += len(idx)
                    batch = batch.to(device)
            extra = []
            for j, c in enumerate(ctx_specs):
                if not callable(c) and differentiable:
                    extra.append(all_ctx[j][k0:k1].to(device, copy=True))  # as for the batch
                    continue
                parts = []
                for b, idx in segs:
                    if callable(c):
                        boxes = grid.boxes[idx]
                        parts.append(c(image[b:b + 1], boxes))
                    else:
                        with torch.no_grad():
                            parts.append(_contexts_boxes(image[b:b + 1], grid,
                                                         [starts[i] for i in idx], c))
                extra.append((torch.cat(parts, 0) if len(parts) > 1 else parts[0]).to(device))
            y = fn(batch, *extra)
            if not isinstance(y, Tensor) or y.dim() != 4 or y.shape[0] != k1 - k0 \
                    or tuple(y.shape[-2:]) != (ph, pw):
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(f"{op}(): `fn` must return a (k, C_out, {ph}, {pw}) tensor "
                                 f"for a batch of k={k1 - k0} patches; got {got}. Fix: "
                                 "resize the network output to the patch size inside fn.")
            checks.check_float(y, "fn(...) output", op)
            # Every batch must match the first: the output is allocated from it, and a later
            # batch with fewer channels left memory unwritten, with more it failed in a
            # broadcast, and another dtype was silently cast to the first one's.
            now = (y.shape[1], y.dtype, y.device)
            if first is None:
                first = now
            elif now != first:
                what = [f"{u} {a} -> {b}" for a, b, u in zip(first, now,
                                                              ("channels", "dtype", "device"))
                        if a != b]
                raise ValueError(
                    f"{op}(): `fn`'s output for batch {k0 // batch_size} (patches {k0}..{k1 - 1} "
                    f"of {total}) differs from batch 0's: {'; '.join(what)}. The merged "
                    "output has one channel count, dtype and device. "
                    "Fix: make fn return the same number of channels, dtype and device for "
                    "every batch (e.g. end it with .float()).")
            if outs is None and acc is None:
                out_dtype = y.dtype
                if torch.is_grad_enabled() and y.requires_grad:
                    outs = []
                else:
                    acc_dtype = torch.float32 if y.dtype in _HALF else y.dtype
                    acc = _pooled_empty((B, y.shape[1], H, W), acc_dtype, out_device)
                    _zero_gaps(acc, grid.ys, grid.xs, ph, pw)
                    w_acc = _weight_map(weight, (ph, pw), acc, op, mean=mean)
            if outs is not None:
                outs.append(y.to(out_device))
            else:
                assert acc is not None
                with torch.no_grad():
                    yo = y.to(device=out_device)
                    r = 0
                    for b, idx in segs:
                        for i in idx:
                            gi, gj = divmod(i, nx)
                            yy, xx = starts[i]
                            hh, ww = min(ph, H - yy), min(pw, W - xx)
                            if mean and band_row != gi:
                                if band_buf is None and w_acc is None:
                                    band_buf = _pooled_empty((min(ph, H), W), acc.dtype,
                                                             acc.device)
                                band = _mean_band(grid.ys, grid.xs, ph, pw, H, W, w_acc, yy,
                                                  yy + hh, acc.dtype, acc.device, band_buf)
                                band_row = gi
                            # reads yo only: fn's output is never modified
                            _place(acc[b:b + 1], yo[r:r + 1], _factor(band, w_acc, xx, hh, ww),
                                   ysp[gi], xsp[gj])
                            r += 1
                    del yo
            del y, extra
            if not differentiable:
                spare = _recycle(batch)
            del batch
            if bar is not None:
                bar.update(k1 - k0)
    finally:
        if bar is not None:
            bar.close()

    if outs is not None:
        merged = torch.cat(outs, 0)
        with _torch_where_no_kernel(merged.dtype != torch.float64):
            return merge_patches(merged, grid, reduction, weight)
    assert acc is not None and out_dtype is not None
    band = None
    _pool_keep(spare, band_buf)
    if acc.dtype == out_dtype:
        _pool_keep(acc)  # reused by a later call once the caller has dropped it
        return acc
    return acc.to(out_dtype)


def _sliding_window_streamed(fn: Callable[..., Tensor], image: Any, grid: PatchGrid,
                             batch_size: int, contexts: Any, out_device: Any, progress: bool,
                             reduction: str, weight: Any, device: Any,
                             sink: Callable[[int, Tensor], Any] | None,
                             rows: tuple[int, int] | None) -> Tensor | None:
    """sliding_window over a reader and/or into a sink: checks, then uhrops._stream."""
    from uhrops import _stream

    op = "sliding_window"
    if sink is not None and not callable(sink):
        raise TypeError(f"{op}(): `sink` must be a callable sink(y0, band) or None; got "
                        f"{type(sink).__name__}.")
    if isinstance(image, Tensor):
        image = checks.check_image(image, "image", op)
        if image.shape[0] != 1:
            raise ValueError(f"{op}(): streaming into a `sink` takes one image (B = 1); got "
                             f"shape {tuple(image.shape)}. Fix: call it once per image.")
        reader: Any = _stream.TensorReader(image)
    else:
        _stream.check_reader(image, op)
        reader = image
    grid = _check_grid(grid, op)
    if tuple(reader.image_size) != grid.image_size:
        raise ValueError(f"{op}(): `image` is {reader.image_size[0]}x{reader.image_size[1]} "
                         f"but the grid was built for {grid.image_size[0]}x"
                         f"{grid.image_size[1]}. Fix: build the grid from the image size.")
    batch_size = checks.check_int(batch_size, "batch_size", op, 1)
    checks.check_choice(reduction, "reduction", op, ("mean", "sum"))
    if not isinstance(contexts, (list, tuple)):
        raise TypeError(f"{op}(): `contexts` must be a list or tuple of scales or callables; "
                        f"got {type(contexts).__name__}.")
    specs = [c if callable(c) else _check_scale(c, op, f"contexts[{i}]")
             for i, c in enumerate(contexts)]
    out_device = None if out_device is None else checks.check_device(
        out_device, "out_device", op, usable=True)
    device = None if device is None else checks.check_device(device, "device", op,
                                                              usable=True)
    _weight_map(weight, grid.patch_size, torch.empty(0, device=out_device or "cpu"), op)
    if rows is not None:
        ok = isinstance(rows, (tuple, list)) and len(rows) == 2 and all(
            isinstance(r, int) and not isinstance(r, bool) for r in rows) \
            and 0 <= rows[0] < rows[1] <= grid.image_size[0]
        if not ok:
            raise ValueError(f"{op}(): `rows` must be a pair (r0, r1) of ints with 0 <= r0 < r1 "
                             f"<= H = {grid.image_size[0]}; got {rows!r}. Fix: e.g. "
                             f"rows=(0, {grid.image_size[0]}) for every row.")
        rows = (int(rows[0]), int(rows[1]))
    return _stream.stream(fn, reader, grid, batch_size, specs, sink, out_device, device,
                          reduction, weight, bool(progress), op, rows)


# --------------------------------------------------------------------------------------------
# Module twins (they only store options)
# --------------------------------------------------------------------------------------------


class ExtractContexts(nn.Module):
    """Module form of :func:`extract_contexts`; stores scale, size, pad_value, antialias.

    Convention:
        See :func:`extract_contexts` (centred windows, padding, antialiased resize).

    Example:
        >>> m = ExtractContexts(2.0)
        >>> g = PatchGrid.from_stride(64, 32, 32)
        >>> m(torch.rand(1, 1, 64, 64), g).shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(self, scale: float, size: IntPair | None = None, pad_value: float = 0.0,
                 antialias: bool = True) -> None:
        super().__init__()
        self.scale = _check_scale(scale, "ExtractContexts")
        self.size = size
        self.pad_value = pad_value
        self.antialias = antialias

    def forward(self, image: Tensor, grid: PatchGrid) -> Tensor:
        return extract_contexts(image, grid, self.scale, self.size, self.pad_value,
                                self.antialias)

    def extra_repr(self) -> str:
        return (f"scale={self.scale}, size={self.size}, pad_value={self.pad_value}, "
                f"antialias={self.antialias}")


class MergePatches(nn.Module):
    """Module form of :func:`merge_patches`; stores reduction and weight.

    Convention:
        See :func:`merge_patches` (weighted mean or FCtL's sum over overlaps).

    Example:
        >>> g = PatchGrid.from_stride(64, 32, 16)
        >>> MergePatches("mean", "gaussian")(torch.ones(9, 2, 32, 32), g).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, reduction: str = "mean", weight: Union[str, Tensor, None] = None) -> None:
        super().__init__()
        checks.check_choice(reduction, "reduction", "MergePatches", ("mean", "sum"))
        self.reduction = reduction
        if isinstance(weight, Tensor):
            self.register_buffer("weight", weight)
        else:
            self.weight = weight

    def forward(self, patches: Tensor, grid: PatchGrid) -> Tensor:
        return merge_patches(patches, grid, self.reduction, self.weight)

    def extra_repr(self) -> str:
        w = "tensor" if isinstance(self.weight, Tensor) else repr(self.weight)
        return f"reduction={self.reduction!r}, weight={w}"
