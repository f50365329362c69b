"""Exporting models that use uhrops ops: ``torch.export`` and ONNX.

uhrops' ops are ``torch.library`` custom ops (``torch.ops.uhrops.*``). ``torch.export`` keeps
them as single nodes (their fake implementations give the shapes), which is what
``torch.compile`` and AOTInductor want; an ONNX exporter does not know them. This module
gives every forward op a **decomposition into standard ATen ops**, used only when exporting:

- :func:`decompositions` is the table ``{torch.ops.uhrops.<op>.default: fn}`` for
  ``ExportedProgram.run_decompositions``;
- :func:`export` is ``torch.export.export`` followed by that decomposition (any ExportedProgram
  consumer then sees only ATen: ONNX, ExecuTorch, TensorRT's torch frontend);
- :func:`to_onnx` does that and hands the program to ``torch.onnx.export(dynamo=True)``, then
  writes ``metadata_props`` (needs ``pip install 'uhrops[onnx]'``);
- the plain ``torch.onnx.export(model, args, dynamo=True)`` works too, on any model calling
  uhrops ops: importing uhrops adds the decompositions to the table the ONNX exporter builds
  for its own decomposition pass (see :func:`onnx_translations`; nothing else reads it).

Why decompositions rather than ONNX Script translations (``custom_translation_table``): one
table serves every ``torch.export`` consumer, not ONNX alone; the decompositions are plain
PyTorch, so they are tested against the ops in eager mode, on any shape, without an ONNX
runtime; and the ONNX exporter then optimises them like the rest of the model. Nothing is
registered with the dispatcher: eager calls, ``torch.compile``, autograd and the
Triton/PyTorch backend choice are unchanged (a ``CompositeImplicitAutograd`` kernel would have
replaced the hand-written backward passes and the Triton path).

Convention:
    - Each decomposition computes what the op's PyTorch path computes, in the same arithmetic
      order where that matters (Haar bands halve before adding, pyramids filter rows then
      columns, 16-bit inputs in float32), so results agree to float rounding (~1 ulp).
    - Haar transforms and pyramids stay shape-generic: they export with dynamic H and W
      (guards only where the op's own rule branches, e.g. odd sizes or sides < 3).
    - ``context_attention`` becomes a batched matmul, softmax and matmul (and logsumexp for
      the saved statistic, removed by dead-code elimination when unused): O(Nq * Nk) memory in
      the exported graph, as in any standard-op attention.
    - Tiling ops (``extract_patches``, ``merge_patches``, ``extract_contexts``) bake the patch
      grid into the graph (static image size): slices, zero/constant padding, sums, and
      torch's (antialiased) bilinear resize of the context windows (ONNX ``Resize`` with
      ``antialias=1``).
    - ``merge_patches`` with a weight ("gaussian" or a tensor) does not export: its Python
      checks read the weight's values; ``weight=None`` ("mean" or "sum") does.
    - Backward-only ops (adjoints, attention backward) have no decomposition: export
      inference graphs (``model.eval()``, no autograd).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence

import torch
import torch._decomp
import torch.nn.functional as F
from torch import Tensor

# Importing the op families registers their custom ops.
from uhrops import attention as _attention  # noqa: F401
from uhrops import pyramid as _pyramid  # noqa: F401
from uhrops import tiling as _tiling  # noqa: F401
from uhrops import wavelet as _wavelet  # noqa: F401
from uhrops._dtypes import HALF_DTYPES, float32_or_64
from uhrops.tiling.ops import resize_bilinear

__all__ = ["MissingExtraError", "decompositions", "export", "onnx_translations", "to_onnx",
           "require_onnx"]

_NO_PAD = -1  # wavelet pad code: sizes are even


def _work(x: Tensor) -> Tensor:
    """16-bit inputs are computed in float32, as on every uhrops path."""
    return x.float() if x.dtype in HALF_DTYPES else x


# --------------------------------------------------------------------------------------------
# Haar wavelets
# --------------------------------------------------------------------------------------------


def _pad_odd_end(x: Tensor, pad: int) -> Tensor:
    """pywt's one sample at the end of each odd axis: 0 zero, 1 x[n-1], 2 x[n-2], 3 x[0]."""
    for dim in (-2, -1):
        n = x.shape[dim]
        if n % 2 == 0:
            continue
        if pad == 0:
            extra = torch.zeros_like(x.narrow(dim, 0, 1))
        else:
            src = {1: n - 1, 2: n - 2, 3: 0}[pad]
            extra = x.narrow(dim, src, 1)
        x = torch.cat([x, extra], dim=dim)
    return x


def _dwt(x: Tensor, pad: int) -> Tensor:
    """One level (B, C, H, W) -> (B, C, 4, ceil(H/2), ceil(W/2)) in the input dtype."""
    dtype = x.dtype
    x = _pad_odd_end(_work(x), pad)
    B, C, H, W = x.shape
    blocks = x.reshape(B, C, H // 2, 2, W // 2, 2)
    even, odd = blocks[:, :, :, 0], blocks[:, :, :, 1]  # (B, C, h, w, 2): rows 2i and 2i+1
    # halve before adding (as the op does): exact, and e + o cannot overflow
    s = even * 0.5 + odd * 0.5
    t = even * 0.5 - odd * 0.5
    s0, s1 = s[..., 0], s[..., 1]
    t0, t1 = t[..., 0], t[..., 1]
    return torch.stack([s0 + s1, t0 + t1, s0 - s1, t0 - t1], dim=2).to(dtype)


def _idwt(low: Tensor, high: Tensor) -> Tensor:
    """Inverse of one level: low (B, C, h, w), high (B, C, 3, h, w) -> (B, C, 2h, 2w)."""
    dtype = low.dtype
    low, high = _work(low), _work(high)
    B, C, h, w = low.shape
    hh, vv, dd = high[:, :, 0], high[:, :, 1], high[:, :, 2]
    s = low * 0.5 + hh * 0.5
    t = low * 0.5 - hh * 0.5
    u = vv * 0.5 + dd * 0.5
    v = vv * 0.5 - dd * 0.5
    top = torch.stack([s + u, s - u], dim=-1)  # (B, C, h, w, 2): row 2i
    bottom = torch.stack([t + v, t - v], dim=-1)  # row 2i + 1
    return torch.stack([top, bottom], dim=3).reshape(B, C, 2 * h, 2 * w).to(dtype)


def _fold_end(g: Tensor, size: Sequence[int], pad: int) -> Tensor:
    """Crop to ``size``; for pads 1-3 add the extra sample back onto its source (the adjoint
    of :func:`_pad_odd_end`), as ``haar_waverec2``'s ``pad`` argument asks."""
    for dim, n in ((-1, size[1]), (-2, size[0])):
        if g.shape[dim] == n:
            continue
        core = g.narrow(dim, 0, n)
        if pad in (_NO_PAD, 0):
            g = core
            continue
        src = {1: n - 1, 2: n - 2, 3: 0}[pad]
        extra = g.narrow(dim, n, 1)
        parts = [core.narrow(dim, 0, src), core.narrow(dim, src, 1) + extra,
                 core.narrow(dim, src + 1, n - src - 1)]
        g = torch.cat(parts, dim=dim)
    return g


def _haar_dwt2d(x: Tensor, pad: int, backend: str) -> Tensor:
    return _dwt(x, pad)


def _haar_idwt2d(y: Tensor, backend: str) -> Tensor:
    return _idwt(y[:, :, 0], y[:, :, 1:])


def _haar_wavedec2(x: Tensor, levels: int, pad: int, backend: str) -> List[Tensor]:
    highs = []
    cur = x
    for _ in range(levels):
        y = _dwt(cur, pad)
        highs.append(y[:, :, 1:])
        cur = y[:, :, 0]
    return [cur] + highs


def _haar_waverec2(low: Tensor, highs: List[Tensor], H: int, W: int, pad: int,
                   backend: str) -> Tensor:
    sizes = [(H, W)]
    for _ in range(len(highs) - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    cur = low
    for level in range(len(highs), 0, -1):
        cur = _fold_end(_idwt(cur, highs[level - 1]), sizes[level - 1], pad)
    return cur


def _haar_packet2d(x: Tensor, levels: int, backend: str) -> Tensor:
    B, C, H, W = x.shape
    cur = x
    for _ in range(levels):
        y = _dwt(cur, _NO_PAD)  # (B, n, 4, h, w): every band split again
        cur = y.reshape(B, y.shape[1] * 4, y.shape[3], y.shape[4])
    return cur.reshape(B, C, 4 ** levels, H // 2 ** levels, W // 2 ** levels)


def _haar_ipacket2d(y: Tensor, levels: int, backend: str) -> Tensor:
    B, C, n, h, w = y.shape
    cur = y.reshape(B, C * n, h, w)
    for _ in range(levels):
        m = cur.shape[1] // 4
        cur5 = cur.reshape(B, m, 4, cur.shape[-2], cur.shape[-1])
        cur = _idwt(cur5[:, :, 0], cur5[:, :, 1:])
    return cur


# --------------------------------------------------------------------------------------------
# Pyramids (Burt-Adelson / OpenCV: [1, 4, 6, 4, 1] / 16, reflect-101 borders)
# --------------------------------------------------------------------------------------------


def _reflect101(p: int, n: int) -> int:
    per = max(2 * n - 2, 1)
    p %= per
    return per - p if p >= n else p


def _take(x: Tensor, dim: int, start: int, stop: int, step: int = 1) -> Tensor:
    return x[..., start:stop:step, :] if dim == -2 else x[..., start:stop:step]


def _at_least(n: Any, k: int, what: str) -> bool:
    """``n >= k`` for a plain size; for a symbolic (dynamic) size, assume it and record the
    assumption as a runtime check instead of a guard that would specialise the size."""
    if isinstance(n, int):
        return n >= k
    torch._check(n >= k, lambda: f"uhrops export: {what} needs a side of at least {k}")
    return True


def _pad_reflect101(x: Tensor, dim: int, before: int, after: int) -> Tensor:
    """Reflect-101 padding along ``dim`` (-2 or -1), folded again on short sides."""
    n = x.shape[dim]
    if _at_least(n, max(before, after) + 1, "the pyramid's reflect-101 border"):
        parts = [_take(x, dim, i, i + 1) for i in range(before, 0, -1)]  # slices, no gather
        parts.append(x)
        parts += [_take(x, dim, n - 2 - i, n - 1 - i) for i in range(after)]
        return torch.cat(parts, dim=dim)
    # a side of 1-2 samples (n is a plain int here): a few slices, no index constant
    idx = [_reflect101(p, n) for p in range(-before, n + after)]
    return torch.cat([_take(x, dim, i, i + 1) for i in idx], dim=dim)


def _decimate(a: Tensor, dim: int, m: int) -> Tensor:
    """out[i] = (a[2i] + 4 a[2i+1] + 6 a[2i+2] + 4 a[2i+3] + a[2i+4]) / 16, i < m."""
    ev = _take(a, dim, 0, 2 * m + 3, 2)
    od = _take(a, dim, 1, 2 * m + 2, 2)
    out = _take(ev, dim, 0, m) + _take(ev, dim, 2, m + 2)
    out = out + 6 * _take(ev, dim, 1, m + 1)
    out = out + 4 * _take(od, dim, 0, m)
    out = out + 4 * _take(od, dim, 1, m + 1)
    return out * (1.0 / 16.0)


def _down_axis(x: Tensor, dim: int) -> Tensor:
    n = x.shape[dim]
    m = (n + 1) // 2
    # padded positions -2 .. 2m: 2 before, 2m + 1 - n after (1 for even n, 2 for odd n)
    return _decimate(_pad_reflect101(x, dim, 2, 2 if n % 2 else 1), dim, m)


def _interleave(even: Tensor, odd: Tensor, dim: int) -> Tensor:
    """Samples even[0], odd[0], even[1], odd[1], ... along ``dim``."""
    both = torch.stack([even, odd], dim=dim)  # (.., n, 2, W) or (.., W, n, 2)
    shape = list(even.shape)
    shape[dim] = 2 * even.shape[dim]
    return both.reshape(shape)


def _up_axis(x: Tensor, dim: int, size: int) -> Tensor:
    """Expand one axis: even[i] = (a[i] + 6 a[i+1] + a[i+2]) / 8, odd[i] = (a[i+1] + a[i+2]) / 2
    with a = [x[1], x[0..n-1], x[n-1]] (x[0] first when n == 1), cropped to ``size``."""
    n = x.shape[dim]
    first = _take(x, dim, 1, 2) if _at_least(n, 2, "pyr_up") else _take(x, dim, 0, 1)
    a = torch.cat([first, x, _take(x, dim, n - 1, n)], dim=dim)
    even = (_take(a, dim, 0, n) + _take(a, dim, 2, n + 2)) + 6 * _take(a, dim, 1, n + 1)
    even = even * 0.125
    odd = (_take(a, dim, 1, n + 1) + _take(a, dim, 2, n + 2)) * 0.5
    return _take(_interleave(even, odd, dim), dim, 0, size)  # (no size test: no guard)


def _pyr_down(x: Tensor, backend: str) -> Tensor:
    return _down_axis(_down_axis(_work(x), -2), -1).to(x.dtype)


def _expand(x: Tensor, H: int, W: int) -> Tensor:
    return _up_axis(_up_axis(x, -2, H), -1, W)


def _pyr_up(x: Tensor, H: int, W: int, backend: str) -> Tensor:
    return _expand(_work(x), H, W).to(x.dtype)


def _pyr_up_add(base: Tensor, coarse: Tensor, sign: float, backend: str) -> Tensor:
    H, W = base.shape[-2:]
    up = _expand(_work(coarse), H, W)
    return (_work(base) + sign * up).to(base.dtype)


# --------------------------------------------------------------------------------------------
# Context attention
# --------------------------------------------------------------------------------------------


def _context_attention(query: Tensor, key: Tensor, value: Tensor, scale: float,
                       backend: str) -> tuple[Tensor, Tensor]:
    b, _, hq, wq = query.shape
    cdt = torch.float32 if query.dtype in HALF_DTYPES else query.dtype
    q = query.flatten(2).to(cdt).transpose(1, 2)  # (B, Nq, Cq)
    k = key.flatten(2).to(cdt)  # (B, Cq, Nk)
    v = value.flatten(2).to(cdt)  # (B, Cv, Nk)
    logits = torch.bmm(q, k)
    if scale != 1.0:
        logits = logits * scale
    p = torch.softmax(logits, dim=-1)  # (B, Nq, Nk)
    out = torch.bmm(v, p.transpose(1, 2)).reshape(b, value.shape[1], hq, wq)
    lse_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    lse = torch.logsumexp(logits, dim=-1).to(lse_dtype)
    return out.to(value.dtype), lse


# --------------------------------------------------------------------------------------------
# Tiling (static grids: ys, xs and sizes are plain ints)
# --------------------------------------------------------------------------------------------


def _axis_coverage(starts: Sequence[int], p: int, size: int, dtype: torch.dtype,
                   device: torch.device) -> Tensor:
    """Number of patches covering each position of one axis, built from ones and zero
    padding (no tensor literal, which a traced decomposition cannot hold)."""
    c = torch.zeros(size, dtype=dtype, device=device)
    for s in starts:
        e = min(s + p, size)
        c = c + F.pad(torch.ones(e - s, dtype=dtype, device=device), (s, size - e))
    return c


def _placed(t: Tensor, y: int, x: int, H: int, W: int) -> Tensor:
    """(.., h, w) tile placed at (y, x) of an (H, W) zero canvas; parts outside dropped."""
    hh, ww = min(t.shape[-2], H - y), min(t.shape[-1], W - x)
    t = t[..., :hh, :ww]
    return F.pad(t, (x, W - x - ww, y, H - y - hh))


def _inverse_norm(weight: Optional[Tensor], ys: Sequence[int], xs: Sequence[int], ph: int,
                  pw: int, H: int, W: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """1 / Σ_k w_k at every pixel (0 where no patch covers), (H, W)."""
    if weight is None:  # constant weights: patch counts per axis, an outer product
        cy = _axis_coverage(ys, ph, H, dtype, device)
        cx = _axis_coverage(xs, pw, W, dtype, device)
        norm = cy[:, None] * cx[None, :]
    else:
        w = weight.to(dtype)
        norm = sum(_placed(w, y, x, H, W) for y in ys for x in xs)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm > 0, 1.0 / safe, torch.zeros_like(norm))


def _tile_gather(image: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int], ph: int,
                 pw: int, normalize: bool, backend: str) -> Tensor:
    B, C, H, W = image.shape
    fd = float32_or_64(image.dtype)
    src = image
    if normalize:  # the inverse normaliser is a per-pixel map of the image
        src = image.to(fd) * _inverse_norm(weight, ys, xs, ph, pw, H, W, fd, image.device)
    bottom = max(0, max(ys) + ph - H)
    right = max(0, max(xs) + pw - W)
    if bottom or right:  # patches past the image read zeros
        src = F.pad(src, (0, right, 0, bottom))
    crops = []
    for y in ys:
        for x in xs:
            crop = src[:, :, y:y + ph, x:x + pw]
            if weight is not None:
                crop = crop.to(fd) * weight.to(fd)
            crops.append(crop.to(image.dtype))
    return torch.stack(crops, dim=1).reshape(B * len(crops), C, ph, pw)


def _tile_scatter(patches: Tensor, weight: Optional[Tensor], ys: List[int], xs: List[int],
                  height: int, width: int, normalize: bool, backend: str) -> Tensor:
    n = len(ys) * len(xs)
    BN, C, ph, pw = patches.shape
    B = BN // n
    acc_dtype = torch.float32 if patches.dtype in HALF_DTYPES else patches.dtype
    p = patches.reshape(B, n, C, ph, pw).to(acc_dtype)
    if weight is not None:
        p = p * weight.to(acc_dtype)
    out = None
    k = 0
    for y in ys:
        # one row of patches summed on a (ph, width) strip, then the strip placed once
        strip = None
        for x in xs:
            t = _placed(p[:, k], 0, x, ph, width)
            strip = t if strip is None else strip + t
            k += 1
        placed = _placed(strip, y, 0, height, width)
        out = placed if out is None else out + placed
    if normalize:
        out = out * _inverse_norm(weight, ys, xs, ph, pw, height, width,
                                  float32_or_64(patches.dtype), patches.device).to(acc_dtype)
    return out.to(patches.dtype)


def _tile_contexts(image: Tensor, ys: List[int], xs: List[int], wh: int, ww: int, oh: int,
                   ow: int, pad_value: float, antialias: bool, backend: str) -> Tensor:
    B, C, H, W = image.shape
    top, left = max(0, -min(ys)), max(0, -min(xs))
    bottom, right = max(0, max(ys) + wh - H), max(0, max(xs) + ww - W)
    src = _work(image)
    if top or left or bottom or right:  # the windows read pad_value outside the image
        src = F.pad(src, (left, right, top, bottom), value=pad_value)
    out = []
    for y in ys:
        # separable, as the op: each row of windows resized along H once, then each window
        # along W (the filter is per axis, so this equals the 2-D resize of each window)
        vert = resize_bilinear(src[:, :, y + top:y + top + wh], (oh, src.shape[-1]), antialias)
        for x in xs:
            out.append(resize_bilinear(vert[..., x + left:x + left + ww], (oh, ow), antialias))
    return torch.stack(out, dim=1).reshape(B * len(out), C, oh, ow).to(image.dtype)


# --------------------------------------------------------------------------------------------
# The table and the entry points
# --------------------------------------------------------------------------------------------


def decompositions() -> dict[Any, Callable]:
    """``{torch.ops.uhrops.<op>.default: decomposition}`` for every forward uhrops op.

    Pass it to ``ExportedProgram.run_decompositions`` (alone: only uhrops' ops are rewritten;
    merged into ``torch.export.default_decompositions()``: Core ATen as well).

    Example:
        >>> import uhrops
        >>> class Down(torch.nn.Module):
        ...     def forward(self, x):
        ...         return uhrops.pyr_down(x)
        >>> ep = torch.export.export(Down(), (torch.rand(1, 3, 8, 8),))
        >>> ep = ep.run_decompositions(decompositions())
        >>> any("uhrops" in str(n.target) for n in ep.graph.nodes)
        False
    """
    ops = torch.ops.uhrops
    return {
        ops.haar_dwt2d.default: _haar_dwt2d,
        ops.haar_idwt2d.default: _haar_idwt2d,
        ops.haar_wavedec2.default: _haar_wavedec2,
        ops.haar_waverec2.default: _haar_waverec2,
        ops.haar_packet2d.default: _haar_packet2d,
        ops.haar_ipacket2d.default: _haar_ipacket2d,
        ops.pyr_down.default: _pyr_down,
        ops.pyr_up.default: _pyr_up,
        ops.pyr_up_add.default: _pyr_up_add,
        ops.context_attention.default: _context_attention,
        ops.tile_gather.default: _tile_gather,
        ops.tile_scatter.default: _tile_scatter,
        ops.tile_contexts.default: _tile_contexts,
    }


def export(module: torch.nn.Module, args: tuple, kwargs: Mapping[str, Any] | None = None, *,
           dynamic_shapes: Any = None, strict: bool = False,
           core_aten: bool = False) -> "torch.export.ExportedProgram":
    """``torch.export.export`` with every uhrops op decomposed into ATen ops.

    Convention:
        ``module`` is exported as it is (call ``.eval()`` first for inference);
        ``dynamic_shapes`` and ``strict`` are ``torch.export.export``'s. ``core_aten=True``
        also runs ``torch.export.default_decompositions()`` (Core ATen); the default keeps the
        other ATen ops as they are (the ONNX exporter has its own table).
    """
    ep = torch.export.export(module, tuple(args), dict(kwargs or {}),
                             dynamic_shapes=dynamic_shapes, strict=strict)
    table: dict = dict(torch.export.default_decompositions()) if core_aten else {}
    table.update(decompositions())
    return ep.run_decompositions(table)


def _with_uhrops(make: Callable) -> Callable:
    def table_with_uhrops(onnx_registered_ops: Any) -> dict:
        table = make(onnx_registered_ops)
        for op, fn in decompositions().items():
            if op not in onnx_registered_ops:  # a custom_translation_table entry wins
                table.setdefault(op, fn)
        return table

    table_with_uhrops.uhrops_wrapped = make  # type: ignore[attr-defined]
    return table_with_uhrops


def _hook_onnx_exporter() -> bool:
    """Make ``torch.onnx.export(dynamo=True)`` decompose uhrops' ops by itself.

    The exporter decomposes every op ONNX lacks with the table that
    ``torch.onnx._internal.exporter._decomp.create_onnx_friendly_decomposition_table`` builds
    at each export (from ``torch.export.default_decompositions()`` and
    ``torch._decomp.decomposition_table``). That function is wrapped so that its result also
    holds uhrops' decompositions. Only the ONNX exporter calls it: eager calls, autograd,
    ``torch.compile`` (whose fake tensors would run anything put in the global
    ``torch._decomp.decomposition_table`` under dynamic shapes instead of the ops' fake
    implementations), ``torch.export`` and the Triton/PyTorch dispatch are untouched.
    Returns False where this torch has no such function (then use :func:`to_onnx`)."""
    try:
        from torch.onnx._internal.exporter import _decomp as onnx_decomp
    except ImportError:
        return False
    make = getattr(onnx_decomp, "create_onnx_friendly_decomposition_table", None)
    if not callable(make):
        return False
    if not hasattr(make, "uhrops_wrapped"):
        onnx_decomp.create_onnx_friendly_decomposition_table = _with_uhrops(make)
    return True


_HOOKED = _hook_onnx_exporter()


def onnx_translations() -> dict[Any, Callable]:
    """The ``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: empty,
    because the plain call already exports uhrops' ops.

    Convention:
        - ``torch.onnx.export(model, args, dynamo=True)`` and
          ``torch.onnx.export(model, args, dynamo=True,
          custom_translation_table=uhrops.export.onnx_translations())`` export any model that
          calls uhrops ops, with or without other entries of your own in the table: importing
          uhrops makes the exporter's decomposition pass rewrite every forward op into the
          ATen ops of :func:`decompositions` (the same graphs as :func:`to_onnx`; how, and
          why it changes no other dispatch: ``_hook_onnx_exporter``). So no ONNX Script
          function is needed, and there is nothing to put in the table; an op you do put in
          it (your own ONNX Script translation) is translated by yours instead.
        - Where this torch lacks the exporter function that is hooked, it raises
          :class:`RuntimeError` saying to use :func:`to_onnx` (which does not need it).

    Example:
        >>> import uhrops
        >>> uhrops.export.onnx_translations()
        {}
    """
    if not _HOOKED:
        raise RuntimeError(
            "onnx_translations(): this torch's ONNX exporter has no "
            "torch.onnx._internal.exporter._decomp.create_onnx_friendly_decomposition_table, "
            "so uhrops cannot add its decompositions to the exporter's pass. Fix: export with "
            "uhrops.export.to_onnx(model, args, path), which decomposes the ops first.")
    return {}


class MissingExtraError(ImportError):
    """An optional dependency of uhrops is not installed; the message names the extra."""


def require_onnx(what: str = "ONNX export") -> None:
    """Raise :class:`MissingExtraError` naming ``uhrops[onnx]`` unless onnx and onnxscript
    import (the packages ``torch.onnx.export(dynamo=True)`` needs)."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"{what} needs the package(s) {', '.join(missing)}, which are not installed. Fix: "
            f"pip install 'uhrops[onnx]' (onnx, onnxscript and onnxruntime).")


@contextlib.contextmanager
def _in_onnx_decompositions() -> Iterator[bool]:
    """The uhrops decompositions added to the table ``torch.onnx.export(dynamo=True)`` reads
    (``torch._decomp.decomposition_table``) for the duration of one export, then removed.

    The exporter re-traces the program once to decompose what ONNX lacks; with uhrops' ops in
    that table they go in the same pass (a second re-trace costs as much as the first: ~10 s
    for WSDNet). Inductor and eager never read this table, and entries already present are
    left alone. Yields False where the table does not exist (the caller decomposes first)."""
    table = getattr(torch._decomp, "decomposition_table", None)
    if not isinstance(table, dict):
        yield False
        return
    added = {op: fn for op, fn in decompositions().items() if op not in table}
    table.update(added)
    try:
        yield True
    finally:
        for op in added:
            table.pop(op, None)


def to_onnx(module: torch.nn.Module, args: tuple, path: str | os.PathLike, *,
            input_names: Sequence[str] | None = None,
            output_names: Sequence[str] | None = None, dynamic_shapes: Any = None,
            metadata: Mapping[str, str] | None = None, opset_version: int | None = None,
            optimize: bool = True) -> str:
    """Export ``module`` (with uhrops ops) to an ONNX file at ``path``, written atomically.

    Convention:
        ``torch.export.export`` (non-strict), then ``torch.onnx.export(dynamo=True)`` with
        ``input_names``/``output_names``, the uhrops ops decomposed by :func:`decompositions`
        in the exporter's own decomposition pass; ``metadata``
        (str -> str) goes into the model's ``metadata_props``. The weights are stored inside
        the file (models above 2 GB need ONNX external data: not done here). Returns the
        path. Needs ``pip install 'uhrops[onnx]'`` (:class:`MissingExtraError` otherwise).
    """
    require_onnx()
    import onnx

    ep = torch.export.export(module, tuple(args), dynamic_shapes=dynamic_shapes, strict=False)
    # the hooked exporter decomposes uhrops' ops itself; otherwise add them to its table
    with (contextlib.nullcontext(True) if _HOOKED else _in_onnx_decompositions()) as merged:
        if not merged:  # this torch has no such table: decompose first (one more re-trace)
            ep = ep.run_decompositions(decompositions())
        program = torch.onnx.export(ep, tuple(args),
                                    input_names=list(input_names or []) or None,
                                    output_names=list(output_names or []) or None,
                                    opset_version=opset_version, optimize=optimize,
                                    dynamo=True, external_data=False, verbose=False)
    proto = program.model_proto
    if metadata:
        keep = [p for p in proto.metadata_props if p.key not in metadata]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise TypeError(f"to_onnx(): `metadata` values must be str; got "
                                f"{type(value).__name__} for {key!r}. Fix: json.dumps it.")
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
