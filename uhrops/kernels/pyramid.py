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

from uhrops.kernels._launch import launch

# Output tile per program: 4 rows x 64 columns, 4 warps (row-contiguous stores, few programs
# for the interpreter). 8 rows spilled 86-158 bytes in the 16-bit pyr_down on sm_90 (ptxas
# held it to 96 registers); 4 rows spill nothing in any specialisation (compile check).
_BLOCK_H = 4
_BLOCK_W = 64
_NUM_WARPS = 4


# ----------------------------------------------------------------------------------------------
# Per-axis index/weight helpers (1-D vectors; closed forms, so a tile costs few integer ops)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _refl(p, n):
    """Reflect-101 fold of p into [0, n) for p in [-(n-1), 2n-2] (what the kernels need), with
    the results of the repeated folds on sides n <= 2 (n == 2: p in [-2, 2]; n == 1: 0)."""
    q = tl.abs(p)
    q = tl.where(q >= n, 2 * n - 2 - q, q)
    return tl.minimum(tl.maximum(q, 0), n - 1)


@triton.jit
def _tile(pid, n_th, n_tw, C, BH: tl.constexpr, BW: tl.constexpr):
    tw = pid % n_tw
    t = pid // n_tw
    th = t % n_th
    bc = t // n_th
    b = bc // C
    c = bc - b * C
    rows = th * BH + tl.arange(0, BH)
    cols = tw * BW + tl.arange(0, BW)
    return b.to(tl.int64), c.to(tl.int64), rows, cols


@triton.jit
def _up_taps(r, n):
    """Expand along one axis: out[r] = w0 x[s0] + w1 x[s1] + w2 x[s2].

    With i = r // 2: even r -> (1, 6, 1)/8 on (i-1, i, i+1), odd r -> (0, 4, 4)/8, where the
    padded coarse samples are x[-1] = x[1] (x[0] if n == 1) and x[n] = x[n-1], i.e. the
    reflect-101 border of the zero-inserted signal.
    """
    i = r // 2
    even = (r - 2 * i) == 0
    s0 = tl.where(i == 0, tl.minimum(n - 1, 1), tl.minimum(i - 1, n - 1))
    s1 = tl.minimum(i, n - 1)
    s2 = tl.minimum(i + 1, n - 1)
    w0 = tl.where(even, 0.125, 0.0)
    w1 = tl.where(even, 0.75, 0.5)
    w2 = tl.where(even, 0.125, 0.5)
    return s0, s1, s2, w0, w1, w2


@triton.jit
def _down_adj_taps(j, n, m):
    """Adjoint of blur+decimate along one axis (n samples -> m = ceil(n/2)):
    grad[j] = w0 g[i0] + w1 g[i0+1] + w2 g[i0+2], i0 = j // 2 - 1.

    Interior: even j -> (1, 6, 1)/16, odd j -> (0, 4, 4)/16. The reflect-101 border folds the
    taps that fell on padded positions back: p = -1 -> j = 1, p = -2 -> j = 2, and on the right
    p = n (n even: j = n-2; n odd: j = n-2) and p = n+1 (n odd: j = n-3). Sides 1 and 2 are
    closed forms (1 and 1/2 on g[0]).
    """
    i0 = j // 2 - 1
    even = (j - 2 * (i0 + 1)) == 0
    w0 = tl.where(even & (i0 >= 0), 0.0625, 0.0)
    w1 = tl.where(even, 0.375, 0.25)
    w2 = tl.where(i0 + 2 < m, tl.where(even, 0.0625, 0.25), 0.0)
    w1 += tl.where(j == 1, 0.25, 0.0)
    w0 += tl.where(j == 2, 0.0625, 0.0)
    n_odd = (n % 2) == 1
    n_even = (n % 2) == 0
    w1 += tl.where((j == n - 2) & n_even, 0.0625, 0.0)
    w2 += tl.where((j == n - 2) & n_odd, 0.25, 0.0)
    w2 += tl.where((j == n - 3) & n_odd, 0.0625, 0.0)
    small = n <= 2
    w0 = tl.where(small, 0.0, w0)
    w2 = tl.where(small, 0.0, w2)
    w1 = tl.where(small, tl.where(n == 1, 1.0, 0.5), w1)
    return i0, w0, w1, w2


@triton.jit
def _up_adj_w(s, t: tl.constexpr, h, n_out):
    """Adjoint of the expand along one axis: weight of g[2s - 2 + t] in grad[s], t = 0..4.

    Interior: (1, 4, 6, 4, 1)/8 over r = 2s-2 .. 2s+2 (rows past ``n_out`` are cropped away).
    Border: the padded coarse samples fold back: x[-1] = x[1] gives r = 0 another 1/8 on
    s = 1 (on s = 0 if h == 1); x[h] = x[h-1] gives r = 2h-2 another 1/8 and r = 2h-1 another
    1/2 on s = h-1.
    """
    r = 2 * s + (t - 2)
    base: tl.constexpr = 0.125 if (t == 0 or t == 4) else (0.5 if (t == 1 or t == 3) else 0.75)
    w = tl.where((r >= 0) & (r < n_out), base, 0.0)
    sl = tl.minimum(h - 1, 1)
    if t == 0:
        w += tl.where((s == sl) & (s == 1), 0.125, 0.0)
    if t == 2:
        w += tl.where((s == sl) & (s == 0), 0.125, 0.0)
        w += tl.where(s == h - 1, 0.125, 0.0)
    if t == 3:
        w += tl.where((s == h - 1) & (r < n_out), 0.5, 0.0)
    return r, w


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
def _row3(rp, wr, c0, c1, c2, wc0, wc1, wc2, mask, ACC: tl.constexpr):
    """wr * (wc0 x[c0] + wc1 x[c1] + wc2 x[c2]) for one row offset; zero weights not loaded."""
    m = mask & (wr != 0.0)[:, None]
    v0 = tl.load(rp + c0, mask=m & (wc0 != 0.0)[None, :], other=0.0).to(ACC)
    v1 = tl.load(rp + c1, mask=m & (wc1 != 0.0)[None, :], other=0.0).to(ACC)
    v2 = tl.load(rp + c2, mask=m & (wc2 != 0.0)[None, :], other=0.0).to(ACC)
    row = wc0[None, :] * v0 + wc1[None, :] * v1 + wc2[None, :] * v2
    return wr[:, None] * row


@triton.jit
def _up_kernel(x_ptr, base_ptr, y_ptr, C, h, w, Ho, Wo, n_th, n_tw, sign,
               sxb, sxc, sxh, sxw, sbb, sbc, sbh, sbw, syb, syc, syh, syw,
               HAS_BASE: tl.constexpr, ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, r, q = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (r < Ho)[:, None] & (q < Wo)[None, :]
    r0, r1, r2, wr0, wr1, wr2 = _up_taps(r, h)
    q0, q1, q2, wc0, wc1, wc2 = _up_taps(q, w)
    wr0, wr1, wr2 = wr0.to(ACC), wr1.to(ACC), wr2.to(ACC)
    wc0, wc1, wc2 = wc0.to(ACC), wc1.to(ACC), wc2.to(ACC)
    c0 = (q0.to(tl.int64) * sxw)[None, :]
    c1 = (q1.to(tl.int64) * sxw)[None, :]
    c2 = (q2.to(tl.int64) * sxw)[None, :]
    xb = x_ptr + b * sxb + c * sxc
    acc = _row3(xb + (r0.to(tl.int64) * sxh)[:, None], wr0, c0, c1, c2, wc0, wc1, wc2, mask, ACC)
    acc += _row3(xb + (r1.to(tl.int64) * sxh)[:, None], wr1, c0, c1, c2, wc0, wc1, wc2, mask, ACC)
    acc += _row3(xb + (r2.to(tl.int64) * sxh)[:, None], wr2, c0, c1, c2, wc0, wc1, wc2, mask, ACC)
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
    i0, wr0, wr1, wr2 = _down_adj_taps(j, H, m)
    k0, wc0, wc1, wc2 = _down_adj_taps(l, W, mw)
    wr0, wr1, wr2 = wr0.to(ACC), wr1.to(ACC), wr2.to(ACC)
    wc0, wc1, wc2 = wc0.to(ACC), wc1.to(ACC), wc2.to(ACC)
    c0 = (tl.maximum(k0, 0).to(tl.int64) * sgw)[None, :]
    c1 = (tl.minimum(k0 + 1, mw - 1).to(tl.int64) * sgw)[None, :]
    c2 = (tl.minimum(k0 + 2, mw - 1).to(tl.int64) * sgw)[None, :]
    gb = g_ptr + b * sgb + c * sgc
    acc = _row3(gb + (tl.maximum(i0, 0).to(tl.int64) * sgh)[:, None], wr0, c0, c1, c2,
                wc0, wc1, wc2, mask, ACC)
    acc += _row3(gb + (tl.minimum(i0 + 1, m - 1).to(tl.int64) * sgh)[:, None], wr1, c0, c1, c2,
                 wc0, wc1, wc2, mask, ACC)
    acc += _row3(gb + (tl.minimum(i0 + 2, m - 1).to(tl.int64) * sgh)[:, None], wr2, c0, c1, c2,
                 wc0, wc1, wc2, mask, ACC)
    yo = b * syb + c * syc + j.to(tl.int64)[:, None] * syh + l.to(tl.int64)[None, :] * syw
    tl.store(y_ptr + yo, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row5w(rp, wr, c0, c1, c2, c3, c4, wc0, wc1, wc2, wc3, wc4, mask, ACC: tl.constexpr):
    m = mask & (wr != 0.0)[:, None]
    v0 = tl.load(rp + c0, mask=m & (wc0 != 0.0)[None, :], other=0.0).to(ACC)
    v1 = tl.load(rp + c1, mask=m & (wc1 != 0.0)[None, :], other=0.0).to(ACC)
    v2 = tl.load(rp + c2, mask=m & (wc2 != 0.0)[None, :], other=0.0).to(ACC)
    v3 = tl.load(rp + c3, mask=m & (wc3 != 0.0)[None, :], other=0.0).to(ACC)
    v4 = tl.load(rp + c4, mask=m & (wc4 != 0.0)[None, :], other=0.0).to(ACC)
    row = (wc0[None, :] * v0 + wc1[None, :] * v1 + wc2[None, :] * v2 + wc3[None, :] * v3
           + wc4[None, :] * v4)
    return wr[:, None] * row


@triton.jit
def _up_adj_kernel(g_ptr, y_ptr, C, Ho, Wo, h, w, n_th, n_tw, scale,
                   sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                   ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """grad_x[s] = sum over outputs r in [2s - 2, 2s + 2] of B[r, s] * g[r] (per axis)."""
    b, c, s, v = _tile(tl.program_id(0), n_th, n_tw, C, BH, BW)
    mask = (s < h)[:, None] & (v < w)[None, :]
    q0, wc0 = _up_adj_w(v, 0, w, Wo)
    q1, wc1 = _up_adj_w(v, 1, w, Wo)
    q2, wc2 = _up_adj_w(v, 2, w, Wo)
    q3, wc3 = _up_adj_w(v, 3, w, Wo)
    q4, wc4 = _up_adj_w(v, 4, w, Wo)
    c0 = (tl.minimum(tl.maximum(q0, 0), Wo - 1).to(tl.int64) * sgw)[None, :]
    c1 = (tl.minimum(tl.maximum(q1, 0), Wo - 1).to(tl.int64) * sgw)[None, :]
    c2 = (tl.minimum(q2, Wo - 1).to(tl.int64) * sgw)[None, :]
    c3 = (tl.minimum(q3, Wo - 1).to(tl.int64) * sgw)[None, :]
    c4 = (tl.minimum(q4, Wo - 1).to(tl.int64) * sgw)[None, :]
    wc0, wc1, wc2, wc3, wc4 = wc0.to(ACC), wc1.to(ACC), wc2.to(ACC), wc3.to(ACC), wc4.to(ACC)
    gb = g_ptr + b * sgb + c * sgc
    acc = tl.zeros((BH, BW), ACC)
    for t in tl.static_range(5):
        r, wr = _up_adj_w(s, t, h, Ho)
        rp = gb + (tl.minimum(tl.maximum(r, 0), Ho - 1).to(tl.int64) * sgh)[:, None]
        acc += _row5w(rp, wr.to(ACC), c0, c1, c2, c3, c4, wc0, wc1, wc2, wc3, wc4, mask, ACC)
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
        launch(_down_kernel, (total,), x, y, C, H, W, Ho, Wo, n_th, n_tw, *x.stride(), *y.stride(),
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
        launch(_up_kernel, (total,), x, bt, y, C, h, w, Ho, Wo, n_th, n_tw, float(sign),
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
        launch(_down_adj_kernel, (total,), g, y, C, m, mw, H, W, n_th, n_tw, *g.stride(), *y.stride(),
               ACC=_acc(g.dtype), BH=_BLOCK_H, BW=_BLOCK_W,
               num_warps=_NUM_WARPS)
    return y


def pyr_up_adjoint(g: torch.Tensor, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
    """Transpose of :func:`pyr_up` (times ``scale``): (B, C, Ho, Wo) -> (B, C, h, w)."""
    B, C, Ho, Wo = g.shape
    y = g.new_empty(B, C, h, w)
    total, n_th, n_tw = _grid(B, C, h, w)
    if total:
        launch(_up_adj_kernel, (total,), g, y, C, Ho, Wo, h, w, n_th, n_tw, float(scale),
               *g.stride(), *y.stride(),
               ACC=_acc(g.dtype), BH=_BLOCK_H, BW=_BLOCK_W,
               num_warps=_NUM_WARPS)
    return y
