"""Triton kernels for patch tiling: gather (extract) and output-centric scatter (merge).

Both work on a product grid: patch k = i * nx + j starts at (ys[i], xs[j]). With the same
optional per-pixel patch weight ``w`` (ph, pw) and normaliser ``norm`` = 1 / Σ_k place_k(w)
(or 1 for "sum"):

    gather:  out[b*N + k, c] = w * crop_k(norm * image[b, c])           (zeros outside)
    scatter: out[b, c]       = norm * Σ_k place_k(w * patches[b*N + k, c])

These two maps are adjoint, so each is the other's backward. The gather takes ``norm`` as an
(H, W) map; the scatter accumulates Σw itself next to the values. The scatter is output-centric:
each program owns a tile of the output and sums the few patches covering it (the host passes,
per tile row and column, the range of grid rows/columns that overlap it), so there are no
atomics, results are deterministic, and every output pixel is written once. Values are
accumulated in float32 and stored in the output dtype. Inputs are read through their strides;
weight and norm must be contiguous float tensors (the caller ensures it).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl

from uhrops.kernels._launch import launch, vector_width

GATHER_BLOCK = (32, 64)
SCATTER_BLOCK = (32, 64)


@triton.jit
def _gather_kernel(img_ptr, out_ptr, w_ptr, n_ptr, ys_ptr, xs_ptr,
                   C, H, W, N, NX, PH, PW,
                   s_b, s_c, s_h, s_w,
                   HAS_W: tl.constexpr, HAS_N: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, VEC: tl.constexpr):
    # One grid axis over (b, k, c, patch tile), tiles fastest (a second axis would be capped
    # at 65535 tiles, which a patch over ~11600^2 exceeds).
    tiles_w = tl.cdiv(PW, BLOCK_W)
    n_tiles = tl.cdiv(PH, BLOCK_H) * tiles_w
    pid_all = tl.program_id(0)
    pid_t = pid_all % n_tiles
    pid = pid_all // n_tiles  # over (b, k, c)
    c = pid % C
    bk = pid // C
    k = bk % N
    b = bk // N
    r = (pid_t // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    q = (pid_t % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    y0 = tl.load(ys_ptr + k // NX)
    x0 = tl.load(xs_ptr + k % NX)
    y = y0 + r
    x = x0 + q
    # VEC > 1: the host checked that VEC divides every patch start, W, PW and the image's
    # batch/channel/row strides (columns unit-stride). Column bounds are then written on the
    # first column of each group of VEC, and the offsets hinted, so that the compiler can use
    # VEC-wide accesses (508-wide patches: Triton infers this itself only for multiples of 16).
    if VEC > 1:
        # On q, whose groups the compiler can see aligned (x0 is a loaded value):
        # x < W  <=>  q < W - x0, and W - x0 is a multiple of VEC.
        qg = (q // VEC) * VEC
        in_patch = (r < PH) & (qg < PW)
        inside = in_patch & (y < H) & (qg < W - x0)
    else:
        in_patch = (r < PH) & (q < PW)
        inside = in_patch & (y < H) & (x < W)
    off = (b.to(tl.int64) * s_b + c.to(tl.int64) * s_c + y.to(tl.int64) * s_h
           + x.to(tl.int64) * s_w)
    if VEC > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, VEC)), (1, VEC))
    v = tl.load(img_ptr + off, mask=inside, other=0.0).to(tl.float32)
    if HAS_N:
        n_off = y.to(tl.int64) * W + x
        if VEC > 1:
            n_off = tl.max_contiguous(tl.multiple_of(n_off, (1, VEC)), (1, VEC))
        v = v * tl.load(n_ptr + n_off, mask=inside, other=0.0).to(tl.float32)
    p_off = r * PW + q
    if VEC > 1:
        p_off = tl.max_contiguous(tl.multiple_of(p_off, (1, VEC)), (1, VEC))
    if HAS_W:
        v = v * tl.load(w_ptr + p_off, mask=in_patch, other=0.0).to(tl.float32)
    o_off = (bk.to(tl.int64) * C + c) * PH * PW + p_off
    if VEC > 1:
        o_off = tl.max_contiguous(tl.multiple_of(o_off, (1, VEC)), (1, VEC))
    tl.store(out_ptr + o_off, v.to(out_ptr.dtype.element_ty), mask=in_patch)


@triton.jit
def _scatter_kernel(p_ptr, out_ptr, w_ptr, ys_ptr, xs_ptr,
                    ylo_ptr, yhi_ptr, xlo_ptr, xhi_ptr,
                    C, H, W, N, NX, PH, PW,
                    s_n, s_c, s_h, s_w,
                    HAS_W: tl.constexpr, NORMALIZE: tl.constexpr,
                    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, VEC: tl.constexpr):
    # One grid axis over (b, c, output tile), tiles fastest: CUDA caps axes 1 and 2 at 65535,
    # which B * C (and the tiles of an image over ~11600^2) can exceed.
    tiles_w = tl.cdiv(W, BLOCK_W)
    n_tiles = tl.cdiv(H, BLOCK_H) * tiles_w
    pid_all = tl.program_id(0)
    pid_t = pid_all % n_tiles
    pid = pid_all // n_tiles  # over (b, c)
    c = pid % C
    b = pid // C
    th = pid_t // tiles_w
    tw = pid_t % tiles_w
    y = th * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    x = tw * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    # VEC > 1: VEC divides every patch start, W, PW and the patches' strides (see the gather);
    # bounds on x are taken on the first column of each group of VEC (x >= 0, so // floors).
    if VEC > 1:
        xg = (x // VEC) * VEC
    else:
        xg = x
    out_mask = (y < H) & (xg < W)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    wsum = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    ylo = tl.load(ylo_ptr + th)
    yhi = tl.load(yhi_ptr + th)
    xlo = tl.load(xlo_ptr + tw)
    xhi = tl.load(xhi_ptr + tw)
    cbase = c.to(tl.int64) * s_c
    for i in range(ylo, yhi):
        r = y - tl.load(ys_ptr + i)
        my = (r >= 0) & (r < PH)
        for j in range(xlo, xhi):
            x0 = tl.load(xs_ptr + j)
            q = x - x0
            if VEC > 1:
                m = out_mask & my & (xg >= x0) & (xg < x0 + PW)
            else:
                m = out_mask & my & (q >= 0) & (q < PW)
            k = b.to(tl.int64) * N + i * NX + j
            off = k * s_n + cbase + r.to(tl.int64) * s_h + q.to(tl.int64) * s_w
            w_off = r * PW + q
            if VEC > 1:
                off = tl.max_contiguous(tl.multiple_of(off, (1, VEC)), (1, VEC))
                w_off = tl.max_contiguous(tl.multiple_of(w_off, (1, VEC)), (1, VEC))
            v = tl.load(p_ptr + off, mask=m, other=0.0).to(tl.float32)
            if HAS_W:
                wv = tl.load(w_ptr + w_off, mask=m, other=0.0).to(tl.float32)
                v = v * wv
                wsum += wv
            else:
                wsum += m.to(tl.float32)
            acc += v
    if NORMALIZE:
        acc = tl.where(wsum > 0, acc / tl.where(wsum > 0, wsum, 1.0), 0.0)
    o_off = (b.to(tl.int64) * C + c) * H * W + y.to(tl.int64) * W + x
    if VEC > 1:
        o_off = tl.max_contiguous(tl.multiple_of(o_off, (1, VEC)), (1, VEC))
    tl.store(out_ptr + o_off, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def _i32(values: List[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32, device=device)


def gather(image: torch.Tensor, weight: Optional[torch.Tensor], norm: Optional[torch.Tensor],
           ys: List[int], xs: List[int], ph: int, pw: int) -> torch.Tensor:
    """(B*N, C, ph, pw) = w * crop_k(norm * image); image read through its strides."""
    B, C, H, W = image.shape
    ny, nx = len(ys), len(xs)
    n = ny * nx
    out = torch.empty((B * n, C, ph, pw), dtype=image.dtype, device=image.device)
    if out.numel() == 0:
        return out
    dev = image.device
    w = weight.contiguous() if weight is not None else out
    nm = norm.contiguous() if norm is not None else out
    bh, bw = GATHER_BLOCK
    grid = (B * n * C * triton.cdiv(ph, bh) * triton.cdiv(pw, bw),)
    vec = vector_width(image, bw, *xs, W, pw, *image.stride()[:3])
    launch(_gather_kernel, grid, image, out, w, nm, _i32(ys, dev), _i32(xs, dev),
           C, H, W, n, nx, ph, pw, *image.stride(),
           HAS_W=weight is not None, HAS_N=norm is not None,
           BLOCK_H=bh, BLOCK_W=bw, VEC=vec, num_warps=4)
    return out


def scatter(patches: torch.Tensor, weight: Optional[torch.Tensor], normalize: bool,
            ys: List[int], xs: List[int], H: int, W: int, ylo: List[int], yhi: List[int],
            xlo: List[int], xhi: List[int]) -> torch.Tensor:
    """(B, C, H, W) = Σ_k place_k(w * patches_k) [/ Σ_k place_k(w) when ``normalize``].

    The normaliser is accumulated in the kernel next to the values (no image-sized map);
    patches are read through their strides.

    ``ylo[t]:yhi[t]`` are the grid rows overlapping output tile row t (SCATTER_BLOCK[0] rows),
    ``xlo``/``xhi`` the same for tile columns.
    """
    BN, C, ph, pw = patches.shape
    ny, nx = len(ys), len(xs)
    n = ny * nx
    B = BN // n
    out = torch.empty((B, C, H, W), dtype=patches.dtype, device=patches.device)
    if out.numel() == 0:
        return out
    dev = patches.device
    w = weight.contiguous() if weight is not None else out
    bh, bw = SCATTER_BLOCK
    grid = (triton.cdiv(H, bh) * triton.cdiv(W, bw) * B * C,)
    vec = vector_width(patches, bw, *xs, W, pw, *patches.stride()[:3])
    launch(_scatter_kernel, grid, patches, out, w, _i32(ys, dev), _i32(xs, dev),
           _i32(ylo, dev), _i32(yhi, dev), _i32(xlo, dev), _i32(xhi, dev),
           C, H, W, n, nx, ph, pw, *patches.stride(),
           HAS_W=weight is not None, NORMALIZE=normalize,
           BLOCK_H=bh, BLOCK_W=bw, VEC=vec, num_warps=4)
    return out
