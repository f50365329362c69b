"""Orthonormal 2-D Haar wavelet transforms: single level, multi-level and the full packet tree.

The canonical layout is PyWavelets' ``pywt.dwt2(x, "haar")``. For each 2x2 block
``[[a, b], [c, d]]`` of an image the four bands are::

    A = (a + b + c + d) / 2      low along H and W
    H = (a + b - c - d) / 2      high along H (rows), low along W   (pywt cH)
    V = (a - b + c - d) / 2      low along H, high along W          (pywt cV)
    D = (a - b - c + d) / 2      high along both                    (pywt cD)

The 4x4 mixing matrix is symmetric and orthogonal, so every transform here is its own
adjoint's inverse: the backward of a forward transform is the inverse transform and vice
versa, and nothing but shapes is saved for autograd.

Odd sides follow pywt: one sample is padded at the end of each odd axis according to
``pad_mode`` and the inverse returns the even size. The modes and what they pad with:

=============================  ==========================  ============================
``pad_mode``                   padded sample               same as pywt mode(s)
=============================  ==========================  ============================
``"zero"``                     0                           zero
``"symmetric"``                x[N-1] (edge repeated)      symmetric, constant,
                                                           periodization
``"reflect"``                  x[N-2]                      reflect
``"periodic"``                 x[0]                        periodic
=============================  ==========================  ============================

``"constant"`` and ``"periodization"`` are accepted as aliases of ``"symmetric"`` because for
Haar pywt pads with the edge sample in those modes too. Every function has a PyTorch path
(any device, any float dtype) and a Triton path (CUDA, or the CPU interpreter), chosen by
:func:`uhrops.use_backend`. The kernels compute in float32, so float64 inputs always take the
PyTorch path (``use_backend("triton")`` raises BackendUnavailableError for them).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from uhrops import checks
from uhrops._backend import resolve, run_with_fallback
from uhrops._dtypes import HALF_DTYPES

__all__ = [
    "PAD_MODES",
    "haar_dwt2d",
    "haar_idwt2d",
    "haar_wavedec2",
    "haar_waverec2",
    "haar_packet2d",
    "haar_ipacket2d",
    "HaarDWT2d",
    "HaarIDWT2d",
    "HaarPacket2d",
    "HaarIPacket2d",
]

# Padding codes shared with the Triton kernels: 0 zero, 1 edge, 2 reflect (x[N-2]), 3 wrap (x[0]).
PAD_MODES: dict[str, int] = {
    "zero": 0,
    "symmetric": 1,
    "constant": 1,
    "periodization": 1,
    "reflect": 2,
    "periodic": 3,
}
_NO_PAD = -1  # sizes must already be even

# Fused Triton kernels keep up to this many levels of one tile on chip.
_MAX_FUSED_LEVELS = 4


# --------------------------------------------------------------------------------------------
# PyTorch reference path. Inputs have even H and W; half dtypes are computed in float32.
# --------------------------------------------------------------------------------------------


def _torch_dwt_into(x: Tensor, low: Tensor, high: Tensor) -> None:
    """One level on an even-sized x (B, C, H, W): A into ``low``, H/V/D into ``high[:, :, 0:3]``."""
    B, C, H, W = x.shape
    # The 1/2 of the orthonormal scale is applied to the samples before any sum (s = e/2 +
    # o/2, t = e/2 - o/2): halving is exact, so normal results are bit-identical to (e+o)/2,
    # but e + o no longer overflows where the bands are finite (a constant 3e38 gave
    # inf - inf = NaN in H, V, D). Rows first so both row halves are contiguous.
    # (x.add_(y, alpha=0.5) rounds once, like the sum of the halves: no full-size temporary.)
    if x.dtype in HALF_DTYPES:
        x = x.float()
    rows = x.reshape(B, C, H // 2, 2, W)
    even, odd = rows[:, :, :, 0], rows[:, :, :, 1]
    s = torch.mul(even, 0.5).add_(odd, alpha=0.5).view(B, C, H // 2, W // 2, 2)
    t = torch.mul(even, 0.5).sub_(odd, alpha=0.5).view(B, C, H // 2, W // 2, 2)
    _write(low, torch.add, s[..., 0], s[..., 1])
    _write(high[:, :, 0], torch.add, t[..., 0], t[..., 1])
    _write(high[:, :, 1], torch.sub, s[..., 0], s[..., 1])
    _write(high[:, :, 2], torch.sub, t[..., 0], t[..., 1])


def _write(out: Tensor, fn, a: Tensor, b: Tensor) -> None:
    if out.dtype == a.dtype:
        fn(a, b, out=out)
    else:  # half output from float32 work
        out.copy_(fn(a, b))


def _torch_idwt(low: Tensor, high: Tensor) -> Tensor:
    """Inverse of one level: low (B, C, h, w) and high (B, C, 3, h, w) -> (B, C, 2h, 2w)."""
    B, C, h, w = low.shape
    dtype = low.dtype
    # Halve the bands first, as in the forward: exact, and A + H cannot overflow where the
    # output is finite (A = H = 3e38 reconstructs 3e38, not inf).
    if dtype in HALF_DTYPES:
        low, high = low.float(), high.float()
    hh, vv, dd = high.unbind(2)
    s = torch.mul(low, 0.5).add_(hh, alpha=0.5)  # (a + b)/2 = (A + H)/2
    t = torch.mul(low, 0.5).sub_(hh, alpha=0.5)  # (c + d)/2 = (A - H)/2
    u = torch.mul(vv, 0.5).add_(dd, alpha=0.5)  # (a - b)/2 = (V + D)/2
    v = torch.mul(vv, 0.5).sub_(dd, alpha=0.5)  # (c - d)/2 = (V - D)/2
    out = low.new_empty(B, C, h, 2, w, 2)
    torch.add(s, u, out=out[:, :, :, 0, :, 0])
    torch.sub(s, u, out=out[:, :, :, 0, :, 1])
    torch.add(t, v, out=out[:, :, :, 1, :, 0])
    torch.sub(t, v, out=out[:, :, :, 1, :, 1])
    out = out.view(B, C, 2 * h, 2 * w)
    return out.to(dtype) if dtype in HALF_DTYPES else out


def _pad_source(n: int, pad: int) -> int | None:
    """Index whose value pywt pads after the last of ``n`` samples (None: a zero)."""
    return {0: None, 1: n - 1, 2: n - 2, 3: 0}[pad]


def _pad_end(x: Tensor, pad: int) -> Tensor:
    """Pad one sample at the end of each odd axis (pywt's odd-size rule)."""
    H, W = x.shape[-2:]
    if H % 2 == 0 and W % 2 == 0:
        return x
    if pad == _NO_PAD:
        raise AssertionError("odd size reached a transform without padding")
    # One copied row/column per odd axis: cheaper than F.pad's general modes, and the same
    # code for every mode and dtype (F.pad lacks some half kernels on the CPU).
    for dim, n in ((-2, H), (-1, W)):
        if n % 2:
            src = _pad_source(n, pad)
            extra = (x.narrow(dim, src, 1) if src is not None
                     else torch.zeros_like(x.narrow(dim, 0, 1)))
            x = torch.cat([x, extra], dim=dim)
    return x


def _fold_pad(g: Tensor, size: tuple[int, int], pad: int) -> Tensor:
    """Adjoint of :func:`_pad_end`: the padded sample's gradient goes back to its source."""
    H, W = size
    Hp, Wp = g.shape[-2:]
    if (Hp, Wp) == (H, W):
        return g
    if pad in (_NO_PAD, 0):  # zero padding (or a crop): the extra samples have no source
        return g[..., :H, :W].contiguous()
    g = g.clone()
    if Wp > W:
        g[..., :, _pad_source(W, pad)] += g[..., :, W]
    if Hp > H:
        g[..., _pad_source(H, pad), :] += g[..., H, :]
    return g[..., :H, :W].contiguous()


def _half_size(n: int) -> int:
    return (n + 1) // 2


# --------------------------------------------------------------------------------------------
# Level loops shared by both paths. ``backend`` picks the per-level kernels.
# --------------------------------------------------------------------------------------------


def _kernels():
    from uhrops.kernels import wavelet as kw

    return kw


def _dwt_level(x: Tensor, pad: int, backend: str, low: Tensor, high: Tensor) -> None:
    if backend == "triton":
        _kernels().wavedec(x, 1, pad, low, [high])
    else:
        _torch_dwt_into(_pad_end(x, pad), low, high)


def _idwt_level(low: Tensor, high: Tensor, backend: str) -> Tensor:
    if backend == "triton":
        return _kernels().waverec(low, [high])
    return _torch_idwt(low, high)


def _can_fuse(size: tuple[int, int], levels: int) -> bool:
    return size[0] % (1 << levels) == 0 and size[1] % (1 << levels) == 0


def _wavedec_impl(x: Tensor, levels: int, pad: int, backend: str) -> list[Tensor]:
    """[low, high_1 (finest), ..., high_levels] as fresh contiguous tensors."""
    B, C = x.shape[:2]
    highs: list[Tensor] = []
    cur = x
    level = 0
    while level < levels:
        H, W = cur.shape[-2:]
        step = 1
        if backend == "triton":
            # As many levels as divide the size evenly run in one fused kernel.
            step = min(levels - level, _MAX_FUSED_LEVELS)
            while step > 1 and not _can_fuse((H, W), step):
                step -= 1
        shapes = []
        h, w = H, W
        for _ in range(step):
            h, w = _half_size(h), _half_size(w)
            shapes.append((h, w))
        low = x.new_empty(B, C, *shapes[-1])
        hs = [x.new_empty(B, C, 3, *s) for s in shapes]
        if backend == "triton":
            _kernels().wavedec(cur, step, pad, low, hs)
        else:
            _dwt_level(cur, pad, backend, low, hs[0])
        highs.extend(hs)
        cur = low
        level += step
    return [cur] + highs


def _waverec_impl(low: Tensor, highs: Sequence[Tensor], sizes: Sequence[tuple[int, int]],
                  pad: int, backend: str) -> Tensor:
    """Inverse of :func:`_wavedec_impl`; ``sizes[i]`` is the size of the level-i input.

    ``pad`` says how a level's padded sample folds back (the adjoint of the forward pad);
    ``_NO_PAD``/zero crop, which is also pywt's rule for reconstructing odd sizes.
    """
    cur = low
    level = len(highs)
    while level > 0:
        step = 1
        if backend == "triton":
            step = min(level, _MAX_FUSED_LEVELS)
            # Fusing needs every intermediate size exact (no crop or fold in between).
            while step > 1 and not _can_fuse(sizes[level - step], step):
                step -= 1
        if backend == "triton":
            out = _kernels().waverec(cur, list(highs[level - step : level]))
        else:
            out = _idwt_level(cur, highs[level - 1], backend)
        level -= step
        cur = _fold_pad(out, sizes[level], pad)
    return cur


# --------------------------------------------------------------------------------------------
# torch.library custom ops (fake implementations and autograd).
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("uhrops::haar_dwt2d", mutates_args=())
def _dwt_op(x: Tensor, pad: int, backend: str) -> Tensor:
    return run_with_fallback("haar_dwt2d", backend, lambda path: _dwt_impl(x, pad, path), x)


def _dwt_impl(x: Tensor, pad: int, backend: str) -> Tensor:
    B, C, H, W = x.shape
    y = x.new_empty(B, C, 4, _half_size(H), _half_size(W))
    _dwt_level(x, pad, backend, y[:, :, 0], y[:, :, 1:])
    return y


@_dwt_op.register_fake
def _(x, pad, backend):
    B, C, H, W = x.shape
    return x.new_empty(B, C, 4, (H + 1) // 2, (W + 1) // 2)


def _dwt_setup(ctx, inputs, output):
    x, pad, backend = inputs
    ctx.size = tuple(x.shape[-2:])
    ctx.pad, ctx.backend = pad, backend


def _dwt_bwd(ctx, grad):
    g = _idwt_op(grad, ctx.backend)
    return _fold_pad(g, ctx.size, ctx.pad), None, None


_dwt_op.register_autograd(_dwt_bwd, setup_context=_dwt_setup)


@torch.library.custom_op("uhrops::haar_idwt2d", mutates_args=())
def _idwt_op(y: Tensor, backend: str) -> Tensor:
    return run_with_fallback("haar_idwt2d", backend,
                             lambda path: _idwt_level(y[:, :, 0], y[:, :, 1:], path), y)


@_idwt_op.register_fake
def _(y, backend):
    B, C, _, h, w = y.shape
    return y.new_empty(B, C, 2 * h, 2 * w)


def _idwt_setup(ctx, inputs, output):
    ctx.backend = inputs[1]


def _idwt_bwd(ctx, grad):
    return _dwt_op(grad, _NO_PAD, ctx.backend), None


_idwt_op.register_autograd(_idwt_bwd, setup_context=_idwt_setup)


@torch.library.custom_op("uhrops::haar_wavedec2", mutates_args=())
def _wavedec_op(x: Tensor, levels: int, pad: int, backend: str) -> list[Tensor]:
    return run_with_fallback("haar_wavedec2", backend,
                             lambda path: _wavedec_impl(x, levels, pad, path), x)


@_wavedec_op.register_fake
def _(x, levels, pad, backend):
    B, C, H, W = x.shape
    highs = []
    for _ in range(levels):
        H, W = (H + 1) // 2, (W + 1) // 2
        highs.append(x.new_empty(B, C, 3, H, W))
    return [x.new_empty(B, C, H, W)] + highs


def _level_sizes(H: int, W: int, levels: int) -> list[tuple[int, int]]:
    """Input size of each level: [(H, W), (ceil(H/2), ceil(W/2)), ...], ``levels`` entries."""
    sizes = [(H, W)]
    for _ in range(levels - 1):
        H, W = _half_size(H), _half_size(W)
        sizes.append((H, W))
    return sizes


def _wavedec_setup(ctx, inputs, output):
    x, levels, pad, backend = inputs
    ctx.size = tuple(x.shape[-2:])
    ctx.pad, ctx.backend = pad, backend


def _wavedec_bwd(ctx, grads):
    # Adjoint of "pad, transform" per level: reconstruct and fold each padded sample back.
    g_low, *g_highs = grads
    g = _waverec_op(g_low, g_highs, ctx.size[0], ctx.size[1], ctx.pad, ctx.backend)
    return g, None, None, None


_wavedec_op.register_autograd(_wavedec_bwd, setup_context=_wavedec_setup)


@torch.library.custom_op("uhrops::haar_waverec2", mutates_args=())
def _waverec_op(low: Tensor, highs: list[Tensor], H: int, W: int, pad: int,
                backend: str) -> Tensor:
    """Reconstruct to (H, W); per level, extra samples are cropped (``pad`` = -1 or zero) or
    folded back onto their source (the adjoint of :func:`_wavedec_op`'s padding)."""
    sizes = _level_sizes(H, W, len(highs))
    return run_with_fallback("haar_waverec2", backend,
                             lambda path: _waverec_impl(low, highs, sizes, pad, path), low)


@_waverec_op.register_fake
def _(low, highs, H, W, pad, backend):
    return low.new_empty(low.shape[0], low.shape[1], H, W)


def _waverec_setup(ctx, inputs, output):
    ctx.levels = len(inputs[1])
    ctx.pad, ctx.backend = inputs[4], inputs[5]


def _waverec_bwd(ctx, grad):
    # Adjoint of a crop is zero padding; adjoint of a fold is the matching pad.
    pad = PAD_MODES["zero"] if ctx.pad == _NO_PAD else ctx.pad
    parts = _wavedec_op(grad, ctx.levels, pad, ctx.backend)
    return parts[0], list(parts[1:]), None, None, None, None


_waverec_op.register_autograd(_waverec_bwd, setup_context=_waverec_setup)


@torch.library.custom_op("uhrops::haar_packet2d", mutates_args=())
def _packet_op(x: Tensor, levels: int, backend: str) -> Tensor:
    return run_with_fallback("haar_packet2d", backend,
                             lambda path: _packet_impl(x, levels, path), x)


def _packet_impl(x: Tensor, levels: int, backend: str) -> Tensor:
    if backend == "triton":
        return _kernels().packet(x, levels)
    B, C, H, W = x.shape
    cur = x
    for level in range(levels):
        n = C * 4**level
        h, w = cur.shape[-2] // 2, cur.shape[-1] // 2
        y = x.new_empty(B, n, 4, h, w)
        _torch_dwt_into(cur, y[:, :, 0], y[:, :, 1:])
        cur = y.view(B, n * 4, h, w)
    return cur.view(B, C, 4**levels, H >> levels, W >> levels)


@_packet_op.register_fake
def _(x, levels, backend):
    B, C, H, W = x.shape
    return x.new_empty(B, C, 4**levels, H >> levels, W >> levels)


@torch.library.custom_op("uhrops::haar_ipacket2d", mutates_args=())
def _ipacket_op(y: Tensor, levels: int, backend: str) -> Tensor:
    return run_with_fallback("haar_ipacket2d", backend,
                             lambda path: _ipacket_impl(y, levels, path), y)


def _ipacket_impl(y: Tensor, levels: int, backend: str) -> Tensor:
    if backend == "triton":
        return _kernels().ipacket(y, levels)
    B, C, n, h, w = y.shape
    cur = y.reshape(B, C * n, h, w)
    for level in range(levels):
        m = cur.shape[1] // 4
        cur5 = cur.view(B, m, 4, cur.shape[-2], cur.shape[-1])
        cur = _torch_idwt(cur5[:, :, 0], cur5[:, :, 1:])
    return cur


@_ipacket_op.register_fake
def _(y, levels, backend):
    B, C, n, h, w = y.shape
    return y.new_empty(B, C, h << levels, w << levels)


def _packet_setup(ctx, inputs, output):
    ctx.levels, ctx.backend = inputs[1], inputs[2]


def _packet_bwd(ctx, grad):
    return _ipacket_op(grad, ctx.levels, ctx.backend), None, None


def _ipacket_bwd(ctx, grad):
    return _packet_op(grad, ctx.levels, ctx.backend), None, None


_packet_op.register_autograd(_packet_bwd, setup_context=_packet_setup)
_ipacket_op.register_autograd(_ipacket_bwd, setup_context=_packet_setup)


# --------------------------------------------------------------------------------------------
# Public functions: checks, then dispatch.
# --------------------------------------------------------------------------------------------


def why_no_kernel(t: Tensor) -> str | None:
    """Why the Haar kernels cannot take ``t`` (None: they can). They compute in float32, so
    float64 keeps its precision on the PyTorch path ("auto"; "triton" raises)."""
    if t.dtype == torch.float64:
        return "the Haar kernels compute in float32; float64 runs on the PyTorch path"
    return None


def _resolve(op: str, t: Tensor) -> str:
    return resolve(op, t, no_kernel=why_no_kernel(t))


def _pad_code(pad_mode: str | None, op: str) -> int:
    if pad_mode is None:
        return _NO_PAD
    if not isinstance(pad_mode, str) or pad_mode not in PAD_MODES:
        raise ValueError(
            f"{op}(): `pad_mode` must be None or one of {', '.join(repr(m) for m in PAD_MODES)}; "
            f"got {pad_mode!r}. Fix: use None for even sizes, or e.g. pad_mode='symmetric' "
            f"(pywt's default)."
        )
    return PAD_MODES[pad_mode]


def _check_even_or_padded(x: Tensor, pad: int, op: str, name: str = "x") -> None:
    H, W = x.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"{op}(): `{name}` has an empty spatial size ({H}, {W}); "
                         f"H and W must be >= 1.")
    if pad == _NO_PAD and (H % 2 or W % 2):
        raise ValueError(
            f"{op}(): `{name}` has an odd spatial size ({H}, {W}) and pad_mode=None; the Haar "
            f"transform pairs samples. Fix: pass pad_mode='symmetric' (or 'zero', 'reflect', "
            f"'periodic') to pad one sample at the end of each odd side as pywt does, or crop "
            f"to ({H - H % 2}, {W - W % 2})."
        )
    if pad == PAD_MODES["reflect"] and ((H % 2 and H < 2) or (W % 2 and W < 2)):
        raise ValueError(f"{op}(): pad_mode='reflect' needs at least 2 samples on an odd "
                         f"side; got ({H}, {W}). Fix: use pad_mode='symmetric'.")


def haar_dwt2d(x: Tensor, pad_mode: str | None = None) -> Tensor:
    """One level of the orthonormal 2-D Haar DWT, all four bands in one tensor.

    Convention:
        - input (B, C, H, W) floating; output (B, C, 4, ceil(H/2), ceil(W/2)), bands in the
          order A, H, V, D = pywt's (cA, cH, cV, cD), same signs and scale (orthonormal).
        - odd H or W: ``pad_mode=None`` raises ValueError; otherwise one sample is padded at
          the end of each odd axis as pywt does (module docstring table). Even sizes give the
          same result in every mode.
        - fp16/bf16 are computed in fp32 and returned in the input dtype.
        - backward = :func:`haar_idwt2d` of the gradient (orthonormal), the padded sample's
          gradient folded back onto its source.

    Args:
        x: image batch (B, C, H, W).
        pad_mode: None, "zero", "symmetric", "reflect" or "periodic" (also "constant" and
            "periodization", which pad like "symmetric" for Haar).

    Returns:
        (B, C, 4, ceil(H/2), ceil(W/2)).

    Example:
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> haar_dwt2d(x)[0, 0, :, 0, 0]  # A, H, V, D of [[0, 1], [4, 5]]
        tensor([ 5., -4., -1.,  0.])
    """
    op = "haar_dwt2d"
    checks.check_image(x, "x", op)
    pad = _pad_code(pad_mode, op)
    _check_even_or_padded(x, pad, op)
    return _dwt_op(x, pad, _resolve(op, x))


def haar_idwt2d(y: Tensor) -> Tensor:
    """Inverse of :func:`haar_dwt2d`: (B, C, 4, h, w) bands A, H, V, D -> (B, C, 2h, 2w).

    Convention:
        - equals ``pywt.idwt2((cA, (cH, cV, cD)), "haar")``; an image that was padded to an
          even size comes back at the even size (crop ``[..., :H, :W]`` to undo the pad, or use
          :func:`haar_waverec2` with ``output_size``).
        - backward = :func:`haar_dwt2d` of the gradient.

    Args:
        y: coefficients (B, C, 4, h, w).

    Returns:
        (B, C, 2h, 2w).
    """
    op = "haar_idwt2d"
    checks.check_tensor(y, "y", op)
    checks.check_rank(y, "y", op, 5, "(B, C, 4, h, w)")
    checks.check_float(y, "y", op)
    if y.shape[2] != 4:
        raise ValueError(f"{op}(): `y` must hold 4 bands (A, H, V, D) on dim 2; got shape "
                         f"{tuple(y.shape)}. Fix: pass the output of haar_dwt2d, or stack "
                         f"[A, H, V, D] with torch.stack(bands, dim=2).")
    return _idwt_op(y, _resolve(op, y))


def haar_wavedec2(x: Tensor, levels: int, pad_mode: str | None = None) -> tuple[Tensor, list[Tensor]]:
    """Multi-level Haar decomposition: ``(low, highs)``.

    Convention:
        - ``low`` is the level-``levels`` approximation (B, C, h_L, w_L); ``highs[i]`` is
          (B, C, 3, h_{i+1}, w_{i+1}) with bands H, V, D of level i+1, **finest first**
          (pytorch_wavelets' order; pywt's ``wavedec2`` lists coarsest first:
          ``highs[i] == wavedec2(...)[levels - i]``). h_{i+1} = ceil(h_i / 2).
        - an odd size at any level is padded by ``pad_mode`` as in :func:`haar_dwt2d`; with
          ``pad_mode=None`` every level must be even (H and W divisible by 2**levels).
        - Triton: levels whose sizes divide evenly run fused, reading the input once and
          writing each output once (up to 4 levels per kernel).

    Args:
        x: (B, C, H, W).
        levels: number of levels, >= 1.
        pad_mode: as in :func:`haar_dwt2d`.

    Returns:
        ``(low, highs)``.
    """
    op = "haar_wavedec2"
    checks.check_image(x, "x", op)
    checks.check_int(levels, "levels", op, minimum=1)
    pad = _pad_code(pad_mode, op)
    H, W = x.shape[-2:]
    for i, (h, w) in enumerate(_level_sizes(H, W, levels)):
        if min(h, w) < 1 or (i > 0 and min(h, w) < 2 and pad == PAD_MODES["reflect"]):
            raise ValueError(f"{op}(): `levels`={levels} is too deep for size ({H}, {W}).")
        if pad == _NO_PAD and (h % 2 or w % 2):
            raise ValueError(
                f"{op}(): with pad_mode=None every level must have even sides, but level "
                f"{i + 1} gets ({h}, {w}) from an input of ({H}, {W}). Fix: pass "
                f"pad_mode='symmetric' (pywt's default) or use a size divisible by "
                f"{2 ** levels}."
            )
        _check_even_or_padded(x.new_empty(0, 0, h, w), pad, op)
    out = _wavedec_op(x, levels, pad, _resolve(op, x))
    return out[0], list(out[1:])


def haar_waverec2(low: Tensor, highs: Sequence[Tensor],
                  output_size: tuple[int, int] | None = None) -> Tensor:
    """Reconstruct from :func:`haar_wavedec2`'s ``(low, highs)`` (highs finest first).

    Convention:
        - like ``pywt.waverec2``: each level's reconstruction is cropped to the next finer
          band's size; the finest level returns (2 h_1, 2 w_1), the even size.
        - ``output_size=(H, W)`` crops the result to the original odd size in the same op
          (H in {2 h_1, 2 h_1 - 1}, likewise W).
        - backward = :func:`haar_wavedec2` of the gradient with zero padding (the adjoint
          of the crops).

    Args:
        low: (B, C, h_L, w_L).
        highs: list of (B, C, 3, h_i, w_i), finest first.
        output_size: optional (H, W).

    Returns:
        (B, C, H, W).
    """
    op = "haar_waverec2"
    checks.check_tensor(low, "low", op)
    checks.check_rank(low, "low", op, 4, "(B, C, h, w)")
    checks.check_float(low, "low", op)
    highs = list(checks.check_sequence_of_tensors(highs, "highs", op, min_len=1))
    prev = None
    for i, hi in enumerate(highs):
        name = f"highs[{i}]"
        checks.check_rank(hi, name, op, 5, "(B, C, 3, h, w)")
        checks.check_same_device(op, low=low, **{name: hi})
        checks.check_same_dtype(op, low=low, **{name: hi})
        if hi.shape[:3] != (low.shape[0], low.shape[1], 3):
            raise ValueError(f"{op}(): `{name}` must be (B, C, 3, h, w) = ({low.shape[0]}, "
                             f"{low.shape[1]}, 3, h, w); got {tuple(hi.shape)}.")
        if prev is not None:
            for a, b, ax in ((prev[0], hi.shape[3], "h"), (prev[1], hi.shape[4], "w")):
                if a not in (2 * b, 2 * b - 1):
                    raise ValueError(
                        f"{op}(): `{name}` has {ax}={b} but `highs[{i - 1}]` has {ax}={a}; "
                        f"each level must halve the size (finer = 2*coarser or 2*coarser-1). "
                        f"Fix: pass the highs in haar_wavedec2's order, finest first.")
        prev = hi.shape[3:]
    if tuple(low.shape[-2:]) != tuple(highs[-1].shape[-2:]):
        raise ValueError(f"{op}(): `low` is {tuple(low.shape[-2:])} but the coarsest band "
                         f"`highs[-1]` is {tuple(highs[-1].shape[-2:])}; they must match.")
    H, W = _check_output_size(output_size, 2 * highs[0].shape[-2], 2 * highs[0].shape[-1], op)
    return _waverec_op(low, highs, H, W, _NO_PAD, _resolve(op, low))


def _check_output_size(output_size: object, H: int, W: int, op: str) -> tuple[int, int]:
    """None -> (H, W); else a pair (H or H - 1, W or W - 1) of ints."""
    if output_size is None:
        return H, W
    if not isinstance(output_size, (tuple, list, torch.Size)) or len(output_size) != 2:
        raise TypeError(f"{op}(): `output_size` must be None or a pair (H, W) of ints; got "
                        f"{output_size!r}. Fix: pass the original size, e.g. x.shape[-2:].")
    oh = checks.check_int(output_size[0], "output_size[0]", op)
    ow = checks.check_int(output_size[1], "output_size[1]", op)
    if oh not in (H, H - 1) or ow not in (W, W - 1) or min(oh, ow) < 1:
        raise ValueError(f"{op}(): `output_size`={(oh, ow)} cannot come from these bands; "
                         f"expected H in ({H}, {H - 1}) and W in ({W}, {W - 1}). Fix: pass the "
                         f"size of the image the bands were computed from.")
    return oh, ow


def _check_packet_size(x: Tensor, levels: int, op: str) -> None:
    H, W = x.shape[-2:]
    m = 1 << levels
    if H % m or W % m or H == 0 or W == 0:
        raise ValueError(
            f"{op}(): `x` size ({H}, {W}) must be divisible by 2**levels = {m} (the packet "
            f"tree splits every band {levels} time(s)). Fix: crop or pad to "
            f"({max(m, H - H % m)}, {max(m, W - W % m)}), or use fewer levels.")


def haar_packet2d(x: Tensor, levels: int) -> Tensor:
    """Full Haar packet tree: every band split again at each level.

    Convention:
        - (B, C, H, W) -> (B, C, 4**levels, H / 2**levels, W / 2**levels); H and W must be
          divisible by 2**levels (ValueError otherwise).
        - band index = sum_l b_l * 4**(levels - l) for l = 1..levels, with b_l in A=0, H=1,
          V=2, D=3 the band taken at level l (level 1 is the most significant digit). Level 1
          alone equals :func:`haar_dwt2d`; band 0 after L levels is 2**L x the mean of each
          2**L x 2**L block.
        - Triton: one kernel for all levels (the input read once, the output written once).

    Args:
        x: (B, C, H, W).
        levels: >= 1.

    Returns:
        (B, C, 4**levels, H >> levels, W >> levels).
    """
    op = "haar_packet2d"
    checks.check_image(x, "x", op)
    checks.check_int(levels, "levels", op, minimum=1, maximum=8)
    _check_packet_size(x, levels, op)
    return _packet_op(x, levels, _resolve(op, x))


def haar_ipacket2d(y: Tensor) -> Tensor:
    """Inverse of :func:`haar_packet2d`; ``levels`` is read from the band count 4**levels.

    Convention:
        - (B, C, 4**L, h, w) -> (B, C, h * 2**L, w * 2**L).
    """
    op = "haar_ipacket2d"
    checks.check_tensor(y, "y", op)
    checks.check_rank(y, "y", op, 5, "(B, C, 4**levels, h, w)")
    checks.check_float(y, "y", op)
    n = y.shape[2]
    levels = 0
    while 4**levels < n:
        levels += 1
    if n < 4 or 4**levels != n:
        raise ValueError(f"{op}(): `y` must have 4**levels bands on dim 2 (4, 16, 64, ...); "
                         f"got {n}. Fix: pass the output of haar_packet2d unchanged.")
    return _ipacket_op(y, levels, _resolve(op, y))


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class HaarDWT2d(nn.Module):
    """Module form of :func:`haar_dwt2d`; ``levels > 1`` returns :func:`haar_wavedec2`'s
    ``(low, highs)``.

    Convention:
        See :func:`haar_dwt2d` and :func:`haar_wavedec2`; the module only stores the options.
    """

    def __init__(self, levels: int = 1, pad_mode: str | None = None) -> None:
        super().__init__()
        checks.check_int(levels, "levels", "HaarDWT2d", minimum=1)
        _pad_code(pad_mode, "HaarDWT2d")
        self.levels = levels
        self.pad_mode = pad_mode

    def forward(self, x: Tensor):
        if self.levels == 1:
            return haar_dwt2d(x, self.pad_mode)
        return haar_wavedec2(x, self.levels, self.pad_mode)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, pad_mode={self.pad_mode!r}"


class HaarIDWT2d(nn.Module):
    """Module form of :func:`haar_idwt2d`; also accepts ``(low, highs)`` for multi-level.

    Convention:
        See :func:`haar_idwt2d` and :func:`haar_waverec2`; ``output_size`` crops an odd size.
    """

    def forward(self, y, output_size: tuple[int, int] | None = None) -> Tensor:
        if isinstance(y, (tuple, list)):
            if len(y) != 2:
                raise ValueError(f"HaarIDWT2d(): `y` must be a (B, C, 4, h, w) tensor or a pair "
                                 f"(low, highs); got a {type(y).__name__} of {len(y)} items.")
            return haar_waverec2(y[0], y[1], output_size)
        if output_size is None:
            return haar_idwt2d(y)
        if isinstance(y, Tensor) and y.dim() == 5:  # check it before any work is done
            _check_output_size(output_size, 2 * y.shape[-2], 2 * y.shape[-1], "HaarIDWT2d")
        out = haar_idwt2d(y)
        oh, ow = _check_output_size(output_size, out.shape[-2], out.shape[-1], "HaarIDWT2d")
        return out[..., :oh, :ow]


class HaarPacket2d(nn.Module):
    """Module form of :func:`haar_packet2d`.

    Convention:
        See :func:`haar_packet2d` (band order, divisibility by 2**levels).
    """

    def __init__(self, levels: int = 1) -> None:
        super().__init__()
        checks.check_int(levels, "levels", "HaarPacket2d", minimum=1, maximum=8)
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        return haar_packet2d(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class HaarIPacket2d(nn.Module):
    """Module form of :func:`haar_ipacket2d`.

    Convention:
        See :func:`haar_ipacket2d`; the number of levels is read from the band count.
    """

    def forward(self, y: Tensor) -> Tensor:
        return haar_ipacket2d(y)
