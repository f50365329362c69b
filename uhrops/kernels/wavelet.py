"""Triton kernels for the orthonormal Haar transforms (see uhrops/wavelet.py for conventions).

Every kernel owns one tile of the *coarsest* output of one (batch, channel) plane and keeps
all finer levels of that tile on chip: the input is read once and every output written once,
whatever the number of levels (up to 4 per launch for the decomposition, up to 8 for the
packet tree). A 2x2 block is split into its four samples with reshape/permute/split and put
back with join/permute/reshape, so loads and stores stay row-contiguous.

The mixing butterfly ``_haar4`` is symmetric and orthogonal, hence it is its own inverse: the
same function turns (a, b, c, d) into (A, H, V, D) and back.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from uhrops.kernels._launch import launch, vector_width

# Rows/columns of input each program covers (all levels together), chosen so a program holds
# about 8K elements: enough work per program on a GPU, few programs for the interpreter.
_TILE_ROWS = 64
_TILE_COLS = 128


@triton.jit
def _haar4(a, b, c, d):
    # Halve first: x * 0.5 is exact, so results are bit-identical to (a + b + c + d) / 2 and
    # no intermediate overflows where the result is finite (a constant 3e38 gives V = 0).
    a = a * 0.5
    b = b * 0.5
    c = c * 0.5
    d = d * 0.5
    s = a + b
    t = c + d
    u = a - b
    v = c - d
    return s + t, s - t, u + v, u - v


@triton.jit
def _split2x2(t, R: tl.constexpr, C: tl.constexpr):
    """[R, C] -> the four [R/2, C/2] phases a=(0,0), b=(0,1), c=(1,0), d=(1,1)."""
    t = tl.reshape(t, [R // 2, 2, C // 2, 2])
    t = tl.permute(t, [0, 2, 1, 3])  # [R/2, C/2, row, col]
    col0, col1 = tl.split(t)  # [R/2, C/2, row] each
    a, c = tl.split(col0)
    b, d = tl.split(col1)
    return a, b, c, d


@triton.jit
def _join2x2(a, b, c, d, R: tl.constexpr, C: tl.constexpr):
    """Inverse of _split2x2: four [R, C] phases -> [2R, 2C]."""
    top = tl.join(a, b)  # [R, C, col]
    bot = tl.join(c, d)
    t = tl.join(top, bot)  # [R, C, col, row]
    t = tl.permute(t, [0, 3, 1, 2])  # [R, row, C, col]
    return tl.reshape(t, [2 * R, 2 * C])


@triton.jit
def _pad_src(idx, n, PAD: tl.constexpr):
    """Source index of the one sample pywt pads at the end of an odd axis."""
    if PAD == 1:
        idx = tl.where(idx >= n, n - 1, idx)
    elif PAD == 2:
        idx = tl.where(idx >= n, n - 2, idx)
    elif PAD == 3:
        idx = tl.where(idx >= n, 0, idx)
    return idx


@triton.jit
def _cols_below(cols, n, VEC: tl.constexpr):
    """cols < n, written so that the mask is visibly constant over each group of VEC columns
    (equal to cols < n when VEC divides n and the first column).

    With it, the offsets hint ``max_contiguous(multiple_of(off, (1, VEC)), (1, VEC))`` (kept
    inline in each load and store: through a helper call the compiler lost it) lets Triton
    use VEC-wide accesses. On its own Triton infers this only for sizes and strides divisible
    by 16 elements; a 2448 image's bands are 1224 wide, a multiple of 8 (the host checks, see
    ``vector_width``)."""
    if VEC > 1:
        return (cols // VEC) * VEC < n
    else:
        return cols < n


@triton.jit
def _load_tile(x_ptr, bc, C, H, W, Hp, Wp, sxb, sxc, sxh, sxw, r0, c0,
               R: tl.constexpr, CC: tl.constexpr, PAD: tl.constexpr, VEC: tl.constexpr):
    """Load rows [r0, r0+R) x cols [c0, c0+CC) of plane ``bc`` of the padded (Hp, Wp) image.

    ``VEC`` > 1 only without padding (PAD == -1), unit column stride, and Wp, sxb, sxc, sxh
    multiples of VEC (the host checks)."""
    rows = r0 + tl.arange(0, R)
    cols = c0 + tl.arange(0, CC)
    mask = (rows[:, None] < Hp) & _cols_below(cols[None, :], Wp, VEC)
    if PAD == 0:  # zero padding: the padded sample is simply not loaded
        mask = mask & (rows[:, None] < H) & (cols[None, :] < W)
    else:
        rows = _pad_src(rows, H, PAD)
        cols = _pad_src(cols, W, PAD)
    b = bc // C
    c = bc % C
    off = (b.to(tl.int64) * sxb + c.to(tl.int64) * sxc
           + rows[:, None].to(tl.int64) * sxh + cols[None, :].to(tl.int64) * sxw)
    if VEC > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, VEC)), (1, VEC))
    return tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_plane(ptr, base, vals, r0, c0, h, w, sh, R: tl.constexpr, CC: tl.constexpr,
                 VEC: tl.constexpr):
    """Store an [R, CC] tile at rows r0.., cols c0.. of the (h, w) plane at ptr + base."""
    rows = r0 + tl.arange(0, R)
    cols = c0 + tl.arange(0, CC)
    mask = (rows[:, None] < h) & _cols_below(cols[None, :], w, VEC)
    off = base + rows[:, None].to(tl.int64) * sh + cols[None, :]
    if VEC > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, VEC)), (1, VEC))
    tl.store(ptr + off, vals.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_plane(ptr, base, r0, c0, h, w, sh, R: tl.constexpr, CC: tl.constexpr,
                VEC: tl.constexpr):
    rows = r0 + tl.arange(0, R)
    cols = c0 + tl.arange(0, CC)
    mask = (rows[:, None] < h) & _cols_below(cols[None, :], w, VEC)
    off = base + rows[:, None].to(tl.int64) * sh + cols[None, :]
    if VEC > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, VEC)), (1, VEC))
    return tl.load(ptr + off, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _dec_level(t, hp, sbc, sband, sh, bc64, ti, tj, h, w, RK: tl.constexpr, CK: tl.constexpr,
               VEC: tl.constexpr):
    """One level on an [RK, CK] tile: store its H, V, D bands ((h, w) planes), return A."""
    a, b, c, d = _split2x2(t, RK, CK)
    t, hh, vv, dd = _haar4(a, b, c, d)
    base = bc64 * sbc
    r0 = ti * (RK // 2)
    c0 = tj * (CK // 2)
    _store_plane(hp, base, hh, r0, c0, h, w, sh, RK // 2, CK // 2, VEC)
    _store_plane(hp, base + sband, vv, r0, c0, h, w, sh, RK // 2, CK // 2, VEC)
    _store_plane(hp, base + 2 * sband, dd, r0, c0, h, w, sh, RK // 2, CK // 2, VEC)
    return t


@triton.jit
def _rec_level(t, hp, sbc, sband, sh, bc64, ti, tj, h, w, RK: tl.constexpr, CK: tl.constexpr,
               VEC: tl.constexpr):
    """Inverse of _dec_level: A tile [RK, CK] plus its (h, w) bands -> [2 RK, 2 CK]."""
    base = bc64 * sbc
    r0 = ti * RK
    c0 = tj * CK
    hh = _load_plane(hp, base, r0, c0, h, w, sh, RK, CK, VEC)
    vv = _load_plane(hp, base + sband, r0, c0, h, w, sh, RK, CK, VEC)
    dd = _load_plane(hp, base + 2 * sband, r0, c0, h, w, sh, RK, CK, VEC)
    a, b, c, d = _haar4(t, hh, vv, dd)
    return _join2x2(a, b, c, d, RK, CK)


# The level chains below are written out under constexpr `if`s rather than a
# tl.static_range loop: the tile shape changes from level to level, and Triton's compiler
# (3.9) refuses a constexpr re-bound in each unrolled iteration (the interpreter accepts it).
@triton.jit
def _wavedec_kernel(
    x_ptr, C, H, W, sxb, sxc, sxh, sxw,
    lo_ptr, lo_sbc, lo_sh,
    h1_ptr, h1_sbc, h1_sband, h1_sh,
    h2_ptr, h2_sbc, h2_sband, h2_sh,
    h3_ptr, h3_sbc, h3_sband, h3_sh,
    h4_ptr, h4_sbc, h4_sband, h4_sh,
    hL, wL,
    LEVELS: tl.constexpr, PAD: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    VEC_IN: tl.constexpr, VEC_OUT: tl.constexpr, VEC_1: tl.constexpr, VEC_2: tl.constexpr,
    VEC_3: tl.constexpr, VEC_4: tl.constexpr,
):
    # VEC_OUT: the low band's vector width; VEC_j: level j's bands' (each level's width has
    # its own divisors: 1224, 612, 306, 153 at 2448).
    bc = tl.program_id(0)
    ti = tl.program_id(1)
    tj = tl.program_id(2)
    R: tl.constexpr = BH << LEVELS
    CC: tl.constexpr = BW << LEVELS
    t = _load_tile(x_ptr, bc, C, H, W, hL << LEVELS, wL << LEVELS, sxb, sxc, sxh, sxw,
                   ti * R, tj * CC, R, CC, PAD, VEC_IN)
    bc64 = bc.to(tl.int64)
    # Level j (1 = finest) works on an [R >> (j-1), CC >> (j-1)] tile; its bands are
    # (hL, wL) << (LEVELS - j).
    t = _dec_level(t, h1_ptr, h1_sbc, h1_sband, h1_sh, bc64, ti, tj,
                   hL << (LEVELS - 1), wL << (LEVELS - 1), R, CC, VEC_1)
    if LEVELS >= 2:
        t = _dec_level(t, h2_ptr, h2_sbc, h2_sband, h2_sh, bc64, ti, tj,
                       hL << (LEVELS - 2), wL << (LEVELS - 2), R >> 1, CC >> 1, VEC_2)
    if LEVELS >= 3:
        t = _dec_level(t, h3_ptr, h3_sbc, h3_sband, h3_sh, bc64, ti, tj,
                       hL << (LEVELS - 3), wL << (LEVELS - 3), R >> 2, CC >> 2, VEC_3)
    if LEVELS >= 4:
        t = _dec_level(t, h4_ptr, h4_sbc, h4_sband, h4_sh, bc64, ti, tj, hL, wL, R >> 3, CC >> 3,
                       VEC_4)
    _store_plane(lo_ptr, bc64 * lo_sbc, t, ti * BH, tj * BW, hL, wL, lo_sh, BH, BW, VEC_OUT)


@triton.jit
def _waverec_kernel(
    lo_ptr, lo_sbc, lo_sh,
    h1_ptr, h1_sbc, h1_sband, h1_sh,
    h2_ptr, h2_sbc, h2_sband, h2_sh,
    h3_ptr, h3_sbc, h3_sband, h3_sh,
    h4_ptr, h4_sbc, h4_sband, h4_sh,
    out_ptr, hL, wL,
    LEVELS: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
    VEC_IN: tl.constexpr, VEC_OUT: tl.constexpr, VEC_1: tl.constexpr, VEC_2: tl.constexpr,
    VEC_3: tl.constexpr, VEC_4: tl.constexpr,
):
    # VEC_IN: the low band's vector width, VEC_j level j's bands', VEC_OUT the image's.
    bc = tl.program_id(0)
    ti = tl.program_id(1)
    tj = tl.program_id(2)
    bc64 = bc.to(tl.int64)
    t = _load_plane(lo_ptr, bc64 * lo_sbc, ti * BH, tj * BW, hL, wL, lo_sh, BH, BW, VEC_IN)
    # Coarsest first: level j's bands are (hL, wL) << (LEVELS - j), its A tile
    # [BH, BW] << (LEVELS - j).
    if LEVELS >= 4:
        t = _rec_level(t, h4_ptr, h4_sbc, h4_sband, h4_sh, bc64, ti, tj, hL, wL, BH, BW, VEC_4)
    if LEVELS >= 3:
        t = _rec_level(t, h3_ptr, h3_sbc, h3_sband, h3_sh, bc64, ti, tj,
                       hL << (LEVELS - 3), wL << (LEVELS - 3), BH << (LEVELS - 3),
                       BW << (LEVELS - 3), VEC_3)
    if LEVELS >= 2:
        t = _rec_level(t, h2_ptr, h2_sbc, h2_sband, h2_sh, bc64, ti, tj,
                       hL << (LEVELS - 2), wL << (LEVELS - 2), BH << (LEVELS - 2),
                       BW << (LEVELS - 2), VEC_2)
    t = _rec_level(t, h1_ptr, h1_sbc, h1_sband, h1_sh, bc64, ti, tj,
                   hL << (LEVELS - 1), wL << (LEVELS - 1), BH << (LEVELS - 1),
                   BW << (LEVELS - 1), VEC_1)
    R: tl.constexpr = BH << LEVELS
    CC: tl.constexpr = BW << LEVELS
    H = hL << LEVELS
    W = wL << LEVELS
    _store_plane(out_ptr, bc64 * H * W, t, ti * R, tj * CC, H, W, W, R, CC, VEC_OUT)


@triton.jit
def _packet_level(t, NB: tl.constexpr, RK: tl.constexpr, CK: tl.constexpr):
    """Split each of NB [RK, CK] bands into four: [NB, RK, CK] -> [4 NB, RK/2, CK/2], the new
    band index being 4 * old + j1 + 2 * j2 (j1: row phase, j2: column phase)."""
    t5 = tl.reshape(t, [NB, RK // 2, 2, CK // 2, 2])
    t5 = tl.permute(t5, [0, 1, 3, 2, 4])  # [NB, R/2, C/2, row, col]
    col0, col1 = tl.split(t5)
    a, c = tl.split(col0)
    b, d = tl.split(col1)
    aa, hh, vv, dd = _haar4(a, b, c, d)
    t = tl.join(tl.join(aa, hh), tl.join(vv, dd))  # [NB, R/2, C/2, j1, j2]; band j1 + 2 j2
    t = tl.permute(t, [0, 4, 3, 1, 2])  # [NB, j2, j1, R/2, C/2]
    return tl.reshape(t, [NB * 4, RK // 2, CK // 2])


@triton.jit
def _ipacket_level(t, NB: tl.constexpr, RK: tl.constexpr, CK: tl.constexpr):
    """Inverse of _packet_level: [NB, RK, CK] -> [NB / 4, 2 RK, 2 CK]."""
    t5 = tl.reshape(t, [NB // 4, 2, 2, RK, CK])  # [NB/4, j2, j1, R, C]
    t5 = tl.permute(t5, [0, 3, 4, 2, 1])  # [NB/4, R, C, j1, j2]
    ah, vd = tl.split(t5)
    aa, hh = tl.split(ah)
    vv, dd = tl.split(vd)
    a, b, c, d = _haar4(aa, hh, vv, dd)
    t = tl.join(tl.join(a, b), tl.join(c, d))  # [NB/4, R, C, col, row]
    t = tl.permute(t, [0, 1, 4, 2, 3])  # [NB/4, R, row, C, col]
    return tl.reshape(t, [NB // 4, 2 * RK, 2 * CK])


@triton.jit
def _packet_kernel(x_ptr, y_ptr, C, H, W, sxb, sxc, sxh, sxw, h, w,
                   LEVELS: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                   VEC_IN: tl.constexpr, VEC_OUT: tl.constexpr):
    bc = tl.program_id(0)
    ti = tl.program_id(1)
    tj = tl.program_id(2)
    R: tl.constexpr = BH << LEVELS
    CC: tl.constexpr = BW << LEVELS
    t = _load_tile(x_ptr, bc, C, H, W, H, W, sxb, sxc, sxh, sxw, ti * R, tj * CC, R, CC, -1,
                   VEC_IN)
    t = tl.reshape(t, [1, R, CC])
    t = _packet_level(t, 1, R, CC)
    if LEVELS >= 2:
        t = _packet_level(t, 4, R >> 1, CC >> 1)
    if LEVELS >= 3:
        t = _packet_level(t, 16, R >> 2, CC >> 2)
    if LEVELS >= 4:
        t = _packet_level(t, 64, R >> 3, CC >> 3)
    NBL: tl.constexpr = 1 << (2 * LEVELS)
    bands = tl.arange(0, NBL)
    rows = ti * BH + tl.arange(0, BH)
    cols = tj * BW + tl.arange(0, BW)
    mask = ((rows[None, :, None] < h) & _cols_below(cols[None, None, :], w, VEC_OUT)
            & (bands[:, None, None] < NBL))
    off = (bc.to(tl.int64) * NBL * h * w + bands[:, None, None].to(tl.int64) * h * w
           + rows[None, :, None].to(tl.int64) * w + cols[None, None, :])
    if VEC_OUT > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, 1, VEC_OUT)), (1, 1, VEC_OUT))
    tl.store(y_ptr + off, t.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ipacket_kernel(y_ptr, x_ptr, sy_bc, sy_band, sy_h, sy_w, h, w,
                    LEVELS: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr,
                    VEC_IN: tl.constexpr, VEC_OUT: tl.constexpr):
    bc = tl.program_id(0)
    ti = tl.program_id(1)
    tj = tl.program_id(2)
    NBL: tl.constexpr = 1 << (2 * LEVELS)
    bands = tl.arange(0, NBL)
    rows = ti * BH + tl.arange(0, BH)
    cols = tj * BW + tl.arange(0, BW)
    mask = ((rows[None, :, None] < h) & _cols_below(cols[None, None, :], w, VEC_IN)
            & (bands[:, None, None] < NBL))
    off = (bc.to(tl.int64) * sy_bc + bands[:, None, None].to(tl.int64) * sy_band
           + rows[None, :, None].to(tl.int64) * sy_h + cols[None, None, :].to(tl.int64) * sy_w)
    if VEC_IN > 1:
        off = tl.max_contiguous(tl.multiple_of(off, (1, 1, VEC_IN)), (1, 1, VEC_IN))
    t = tl.load(y_ptr + off, mask=mask, other=0.0).to(tl.float32)
    # Level k (0 = coarsest) turns 4^(LEVELS - k) bands of [BH, BW] << k into a quarter as many.
    if LEVELS >= 4:
        t = _ipacket_level(t, 256, BH, BW)
    if LEVELS >= 3:
        t = _ipacket_level(t, 64, BH << (LEVELS - 3), BW << (LEVELS - 3))
    if LEVELS >= 2:
        t = _ipacket_level(t, 16, BH << (LEVELS - 2), BW << (LEVELS - 2))
    t = _ipacket_level(t, 4, BH << (LEVELS - 1), BW << (LEVELS - 1))
    R: tl.constexpr = BH << LEVELS
    CC: tl.constexpr = BW << LEVELS
    t = tl.reshape(t, [R, CC])
    H = h << LEVELS
    W = w << LEVELS
    _store_plane(x_ptr, bc.to(tl.int64) * H * W, t, ti * R, tj * CC, H, W, W, R, CC, VEC_OUT)


# --------------------------------------------------------------------------------------------
# Launchers. Shapes and checks are the caller's (uhrops/wavelet.py) job.
# --------------------------------------------------------------------------------------------


def _warps(levels: int) -> int:
    # Two or more fused levels keep more intermediates live: at 8 warps ptxas spills 8-24
    # bytes on sm_90 (compile check: L4 at any size, L2 with 128-bit band stores); at 16
    # nothing spills. The packet tree too (8 bytes on sm_80 at L2 with 64-bit band stores).
    return 16 if levels >= 2 else 8


def _coarse_block(levels: int, h: int, w: int) -> tuple[int, int]:
    bh = max(1, _TILE_ROWS >> levels)
    bw = max(1, _TILE_COLS >> levels)
    # Do not launch tiles far larger than a small image.
    bh = min(bh, triton.next_power_of_2(max(h, 1)))
    bw = min(bw, triton.next_power_of_2(max(w, 1)))
    return bh, bw


def _plane_strides(t: torch.Tensor, bands: bool) -> tuple[int, ...]:
    """(stride per flattened batch*channel, [band stride,] row stride); rows must be unit-stride."""
    B, C = t.shape[:2]
    # Strides of size-1 dims are never stepped along (and .contiguous() keeps them as they
    # are, e.g. a one-column slice [..., ::2] has stride 2 on its last dim): ignore them.
    if (t.shape[-1] > 1 and t.stride(-1) != 1) or \
            (B > 1 and C > 1 and t.stride(0) != C * t.stride(1)):
        raise AssertionError("internal: Haar output buffers must be row-contiguous planes")
    plane = t.stride(1) if C > 1 else t.stride(0)
    return (plane, t.stride(2), t.stride(-2)) if bands else (plane, t.stride(-2))


def _band_vectors(highs: list[torch.Tensor], levels: int, bw: int, wL: int) -> dict[str, int]:
    """VEC_1 .. VEC_4: the vector width of each level's (H, V, D) bands, from that level's
    width, strides and tile columns (1 for the levels a launch does not have)."""
    out = {}
    for j in range(1, 5):
        if j > levels:
            out[f"VEC_{j}"] = 1
            continue
        h = highs[j - 1]
        out[f"VEC_{j}"] = vector_width(h, bw << (levels - j), wL << (levels - j),
                                       *_plane_strides(h, bands=True))
    return out


def wavedec(x: torch.Tensor, levels: int, pad: int, low: torch.Tensor,
            highs: list[torch.Tensor]) -> None:
    """Fill ``low`` and ``highs`` (finest first) with ``levels`` (<= 4) Haar levels of ``x``.

    ``levels > 1`` requires sizes divisible by 2**levels (no padding in between); ``pad`` is
    the odd-size code of uhrops.wavelet (-1: none, 0 zero, 1 edge, 2 reflect, 3 wrap).
    """
    assert 1 <= levels <= 4 and len(highs) == levels
    B, C, H, W = x.shape
    hL, wL = low.shape[-2:]
    if B * C == 0 or hL * wL == 0:
        return
    bh, bw = _coarse_block(levels, hL, wL)
    hs = list(highs) + [highs[0]] * (4 - levels)
    args = []
    for h in hs:
        args.extend([h, *_plane_strides(h, bands=True)])
    grid = (B * C, triton.cdiv(hL, bh), triton.cdiv(wL, bw))
    low_strides = _plane_strides(low, bands=False)
    # Vector widths: every width and stride the kernel steps by must be a multiple (a padded
    # odd side remaps its last index, so padding loads stay scalar).
    # Vector widths: every width and stride the kernel steps by must be a multiple. Padding
    # remaps the last row/column of an odd side: with an even width only rows are remapped
    # (whole rows), so columns stay vectorised; an odd width loads scalar.
    vec_in = vector_width(x, bw << levels, W, *x.stride()[:3]) if pad == -1 or W % 2 == 0 \
        else 1
    vec_out = vector_width(low, bw, wL, *low_strides)
    vecs = _band_vectors(highs, levels, bw, wL)
    launch(_wavedec_kernel, grid,
           x, C, H, W, *x.stride(),
           low, *low_strides,
           *args, hL, wL,
           LEVELS=levels, PAD=pad, BH=bh, BW=bw, VEC_IN=vec_in, VEC_OUT=vec_out, **vecs,
           num_warps=_warps(levels),
    )


def waverec(low: torch.Tensor, highs: list[torch.Tensor]) -> torch.Tensor:
    """Reconstruct (B, C, hL << L, wL << L) from ``low`` and ``highs`` (finest first, L <= 4)."""
    levels = len(highs)
    assert 1 <= levels <= 4
    B, C, hL, wL = low.shape
    out = low.new_empty(B, C, hL << levels, wL << levels)
    if out.numel() == 0:
        return out
    if low.stride(-1) != 1:
        low = low.contiguous()
    highs = [h if h.stride(-1) == 1 and (B == 1 or h.stride(0) == C * h.stride(1)) else
             h.contiguous() for h in highs]
    bh, bw = _coarse_block(levels, hL, wL)
    hs = list(highs) + [highs[0]] * (4 - levels)
    args = []
    for h in hs:
        args.extend([h, *_plane_strides(h, bands=True)])
    if B > 1 and low.stride(0) != C * low.stride(1):
        low = low.contiguous()
    grid = (B * C, triton.cdiv(hL, bh), triton.cdiv(wL, bw))
    low_strides = _plane_strides(low, bands=False)
    vec_in = vector_width(low, bw, wL, *low_strides)
    vec_out = vector_width(out, bw << levels, wL << levels, (hL * wL) << (2 * levels))
    launch(_waverec_kernel, grid,
           low, *low_strides, *args, out, hL, wL,
           LEVELS=levels, BH=bh, BW=bw, VEC_IN=vec_in, VEC_OUT=vec_out,
           **_band_vectors(highs, levels, bw, wL), num_warps=8,
    )
    return out


# A packet tree deeper than this is done as chained launches: after L1 levels every band is
# an image of its own, and its L2-level tree's digits follow L1's in the band index.
_MAX_PACKET_LEVELS = 4


def packet(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Full packet tree of ``levels`` levels; sizes divisible by 2**levels."""
    B, C, H, W = x.shape
    done = 0
    cur = x
    while done < levels:
        step = min(_MAX_PACKET_LEVELS, levels - done)
        cur = _packet_once(cur, step).view(B, C * 4 ** (done + step), H >> (done + step),
                                           W >> (done + step))
        done += step
    return cur.view(B, C, 4**levels, H >> levels, W >> levels)


def _packet_once(x: torch.Tensor, levels: int) -> torch.Tensor:
    B, C, H, W = x.shape
    h, w = H >> levels, W >> levels
    y = x.new_empty(B, C, 4**levels, h, w)
    if y.numel() == 0:
        return y
    bh, bw = _coarse_block(levels, h, w)
    grid = (B * C, triton.cdiv(h, bh), triton.cdiv(w, bw))
    vec_in = vector_width(x, bw << levels, W, *x.stride()[:3])
    vec_out = vector_width(y, bw, w, h * w)
    launch(_packet_kernel, grid, x, y, C, H, W, *x.stride(), h, w,
           LEVELS=levels, BH=bh, BW=bw, VEC_IN=vec_in, VEC_OUT=vec_out,
           num_warps=_warps(levels))
    return y


def ipacket(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse of :func:`packet`."""
    B, C, n, h, w = y.shape
    cur = y
    done = 0
    while done < levels:
        step = min(_MAX_PACKET_LEVELS, levels - done)
        rest = levels - done - step  # digits still folded into the channel axis
        m = C * 4**rest
        hh, ww = h << done, w << done
        cur = _ipacket_once(cur.reshape(B, m, 4**step, hh, ww), step)
        done += step
    return cur.view(B, C, h << levels, w << levels)


def _ipacket_once(y: torch.Tensor, levels: int) -> torch.Tensor:
    B, C, n, h, w = y.shape
    x = y.new_empty(B, C, h << levels, w << levels)
    if x.numel() == 0:
        return x
    if B > 1 and y.stride(0) != C * y.stride(1):
        y = y.contiguous()
    bh, bw = _coarse_block(levels, h, w)
    grid = (B * C, triton.cdiv(h, bh), triton.cdiv(w, bw))
    vec_out = vector_width(x, bw << levels, w << levels, (h * w) << (2 * levels))
    vec_in = vector_width(y, bw, w, *y.stride()[1:4])
    launch(_ipacket_kernel, grid, y, x, y.stride(1), y.stride(2), y.stride(3), y.stride(4), h, w,
           LEVELS=levels, BH=bh, BW=bw, VEC_IN=vec_in, VEC_OUT=vec_out, num_warps=8)
    return x
