"""SyntheticUHR: procedurally generated aerial-like scenes with exact ground truth.

No download: every scene is generated on the fly from (seed, index), deterministically, in
well under a second for 2048x2048 on one CPU core. The scene is a DeepGlobe-like land-cover
map:

* large regions (a Voronoi partition of domain-warped coordinates, so boundaries are smooth
  curves) of land-cover classes with their own colour and texture statistics: striped field
  parcels (agriculture), speckled shrubland (rangeland), blobby tree crowns (forest), smooth
  dark water, bright barren land, built-up urban blocks, and rare black "no-data" (unknown);
* small objects drawn over them: buildings (in urban blocks, and scattered farmhouses in the
  countryside), long gently curving roads. A building or a road pixel is labelled with the
  land cover *around* it (urban inside a town, agriculture in the fields, ...), as DeepGlobe
  labels land cover, so the same local pattern has different labels depending on context;
* agriculture and rangeland share the same mean colour and differ by texture (stripes vs
  speckle), and urban ground resembles barren land, so local detail is needed as well.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import Transform
from .deepglobe import CLASSES as _DG_CLASSES
from .deepglobe import PALETTE as _DG_PALETTE

__all__ = ["SyntheticUHR", "generate_scene"]

# Appearance per land-cover class, DeepGlobe order:
# 0 unknown, 1 urban, 2 agriculture, 3 rangeland, 4 forest, 5 water, 6 barren.
_BASE = torch.tensor([
    [0.04, 0.04, 0.05],
    [0.60, 0.57, 0.52],
    [0.53, 0.57, 0.34],
    [0.55, 0.56, 0.37],
    [0.16, 0.30, 0.13],
    [0.10, 0.20, 0.36],
    [0.78, 0.73, 0.62],
])
_TINT = torch.tensor([0.01, 0.04, 0.05, 0.04, 0.04, 0.03, 0.05])  # per-region colour jitter
_ROOFS = torch.tensor([
    [0.62, 0.30, 0.24],
    [0.86, 0.86, 0.83],
    [0.46, 0.46, 0.48],
    [0.35, 0.40, 0.50],
    [0.70, 0.55, 0.40],
])
_ASPHALT = torch.tensor([0.30, 0.30, 0.31])
_DIRT = torch.tensor([0.62, 0.52, 0.42])
# relative frequency of the land classes 1..6 beyond the first region of each
_LAND_WEIGHTS = torch.tensor([0.15, 0.30, 0.17, 0.15, 0.10, 0.13])

_GRID = 8      # step of the coarse grid on which regions, tints and roads are decided
_TILE = 192    # texture tiles: each (class, variant) is a TILE x TILE texture
_VARIANTS = 6  # variants per class
_NUM_LAND = 7


def _torch_seed(*values: int) -> int:
    words = []
    for v in values:
        v = int(v)
        words += [v & 0xFFFFFFFF, (v >> 32) & 0xFFFFFFFF]
    ss = np.random.SeedSequence(words + [0x55A7])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


def _noise(g: torch.Generator, shape: tuple[int, ...], cell: float) -> torch.Tensor:
    """Smooth value noise in [-1, 1] of shape (..., h, w): random values every `cell` samples,
    bicubic-interpolated."""
    *lead, h, w = shape
    n = int(np.prod(lead)) if lead else 1
    gh = int(np.ceil((h - 1) / cell)) + 2
    gw = int(np.ceil((w - 1) / cell)) + 2
    coarse = torch.rand(n, 1, gh, gw, generator=g) * 2 - 1
    up = F.interpolate(coarse, size=(int((gh - 1) * cell) + 1, int((gw - 1) * cell) + 1),
                       mode="bicubic", align_corners=True)
    return up[:, 0, :h, :w].reshape(*lead, h, w)


@functools.lru_cache(maxsize=4)
def _atlas(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texture tiles of every class: (3, 7*V*T*T) colours and (7*V*T*T,) building flags.

    A pure function of `seed`, cached (about 18 MB) so that a scene costs only its layout.
    """
    g = torch.Generator().manual_seed(_torch_seed(seed, 0xA71A5))
    T, V = _TILE, _VARIANTS
    img = _BASE[:, :, None, None, None].permute(0, 2, 1, 3, 4).repeat(1, V, 1, T, T).clone()
    img = img.reshape(_NUM_LAND, V, 3, T, T)
    flag = torch.zeros(_NUM_LAND, V, T, T, dtype=torch.bool)
    grain = torch.rand(_NUM_LAND, V, T, T, generator=g) * 2 - 1
    yy = torch.arange(T, dtype=torch.float32)[:, None]
    xx = torch.arange(T, dtype=torch.float32)[None, :]
    # 0 unknown: flat no-data
    img[0] += 0.02 * grain[0][:, None]
    # 1 urban: street grid, one building per block
    img[1] += (0.07 * grain[1] + 0.04 * _noise(g, (V, T, T), 12.0))[:, None]
    for v in range(V):
        C = (48, 64, 48, 96, 48, 64)[v % 6]
        road_w = 6
        street = ((yy % C) < road_w) | ((xx % C) < road_w)
        img[1, v][:, street] = _ASPHALT[:, None] + 0.03 * grain[1, v][street][None]
        nb = T // C
        r = torch.rand(nb, nb, 6, generator=g)
        for by in range(nb):
            for bx in range(nb):
                if r[by, bx, 5] > 0.85:
                    continue
                y0 = by * C + road_w + 2 + int(6 * r[by, bx, 0])
                x0 = bx * C + road_w + 2 + int(6 * r[by, bx, 1])
                y1 = (by + 1) * C - 2 - int(8 * r[by, bx, 2])
                x1 = (bx + 1) * C - 2 - int(8 * r[by, bx, 3])
                roof = _ROOFS[int(r[by, bx, 4] * len(_ROOFS)) % len(_ROOFS)]
                img[1, v, :, y0:y1, x0:x1] = roof[:, None, None] + \
                    0.03 * grain[1, v, y0:y1, x0:x1][None]
                flag[1, v, y0:y1, x0:x1] = True
    # 2 agriculture: 2x2 parcels of crop rows, own direction / period / tint, dark edges
    h = T // 2
    for v in range(V):
        r = torch.rand(2, 2, 4, generator=g)
        for py in range(2):
            for px in range(2):
                a, period = float(r[py, px, 0]) * np.pi, 7.0 + 9.0 * float(r[py, px, 1])
                sl = (slice(py * h, (py + 1) * h), slice(px * h, (px + 1) * h))
                coord = xx[:, :h] * np.cos(a) + yy[:h] * np.sin(a)
                stripe = torch.sin(coord * (2 * np.pi / period)).clamp(-0.6, 0.6) / 1.2
                strength = 0.5 + float(r[py, px, 2])
                delta = torch.tensor([-0.20, 0.10, -0.16]) * strength
                img[2, v, :, sl[0], sl[1]] += delta[:, None, None] * stripe[None] \
                    + (float(r[py, px, 3]) - 0.5) * 0.10
        img[2, v] += 0.04 * grain[2, v][None]
        edge = ((yy % h) < 2) | ((xx % h) < 2)
        img[2, v][:, edge] *= 0.8
    # 3 rangeland: shrub speckle on grainy grass
    dots = _noise(g, (V, T, T), 3.0) > 0.55
    img[3] += (0.09 * grain[3] + 0.05 * _noise(g, (V, T, T), 10.0))[:, None]
    img[3] += torch.tensor([-0.22, -0.18, -0.14])[None, :, None, None] * dots[:, None]
    # 4 forest: blobby tree crowns
    crowns = torch.sigmoid(_noise(g, (V, T, T), 5.0) * 6.0) - 0.5
    img[4] += torch.tensor([0.10, 0.16, 0.08])[None, :, None, None] * crowns[:, None]
    img[4] += 0.05 * grain[4][:, None]
    # 5 water: smooth
    img[5] += (0.012 * grain[5] + 0.01 * _noise(g, (V, T, T), 6.0))[:, None]
    # 6 barren: bright, mottled
    img[6] += (0.05 * grain[6] + 0.04 * _noise(g, (V, T, T), 6.0))[:, None]
    atlas = img.permute(2, 0, 1, 3, 4).reshape(3, -1).contiguous()
    return atlas, flag.reshape(-1).contiguous()


def _cell_weights(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear weights inside grid cells: (ty, tx) broadcastable to (n, s, s)."""
    t = torch.arange(s, dtype=torch.float32) / s
    return t[None, :, None], t[None, None, :]


def _interp(f: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, ty: torch.Tensor,
            tx: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of grid values `f` inside cells (iy, ix): (n, s, s)."""
    a, b = f[iy, ix][:, None, None], f[iy, ix + 1][:, None, None]
    c, d = f[iy + 1, ix][:, None, None], f[iy + 1, ix + 1][:, None, None]
    return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # The generator is memory-bound: extra intra-op threads hardly help, and on a busy
    # machine (a trainer using the other cores) OpenMP barriers make it 10-30x slower.
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def generate_scene(size: Sequence[int], num_classes: int = 7, seed: int = 0, index: int = 0,
                   region_size: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate one synthetic aerial scene and its ground truth.

    Convention:
        Deterministic in (size, num_classes, seed, index, region_size) on a given machine
        (torch CPU random generators seeded from these; the global RNG is not touched). The
        image is float32 (3, H, W) in [0, 1], quantised to multiples of 1/255 like a decoded
        8-bit file; the mask is int64 (H, W). Classes follow DeepGlobe (num_classes=7):
        0 unknown (rare black no-data patches), 1 urban, 2 agriculture, 3 rangeland,
        4 forest, 5 water, 6 barren. num_classes=k in 3..6 keeps classes 0..k-1 (regions use
        1..k-1); num_classes=2 is Inria-like: 1 = building footprints, 0 = everything else.
        Buildings and roads take the label of the land cover around them (except with
        num_classes=2), so the same local pattern is labelled by its context. Region layout
        (a Voronoi partition of domain-warped coordinates), region tints, roads and the
        choice of texture tiles depend on (seed, index); the texture tiles themselves
        (192x192, 6 variants per class) depend on the seed only and are cached per process.
        Typical region diameter: `region_size` (default min(H, W)/3 clipped to 96..768 px);
        streets, fields and buildings have fixed pixel sizes (0.5 m/px-like). Runs on one
        intra-op thread (temporarily setting ``torch.set_num_threads(1)``): about 12 ms for
        512x512 and 0.2 s for 2448x2448 on one CPU core.

    Args:
        size: (H, W), each >= 16.
        num_classes: 2..7.
        seed: dataset seed (>= 0).
        index: scene index (>= 0).
        region_size: typical region diameter in pixels.

    Returns:
        (image, mask).

    Example:
        >>> img, mask = generate_scene((256, 256), seed=1, index=0)
        >>> img.shape, mask.shape, mask.dtype
        (torch.Size([3, 256, 256]), torch.Size([256, 256]), torch.int64)
    """
    with _one_thread():
        return _generate(size, num_classes, seed, index, region_size)


def _generate(size: Sequence[int], num_classes: int, seed: int, index: int,
              region_size: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    H, W = int(size[0]), int(size[1])
    g = torch.Generator().manual_seed(_torch_seed(seed, index))

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    if region_size is None:
        region_size = float(min(max(min(H, W) / 3.0, 96.0), 768.0))
    rs = float(region_size)
    land = list(range(1, 7)) if num_classes == 2 else list(range(1, num_classes))
    s, T, V = _GRID, _TILE, _VARIANTS
    gh, gw = -(-H // s) + 1, -(-W // s) + 1
    Hp, Wp = (gh - 1) * s, (gw - 1) * s

    # ---- 1. region seeds on a jittered grid; every land class gets a region first ----------
    n_target = max(2, int(round(H * W / rs ** 2)))
    ny = max(1, int(round(np.sqrt(n_target * H / W))))
    nx = max(1, int(round(n_target / ny)))
    M = ny * nx
    jit = rand(2, M)
    sy = (torch.arange(M) // nx + 0.1 + 0.8 * jit[0]) * (H / ny)
    sx = (torch.arange(M) % nx + 0.1 + 0.8 * jit[1]) * (W / nx)
    land_t = torch.tensor(land)
    first = land_t[torch.randperm(len(land), generator=g)][:M]
    n_rest = M - len(first)
    rest = land_t[torch.multinomial(_LAND_WEIGHTS[land_t - 1], max(n_rest, 1), replacement=True,
                                    generator=g)][:n_rest]
    seed_cls = torch.cat([first, rest])[torch.randperm(M, generator=g)]
    weight = torch.ones(M)
    if rand(1).item() < 0.5:  # a small no-data patch (class 0): a multiplicatively weighted
        u = rand(3)          # Voronoi cell, i.e. a blob around its seed
        sy = torch.cat([sy, u[:1] * H])
        sx = torch.cat([sx, u[1:2] * W])
        seed_cls = torch.cat([seed_cls, torch.zeros(1, dtype=seed_cls.dtype)])
        weight = torch.cat([weight, 6.0 + 10.0 * u[2:]])
        M += 1

    # ---- 2. region partition: Voronoi (power) diagram of warped coordinates ---------------
    amp = 0.30 * rs
    gy = torch.arange(gh, dtype=torch.float32)[:, None] * s
    gx = torch.arange(gw, dtype=torch.float32)[None, :] * s
    wy = gy + _noise(g, (gh, gw), rs / s) * amp + _noise(g, (gh, gw), rs / (5 * s)) * (0.06 * rs)
    wx = gx + _noise(g, (gh, gw), rs / s) * amp + _noise(g, (gh, gw), rs / (5 * s)) * (0.06 * rs)
    d2 = ((wy[None] - sy[:, None, None]) ** 2 + (wx[None] - sx[:, None, None]) ** 2) \
        * weight[:, None, None]
    owner = d2.argmin(0).to(torch.int32)  # (gh, gw)
    # A pixel belongs to one of the owners of its cell's 4 corners: cells whose corners
    # agree are settled; the others are resolved per pixel with bilinearly interpolated warps.
    o00, o01, o10, o11 = owner[:-1, :-1], owner[:-1, 1:], owner[1:, :-1], owner[1:, 1:]
    region = o00[:, None, :, None].expand(gh - 1, s, gw - 1, s).reshape(Hp, Wp)
    ty, tx = _cell_weights(s)
    mixed = ((o00 != o01) | (o00 != o10) | (o00 != o11)).nonzero()
    if len(mixed):
        iy, ix = mixed[:, 0], mixed[:, 1]
        j = (rand(2, len(iy), s, s) - 0.5) * 2.0  # +-1 px roughness of the boundaries
        py = _interp(wy, iy, ix, ty, tx) + j[0]
        px = _interp(wx, iy, ix, ty, tx) + j[1]
        cands = torch.stack([o00[iy, ix], o01[iy, ix], o10[iy, ix], o11[iy, ix]], 1).long()
        dd = ((py[:, None] - sy[cands][:, :, None, None]) ** 2
              + (px[:, None] - sx[cands][:, :, None, None]) ** 2) \
            * weight[cands][:, :, None, None]  # (n, 4, s, s)
        best = cands.gather(1, dd.argmin(1).flatten(1)).view(-1, s, s)
        region.view(gh - 1, s, gw - 1, s)[iy, :, ix, :] = best.to(torch.int32)
    cls = seed_cls.to(torch.int32).index_select(0, region.view(-1)).view(Hp, Wp)

    # ---- 3. appearance: a texture tile per (class, 192-px cell), plus smooth tints ----------
    atlas, atlas_flag = _atlas(int(seed))
    oy, ox = int(rand(1).item() * T), int(rand(1).item() * T)
    ry = torch.arange(Hp, dtype=torch.int32) + oy
    rx = torch.arange(Wp, dtype=torch.int32) + ox
    ncy, ncx = int(ry[-1]) // T + 1, int(rx[-1]) // T + 1
    choice = (torch.arange(_NUM_LAND)[:, None] * V
              + (rand(_NUM_LAND, ncy * ncx) * V).long().clamp_(max=V - 1)).to(torch.int32)
    cell = (ry // T)[:, None] * ncx + (rx // T)[None, :]  # (Hp, Wp)
    cell += cls * (ncy * ncx)
    tile = choice.view(-1).index_select(0, cell.view(-1)).view(Hp, Wp)
    del cell
    tile *= T * T
    tile += ((ry % T) * T)[:, None] + (rx % T)[None, :]
    pix = tile.view(-1)
    img = atlas.index_select(1, pix).view(3, Hp, Wp)
    building = atlas_flag.index_select(0, pix).view(Hp, Wp) if num_classes == 2 else None
    del tile, pix
    # region tints and a low-frequency brightness wave, interpolated to 4-px blocks
    tint = (rand(M, 3) * 2 - 1) * _TINT[seed_cls][:, None]  # (M, 3)
    smooth = (tint.T[:, owner.long()] + 0.04 * _noise(g, (gh, gw), 48.0 / s)[None]).contiguous()
    q = 4
    smooth = F.interpolate(smooth[None], size=((gh - 1) * (s // q) + 1, (gw - 1) * (s // q) + 1),
                           mode="bilinear", align_corners=True)[0, :, :-1, :-1]
    img.view(3, Hp // q, q, Wp // q, q).add_(smooth[:, :, None, :, None])

    # ---- 4. farmhouses scattered in the countryside (same look as town buildings) ----------
    n_try = int(H * W / 150.0 ** 2) + 1
    r = rand(n_try, 6)
    for k in range(n_try):
        cy_, cx_ = int(r[k, 0] * H), int(r[k, 1] * W)
        if int(cls[cy_, cx_]) not in (2, 3, 6) or r[k, 2] > 0.45:
            continue
        bh, bw = int(12 + 14 * r[k, 3]), int(12 + 14 * r[k, 4])
        y0, x0 = max(cy_ - bh // 2, 0), max(cx_ - bw // 2, 0)
        roof = _ROOFS[min(int(r[k, 5] * len(_ROOFS)), len(_ROOFS) - 1)]
        img[:, y0:y0 + bh, x0:x0 + bw] = roof[:, None, None] + \
            (rand(1, min(bh, Hp - y0), min(bw, Wp - x0)) - 0.5) * 0.05
        if building is not None:
            building[y0:y0 + bh, x0:x0 + bw] = True

    # ---- 5. long roads across the scene (not over water / no-data), gently curving ---------
    n_roads = int(1 + rand(1).item() * (1 + (H + W) / 1500))
    bend = _noise(g, (gh, gw), 300.0 / s) * 25.0
    img_cells = img.view(3, gh - 1, s, gw - 1, s)
    cls_cells = cls.view(gh - 1, s, gw - 1, s)
    for _ in range(n_roads):
        r = rand(4)
        ry0, rx0, phi, width = float(r[0]) * H, float(r[1]) * W, float(r[2]) * np.pi, \
            4.0 + 4.0 * float(r[3])
        dist = (gx - rx0) * np.sin(phi) - (gy - ry0) * np.cos(phi) + bend  # (gh, gw)
        near = dist.abs() < width / 2 + 2 * s
        cells = (near[:-1, :-1] | near[:-1, 1:] | near[1:, :-1] | near[1:, 1:]).nonzero()
        if not len(cells):
            continue
        iy, ix = cells[:, 0], cells[:, 1]
        on = _interp(dist, iy, ix, ty, tx).abs() < width / 2  # (n, s, s)
        c = cls_cells[iy, :, ix, :]  # (n, s, s)
        on &= (c != 5) & (c != 0)
        colour = torch.where((c == 1)[:, None], _ASPHALT[None, :, None, None],
                             _DIRT[None, :, None, None])  # (n, 3, s, s)
        colour = colour + (rand(len(iy), 1, s, s) - 0.5) * 0.04
        block = img_cells[:, iy, :, ix, :]  # (n, 3, s, s)
        img_cells[:, iy, :, ix, :] = torch.where(on[:, None], colour, block)
        if building is not None:
            bc = building.view(gh - 1, s, gw - 1, s)
            bc[iy, :, ix, :] = bc[iy, :, ix, :] & ~on

    # ---- 6. finish -------------------------------------------------------------------------
    gain = 0.92 + 0.16 * rand(1).item()
    img.mul_(gain).clamp_(0, 1).mul_(255).round_().div_(255)
    mask = building if building is not None else cls
    mask = mask[:H, :W].to(torch.int64)
    return img[:, :H, :W].contiguous(), mask


class SyntheticUHR(torch.utils.data.Dataset):
    """A built-in dataset of procedurally generated UHR aerial scenes (no download).

    Convention:
        Scene i is ``generate_scene(size, num_classes, seed, i)``: identical bytes for the
        same (seed, index) on a machine, different scenes for different seeds. Samples are
        what the real datasets return: {"image": float32 (3, H, W) in [0, 1], "mask": int64
        (H, W), "id": "synthetic-<seed>-<i>"}. Classes and palette are DeepGlobe's (first
        `num_classes` of them; with num_classes=2: background/building), and, as on
        DeepGlobe, class 0 "unknown" is left out of the mean IoU (``exclude_from_mean``) and,
        except with two classes (Inria's background), of the pixel accuracy
        (``exclude_from_accuracy``).
        Use different seeds for train and validation sets.

    Args:
        num_images: number of scenes.
        size: (H, W) of every scene, each >= 16.
        num_classes: 2..7 (7 = DeepGlobe-like, 2 = building footprints).
        seed: dataset seed.
        transform: callable on the sample dict.
        region_size: typical land-cover region diameter in pixels (default min(H, W)/3
            clipped to 96..768).

    Example:
        >>> ds = SyntheticUHR(4, size=(512, 512), seed=0)
        >>> ds[0]["image"].shape
        torch.Size([3, 512, 512])
    """

    ignore_index = 255

    def __init__(self, num_images: int, size: Sequence[int] = (512, 512), num_classes: int = 7,
                 seed: int = 0, transform: Transform | None = None,
                 region_size: float | None = None) -> None:
        op = "SyntheticUHR()"
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"{op}: `num_images` must be a positive int; got {num_images!r}.")
        if isinstance(size, int):
            size = (size, size)
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
                or min(size) < 16):
            raise ValueError(f"{op}: `size` must be (H, W) with ints >= 16; got {size!r}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
                not 2 <= num_classes <= 7:
            raise ValueError(f"{op}: `num_classes` must be an int in 2..7; got {num_classes!r}. "
                             f"(7 = DeepGlobe-like land cover, 2 = building footprints.)")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{op}: `seed` must be a non-negative int; got {seed!r}.")
        if region_size is not None and not region_size >= 16:
            raise ValueError(f"{op}: `region_size` must be >= 16 pixels; got {region_size!r}.")
        self.num_images = num_images
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.transform = transform
        self.region_size = region_size
        if num_classes == 2:
            self.CLASSES: tuple[str, ...] = ("background", "building")
            self.PALETTE: tuple[tuple[int, int, int], ...] = ((0, 0, 0), (255, 255, 255))
        else:
            self.CLASSES = _DG_CLASSES[:num_classes]
            self.PALETTE = _DG_PALETTE[:num_classes]
        self.exclude_from_mean = (0,)
        # as the dataset each stands for: DeepGlobe's unknown pixels are out of the accuracy,
        # Inria's background pixels in it
        self.exclude_from_accuracy = () if num_classes == 2 else (0,)

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, i: int) -> dict:
        if not -self.num_images <= i < self.num_images:
            raise IndexError(f"SyntheticUHR: index {i} out of range for {self.num_images} scenes")
        i %= self.num_images
        image, mask = generate_scene(self.size, self.num_classes, self.seed, i, self.region_size)
        sample = {"image": image, "mask": mask, "id": f"synthetic-{self.seed}-{i}"}
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (f"SyntheticUHR({self.num_images} scenes of {self.size[0]}x{self.size[1]}, "
                f"{self.num_classes} classes, seed={self.seed})")
