"""Triton kernels for the Burt-Adelson / OpenCV pyramids (conventions: uhrops/pyramid.py).

Forward, two kinds of kernels share each op's column tiles:

- ``_down_kernel`` / ``_up_kernel`` (vectorised, interior column tiles): each thread walks down
  a strip of rows for a group of 4 output (pyr_down) or 8 output (pyr_up) columns; every input
  row it needs is loaded once as an aligned vector plus a two-sample halo, filtered
  horizontally in registers, and the last 3-5 filtered rows are combined vertically. Each
  input element is fetched about once (1.56x at 2448² with the halos, against 25 scalar loads
  per output before), with 128-bit loads where the widths allow. ``_up_kernel`` optionally
  fuses ``base + sign * up`` (a Laplacian level, sign -1, or a reconstruction step, sign +1),
  reading the base with vector loads.
- ``_down_edge_kernel`` / ``_up_edge_kernel`` (gathers): the first and last column tiles
  (reflect-101 on columns, ragged widths) and every tile when columns are not unit-stride.
  ``_down_edge_kernel`` blurs with [1, 4, 6, 4, 1]/16 per axis at the kept outputs (5 x 5
  taps, reflect-101 folded in the kernel); ``_up_edge_kernel`` evaluates the expand (zero
  insertion + 4x the kernel) polyphase, 3 x 3 coarse samples per output.

Backward: ``_down_adj_kernel`` and ``_up_adj_kernel``, the exact adjoints (transposed
operators, the reflect-101 border folded back), as gathers.

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

from uhrops.kernels._launch import interpreted, launch, vector_width

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
def _tile(pid, n_th, n_tw, C, tw_lo, tw_gap, th_lo, th_gap, BH: tl.constexpr,
          BW: tl.constexpr):
    """(b, c, rows, cols) of program ``pid``. Column tiles t >= tw_lo are shifted by tw_gap,
    row tiles t >= th_lo by th_gap: the edge kernels skip the interior tiles that the
    vectorised kernels own."""
    tw = pid % n_tw
    tw = tw + tl.where(tw >= tw_lo, tw_gap, 0)
    t = pid // n_tw
    th = t % n_th
    th = th + tl.where(th >= th_lo, th_gap, 0)
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
def _down_edge_kernel(x_ptr, y_ptr, C, H, W, Ho, Wo, n_th, n_tw, tw_lo, tw_gap,
                      sxb, sxc, sxh, sxw, syb, syc, syh, syw,
                      ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, i, j = _tile(tl.program_id(0), n_th, n_tw, C, tw_lo, tw_gap, n_th, 0, BH, BW)
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
def _up_edge_kernel(x_ptr, base_ptr, y_ptr, C, h, w, Ho, Wo, n_th, n_tw, tw_lo, tw_gap, sign,
                    sxb, sxc, sxh, sxw, sbb, sbc, sbh, sbw, syb, syc, syh, syw,
                    HAS_BASE: tl.constexpr, ACC: tl.constexpr, BH: tl.constexpr,
                    BW: tl.constexpr):
    b, c, r, q = _tile(tl.program_id(0), n_th, n_tw, C, tw_lo, tw_gap, n_th, 0, BH, BW)
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
def _down_adj_kernel(g_ptr, y_ptr, C, m, mw, H, W, n_th, n_tw, tw_lo, tw_gap, th_lo, th_gap,
                     sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                     ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    b, c, j, l = _tile(tl.program_id(0), n_th, n_tw, C, tw_lo, tw_gap, th_lo, th_gap, BH, BW)
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
def _up_adj_kernel(g_ptr, y_ptr, C, Ho, Wo, h, w, n_th, n_tw, tw_lo, tw_gap, th_lo, th_gap,
                   scale,
                   sgb, sgc, sgh, sgw, syb, syc, syh, syw,
                   ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """grad_x[s] = sum over outputs r in [2s - 2, 2s + 2] of B[r, s] * g[r] (per axis)."""
    b, c, s, v = _tile(tl.program_id(0), n_th, n_tw, C, tw_lo, tw_gap, th_lo, th_gap, BH, BW)
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
# Vectorised interior kernels
#
# A program owns RS row strips x G column groups; one thread holds one (strip, group) pair: 4
# consecutive outputs of pyr_down (8 of pyr_up) in each row of its strip. It walks down its
# strip (static loop), loads every input row it needs once (the 2-3 halo rows between strips
# are loaded by both), filters it horizontally in registers and combines the last rows
# vertically, so each input element is fetched about once: a group's columns as one contiguous
# aligned vector (two 128-bit loads for pyr_down in float32, one for pyr_up), plus its left and
# right neighbours (the horizontal halo) as two short loads. Only column tiles whose whole
# footprint lies inside the image are run here (no reflect-101 on columns, no column masks);
# the edge kernels above take the first and the last column tiles, and everything when the
# columns are not unit-stride. Rows fold reflect-101 per row (a scalar per strip), so borders
# and sides of 1-3 rows need nothing special.
# ----------------------------------------------------------------------------------------------


@triton.jit
def _down_hrow(xb, roff, cg, RS: tl.constexpr, G: tl.constexpr, VX: tl.constexpr,
               ACC: tl.constexpr):
    """Horizontal [1, 4, 6, 4, 1] at the even columns 2j .. 2j+6 of each group (cg = 2j, the
    group's first input column) of the rows at offsets roff: [RS, G, 2, 2] (index = 2a + q
    is the output u = 0..3)."""
    k8 = tl.arange(0, 8)
    off = roff[:, None, None] + cg[None, :, None] + k8[None, None, :]
    if VX > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, 1, VX)), (1, 1, VX))
    m = tl.load(xb + off).to(ACC)  # x[2j .. 2j+8)
    k2 = tl.arange(0, 2)
    offl = roff[:, None, None] + (cg - 2)[None, :, None] + k2[None, None, :]
    if VX > 1:
        offl = tl.max_contiguous(tl.multiple_of(offl, (1, 1, 2)), (1, 1, 2))
    lm2, lm1 = tl.split(tl.load(xb + offl).to(ACC))  # x[2j-2], x[2j-1]
    r = tl.load(xb + (roff[:, None] + cg[None, :] + 8)).to(ACC)  # x[2j+8]
    ev, od = tl.split(tl.reshape(m, [RS, G, 4, 2]))  # x[2j+2u], x[2j+2u+1]
    e02, e13 = tl.split(tl.reshape(ev, [RS, G, 2, 2]))
    o02, o13 = tl.split(tl.reshape(od, [RS, G, 2, 2]))
    e0, e2 = tl.split(e02)
    e1, e3 = tl.split(e13)
    o0, o2 = tl.split(o02)
    o1, o3 = tl.split(o13)
    h0 = (lm2 + e1) + 4.0 * (lm1 + o0) + 6.0 * e0
    h1 = (e0 + e2) + 4.0 * (o0 + o1) + 6.0 * e1
    h2 = (e1 + e3) + 4.0 * (o1 + o2) + 6.0 * e2
    h3 = (e2 + r) + 4.0 * (o2 + o3) + 6.0 * e3
    return tl.join(tl.join(h0, h2), tl.join(h1, h3))


@triton.jit
def _down_kernel(x_ptr, y_ptr, C, H, Ho, n_th, th0, n_tf, scale, sxb, sxc, sxh, syb, syc, syh,
                 ACC: tl.constexpr, RS: tl.constexpr, BH: tl.constexpr, G: tl.constexpr,
                 VX: tl.constexpr, VY: tl.constexpr):
    """scale x [1, 4, 6, 4, 1]^2 at the even samples (pyr_down: scale 1/256; in the interior
    also the adjoint of pyr_up, scale 4/256) on interior column tiles 1 .. n_tf (tile = 4 G
    output columns) and row tiles th0 .. th0 + n_th - 1."""
    pid = tl.program_id(0)
    tw = pid % n_tf + 1
    t = pid // n_tf
    th = t % n_th + th0
    bc = t // n_th
    b = (bc // C).to(tl.int64)
    c = (bc % C).to(tl.int64)
    j0 = tw * (4 * G)
    cg = (2 * (j0 + tl.arange(0, G) * 4)).to(tl.int64)
    i = th * (RS * BH) + tl.arange(0, RS) * BH  # first output row of each strip
    # Plane offsets go into every offset (not into the base pointer) so that the alignment
    # hints cover them: the host checked that VX/VY divide the plane strides too.
    xp = b * sxb + c * sxc
    hA = _down_hrow(x_ptr, xp + _refl(2 * i - 2, H).to(tl.int64) * sxh, cg, RS, G, VX, ACC)
    hB = _down_hrow(x_ptr, xp + _refl(2 * i - 1, H).to(tl.int64) * sxh, cg, RS, G, VX, ACC)
    hC = _down_hrow(x_ptr, xp + _refl(2 * i, H).to(tl.int64) * sxh, cg, RS, G, VX, ACC)
    yp = b * syb + c * syc
    cols = (j0 + tl.arange(0, 4 * G)).to(tl.int64)
    for k in tl.static_range(BH):
        hD = _down_hrow(x_ptr, xp + _refl(2 * (i + k) + 1, H).to(tl.int64) * sxh, cg, RS, G,
                        VX, ACC)
        hE = _down_hrow(x_ptr, xp + _refl(2 * (i + k) + 2, H).to(tl.int64) * sxh, cg, RS, G,
                        VX, ACC)
        acc = ((hA + hE) + 4.0 * (hB + hD) + 6.0 * hC) * scale
        off = yp + (i + k).to(tl.int64)[:, None] * syh + cols[None, :]
        if VY > 1:
            off = tl.max_contiguous(tl.multiple_of(off, (1, VY)), (1, VY))
        tl.store(y_ptr + off, tl.reshape(acc, [RS, 4 * G]).to(y_ptr.dtype.element_ty),
                 mask=((i + k) < Ho)[:, None])
        hA = hC
        hB = hD
        hC = hE


@triton.jit
def _up_row_src(p, n):
    """Coarse row feeding padded coarse position p >= -1: x[-1] = x[1] (x[0] if n == 1),
    x[n] = x[n-1]; positions past n (rows of masked strips) clamp to n-1."""
    return tl.where(p < 0, tl.minimum(n - 1, 1), tl.minimum(p, n - 1))


@triton.jit
def _up_hrow(xb, roff, cg, RS: tl.constexpr, G: tl.constexpr, VX: tl.constexpr,
             ACC: tl.constexpr):
    """Horizontal expand of coarse columns i .. i+3 of each group (cg = i): 8 output columns
    2i .. 2i+7 times 8 (even: x[-1] + 6 x + x[+1]; odd: 4 x + 4 x[+1]): [RS, G, 2, 2, 2]
    (index = 4a + 2q + parity, u = 2a + q)."""
    k4 = tl.arange(0, 4)
    off = roff[:, None, None] + cg[None, :, None] + k4[None, None, :]
    if VX > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, 1, VX)), (1, 1, VX))
    m = tl.load(xb + off).to(ACC)  # x[i .. i+4)
    lft = tl.load(xb + (roff[:, None] + cg[None, :] - 1)).to(ACC)  # x[i-1]
    rgt = tl.load(xb + (roff[:, None] + cg[None, :] + 4)).to(ACC)  # x[i+4]
    a02, a13 = tl.split(tl.reshape(m, [RS, G, 2, 2]))
    x0, x2 = tl.split(a02)
    x1, x3 = tl.split(a13)
    e0 = (lft + x1) + 6.0 * x0
    e1 = (x0 + x2) + 6.0 * x1
    e2 = (x1 + x3) + 6.0 * x2
    e3 = (x2 + rgt) + 6.0 * x3
    o0 = 4.0 * (x0 + x1)
    o1 = 4.0 * (x1 + x2)
    o2 = 4.0 * (x2 + x3)
    o3 = 4.0 * (x3 + rgt)
    ev = tl.join(tl.join(e0, e2), tl.join(e1, e3))
    od = tl.join(tl.join(o0, o2), tl.join(o1, o3))
    return tl.join(ev, od)


@triton.jit
def _up_store(y_ptr, base_ptr, yp, bp, r, cols, syh, sbh, vals, sign, Ho,
              RS: tl.constexpr, G: tl.constexpr, HAS_BASE: tl.constexpr, ACC: tl.constexpr,
              VY: tl.constexpr):
    r64 = r.to(tl.int64)[:, None]
    mask = (r < Ho)[:, None]
    vals = tl.reshape(vals, [RS, 8 * G])
    if HAS_BASE:
        boff = bp + r64 * sbh + cols[None, :]
        if VY > 1:
            boff = tl.max_contiguous(tl.multiple_of(boff, (1, VY)), (1, VY))
        vals = tl.load(base_ptr + boff, mask=mask, other=0.0).to(ACC) + sign * vals
    off = yp + r64 * syh + cols[None, :]
    if VY > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, VY)), (1, VY))
    tl.store(y_ptr + off, vals.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _up_kernel(x_ptr, base_ptr, y_ptr, C, h, Ho, n_th, th0, n_tf, sign, scale,
               sxb, sxc, sxh, sbb, sbc, sbh, syb, syc, syh,
               HAS_BASE: tl.constexpr, ACC: tl.constexpr, RS: tl.constexpr, BH: tl.constexpr,
               G: tl.constexpr, VX: tl.constexpr, VY: tl.constexpr):
    """Expand (scale x (1, 6, 1) / (4, 4) per axis; pyr_up: scale 1/64; in the interior also
    the adjoint of pyr_down, scale 1/256), + base + sign * up, on interior column tiles
    1 .. n_tf (tile = 4 G coarse, 8 G output columns) and row tiles th0 .. th0 + n_th - 1; a
    strip is BH coarse rows = 2 BH output rows."""
    pid = tl.program_id(0)
    tw = pid % n_tf + 1
    t = pid // n_tf
    th = t % n_th + th0
    bc = t // n_th
    b = (bc // C).to(tl.int64)
    c = (bc % C).to(tl.int64)
    i0 = tw * (4 * G)
    cg = (i0 + tl.arange(0, G) * 4).to(tl.int64)
    s = th * (RS * BH) + tl.arange(0, RS) * BH  # first coarse row of each strip
    # Plane offsets inside the offsets, where the alignment hints cover them (see _down_kernel).
    xp = b * sxb + c * sxc
    yp = b * syb + c * syc
    bp = b * sbb + c * sbc
    cols = (2 * i0 + tl.arange(0, 8 * G)).to(tl.int64)
    hA = _up_hrow(x_ptr, xp + _up_row_src(s - 1, h).to(tl.int64) * sxh, cg, RS, G, VX, ACC)
    hB = _up_hrow(x_ptr, xp + _up_row_src(s, h).to(tl.int64) * sxh, cg, RS, G, VX, ACC)
    for k in tl.static_range(BH):
        hC = _up_hrow(x_ptr, xp + _up_row_src(s + k + 1, h).to(tl.int64) * sxh, cg, RS, G, VX,
                      ACC)
        even = ((hA + hC) + 6.0 * hB) * scale
        odd = (hB + hC) * (4.0 * scale)
        r = 2 * (s + k)
        _up_store(y_ptr, base_ptr, yp, bp, r, cols, syh, sbh, even, sign, Ho, RS, G,
                  HAS_BASE, ACC, VY)
        _up_store(y_ptr, base_ptr, yp, bp, r + 1, cols, syh, sbh, odd, sign, Ho, RS, G,
                  HAS_BASE, ACC, VY)
        hA = hB
        hB = hC


# ----------------------------------------------------------------------------------------------
# Launchers (shapes and arguments are checked by uhrops/pyramid.py)
# ----------------------------------------------------------------------------------------------

# Vectorised kernels: (RS strips, BH rows per strip, G groups), 4 warps = RS * G threads on a
# GPU; small tiles under the interpreter so the tests' small images have interior tiles.
_DOWN_FAST = (8, 8, 16)
_UP_FAST = (32, 4, 4)
# The fused base + sign * up (Laplacian levels) holds twice the values per thread: wider
# groups, fewer strips (sm_100's ptxas spilled 40 bytes in float16 at (32, 4, 4), and 8 bytes
# without a base at (16, 4, 8); neither spills in its own configuration).
_UP_FAST_BASE = (16, 4, 8)
_DOWN_FAST_INTERP = (2, 2, 4)
_UP_FAST_INTERP = (2, 2, 2)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _unit_cols(*ts: torch.Tensor) -> bool:
    return all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in ts)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    """Blur + keep even samples: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
    B, C, H, W = x.shape
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    y = x.new_empty(B, C, Ho, Wo)
    if y.numel() == 0:
        return y
    rs, bh, g = _DOWN_FAST_INTERP if interpreted(x) else _DOWN_FAST
    bw = 4 * g  # output columns per tile, both kernels
    # Interior tiles 1 .. n_tf: output columns j of tile t need inputs 2j-2 .. 2j+2 inside
    # the image, i.e. t >= 1 and 2 (t + 1) bw <= W - 1.
    n_tf = max(0, (W - 1) // (2 * bw) - 1) if _unit_cols(x) else 0
    if n_tf:
        n_th = triton.cdiv(Ho, rs * bh)
        launch(_down_kernel, (B * C * n_th * n_tf,), x, y, C, H, Ho, n_th, 0, n_tf,
               1.0 / 256.0, *x.stride()[:3], *y.stride()[:3], ACC=_acc(x.dtype), RS=rs, BH=bh, G=g,
               VX=vector_width(x, 8, *x.stride()[:3]), VY=vector_width(y, 4, *y.stride()[:3]),
               num_warps=max(1, rs * g // 32))
    n_tw = triton.cdiv(Wo, bw)
    n_th = triton.cdiv(Ho, _BLOCK_H)
    n_edge = n_tw - n_tf
    launch(_down_edge_kernel, (B * C * n_th * n_edge,), x, y, C, H, W, Ho, Wo, n_th, n_edge,
           1, n_tf, *x.stride(), *y.stride(), ACC=_acc(x.dtype), BH=_BLOCK_H, BW=bw,
           num_warps=_NUM_WARPS)
    return y


def pyr_up(x: torch.Tensor, Ho: int, Wo: int, base: torch.Tensor | None = None,
           sign: float = 1.0) -> torch.Tensor:
    """Expand (B, C, h, w) -> (B, C, Ho, Wo), Ho in {2h-1, 2h}; with ``base``: base + sign*up."""
    B, C, h, w = x.shape
    y = x.new_empty(B, C, Ho, Wo)
    if y.numel() == 0:
        return y
    bt = base if base is not None else y
    rs, bh, g = _UP_FAST_INTERP if interpreted(x) else (
        _UP_FAST_BASE if base is not None else _UP_FAST)
    bwc = 4 * g  # coarse columns per tile; 2 bwc output columns
    # Interior tiles 1 .. n_tf: coarse columns i of tile t need i-1 .. i+1 inside the image,
    # i.e. t >= 1 and (t + 1) bwc <= w - 1.
    n_tf = max(0, (w - 1) // bwc - 1) if _unit_cols(x, bt) else 0
    if n_tf:
        n_th = triton.cdiv(triton.cdiv(Ho, 2), rs * bh)
        launch(_up_kernel, (B * C * n_th * n_tf,), x, bt, y, C, h, Ho, n_th, 0, n_tf,
               float(sign), 1.0 / 64.0, *x.stride()[:3], *bt.stride()[:3], *y.stride()[:3],
               HAS_BASE=base is not None, ACC=_acc(x.dtype), RS=rs, BH=bh, G=g,
               VX=vector_width(x, 4, *x.stride()[:3]),
               VY=vector_width(y, 8, *y.stride()[:3], *bt.stride()[:3], bt.storage_offset()),
               num_warps=max(1, rs * g // 32))
    n_tw = triton.cdiv(Wo, 2 * bwc)
    n_th = triton.cdiv(Ho, _BLOCK_H)
    n_edge = n_tw - n_tf
    launch(_up_edge_kernel, (B * C * n_th * n_edge,), x, bt, y, C, h, w, Ho, Wo, n_th, n_edge,
           1, n_tf, float(sign), *x.stride(), *bt.stride(), *y.stride(),
           HAS_BASE=base is not None, ACC=_acc(x.dtype),
           BH=_BLOCK_H, BW=2 * bwc, num_warps=_NUM_WARPS)
    return y


def pyr_down_adjoint(g: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Transpose of :func:`pyr_down` for an input of size (H, W): (B, C, m, mw) -> (B, C, H, W).

    Away from the borders (output rows and columns 3 .. side-4) the transpose of
    blur+decimate is the expand divided by 4: ``_up_kernel`` (scale 1/256) computes those
    tiles; ``_down_adj_kernel`` (the exact transpose with the reflect-101 folds) the rest.
    """
    B, C, m, mw = g.shape
    y = g.new_empty(B, C, H, W)
    if y.numel() == 0:
        return y
    rs, bh, gg = _UP_FAST_INTERP if interpreted(g) else _UP_FAST
    ct, rt = 8 * gg, 2 * rs * bh  # output columns / rows of a vectorised tile
    # Interior tiles t >= 1 with outputs up to 2 (t + 1) * tile - 1 <= side - 4.
    n_tf = max(0, (W - 3) // ct - 1) if _unit_cols(g) else 0
    n_fr = max(0, (H - 3) // rt - 1) if n_tf else 0
    if n_fr:
        launch(_up_kernel, (B * C * n_fr * n_tf,), g, y, y, C, m, H, n_fr, 1, n_tf, 1.0,
               1.0 / 256.0, *g.stride()[:3], *y.stride()[:3], *y.stride()[:3],
               HAS_BASE=False, ACC=_acc(g.dtype), RS=rs, BH=bh, G=gg,
               VX=vector_width(g, 4, *g.stride()[:3]), VY=vector_width(y, 8, *y.stride()[:3]),
               num_warps=max(1, rs * gg // 32))
    _edges(_down_adj_kernel, B, C, H, W, ct, rt, n_tf, n_fr, g, y, C, m, mw, H, W,
           extra=(), strides=(*g.stride(), *y.stride()), ACC=_acc(g.dtype))
    return y


def _edges(kernel, B: int, C: int, H: int, W: int, ct: int, rt: int, n_tf: int, n_fr: int,
           *args, extra: tuple, strides: tuple, **meta) -> None:
    """Launch an edge kernel over every tile of the (H, W) output outside the vectorised
    kernel's rectangle (column tiles 1 .. n_tf of ``ct`` columns x row tiles 1 .. n_fr of
    ``rt`` rows): all rows of the other column tiles, then the border rows of those."""
    n_th = triton.cdiv(H, _BLOCK_H)
    n_tw = triton.cdiv(W, ct)
    common = dict(BH=_BLOCK_H, BW=ct, num_warps=_NUM_WARPS, **meta)
    launch(kernel, (B * C * n_th * (n_tw - n_tf),), *args, n_th, n_tw - n_tf, 1, n_tf, n_th, 0,
           *extra, *strides, **common)
    if n_tf:
        per = rt // _BLOCK_H  # edge row tiles per vectorised row tile
        n_rows = n_th - per * n_fr
        launch(kernel, (B * C * n_rows * n_tf,), *args, n_rows, n_tf, 0, 1, per, per * n_fr,
               *extra, *strides, **common)


def pyr_up_adjoint(g: torch.Tensor, h: int, w: int, scale: float = 1.0) -> torch.Tensor:
    """Transpose of :func:`pyr_up` (times ``scale``): (B, C, Ho, Wo) -> (B, C, h, w).

    Away from the borders the transpose of the expand is 4 x blur+decimate: ``_down_kernel``
    (scale 4/256) computes those tiles; ``_up_adj_kernel`` (the exact transpose with the
    border folds and the odd-size crop) the rest.
    """
    B, C, Ho, Wo = g.shape
    y = g.new_empty(B, C, h, w)
    if y.numel() == 0:
        return y
    rs, bh, gg = _DOWN_FAST_INTERP if interpreted(g) else _DOWN_FAST
    ct, rt = 4 * gg, rs * bh
    # Interior tiles t >= 1 whose inputs 2s - 2 .. 2s + 2 lie inside g (no crop, no fold).
    n_tf = max(0, (Wo - 1) // (2 * ct) - 1) if _unit_cols(g) else 0
    n_fr = max(0, (Ho - 1) // (2 * rt) - 1) if n_tf else 0
    if n_fr:
        launch(_down_kernel, (B * C * n_fr * n_tf,), g, y, C, Ho, h, n_fr, 1, n_tf,
               float(scale) / 64.0, *g.stride()[:3], *y.stride()[:3], ACC=_acc(g.dtype),
               RS=rs, BH=bh, G=gg, VX=vector_width(g, 8, *g.stride()[:3]),
               VY=vector_width(y, 4, *y.stride()[:3]), num_warps=max(1, rs * gg // 32))
    _edges(_up_adj_kernel, B, C, h, w, ct, rt, n_tf, n_fr, g, y, C, Ho, Wo, h, w,
           extra=(float(scale),), strides=(*g.stride(), *y.stride()), ACC=_acc(g.dtype))
    return y
