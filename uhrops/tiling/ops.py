"""The tiling ops: crop patches (:func:`extract_patches`), merge them back
(:func:`merge_patches`) and crop context windows around them (:func:`extract_contexts`),
each a ``torch.library`` custom op with its own backward, and their module twins.

The PyTorch path runs anywhere; the Triton path (CUDA, or the CPU interpreter) has a gather
kernel and an output-centric merge kernel (each output pixel sums the few patches that cover
it, no atomics), each being the other's backward. ``extract_contexts`` has a PyTorch path
only (separable resize: one H pass per row of windows, then one W pass per window).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops._backend import resolve, run_with_fallback
from uhrops._dtypes import accumulation_dtype, float32_or_64
from uhrops.tiling.buffers import empty_buffer, zeros_buffer
from uhrops.tiling.grid import IntPair, PatchGrid, as_pair, check_grid, check_image_grid
from uhrops.tiling.normalisers import (cover_splits, inverse_norm_band, invert_nonzero_,
                                       patch_factor, place_patch, weight_map, weight_sum_rows,
                                       zero_uncovered)

__all__ = ["why_no_kernel", "resize_bilinear", "ExtractContexts", "MergePatches", "check_scale", "context_window", "contexts_op",
           "contexts_torch", "extract_contexts", "extract_patches", "gather_op", "merge_patches",
           "scatter_op"]


def why_no_kernel(op: str, dtype: torch.dtype) -> str | None:
    """Why the tiling kernels cannot run ``op`` on ``dtype`` (None: they can).

    The gather and merge kernels compute in float32, so float64 takes the PyTorch path;
    ``extract_contexts`` has a PyTorch path only (a kernel did not pay there)."""
    if op == "extract_contexts":
        return "extract_contexts has a PyTorch path only"
    if dtype == torch.float64:
        return "the tiling kernels compute in float32; float64 runs on the PyTorch path"
    return None


# --------------------------------------------------------------------------------------------
# PyTorch reference path (no autograd inside: the custom ops provide the backward)
# --------------------------------------------------------------------------------------------


def _gather_torch(image: Tensor, weight: Tensor | None, ys: List[int], xs: List[int], ph: int,
                  pw: int, normalize: bool) -> Tensor:
    """out[b, i*nx + j] = f * image[b][ys[i]:+ph, xs[j]:+pw], zero outside the image, where
    f = weight (or 1), divided by Σw of all patches at that pixel when `normalize`."""
    B, C, H, W = image.shape
    n = len(ys) * len(xs)
    out = empty_buffer((B, n, C, ph, pw), image.dtype, image.device)
    fd = float32_or_64(image.dtype)
    k = 0
    for y in ys:
        hh = min(ph, H - y)
        band = (inverse_norm_band(ys, xs, ph, pw, H, W, weight, y, y + hh, fd, image.device)
                if normalize else None)
        for x in xs:
            ww = min(pw, W - x)
            dst = out[:, k]
            k += 1
            if hh < ph or ww < pw:
                dst.zero_()
            src = image[:, :, y:y + hh, x:x + ww]
            d = dst[:, :, :hh, :ww]
            fac = patch_factor(band, weight, x, hh, ww)
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
    acc_dtype = accumulation_dtype(patches.dtype)
    acc = empty_buffer((B, C, H, W), acc_dtype, patches.device)
    zero_uncovered(acc, ys, xs, ph, pw)
    p = patches.reshape(B, n, C, ph, pw)
    ysp, xsp = cover_splits(ys, ph, H), cover_splits(xs, pw, W)
    fd = float32_or_64(patches.dtype)
    k = 0
    for i, y in enumerate(ys):
        hh = min(ph, H - y)
        band = (inverse_norm_band(ys, xs, ph, pw, H, W, weight, y, y + hh, fd, patches.device)
                if normalize else None)
        for j, x in enumerate(xs):
            ww = min(pw, W - x)
            place_patch(acc, p[:, k], patch_factor(band, weight, x, hh, ww), ysp[i], xsp[j])
            k += 1
    return acc if acc_dtype == patches.dtype else acc.to(patches.dtype)


def _window_slices(y: int, L: int, size: int) -> tuple[int, int]:
    """Part [a, b) of the image inside the window [y, y + L) (a >= b when empty)."""
    return max(y, 0), min(y + L, size)


def resize_bilinear(t: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of the last two axes, half-pixel centres:
    the resize of every context window, and of the export decomposition that replaces it."""
    if tuple(t.shape[-2:]) == tuple(size):
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


def contexts_torch(image: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, oh: int,
                    ow: int, pad_value: float, antialias: bool) -> Tensor:
    """Padded windows [y, y+wh) x [x, x+ww) (product grid) resized to (oh, ow).

    The bilinear (antialiased) resize is separable, so each row of windows is first resized
    along H once for the whole image width (a pad_value row stays pad_value), then each
    window along W: about 3x less work than resizing every window in 2-D."""
    B, C, H, W = image.shape
    n = len(ys) * len(xs)
    out = empty_buffer((B, n, C, oh, ow), image.dtype, image.device)
    cdtype = accumulation_dtype(image.dtype)
    k = 0
    for y in ys:
        a, b = _window_slices(y, wh, H)
        if a == y and b == y + wh:
            rows = image[:, :, a:b].to(cdtype)
        else:
            rows = torch.full((B, C, wh, W), pad_value, dtype=cdtype, device=image.device)
            if a < b:
                rows[:, :, a - y:b - y] = image[:, :, a:b]
        vert = resize_bilinear(rows, (oh, W), antialias)  # (B, C, oh, W)
        del rows
        for x in xs:
            c, d = _window_slices(x, ww, W)
            if c == x and d == x + ww:
                win = vert[:, :, :, c:d]
            else:
                win = torch.full((B, C, oh, ww), pad_value, dtype=cdtype, device=image.device)
                if c < d:
                    win[:, :, :, c - x:d - x] = vert[:, :, :, c:d]
            out[:, k] = resize_bilinear(win, (oh, ow), antialias)
            k += 1
    return out.view(B * n, C, oh, ow)


def _contexts_backward_torch(grad: Tensor, ys: List[int], xs: List[int], wh: int, ww: int,
                             H: int, W: int, antialias: bool) -> Tensor:
    """Adjoint of contexts_torch (without the pad_value constant): W then H, per row."""
    n = len(ys) * len(xs)
    BN, C, oh, ow = grad.shape
    B = BN // n
    cdtype = accumulation_dtype(grad.dtype)
    g = grad.reshape(B, n, C, oh, ow)
    acc = zeros_buffer((B, C, H, W), cdtype, grad.device)
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
        norm = invert_nonzero_(weight_sum_rows(ys, xs, ph, pw, H, W, weight, 0, H, float32_or_64(image.dtype),
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
def gather_op(image: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int], ph: int,
               pw: int, normalize: bool, backend: str) -> Tensor:
    return run_with_fallback("extract_patches", backend, lambda path: (
        _gather_triton if path == "triton" else _gather_torch)(
            image, weight, ys, xs, ph, pw, normalize), image)


@gather_op.register_fake
def _(image, weight, ys, xs, ph, pw, normalize, backend):
    B, C = image.shape[0], image.shape[1]
    return image.new_empty((B * len(ys) * len(xs), C, ph, pw))


@torch.library.custom_op("uhrops::tile_scatter", mutates_args=())
def scatter_op(patches: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int],
                height: int, width: int, normalize: bool, backend: str) -> Tensor:
    return run_with_fallback("merge_patches", backend, lambda path: (
        _scatter_triton if path == "triton" else _scatter_torch)(
            patches, weight, ys, xs, height, width, normalize), patches)


@scatter_op.register_fake
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
    g = scatter_op(grad.contiguous(), weight, ys, xs, H, W, normalize, backend)
    return g, None, None, None, None, None, None, None


def _scatter_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    patches, weight, ys, xs, height, width, normalize, backend = inputs
    ctx.args = (ys, xs, patches.shape[-2], patches.shape[-1], normalize, backend)
    ctx.save_for_backward(weight)


def _scatter_bwd(ctx: Any, grad: Tensor):
    (weight,) = ctx.saved_tensors
    ys, xs, ph, pw, normalize, backend = ctx.args
    g = gather_op(grad.contiguous(), weight, ys, xs, ph, pw, normalize, backend)
    return g, None, None, None, None, None, None, None


gather_op.register_autograd(_gather_bwd, setup_context=_gather_setup)
scatter_op.register_autograd(_scatter_bwd, setup_context=_scatter_setup)


@torch.library.custom_op("uhrops::tile_contexts", mutates_args=())
def contexts_op(image: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, oh: int, ow: int,
                 pad_value: float, antialias: bool, backend: str) -> Tensor:
    return contexts_torch(image, ys, xs, wh, ww, oh, ow, pad_value, antialias)


@contexts_op.register_fake
def _(image, ys, xs, wh, ww, oh, ow, pad_value, antialias, backend):
    return image.new_empty((image.shape[0] * len(ys) * len(xs), image.shape[1], oh, ow))


@torch.library.custom_op("uhrops::tile_contexts_backward", mutates_args=())
def contexts_backward_op(grad: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, height: int,
                     width: int, antialias: bool, backend: str) -> Tensor:
    return _contexts_backward_torch(grad, ys, xs, wh, ww, height, width, antialias)


@contexts_backward_op.register_fake
def _(grad, ys, xs, wh, ww, height, width, antialias, backend):
    n = len(ys) * len(xs)
    return grad.new_empty((grad.shape[0] // n, grad.shape[1], height, width))


def _contexts_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    image, ys, xs, wh, ww, oh, ow, pad_value, antialias, backend = inputs
    ctx.args = (ys, xs, wh, ww, image.shape[-2], image.shape[-1], antialias, backend)


def _contexts_bwd(ctx: Any, grad: Tensor):
    ys, xs, wh, ww, H, W, antialias, backend = ctx.args
    g = contexts_backward_op(grad.contiguous(), ys, xs, wh, ww, H, W, antialias, backend)
    return g, None, None, None, None, None, None, None, None, None


def _contexts_bwd_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
    grad, ys, xs, wh, ww, height, width, antialias, backend = inputs
    ctx.args = (ys, xs, wh, ww, grad.shape[-2], grad.shape[-1], antialias, backend)


def _contexts_bwd_bwd(ctx: Any, gg: Tensor):
    # the backward is linear in `grad`; its adjoint is the forward without the padding constant
    ys, xs, wh, ww, oh, ow, antialias, backend = ctx.args
    g = contexts_op(gg.contiguous(), ys, xs, wh, ww, oh, ow, 0.0, antialias, backend)
    return g, None, None, None, None, None, None, None, None


contexts_op.register_autograd(_contexts_bwd, setup_context=_contexts_setup)
contexts_backward_op.register_autograd(_contexts_bwd_bwd, setup_context=_contexts_bwd_setup)


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
    grid = check_grid(grid, op)
    check_image_grid(image, grid, op)
    backend = resolve(op, image, no_kernel=why_no_kernel(op, image.dtype))
    ph, pw = grid.patch_size
    return gather_op(image, None, list(grid.ys), list(grid.xs), ph, pw, False, backend)


def merge_patches(patches: Tensor, grid: PatchGrid, reduction: str = "mean",
                  weight: Union[str, Tensor, None] = None) -> Tensor:
    """Put patches back into an image, summing or averaging where they overlap.

    Convention:
        - patches (B·N, C, ph, pw) in the order of :func:`extract_patches` -> (B, C, H, W).
        - ``reduction="sum"``: out = Σ_k w·patch_k (FCtL's summed logits when w is None).
          ``reduction="mean"``: out = Σ_k w·patch_k / Σ_k w, i.e. the weighted average of the
          patches covering each pixel (a pixel no patch covers would be 0).
        - ``weight``: None or "constant" (all ones), "hann" (see :func:`hann_weight`: a
          Hann window with no zero at the patch border), "gaussian" (MONAI's importance map,
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
        weight: None, "constant", "gaussian", "hann" or a (ph, pw) tensor.

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
    grid = check_grid(grid, op)
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
    w = weight_map(weight, grid.patch_size, patches, op, mean=reduction == "mean")
    backend = resolve(op, patches, no_kernel=why_no_kernel(op, patches.dtype))
    H, W = grid.image_size
    return scatter_op(patches, w, list(grid.ys), list(grid.xs), H, W, reduction == "mean",
                       backend)


def context_window(grid: PatchGrid, scale: float) -> tuple[int, int, int, int]:
    """(wh, ww, top offset, left offset) of the context window for ``scale``."""
    ph, pw = grid.patch_size
    wh = max(int(math.floor(scale * ph + 0.5)), 1)
    ww = max(int(math.floor(scale * pw + 0.5)), 1)
    return wh, ww, (wh - ph) // 2, (ww - pw) // 2


def check_scale(scale: object, op: str, name: str = "scale") -> float:
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
    grid = check_grid(grid, op)
    check_image_grid(image, grid, op)
    scale = check_scale(scale, op)
    oh, ow = grid.patch_size if size is None else as_pair(size, "size", op)
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
        raise TypeError(f"{op}(): `pad_value` must be a number; got {type(pad_value).__name__}.")
    if not isinstance(antialias, bool):
        raise TypeError(f"{op}(): `antialias` must be a bool; got {type(antialias).__name__}.")
    backend = resolve(op, image, no_kernel=why_no_kernel(op, image.dtype))
    wh, ww, oy, ox = context_window(grid, scale)
    ys = [y - oy for y in grid.ys]
    xs = [x - ox for x in grid.xs]
    return contexts_op(image, ys, xs, wh, ww, oh, ow, float(pad_value), antialias, backend)


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
        self.scale = check_scale(scale, "ExtractContexts")
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
