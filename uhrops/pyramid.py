"""Gaussian and Laplacian pyramids with Burt-Adelson / OpenCV semantics.

``pyr_down`` equals ``cv2.pyrDown`` and ``pyr_up`` equals ``cv2.pyrUp`` (per channel):

- the kernel is the 5x5 binomial ``outer(k, k)`` with ``k = [1, 4, 6, 4, 1] / 16``, applied
  separably;
- the border is reflect-101 (OpenCV ``BORDER_REFLECT_101``, torch ``"reflect"``:
  ``x[-1] = x[1]``), folded again as often as needed on sides of 1-3 samples;
- ``pyr_down`` keeps the even samples of the blurred image, so a side n becomes ceil(n / 2);
- ``pyr_up`` inserts zeros between samples (side n -> 2n), blurs with 4x the kernel under the
  same border rule, and optionally crops the last row/column (odd target sizes), exactly as
  ``cv2.pyrUp(x, dstsize=...)`` does. In terms of the coarse samples that is
  ``out[2i] = (x[i-1] + 6 x[i] + x[i+1]) / 8`` and ``out[2i+1] = (x[i] + x[i+1]) / 2`` per axis
  with ``x[-1] = x[1]`` and ``x[n] = x[n-1]``.

Sizes are never padded to a power of two: each level keeps its exact size, and a Laplacian
level is the difference to the expansion of the next level cropped to the finer size, so
``laplacian_reconstruct`` is exact for every size, odd included.

Each op has a PyTorch path (any device and float dtype; separable, evaluated only at the kept
outputs, blocked over rows so temporaries stay in cache) and a Triton path (one gather kernel
for blur+decimate, one for expand(+add/subtract), and their adjoints), chosen by
:func:`uhrops.use_backend`. Both are registered with ``torch.library`` with hand-written
backward passes (the exact adjoint operators), so they work with ``torch.compile`` and
higher-order autograd.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import _pyramid_cpu, checks
from uhrops._backend import resolve, run_with_fallback
from uhrops._dtypes import HALF_DTYPES

__all__ = [
    "pyr_down",
    "pyr_up",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "laplacian_reconstruct",
    "GaussianPyramid",
    "LaplacianPyramid",
]


# Elements (over all leading dims and one row of the padded block) that a row block of the
# PyTorch path aims for: ~256K elements = 1 MiB in float32, so the row-pass temporary and the
# block being written stay in the CPU caches.
_BLOCK_ELEMS = 1 << 18


# ----------------------------------------------------------------------------------------------
# Index maps (plain Python: the maps are tiny and depend on sizes only)
# ----------------------------------------------------------------------------------------------


def _refl(p: int, n: int) -> int:
    """Reflect-101 fold of ``p`` into [0, n) (any p; n == 1 maps everything to 0)."""
    per = max(2 * n - 2, 1)
    p %= per
    return per - p if p >= n else p


def _down_map(n: int) -> list[int]:
    """Source of each padded position p = -2 .. 2*ceil(n/2) for blur+decimate."""
    m = (n + 1) // 2
    return [_refl(p, n) for p in range(-2, 2 * m + 1)]


def _up_map(n: int) -> list[int]:
    """Source of each padded coarse position q = -1 .. n for the expand.

    Zero insertion puts x[q] at u[2q]; reflect-101 on u keeps parity, so the padded coarse
    sample q is x[refl(2q, 2n) / 2]: x[-1] = x[1] (x[0] when n == 1) and x[n] = x[n - 1].
    """
    return [_refl(2 * q, 2 * n) // 2 for q in range(-1, n + 1)]


def _identity_run(emap: list[int], off: int, n: int) -> tuple[int, int]:
    """Padded positions [a, b) where emap[t] == t - off (rows that can be sliced, not gathered)."""
    a = off
    b = off
    while b < len(emap) and b - off < n and emap[b] == b - off:
        b += 1
    return a, b


# ----------------------------------------------------------------------------------------------
# PyTorch path: 1-D "valid" passes on a padded operand, and blocked 2-D drivers
# ----------------------------------------------------------------------------------------------


def _sl(t: Tensor, dim: int, start: int, stop: int, step: int = 1) -> Tensor:
    if dim == -1:
        return t[..., start:stop:step]
    return t[..., start:stop:step, :]


def _dec_pass(a: Tensor, out: Tensor, dim: int) -> None:
    """out[i] = (a[2i] + 4a[2i+1] + 6a[2i+2] + 4a[2i+3] + a[2i+4]) / 16 along ``dim``."""
    m = out.shape[dim]
    ev = _sl(a, dim, 0, 2 * m + 3, 2)
    od = _sl(a, dim, 1, 2 * m + 2, 2)
    torch.add(_sl(ev, dim, 0, m), _sl(ev, dim, 2, m + 2), out=out)
    out.add_(_sl(ev, dim, 1, m + 1), alpha=6)
    out.add_(_sl(od, dim, 0, m), alpha=4)
    out.add_(_sl(od, dim, 1, m + 1), alpha=4)
    out.mul_(1.0 / 16.0)


def _exp_pass(a: Tensor, even: Tensor, odd: Tensor, dim: int) -> None:
    """even[i] = (a[i] + 6a[i+1] + a[i+2]) / 8, odd[i] = (a[i+1] + a[i+2]) / 2 along ``dim``."""
    ne, no = even.shape[dim], odd.shape[dim]
    torch.add(_sl(a, dim, 0, ne), _sl(a, dim, 2, ne + 2), out=even)
    even.add_(_sl(a, dim, 1, ne + 1), alpha=6)
    even.mul_(0.125)
    if no:
        torch.add(_sl(a, dim, 1, no + 1), _sl(a, dim, 2, no + 2), out=odd)
        odd.mul_(0.5)


def _rows_per_block(lead: int, width: int, minimum: int) -> int:
    return max(minimum, _BLOCK_ELEMS // max(1, lead * width))


def _rows(src: Tensor, emap: list[int], off: int, run: tuple[int, int], a: int,
          b: int) -> Tensor:
    """Padded rows [a, b) of ``src``: a view when they are plain rows, else a small gather."""
    if run[0] <= a and b <= run[1]:
        return src[..., a - off : b - off, :]
    idx = torch.tensor(emap[a:b], device=src.device)
    return src.index_select(-2, idx)


def _fill_cols(t: Tensor, emap: list[int], off: int, n: int) -> None:
    """Fill the padding columns of ``t`` (padded width len(emap)) from its interior columns."""
    pads = [c for c in range(len(emap)) if not off <= c < off + n]
    if pads:
        dst = torch.tensor(pads, device=t.device)
        src = torch.tensor([emap[c] + off for c in pads], device=t.device)
        t.index_copy_(-1, dst, t.index_select(-1, src))


def _down_driver(src: Tensor, rmap: list[int], roff: int, cmap: list[int], coff: int,
                 m: int, mw: int, scale: float = 1.0) -> Tensor:
    """Blur+decimate a padded operand into (.., m, mw), times ``scale``.

    The padded operand is described by maps: padded row t is src row rmap[t], padded column c
    is src column cmap[c]; rows [roff, roff + H) and columns [coff, coff + W) are src's own
    rows/columns in order. Rows are processed in blocks: the vertical pass of a block goes into
    a small buffer whose padding columns are then filled, and the horizontal pass writes the
    output rows, so no full-size temporary is ever made.
    """
    H, W = src.shape[-2:]
    lead = src.shape[:-2]
    out = src.new_empty(*lead, m, mw)
    run = _identity_run(rmap, roff, H)
    rb = min(m, _rows_per_block(math.prod(lead), len(cmap), 4))
    buf = src.new_empty(*lead, rb, len(cmap))
    for i0 in range(0, m, rb):
        i1 = min(m, i0 + rb)
        t = buf[..., : i1 - i0, :]
        _dec_pass(_rows(src, rmap, roff, run, 2 * i0, 2 * i1 + 3), t[..., coff : coff + W], -2)
        _fill_cols(t, cmap, coff, W)
        o = out[..., i0:i1, :]
        _dec_pass(t, o, -1)
        if scale != 1.0:
            o.mul_(scale)
    return out


def _up_driver(src: Tensor, rmap: list[int], roff: int, cmap: list[int], coff: int, Ho: int,
               Wo: int, base: Tensor | None = None, sign: float = 1.0,
               scale: float = 1.0) -> Tensor:
    """Expand a padded operand (maps as in :func:`_down_driver`) into (.., Ho, Wo).

    With h = len(rmap) - 2 coarse rows, Ho is 2h or 2h - 1 (the last odd row cropped); the
    same for columns. The result is ``scale * expand``, or ``base + sign * expand`` when
    ``base`` is given (fused per row block, so a Laplacian level is one pass over memory).
    """
    H, W = src.shape[-2:]
    h = len(rmap) - 2
    lead = src.shape[:-2]
    out = src.new_empty(*lead, Ho, Wo)
    run = _identity_run(rmap, roff, H)
    rb = min(h, _rows_per_block(math.prod(lead), 2 * len(cmap), 2))
    buf = src.new_empty(*lead, 2 * rb, len(cmap))
    for i0 in range(0, h, rb):
        i1 = min(h, i0 + rb)
        r0, r1 = 2 * i0, min(2 * i1, Ho)
        t = buf[..., : r1 - r0, :]
        s = _rows(src, rmap, roff, run, i0, i1 + 2)
        _exp_pass(s, t[..., 0::2, coff : coff + W], t[..., 1::2, coff : coff + W], -2)
        _fill_cols(t, cmap, coff, W)
        o = out[..., r0:r1, :]
        _exp_pass(t, o[..., 0::2], o[..., 1::2], -1)
        if scale != 1.0:
            o.mul_(scale)
        if base is not None:
            torch.add(base[..., r0:r1, :], o, alpha=sign, out=o)
    return out


def _fold(e: Tensor, dim: int, emap: list[int], off: int, n: int) -> Tensor:
    """Adjoint of padding by ``emap``: e (padded along dim) -> n samples, pads added back."""
    core = _sl(e, dim, off, off + n).contiguous()  # e is a temporary: writing into it is fine
    pads = [t for t in range(len(emap)) if not off <= t < off + n]
    if pads:
        dst = torch.tensor([emap[t] for t in pads], device=e.device)
        core.index_add_(dim, dst, e.index_select(dim, torch.tensor(pads, device=e.device)))
    return core


def _to_work(x: Tensor) -> Tensor:
    return x.float() if x.dtype in HALF_DTYPES else x


def _torch_down(x: Tensor) -> Tensor:
    H, W = x.shape[-2:]
    if _pyramid_cpu.usable(x):  # the same filter as convolutions: 3-4x less CPU time
        return _pyramid_cpu.down(x, _down_map(H), _down_map(W), (H + 1) // 2, (W + 1) // 2)
    y = _down_driver(_to_work(x), _down_map(H), 2, _down_map(W), 2, (H + 1) // 2, (W + 1) // 2)
    return y.to(x.dtype)


def _torch_up(x: Tensor, Ho: int, Wo: int, base: Tensor | None = None,
              sign: float = 1.0) -> Tensor:
    h, w = x.shape[-2:]
    if _pyramid_cpu.usable(x) and (base is None or base.dtype == x.dtype):
        return _pyramid_cpu.up(x, _up_map(h), _up_map(w), Ho, Wo, base, sign)
    b = _to_work(base) if base is not None else None
    y = _up_driver(_to_work(x), _up_map(h), 1, _up_map(w), 1, Ho, Wo, b, sign)
    return y.to(x.dtype)


def _torch_down_adjoint(g: Tensor, H: int, W: int) -> Tensor:
    """Transpose of blur+decimate: zero-insert g and blur (= the expand / 2 per axis), fold.

    With g zero-padded by 2 on each side, the expand's output t holds the padded-domain value
    of position p = t - 2, p = -2 .. 2m + 1; the positions outside [0, H) are then added back
    onto their reflect-101 sources.
    """
    m, mw = g.shape[-2:]
    gp = F.pad(_to_work(g), (2, 2, 2, 2))
    rmap, cmap = list(range(m + 4)), list(range(mw + 4))
    e = _up_driver(gp, rmap, 0, cmap, 0, 2 * m + 3, 2 * mw + 3, scale=0.25)
    y = _fold(_fold(e, -2, _down_map(H), 2, H), -1, _down_map(W), 2, W)
    return y.to(g.dtype)


def _torch_up_adjoint(g: Tensor, h: int, w: int, scale: float = 1.0) -> Tensor:
    """Transpose of the expand: zero-pad g and blur+decimate (x 2 per axis), fold.

    With g zero-padded by 4 in front, output q of the decimation holds the padded coarse
    position q - 1 (q - 1 = -1 .. h); positions -1 and h are added back onto their sources.
    """
    Ho, Wo = g.shape[-2:]
    gp = F.pad(_to_work(g), (4, 2 * w + 3 - Wo, 4, 2 * h + 3 - Ho))
    rmap, cmap = list(range(gp.shape[-2])), list(range(gp.shape[-1]))
    e = _down_driver(gp, rmap, 0, cmap, 0, h + 2, w + 2, scale=4.0 * scale)
    y = _fold(_fold(e, -2, _up_map(h), 1, h), -1, _up_map(w), 1, w)
    return y.to(g.dtype)


# ----------------------------------------------------------------------------------------------
# Custom ops (the backend string is a constant argument, so torch.compile sees no branching)
# ----------------------------------------------------------------------------------------------


def _kernels():
    from uhrops.kernels import pyramid as kp

    return kp


@torch.library.custom_op("uhrops::pyr_down", mutates_args=())
def _pyr_down_op(x: Tensor, backend: str) -> Tensor:
    return run_with_fallback("pyr_down", backend, lambda path: (
        _kernels().pyr_down(x) if path == "triton" else _torch_down(x)), x)


@_pyr_down_op.register_fake
def _(x, backend):
    B, C, H, W = x.shape
    return x.new_empty(B, C, (H + 1) // 2, (W + 1) // 2)


@torch.library.custom_op("uhrops::pyr_down_adjoint", mutates_args=())
def _pyr_down_adj_op(grad: Tensor, H: int, W: int, backend: str) -> Tensor:
    return run_with_fallback("pyr_down_adjoint", backend, lambda path: (
        _kernels().pyr_down_adjoint(grad, H, W) if path == "triton"
        else _torch_down_adjoint(grad, H, W)), grad)


@_pyr_down_adj_op.register_fake
def _(grad, H, W, backend):
    B, C = grad.shape[:2]
    return grad.new_empty(B, C, H, W)


@torch.library.custom_op("uhrops::pyr_up", mutates_args=())
def _pyr_up_op(x: Tensor, H: int, W: int, backend: str) -> Tensor:
    return run_with_fallback("pyr_up", backend, lambda path: (
        _kernels().pyr_up(x, H, W) if path == "triton" else _torch_up(x, H, W)), x)


@_pyr_up_op.register_fake
def _(x, H, W, backend):
    B, C = x.shape[:2]
    return x.new_empty(B, C, H, W)


@torch.library.custom_op("uhrops::pyr_up_adjoint", mutates_args=())
def _pyr_up_adj_op(grad: Tensor, h: int, w: int, scale: float, backend: str) -> Tensor:
    return run_with_fallback("pyr_up_adjoint", backend, lambda path: (
        _kernels().pyr_up_adjoint(grad, h, w, scale) if path == "triton"
        else _torch_up_adjoint(grad, h, w, scale)), grad)


@_pyr_up_adj_op.register_fake
def _(grad, h, w, scale, backend):
    B, C = grad.shape[:2]
    return grad.new_empty(B, C, h, w)


@torch.library.custom_op("uhrops::pyr_up_add", mutates_args=())
def _pyr_up_add_op(base: Tensor, coarse: Tensor, sign: float, backend: str) -> Tensor:
    """base + sign * pyr_up(coarse, base's size): a Laplacian level (sign -1) or a
    reconstruction step (sign +1) in one pass."""
    H, W = base.shape[-2:]
    return run_with_fallback("pyr_up_add", backend, lambda path: (
        _kernels().pyr_up(coarse, H, W, base=base, sign=sign) if path == "triton"
        else _torch_up(coarse, H, W, base=base, sign=sign)), base)


@_pyr_up_add_op.register_fake
def _(base, coarse, sign, backend):
    return torch.empty_like(base, memory_format=torch.contiguous_format)


def _down_setup(ctx, inputs, output):
    x, backend = inputs
    ctx.size = tuple(x.shape[-2:])
    ctx.backend = backend


def _down_bwd(ctx, grad):
    return _pyr_down_adj_op(grad, ctx.size[0], ctx.size[1], ctx.backend), None


def _down_adj_setup(ctx, inputs, output):
    ctx.backend = inputs[3]


def _down_adj_bwd(ctx, grad):
    return _pyr_down_op(grad, ctx.backend), None, None, None


def _up_setup(ctx, inputs, output):
    x, _, _, backend = inputs
    ctx.size = tuple(x.shape[-2:])
    ctx.backend = backend


def _up_bwd(ctx, grad):
    return _pyr_up_adj_op(grad, ctx.size[0], ctx.size[1], 1.0, ctx.backend), None, None, None


def _up_adj_setup(ctx, inputs, output):
    grad, _, _, scale, backend = inputs
    ctx.size = tuple(grad.shape[-2:])
    ctx.scale, ctx.backend = scale, backend


def _up_adj_bwd(ctx, grad):
    y = _pyr_up_op(grad, ctx.size[0], ctx.size[1], ctx.backend)
    if ctx.scale != 1.0:
        y = y * ctx.scale
    return y, None, None, None, None


def _up_add_setup(ctx, inputs, output):
    base, coarse, sign, backend = inputs
    ctx.size = tuple(coarse.shape[-2:])
    ctx.sign, ctx.backend = sign, backend
    ctx.base_dtype = base.dtype


def _up_add_bwd(ctx, grad):
    g_coarse = _pyr_up_adj_op(grad, ctx.size[0], ctx.size[1], ctx.sign, ctx.backend)
    return grad, g_coarse, None, None


_pyr_down_op.register_autograd(_down_bwd, setup_context=_down_setup)
_pyr_down_adj_op.register_autograd(_down_adj_bwd, setup_context=_down_adj_setup)
_pyr_up_op.register_autograd(_up_bwd, setup_context=_up_setup)
_pyr_up_adj_op.register_autograd(_up_adj_bwd, setup_context=_up_adj_setup)
_pyr_up_add_op.register_autograd(_up_add_bwd, setup_context=_up_add_setup)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def _check_x(x: object, op: str, name: str = "x") -> Tensor:
    t = checks.check_image(x, name, op)
    H, W = t.shape[-2:]
    if H < 1 or W < 1:
        raise ValueError(f"{op}(): `{name}` must have H >= 1 and W >= 1; got shape "
                         f"{tuple(t.shape)}. Fix: pass a non-empty image.")
    return t


def _max_levels(H: int, W: int) -> int:
    n, levels = min(H, W), 0
    while n > 1:
        n = (n + 1) // 2
        levels += 1
    return levels


def _check_levels(levels: object, H: int, W: int, op: str) -> int:
    levels = checks.check_int(levels, "levels", op, minimum=1)
    if not (isinstance(H, int) and isinstance(W, int)):
        # symbolic sizes (torch.export / compile with dynamic shapes): comparing them here
        # would add a guard on min(H, W) that pins the exported sizes; the ops' shapes still
        # follow the same rule
        return levels
    most = _max_levels(H, W)
    if levels > most:
        chain, n = [min(H, W)], min(H, W)
        while n > 1:
            n = (n + 1) // 2
            chain.append(n)
        raise ValueError(
            f"{op}(): `levels`={levels} is too many for an image of size {H}x{W}: each level "
            f"halves both sides (rounding up) and stops when the smaller side reaches 1 "
            f"({' -> '.join(map(str, chain))}), so at most {most} level(s) fit. "
            f"Fix: pass levels <= {most} or use a larger image."
        )
    return levels


def _check_size(size: object, h: int, w: int, op: str) -> tuple[int, int]:
    if size is None:
        return 2 * h, 2 * w
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"{op}(): `size` must be a pair (H, W) of ints or None; got "
                        f"{size!r}. Fix: pass e.g. size=({2 * h}, {2 * w}).")
    H = checks.check_int(size[0], "size[0]", op)
    W = checks.check_int(size[1], "size[1]", op)
    if H not in (2 * h - 1, 2 * h) or W not in (2 * w - 1, 2 * w):
        raise ValueError(
            f"{op}(): `size`={(H, W)} cannot come from an input of size {h}x{w}: each side "
            f"must be 2n or 2n - 1 (the full expansion, or it cropped by one), i.e. H in "
            f"({2 * h - 1}, {2 * h}) and W in ({2 * w - 1}, {2 * w}). Fix: pass the size of "
            f"the finer level, or size=None for ({2 * h}, {2 * w})."
        )
    return H, W


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def pyr_down(x: Tensor) -> Tensor:
    """Blur with the 5x5 binomial kernel and keep the even samples (one pyramid level down).

    Convention:
        - Equal to ``cv2.pyrDown`` on each (batch, channel) plane: kernel
          ``[1, 4, 6, 4, 1] / 16`` per axis, border reflect-101 (torch ``"reflect"``, folded
          again on 1-3 sample sides), output samples at the even input positions.
        - Shapes: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)); odd sides round up like OpenCV
          (kornia's ``pyrdown`` rounds down and also box-filters; see the anchors note).
        - Any float dtype; float16/bfloat16 are accumulated in float32 and returned in the
          input dtype. Any strides; the output is contiguous. Differentiable (the backward is
          the exact adjoint, computed by its own op).

    Args:
        x: image batch (B, C, H, W), H, W >= 1.

    Returns:
        The next Gaussian level (B, C, ceil(H/2), ceil(W/2)).

    Example:
        >>> pyr_down(torch.ones(1, 3, 5, 8)).shape
        torch.Size([1, 3, 3, 4])
    """
    x = _check_x(x, "pyr_down")
    return _pyr_down_op(x, resolve("pyr_down", x))


def pyr_up(x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """Expand by 2: insert zeros between samples and blur with 4x the binomial kernel.

    Convention:
        - Equal to ``cv2.pyrUp(x, dstsize=(W, H))`` on each plane: per axis
          ``out[2i] = (x[i-1] + 6 x[i] + x[i+1]) / 8`` and ``out[2i+1] = (x[i] + x[i+1]) / 2``
          with ``x[-1] = x[1]`` and ``x[n] = x[n-1]`` (reflect-101 of the zero-inserted image).
        - ``size=None`` gives (2h, 2w). ``size=(H, W)`` with H in {2h - 1, 2h} and W in
          {2w - 1, 2w} gives the full expansion cropped to it (the last row/column dropped),
          exactly as OpenCV; pass the size of the finer level to undo ``pyr_down`` on odd sides.
          kornia's ``pyrup`` (bilinear + blur) is a different operator.
        - dtype, strides and autograd as :func:`pyr_down`.

    Args:
        x: image batch (B, C, h, w), h, w >= 1.
        size: target (H, W) or None.

    Returns:
        (B, C, H, W) expansion.

    Example:
        >>> pyr_up(torch.ones(1, 1, 3, 4), size=(5, 8)).shape
        torch.Size([1, 1, 5, 8])
    """
    x = _check_x(x, "pyr_up")
    H, W = _check_size(size, x.shape[-2], x.shape[-1], "pyr_up")
    return _pyr_up_op(x, H, W, resolve("pyr_up", x))


def gaussian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Gaussian pyramid ``[x, g1, ..., g_levels]`` with ``g_{i+1} = pyr_down(g_i)``.

    Convention:
        - ``levels + 1`` tensors, finest first; level 0 is ``x`` itself (not a copy). Sizes
          are exact (ceil halving, like ``cv2.buildPyramid``), never padded to a power of two.
        - ``levels`` must be >= 1 and leave the smaller side >= 1 at the last halving:
          levels <= ceil(log2(min(H, W))).
        - dtype, strides and autograd as :func:`pyr_down`.

    Args:
        x: image batch (B, C, H, W).
        levels: number of ``pyr_down`` steps.

    Returns:
        List of ``levels + 1`` tensors.

    Example:
        >>> [tuple(g.shape[-2:]) for g in gaussian_pyramid(torch.rand(1, 1, 13, 20), 3)]
        [(13, 20), (7, 10), (4, 5), (2, 3)]
    """
    x = _check_x(x, "gaussian_pyramid")
    levels = _check_levels(levels, x.shape[-2], x.shape[-1], "gaussian_pyramid")
    backend = resolve("gaussian_pyramid", x)
    out = [x]
    for _ in range(levels):
        out.append(_pyr_down_op(out[-1], backend))
    return out


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Laplacian pyramid ``[h0, ..., h_{levels-1}, g_levels]`` (Burt-Adelson).

    Convention:
        - ``h_i = g_i - pyr_up(g_{i+1}, size=g_i.shape[-2:])`` with ``g`` the
          :func:`gaussian_pyramid`; the last entry is the coarsest Gaussian level. Every level
          keeps its exact size (odd included); nothing is padded, unlike kornia's
          ``build_laplacian_pyramid`` which pads to a power of two and returns padded shapes.
          ``laplacian_pyramid(x, 3)`` has 4 entries, like ``build_laplacian_pyramid(x, 4)``.
        - Each band-pass level is one fused expand-and-subtract pass.
        - :func:`laplacian_reconstruct` inverts it exactly (to rounding) for any size.
        - ``levels`` rule, dtype, strides and autograd as :func:`gaussian_pyramid`.

    Args:
        x: image batch (B, C, H, W).
        levels: number of band-pass levels.

    Returns:
        List of ``levels + 1`` tensors, finest first.

    Example:
        >>> pyr = laplacian_pyramid(torch.rand(1, 3, 13, 20), 2)
        >>> [tuple(p.shape[-2:]) for p in pyr]
        [(13, 20), (7, 10), (4, 5)]
    """
    x = _check_x(x, "laplacian_pyramid")
    levels = _check_levels(levels, x.shape[-2], x.shape[-1], "laplacian_pyramid")
    backend = resolve("laplacian_pyramid", x)
    gs = [x]
    for _ in range(levels):
        gs.append(_pyr_down_op(gs[-1], backend))
    out = [_pyr_up_add_op(gs[i], gs[i + 1], -1.0, backend) for i in range(levels)]
    out.append(gs[-1])
    return out


def laplacian_reconstruct(pyramid: Sequence[Tensor]) -> Tensor:
    """Collapse a Laplacian pyramid: ``g_i = h_i + pyr_up(g_{i+1}, size=h_i.shape[-2:])``.

    Convention:
        - Inverse of :func:`laplacian_pyramid` for every size, odd included (exact up to
          floating-point rounding: ~1e-16 relative in float64), with the same backend.
        - ``pyramid`` is ``[h0, ..., h_{L-1}, g_L]`` (L >= 1), all (B, C, ., .) with the same
          B, C, dtype and device; level i+1 must have size ceil(size_i / 2).
        - Each step is one fused expand-and-add pass. dtype and autograd as :func:`pyr_up`.

    Args:
        pyramid: list or tuple of tensors, finest first.

    Returns:
        The finest Gaussian level (B, C, H0, W0).

    Example:
        >>> x = torch.rand(1, 3, 13, 20, dtype=torch.float64)
        >>> torch.allclose(laplacian_reconstruct(laplacian_pyramid(x, 3)), x)
        True
    """
    op = "laplacian_reconstruct"
    levels = checks.check_sequence_of_tensors(pyramid, "pyramid", op, min_len=2)
    for i, t in enumerate(levels):
        _check_x(t, op, f"pyramid[{i}]")
    first = levels[0]
    for i, t in enumerate(levels[1:], start=1):
        checks.check_same_device(op, **{"pyramid[0]": first, f"pyramid[{i}]": t})
        checks.check_same_dtype(op, **{"pyramid[0]": first, f"pyramid[{i}]": t})
        prev = levels[i - 1]
        want = (prev.shape[0], prev.shape[1], (prev.shape[-2] + 1) // 2,
                (prev.shape[-1] + 1) // 2)
        if tuple(t.shape) != want:
            raise ValueError(
                f"{op}(): `pyramid[{i}]` has shape {tuple(t.shape)} but after "
                f"`pyramid[{i - 1}]` of shape {tuple(prev.shape)} it must be {want} (same B "
                f"and C, each side halved rounding up). Fix: pass the list returned by "
                f"laplacian_pyramid() unchanged in order and size."
            )
    backend = resolve(op, *levels)
    g = levels[-1]
    for h in reversed(levels[:-1]):
        g = _pyr_up_add_op(h, g, 1.0, backend)
    return g


class GaussianPyramid(nn.Module):
    """Module twin of :func:`gaussian_pyramid`; stores ``levels``.

    Convention:
        See :func:`gaussian_pyramid` (level 0 is the input; OpenCV pyrDown sizes).

    Example:
        >>> len(GaussianPyramid(2)(torch.rand(1, 3, 16, 16)))
        3
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = checks.check_int(levels, "levels", "GaussianPyramid", minimum=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        return gaussian_pyramid(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class LaplacianPyramid(nn.Module):
    """Module twin of :func:`laplacian_pyramid`; stores ``levels``.

    Convention:
        See :func:`laplacian_pyramid` (band-pass levels, then the coarsest Gaussian).

    Example:
        >>> [tuple(p.shape[-2:]) for p in LaplacianPyramid(2)(torch.rand(1, 3, 16, 16))]
        [(16, 16), (8, 8), (4, 4)]
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = checks.check_int(levels, "levels", "LaplacianPyramid", minimum=1)

    def forward(self, x: Tensor) -> list[Tensor]:
        return laplacian_pyramid(x, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
