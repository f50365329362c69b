"""Independent float64 formulas for every uhrops op, written from DESIGN.md's definitions.

None of these calls uhrops: they are direct transcriptions of the conventions (pywt's Haar
blocks and end padding, OpenCV's pyrDown/pyrUp taps with a reflect-101 border, softmax
attention, loops over patch boxes), slow but obviously right, used on small tensors only.
Every formula only adds terms with non-zero weights, so NaN and Inf travel exactly as in a
direct PyTorch computation (no 0 * Inf from dense matrices).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

F64 = torch.float64

# ---- Haar ------------------------------------------------------------------------------------

# what pywt pads at the end of an odd axis, per pad_mode (index into the axis, or None = 0)
_PAD_SOURCE = {"zero": None, "symmetric": -1, "constant": -1, "periodization": -1,
               "reflect": -2, "periodic": 0}


def _pad_end(x: torch.Tensor, mode: str | None, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if n % 2 == 0:
        return x
    assert mode is not None, "odd size without a pad mode"
    src = _PAD_SOURCE[mode]
    if src is None:
        extra = torch.zeros_like(x.narrow(dim, 0, 1))
    else:
        extra = x.narrow(dim, src % n, 1)
    return torch.cat([x, extra], dim)


def dwt(x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    x = _pad_end(_pad_end(x, mode, -2), mode, -1)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.stack([(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2,
                        (a - b - c + d) / 2], dim=2)


def idwt(y: torch.Tensor) -> torch.Tensor:
    A, H, V, D = y.unbind(2)
    B, C, h, w = A.shape
    out = torch.empty(B, C, 2 * h, 2 * w, dtype=y.dtype)
    out[..., 0::2, 0::2] = (A + H + V + D) / 2
    out[..., 0::2, 1::2] = (A + H - V - D) / 2
    out[..., 1::2, 0::2] = (A - H + V - D) / 2
    out[..., 1::2, 1::2] = (A - H - V + D) / 2
    return out


def wavedec(x: torch.Tensor, levels: int, mode: str | None):
    low, highs = x, []
    for _ in range(levels):
        y = dwt(low, mode)
        highs.append(y[:, :, 1:4])
        low = y[:, :, 0]
    return low, highs


def waverec(low: torch.Tensor, highs: Sequence[torch.Tensor], output_size=None) -> torch.Tensor:
    g = low
    for i in reversed(range(len(highs))):
        g = idwt(torch.cat([g[:, :, None], highs[i]], 2))
        if i > 0:
            g = g[..., : highs[i - 1].shape[-2], : highs[i - 1].shape[-1]]
    if output_size is not None:
        g = g[..., : output_size[0], : output_size[1]]
    return g


def packet(x: torch.Tensor, levels: int) -> torch.Tensor:
    if levels == 0:
        return x[:, :, None]
    y = dwt(x)
    return torch.cat([packet(y[:, :, b], levels - 1) for b in range(4)], dim=2)


def ipacket(y: torch.Tensor) -> torch.Tensor:
    n = y.shape[2]
    if n == 1:
        return y[:, :, 0]
    q = n // 4
    bands = [ipacket(y[:, :, b * q:(b + 1) * q]) for b in range(4)]
    return idwt(torch.stack(bands, dim=2))


# ---- pyramids ----------------------------------------------------------------------------

_K = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def refl101(p: int, n: int) -> int:
    """OpenCV BORDER_REFLECT_101 of index p into [0, n), folded as often as needed."""
    if n == 1:
        return 0
    while p < 0 or p >= n:
        p = -p if p < 0 else 2 * (n - 1) - p
    return p


def _taps_down(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    m = (n + 1) // 2
    out = 0
    for t, k in zip(range(-2, 3), _K):
        idx = torch.tensor([refl101(2 * i + t, n) for i in range(m)])
        out = out + k * x.index_select(dim, idx)
    return out


def _taps_up(x: torch.Tensor, dim: int, target: int) -> torch.Tensor:
    """Zero-insert to 2n, blur with 2x the 1-D kernel (reflect-101 on the 2n signal), crop.
    Zero samples are skipped, not multiplied."""
    n = x.shape[dim]
    outs = []
    for j in range(target):
        acc = None
        for t, k in zip(range(-2, 3), _K):
            p = refl101(j + t, 2 * n)
            if p % 2:
                continue  # an inserted zero
            term = 2 * k * x.narrow(dim, p // 2, 1)
            acc = term if acc is None else acc + term
        outs.append(acc)
    return torch.cat(outs, dim)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _taps_down(_taps_down(x, 2), 3)


def pyr_up(x: torch.Tensor, size=None) -> torch.Tensor:
    H, W = size if size is not None else (2 * x.shape[2], 2 * x.shape[3])
    return _taps_up(_taps_up(x, 2, H), 3, W)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = [x]
    for _ in range(levels):
        out.append(pyr_down(out[-1]))
    return out


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    gs = gaussian_pyramid(x, levels)
    return [gs[i] - pyr_up(gs[i + 1], gs[i].shape[-2:]) for i in range(levels)] + [gs[-1]]


def laplacian_reconstruct(pyr: Sequence[torch.Tensor]) -> torch.Tensor:
    g = pyr[-1]
    for h in reversed(pyr[:-1]):
        g = h + pyr_up(g, h.shape[-2:])
    return g


def max_levels(H: int, W: int) -> int:
    n, levels = min(H, W), 0
    while n > 1:
        n = -(-n // 2)
        levels += 1
    return levels


# ---- attention -----------------------------------------------------------------------------


def attention(q, k, v, scale: float = 1.0, center: bool = False) -> torch.Tensor:
    B, Cq, Hq, Wq = q.shape
    qf, kf, vf = q.flatten(2), k.flatten(2), v.flatten(2)
    if center:
        qf = qf - qf.mean(2, keepdim=True)
        kf = kf - kf.mean(2, keepdim=True)
    logits = scale * torch.einsum("bci,bcj->bij", qf, kf)
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("bij,bcj->bci", p, vf).reshape(B, v.shape[1], Hq, Wq)


def local_context_correlation(module, local, context) -> torch.Tensor:
    def conv1x1(conv, x):
        w = conv.weight.detach().to(F64)[:, :, 0, 0]
        y = torch.einsum("oc,bchw->bohw", w, x)
        if conv.bias is not None:
            y = y + conv.bias.detach().to(F64)[None, :, None, None]
        return y

    q = conv1x1(module.conv_query, local)
    k = conv1x1(module.conv_key, context)
    v = conv1x1(module.conv_value, context)
    return module.gamma.detach().to(F64) * attention(q, k, v, 1.0, module.center)


# ---- tiling --------------------------------------------------------------------------------


def boxes(grid) -> list[tuple[int, int]]:
    return [(y, x) for y in grid.ys for x in grid.xs]


def extract(image: torch.Tensor, grid) -> torch.Tensor:
    B, C, H, W = image.shape
    ph, pw = grid.patch_size
    out = torch.zeros(B * len(grid), C, ph, pw, dtype=image.dtype)
    for b in range(B):
        for k, (y, x) in enumerate(boxes(grid)):
            hh, ww = min(ph, H - y), min(pw, W - x)
            out[b * len(grid) + k, :, :hh, :ww] = image[b, :, y:y + hh, x:x + ww]
    return out


def gaussian_weight(p: tuple[int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    rows = []
    for n in p:
        centre = (n - 1) / 2
        sigma = sigma_scale * n
        rows.append(torch.tensor([math.exp(-((i - centre) ** 2) / (2 * sigma * sigma))
                                  for i in range(n)], dtype=F64))
    w = rows[0][:, None] * rows[1][None, :]
    return w.clamp(min=max(float(w.min()), 1e-3))


def hann_weight(p: tuple[int, int]) -> torch.Tensor:
    """Hann window with its zeros half a pixel outside the patch: cos² of the distance from
    the centre, measured in half-periods (1 - cos(2πt))/2 written out as 0.5 - 0.5 cos."""
    rows = [torch.tensor([0.5 - 0.5 * math.cos(2 * math.pi * (i + 0.5) / n) for i in range(n)],
                         dtype=F64) for n in p]
    return rows[0][:, None] * rows[1][None, :]


def merge(patches: torch.Tensor, grid, reduction: str = "mean", weight=None) -> torch.Tensor:
    H, W = grid.image_size
    ph, pw = grid.patch_size
    n = len(grid)
    B = patches.shape[0] // n
    C = patches.shape[1]
    if weight is None or (isinstance(weight, str) and weight == "constant"):
        w = torch.ones(ph, pw, dtype=F64)
    elif isinstance(weight, str):
        w = gaussian_weight((ph, pw))
    else:
        w = weight.to(F64)
    num = torch.zeros(B, C, H, W, dtype=F64)
    den = torch.zeros(H, W, dtype=F64)
    for b in range(B):
        for k, (y, x) in enumerate(boxes(grid)):
            hh, ww = min(ph, H - y), min(pw, W - x)
            num[b, :, y:y + hh, x:x + ww] += w[:hh, :ww] * patches[b * n + k, :, :hh, :ww]
            if b == 0:
                den[y:y + hh, x:x + ww] += w[:hh, :ww]
    if reduction == "sum":
        return num
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.zeros_like(num))


def resize_taps(n_in: int, n_out: int, antialias: bool) -> list[list[tuple[int, float]]]:
    """Per output sample the (input index, weight) taps of a 1-D bilinear resize: PIL's
    ``Image.resize(BILINEAR)`` (triangle filter widened by the shrink factor, renormalised at
    the borders) when ``antialias``, else half-pixel bilinear with the source clamped at 0
    (``F.interpolate(mode="bilinear", align_corners=False)``)."""
    scale = n_in / n_out
    taps = []
    for i in range(n_out):
        if antialias:
            fs = max(scale, 1.0)
            centre = (i + 0.5) * scale
            lo = max(int(centre - fs + 0.5), 0)
            hi = min(int(centre + fs + 0.5), n_in)
            ws = [(j, max(0.0, 1 - abs((j - centre + 0.5) / fs))) for j in range(lo, hi)]
            total = sum(w for _, w in ws)
            taps.append([(j, w / total) for j, w in ws if w > 0])
        else:
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            i0 = min(int(math.floor(src)), n_in - 1)
            lam = src - i0
            i1 = i0 + 1 if i0 < n_in - 1 else i0
            taps.append([(j, w) for j, w in ((i0, 1 - lam), (i1, lam)) if w > 0])
    return taps


def _resize_axis(x: torch.Tensor, dim: int, n_out: int, antialias: bool) -> torch.Tensor:
    rows = []
    for taps in resize_taps(x.shape[dim], n_out, antialias):
        acc = None
        for j, w in taps:
            term = w * x.narrow(dim, j, 1)
            acc = term if acc is None else acc + term
        rows.append(acc)
    return torch.cat(rows, dim)


def resize(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    return _resize_axis(_resize_axis(x, -2, size[0], antialias), -1, size[1], antialias)


def contexts(image: torch.Tensor, grid, scale: float, size=None, pad_value: float = 0.0,
             antialias: bool = True) -> torch.Tensor:
    """Pad, crop the window round(scale * patch) centred (extra pixel bottom/right), resize
    with the 1-D taps above (PIL's bilinear when antialiased)."""
    B, C, H, W = image.shape
    ph, pw = grid.patch_size
    oh, ow = (ph, pw) if size is None else ((size, size) if isinstance(size, int) else size)
    lh = max(int(math.floor(scale * ph + 0.5)), 1)
    lw = max(int(math.floor(scale * pw + 0.5)), 1)
    oy, ox = (lh - ph) // 2, (lw - pw) // 2
    out = []
    for b in range(B):
        for (y, x) in boxes(grid):
            win = torch.full((1, C, lh, lw), float(pad_value), dtype=F64)
            y0, x0 = y - oy, x - ox
            ys0, xs0 = max(y0, 0), max(x0, 0)
            ys1, xs1 = min(y0 + lh, H), min(x0 + lw, W)
            if ys1 > ys0 and xs1 > xs0:
                win[0, :, ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0] = image[b, :, ys0:ys1, xs0:xs1]
            out.append(resize(win, (oh, ow), antialias))
    if not out:
        return torch.zeros(0, C, oh, ow, dtype=F64)
    return torch.cat(out, 0)


def sliding(fn: Callable, image: torch.Tensor, grid, scales: Sequence[float] = (),
            reduction: str = "mean", weight=None) -> torch.Tensor:
    patches = extract(image, grid)
    ctx = [contexts(image, grid, s) for s in scales]
    return merge(fn(patches, *ctx), grid, reduction, weight)
