"""Triton kernels for the Burt-Adelson / OpenCV pyramids (conventions: uhrops/pyramid.py).

Four gather kernels, one output tile of one (batch, channel) plane per program:

- ``_down_kernel``: blur with [1, 4, 6, 4, 1]/16 per axis and keep the even samples, evaluated
  only at the kept outputs (5 x 5 taps, reflect-101 indices folded in the kernel).
- ``_up_kernel``: the expand (zero insertion + 4x the kernel) evaluated polyphase: every output
  sample is a 3 x 3 combination of coarse samples; optionally fused with ``base + sign * up``
  so a Laplacian level (sign -1) or a reconstruction step (sign +1) is one read of each input
  and one write.
- ``_down_adj_kernel`` and ``_up_adj_kernel``: the exact adjoints (transposed operators, the
  reflect-101 border folded back), used for the backward passes.

Per axis, the weight that links an output position to a source position is computed in the
kernel from the reflect-101 fold (``_refl``), so tiny sides (1, 2, 3 samples, where the fold
wraps more than once) are handled by the same code as large ones. Loads whose weight is zero
are masked off, so NaN/Inf in a sample only reaches the outputs that really use it.

Accumulation is float32 for float16/bfloat16/float32 inputs and float64 for float64 inputs;
results are stored in the output's dtype. Inputs may have any strides; outputs are whatever
the caller allocates (contiguous in uhrops).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Output tile per program: 8 rows x 64 columns (row-contiguous stores, few programs for the
# interpreter, enough independent loads per program on a GPU).
_BLOCK_H = 8
_BLOCK_W = 64
_NUM_WARPS = 4


# ----------------------------------------------------------------------------------------------
# Index helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _refl(p, n):
    """Reflect-101 (OpenCV BORDER_REFLECT_101) fold of index ``p`` into [0, n), any p."""
    per = tl.maximum(2 * n - 2, 1)
    p = p % per
    p = tl.where(p < 0, p + per, p)
    return tl.where(p >= n, per - p, p)


@triton.jit
def _tile(pid, n_th, n_tw, C, BH: tl.constexpr, BW: tl.constexpr):
    tw = pid % n_tw
    t = pid // n_tw
    th = t % n_th
    bc = t // n_th
    b = bc // C
    c = bc % C
    rows = th * BH + tl.arange(0, BH)
    cols = tw * BW + tl.arange(0, BW)
    return b.to(tl.int64), c.to(tl.int64), rows, cols


@triton.jit
def _up_taps(r, n2, ACC: tl.constexpr):
    """Expand along one axis: out[r] = sum_t w_t * x[s0 + t], t = 0, 1, 2.

    The zero-inserted signal u (length n2 = 2n, u[2s] = x[s]) is blurred with 2*[1,4,6,4,1]/16
    under reflect-101; only taps landing on even u positions carry a sample.
    """
    s0 = r // 2 - 1
    w0 = tl.zeros(r.shape, ACC)
    w1 = tl.zeros(r.shape, ACC)
    w2 = tl.zeros(r.shape, ACC)
    for k in tl.static_range(5):
        wk = 0.125 if (k == 0 or k == 4) else (0.5 if (k == 1 or k == 3) else 0.75)
        d = _refl(r + (k - 2), n2) - 2 * s0
        w0 += tl.where(d == 0, wk, 0.0)
        w1 += tl.where(d == 2, wk, 0.0)
        w2 += tl.where(d == 4, wk, 0.0)
    return s0, w0, w1, w2


@triton.jit
def _down_adj_taps(j, n, m, ACC: tl.constexpr):
    """Adjoint of blur+decimate along one axis: g_x[j] = sum_t A[s0 + t, j] * g[s0 + t].

    A[i, j] = sum_k w_k/16 [refl(2i + k - 2, n) == j]; only i in {j//2 - 1, j//2, j//2 + 1}
    can be non-zero (also where the reflection folds back).
    """
    s0 = j // 2 - 1
    w0 = tl.zeros(j.shape, ACC)
    w1 = tl.zeros(j.shape, ACC)
    w2 = tl.zeros(j.shape, ACC)
    for t in tl.static_range(3):
        i = s0 + t
        ok = (i >= 0) & (i < m)
        acc = tl.zeros(j.shape, ACC)
        for k in tl.static_range(5):
            wk = 0.0625 if (k == 0 or k == 4) else (0.25 if (k == 1 or k == 3) else 0.375)
            acc += tl.where(_refl(2 * i + (k - 2), n) == j, wk, 0.0)
        acc = tl.where(ok, acc, 0.0)
        if t == 0:
            w0 = acc
        elif t == 1:
            w1 = acc
        else:
            w2 = acc
    return s0, w0, w1, w2


@triton.jit
def _up_adj_weight(s, r, n2, n_out, ACC: tl.constexpr):
    """Weight of output r of the expand on coarse sample s (0 where r is cropped away)."""
    acc = tl.zeros(s.shape, ACC)
    for k in tl.static_range(5):
        wk = 0.125 if (k == 0 or k == 4) else (0.5 if (k == 1 or k == 3) else 0.75)
        acc += tl.where(_refl(r + (k - 2), n2) == 2 * s, wk, 0.0)
    return tl.where((r >= 0) & (r < n_out), acc, 0.0)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _row5(base, c0, c1, c2, c3, c4, mask, ACC: tl.constexpr):
    v0 = tl.load(base + c0, mask=mask, other=0.0).to(ACC)
    v1 = tl.load(base + c1, mask=mask, other=0.0).to(ACC)
    v2 = tl.load(base + c2, mask=mask, other=0.0).to(ACC)
    v3 = tl.load(base + c3, mask=mask, other=0.0).to(ACC)
    v4 = tl.load(base + c4, mask=mask, other=0.0).to(ACC)
    return (v0 + v4) + 4.0 * (v1 + v3) + 6.0 * v2


@triton.jit
def _down_kernel(x_ptr, y_ptr, C, H, W, Ho, Wo, n_th, n_tw,
                 sxb, sxc, sxh, sxw, syb, syc, syh, syw,
                 ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, i, j = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (i < Ho)[:, None] & (j < Wo)[None, :]
    xb = x_ptr + b * sxb + c * sxc
    c0 = (_refl(2 * j - 2, W).to(tl.int64) * sxw)[None, :]
    c1 = (_refl(2 * j - 1, W).to(tl.int64) * sxw)[None, :]
    c2 = (_refl(2 * j, W).to(tl.int64) * sxw)[None, :]
    c3 = (_refl(2 * j + 1, W).to(tl.int64) * sxw)[None, :]
    c4 = (_refl(2 * j + 2, W).to(tl.int64) * sxw)[None, :]
    acc = tl.zeros((BH, BW), ACC)
    for k in tl.static_range(5):
        wk = 1.0 if (k == 0 or k == 4) else (4.0 if (k == 1 or k == 3) else 6.0)
        r = (_refl(2 * i + (k - 2), H).to(tl.int64) * sxh)[:, None]
        acc += wk * _row5(xb + r, c0, c1, c2, c3, c4, mask, ACC)
    acc = acc * (1.0 / 256.0)
    yo = b * syb + c * syc + i.to(tl.int64)[:, None] * syh + j.to(tl.int64)[None, :] * syw
    tl.store(y_ptr + yo, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gather3x3(xb, ri0, ri1, ri2, wr0, wr1, wr2, ci0, ci1, ci2, wc0, wc1, wc2,
               n_r, n_c, sh, sw, mask, ACC: tl.constexpr):
    """sum_{t,u} wr_t[:, None] * wc_u[None, :] * x[ri_t, ci_u]; zero-weight taps not loaded."""
    acc = tl.zeros(mask.shape, ACC)
    for t in tl.static_range(3):
        if t == 0:
            ri = ri0
            wr = wr0
        elif t == 1:
            ri = ri1
            wr = wr1
        else:
            ri = ri2
            wr = wr2
        roff = (tl.minimum(tl.maximum(ri, 0), n_r - 1).to(tl.int64) * sh)[:, None]
        rowacc = tl.zeros(mask.shape, ACC)
        for u in tl.static_range(3):
            if u == 0:
                ci = ci0
                wc = wc0
            elif u == 1:
                ci = ci1
                wc = wc1
            else:
                ci = ci2
                wc = wc2
            coff = (tl.minimum(tl.maximum(ci, 0), n_c - 1).to(tl.int64) * sw)[None, :]
            m = mask & (wc != 0.0)[None, :] & (wr != 0.0)[:, None]
            v = tl.load(xb + roff + coff, mask=m, other=0.0).to(ACC)
            rowacc += wc[None, :] * v
        acc += wr[:, None] * rowacc
    return acc


@triton.jit
def _up_kernel(x_ptr, base_ptr, y_ptr, C, h, w, Ho, Wo, n_th, n_tw, sign,
               sxb, sxc, sxh, sxw, sbb, sbc, sbh, sbw, syb, syc, syh, syw,
               HAS_BASE: tl.constexpr, ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, r, q = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (r < Ho)[:, None] & (q < Wo)[None, :]
    rs, wr0, wr1, wr2 = _up_taps(r, 2 * h, ACC)
    cs, wc0, wc1, wc2 = _up_taps(q, 2 * w, ACC)
    xb = x_ptr + b * sxb + c * sxc
    acc = _gather3x3(xb, rs, rs + 1, rs + 2, wr0, wr1, wr2, cs, cs + 1, cs + 2, wc0, wc1, wc2,
                     h, w, sxh, sxw, mask, ACC)
    r64 = r.to(tl.int64)[:, None]
    q64 = q.to(tl.int64)[None, :]
    if HAS_BASE:
        bo = b * sbb + c * sbc + r64 * sbh + q64 * sbw
        acc = tl.load(base_ptr + bo, mask=mask, other=0.0).to(ACC) + sign * acc
    tl.store(y_ptr + (b * syb + c * syc + r64 * syh + q64 * syw),
             acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _down_adj_kernel(g_ptr, y_ptr, C, m, mw, H, W, n_th, n_tw,
                     sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                     ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, j, l = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (j < H)[:, None] & (l < W)[None, :]
    rs, wr0, wr1, wr2 = _down_adj_taps(j, H, m, ACC)
    cs, wc0, wc1, wc2 = _down_adj_taps(l, W, mw, ACC)
    gb = g_ptr + b * sgb + c * sgc
    acc = _gather3x3(gb, rs, rs + 1, rs + 2, wr0, wr1, wr2, cs, cs + 1, cs + 2, wc0, wc1, wc2,
                     m, mw, sgh, sgw, mask, ACC)
    yo = b * syb + c * syc + j.to(tl.int64)[:, None] * syh + l.to(tl.int64)[None, :] * syw
    tl.store(y_ptr + yo, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _up_adj_kernel(g_ptr, y_ptr, C, Ho, Wo, h, w, n_th, n_tw, scale,
                   sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                   ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """grad_x[s] = sum over outputs r in [2s - 2, 2s + 2] of B[r, s] * g[r] (per axis)."""
    b, c, s, v = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (s < h)[:, None] & (v < w)[None, :]
    gb = g_ptr + b * sgb + c * sgc
    acc = tl.zeros((BH, BW), ACC)
    for t in tl.static_range(5):
        r = 2 * s + (t - 2)
        wr = _up_adj_weight(s, r, 2 * h, Ho, ACC)
        roff = (tl.minimum(tl.maximum(r, 0), Ho - 1).to(tl.int64) * sgh)[:, None]
        rowacc = tl.zeros((BH, BW), ACC)
        for u in tl.static_range(5):
            q = 2 * v + (u - 2)
            wc = _up_adj_weight(v, q, 2 * w, Wo, ACC)
            coff = (tl.minimum(tl.maximum(q, 0), Wo - 1).to(tl.int64) * sgw)[None, :]
            m = mask & (wc != 0.0)[None, :] & (wr != 0.0)[:, None]
            val = tl.load(gb + roff + coff, mask=m, other=0.0).to(ACC)
            rowacc += wc[None, :] * val
        acc += wr[:, None] * rowacc
    acc = acc * scale
    yo = b * syb + c * syc + s.to(tl.int64)[:, None] * syh + v.to(tl.int64)[None, :] * syw
    tl.store(y_ptr + yo, acc.to(y_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers (shapes and arguments are checked by uhrops/pyramid.py)
# ----------------------------------------------------------------------------------------------


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _grid(B: int, C: int, Ho: int, Wo: int) -> tuple[int, int, int]:
    n_th = triton.cdiv(Ho, _BLOCK_H)
    n_tw = triton.cdiv(Wo, _BLOCK_W)
    return B * C * n_th * n_tw, n_th, n_tw


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur + keep even samples: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
    B, C, H, W = x.shape
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    y = x.new_empty(B, C, Ho, Wo)
    total, n_th, n_tw = _grid(B, C, Ho, Wo)
    if total:
        _down_kernel[(total,)](x, y, C, H, W, Ho, Wo, n_th, n_tw, *x.stride(), *y.stride(),
                               ACC=_acc(x.dtype), BH=_BLOCK_H, BW=_BLOCK_W,
                               num_warps=_NUM_WARPS)
    return y


def pyr_up(x: torch.Tensor, Ho: int, Wo: int, base: torch.Tensor | None = None,
           sign: float = 1.0) -> torch.Tensor:
    """Expand (B, C, h, w) -> (B, C, Ho, Wo), Ho in {2h-1, 2h}; with ``base``: base + sign*up."""
    B, C, h, w = x.shape
    y = x.new_empty(B, C, Ho, Wo)
    total, n_th, n_tw = _grid(B, C, Ho, Wo)
    if total:
        bt = base if base is not None else y
        _up_kernel[(total,)](x, bt, y, C, h, w, Ho, Wo, n_th, n_tw, float(sign),
                             *x.stride(), *bt.stride(), *y.stride(),
                             HAS_BASE=base is not None, ACC=_acc(x.dtype),
                             BH=_BLOCK_H, BW=_BLOCK_W, num_warps=_NUM_WARPS)
    return y


def pyr_down_adjoint(g: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Transpose of :func:`pyr_down` for an input of size (H, W): (B, C, m, mw) -> (B, C, H, W)."""
    B, C, m, mw = g.shape
    y = g.new_empty(B, C, H, W)
    total, n_th, n_tw = _grid(B, C, H, W)
    if total:
        _down_adj_kernel[(total,)](g, y, C, m, mw, H, W, n_th, n_tw, *g.stride(), *y.stride(),
                                   ACC=_acc(g.dtype), BH=_BLOCK_H, BW=_BLOCK_W,
                                   num_warps=_NUM_WARPS)
    return y


def pyr_up_adjoint(g: torch.Tensor, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
    """Transpose of :func:`pyr_up` (times ``scale``): (B, C, Ho, Wo) -> (B, C, h, w)."""
    B, C, Ho, Wo = g.shape
    y = g.new_empty(B, C, h, w)
    total, n_th, n_tw = _grid(B, C, h, w)
    if total:
        _up_adj_kernel[(total,)](g, y, C, Ho, Wo, h, w, n_th, n_tw, float(scale),
                                 *g.stride(), *y.stride(),
                                 ACC=_acc(g.dtype), BH=_BLOCK_H, BW=_BLOCK_W,
                                 num_warps=_NUM_WARPS)
    return y
