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

from typing import Sequence

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
_TINT = torch.tensor([0.01, 0.04, 0.05, 0.04, 0.04, 0.03, 0.05])      # per-region colour jitter
_LOWFREQ = torch.tensor([0.00, 0.04, 0.04, 0.06, 0.05, 0.025, 0.08])  # smooth brightness waves
_HIGHFREQ = torch.tensor([0.02, 0.07, 0.04, 0.09, 0.05, 0.012, 0.05])  # per-pixel grain
_STRIPE_DELTA = torch.tensor([-0.20, 0.10, -0.16])  # crop rows vs soil (agriculture)
_CROWN_DELTA = torch.tensor([0.10, 0.16, 0.08])     # tree crown vs gap (forest)
_SHRUB_DELTA = torch.tensor([-0.22, -0.18, -0.14])  # dark shrub dots (rangeland)
_ROOFS = torch.tensor([
    [0.62, 0.30, 0.24],
    [0.86, 0.86, 0.83],
    [0.46, 0.46, 0.48],
    [0.35, 0.40, 0.50],
    [0.70, 0.55, 0.40],
])
_ASPHALT = torch.tensor([0.30, 0.30, 0.31])
_DIRT = torch.tensor([0.62, 0.52, 0.42])
# relative frequency of the land classes 1..6 beyond the first of each
_LAND_WEIGHTS = torch.tensor([0.15, 0.30, 0.17, 0.15, 0.10, 0.13])

_GRID = 8  # step of the coarse grid on which the region partition is decided


def _torch_seed(seed: int, index: int) -> int:
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF,
                                 int(index) & 0xFFFFFFFF, 0x55A7])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


def _noise(g: torch.Generator, h: int, w: int, cell: float) -> torch.Tensor:
    """Smooth value noise in [-1, 1] of size (h, w): random values every `cell` samples,
    bicubic-interpolated."""
    gh = int(np.ceil((h - 1) / cell)) + 2
    gw = int(np.ceil((w - 1) / cell)) + 2
    coarse = torch.rand(1, 1, gh, gw, generator=g) * 2 - 1
    up = F.interpolate(coarse, size=(int((gh - 1) * cell) + 1, int((gw - 1) * cell) + 1),
                       mode="bicubic", align_corners=True)
    return up[0, 0, :h, :w]


def _upsample(grid: torch.Tensor, step: int, h: int, w: int) -> torch.Tensor:
    """Bilinear from grid points every `step` pixels (point i at pixel i*step) to (h, w)."""
    c, gh, gw = grid.shape
    up = F.interpolate(grid[None], size=((gh - 1) * step + 1, (gw - 1) * step + 1),
                       mode="bilinear", align_corners=True)
    return up[0, :, :h, :w]


def _hash01(a: torch.Tensor, b: torch.Tensor, salt: int) -> torch.Tensor:
    """Deterministic pseudo-random value in [0, 1) per integer pair (vectorised)."""
    m = 0xFFFFFFFF
    h = ((a & m) * 0x2545F491 + (b & m) * 0x6C8E9CF5 + salt) & m
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & m
    h = ((h ^ (h >> 12)) * 0x297A2D39) & m
    h = h ^ (h >> 15)
    return (h & 0xFFFFFF).to(torch.float32) / float(1 << 24)


def generate_scene(size: Sequence[int], num_classes: int = 7, seed: int = 0, index: int = 0,
                   region_size: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate one synthetic aerial scene and its ground truth.

    Convention:
        Deterministic in (size, num_classes, seed, index, region_size) on a given machine
        (torch CPU random generator; no global RNG is touched). The image is float32
        (3, H, W) in [0, 1], quantised to multiples of 1/255 like a decoded 8-bit file; the
        mask is int64 (H, W). Classes follow DeepGlobe (num_classes=7): 0 unknown (rare
        black no-data blobs), 1 urban, 2 agriculture, 3 rangeland, 4 forest, 5 water,
        6 barren. num_classes=k in 3..6 keeps classes 0..k-1 (regions use 1..k-1);
        num_classes=2 is Inria-like: 1 = building footprints, 0 = everything else.
        Buildings and roads take the label of the land cover around them (except with
        num_classes=2). Typical region diameter: `region_size` (default min(H, W)/3,
        clipped to 96..768 px); block and field sizes are fixed in pixels (0.5 m/px-like).

    Args:
        size: (H, W), each >= 16.
        num_classes: 2..7.
        seed: dataset seed.
        index: scene index.
        region_size: typical region diameter in pixels.

    Returns:
        (image, mask).

    Example:
        >>> img, mask = generate_scene((256, 256), seed=1, index=0)
        >>> img.shape, mask.shape, mask.dtype
        (torch.Size([3, 256, 256]), torch.Size([256, 256]), torch.int64)
    """
    H, W = int(size[0]), int(size[1])
    g = torch.Generator().manual_seed(_torch_seed(seed, index))

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    if region_size is None:
        region_size = float(min(max(min(H, W) / 3.0, 96.0), 768.0))
    rs = float(region_size)
    land = list(range(1, 7)) if num_classes == 2 else list(range(1, num_classes))

    # ---- 1. region seeds on a jittered grid, classes covering every land class first ------
    n_target = max(2, int(round(H * W / rs ** 2)))
    ny = max(1, int(round(np.sqrt(n_target * H / W))))
    nx = max(1, int(round(n_target / ny)))
    M = ny * nx
    jy, jx = rand(M), rand(M)
    cell_y = torch.arange(M) // nx
    cell_x = torch.arange(M) % nx
    sy = (cell_y + 0.1 + 0.8 * jy) * (H / ny)
    sx = (cell_x + 0.1 + 0.8 * jx) * (W / nx)
    land_t = torch.tensor(land)
    first = land_t[torch.randperm(len(land), generator=g)][:M]
    rest = land_t[torch.multinomial(_LAND_WEIGHTS[land_t - 1], max(M - len(first), 1),
                                    replacement=True, generator=g)][: M - len(first)]
    seed_cls = torch.cat([first, rest])[torch.randperm(M, generator=g)]

    # ---- 2. region partition: Voronoi on warped coordinates --------------------------------
    s = _GRID
    gh, gw = -(-H // s) + 1, -(-W // s) + 1
    amp = 0.30 * rs
    warp = torch.stack([
        _noise(g, gh, gw, rs / s) * amp + _noise(g, gh, gw, rs / (5 * s)) * (0.06 * rs),
        _noise(g, gh, gw, rs / s) * amp + _noise(g, gh, gw, rs / (5 * s)) * (0.06 * rs),
    ])
    gy = torch.arange(gh, dtype=torch.float32)[:, None] * s
    gx = torch.arange(gw, dtype=torch.float32)[None, :] * s
    wy, wx = gy + warp[0], gx + warp[1]
    d2 = (wy[None] - sy[:, None, None]) ** 2 + (wx[None] - sx[:, None, None]) ** 2
    owner = d2.argmin(0)  # (gh, gw)
    # each pixel belongs to one of the owners of its 4 surrounding grid points; cells whose
    # corners agree are settled, the others are resolved per pixel with interpolated warps
    o00, o01, o10, o11 = owner[:-1, :-1], owner[:-1, 1:], owner[1:, :-1], owner[1:, 1:]
    region = o00.repeat_interleave(s, 0).repeat_interleave(s, 1)  # ((gh-1)s, (gw-1)s)
    mixed = ((o00 != o01) | (o00 != o10) | (o00 != o11)).nonzero()
    if len(mixed):
        iy, ix = mixed[:, 0], mixed[:, 1]
        t = torch.arange(s, dtype=torch.float32) / s
        ty, tx = t[None, :, None], t[None, None, :]

        def interp(f: torch.Tensor) -> torch.Tensor:
            a, b = f[iy, ix][:, None, None], f[iy, ix + 1][:, None, None]
            c, d = f[iy + 1, ix][:, None, None], f[iy + 1, ix + 1][:, None, None]
            return (a * (1 - tx) + b * tx) * (1 - ty) + (c * (1 - tx) + d * tx) * ty

        jit = (rand(2, len(iy), s, s) - 0.5) * 2.0  # +-1 px roughness
        py, px = interp(wy) + jit[0], interp(wx) + jit[1]
        cands = torch.stack([o00[iy, ix], o01[iy, ix], o10[iy, ix], o11[iy, ix]], 1)  # (n, 4)
        dd = ((py[:, None] - sy[cands][:, :, None, None]) ** 2
              + (px[:, None] - sx[cands][:, :, None, None]) ** 2)  # (n, 4, s, s)
        best = cands.gather(1, dd.argmin(1).flatten(1)).view(-1, s, s)
        region.view(gh - 1, s, gw - 1, s)[iy, :, ix, :] = best
    region = region[:H, :W].contiguous()
    cls = seed_cls[region]

    # rare unknown (no-data) blob
    if num_classes >= 2 and rand(1).item() < 0.5:
        by, bx, br = rand(1).item() * H, rand(1).item() * W, (0.12 + 0.15 * rand(1).item()) * rs
        small = _upsample(torch.stack([wy - gy, wx - gx]), s, H, W) * 0.5
        yy = torch.arange(H, dtype=torch.float32)[:, None] + small[0]
        xx = torch.arange(W, dtype=torch.float32)[None, :] + small[1]
        cls = torch.where((yy - by) ** 2 + (xx - bx) ** 2 < br * br, 0, cls)

    # ---- 3. land-cover appearance ---------------------------------------------------------
    tint = _BASE[seed_cls] + (rand(M, 3) * 2 - 1) * _TINT[seed_cls][:, None]
    angle = rand(M) * np.pi
    period = 7.0 + 9.0 * rand(M)
    img = tint.T[:, region]  # (3, H, W) -- region colour
    img = torch.where((cls == 0)[None], _BASE[0][:, None, None], img)
    low = _noise(g, H, W, 48.0)
    img += (_LOWFREQ[cls] * low + _HIGHFREQ[cls] * (rand(H, W) * 2 - 1))[None]

    yy = torch.arange(H, dtype=torch.float32)[:, None]
    xx = torch.arange(W, dtype=torch.float32)[None, :]
    ca, sa = torch.cos(angle)[region], torch.sin(angle)[region]
    u = xx * ca + yy * sa
    v = yy * ca - xx * sa
    present = set(torch.unique(cls).tolist())

    if 2 in present:  # agriculture: parcels of stripes with alternating direction
        pu, pv = torch.floor(u / 110.0).long(), torch.floor(v / 80.0).long()
        hp = _hash01(pu, pv, 11)
        across = hp < 0.5
        coord = torch.where(across, u, v)
        stripe = torch.sin(coord * (2 * np.pi) / period[region]).clamp(-0.6, 0.6) / 1.2
        strength = (0.5 + hp) * (cls == 2)
        fu, fv = u - pu * 110.0, v - pv * 80.0
        edge = ((fu < 2.0) | (fv < 2.0)) & (cls == 2)
        img += (_STRIPE_DELTA[:, None, None] * (stripe * strength)[None])
        img += (_hash01(pu, pv, 12) - 0.5)[None] * 0.08 * (cls == 2)[None]
        img = torch.where(edge[None], img * 0.8, img)
    if 4 in present:  # forest: tree crowns
        crowns = _noise(g, H, W, 5.0)
        crowns = torch.sigmoid(crowns * 6.0) - 0.5
        img += _CROWN_DELTA[:, None, None] * (crowns * (cls == 4))[None]
    if 3 in present:  # rangeland: shrub speckle
        dots = (_noise(g, H, W, 3.0) > 0.55) & (cls == 3)
        img += _SHRUB_DELTA[:, None, None] * dots[None]

    # ---- 4. small objects -----------------------------------------------------------------
    building = torch.zeros(H, W, dtype=torch.bool)
    roof = torch.zeros(H, W, dtype=torch.long)
    if 1 in present:  # urban blocks: roads on a grid, one building per block
        C, road_w = 48.0, 6.0
        bu, bv = torch.floor(u / C).long(), torch.floor(v / C).long()
        fu, fv = u - bu * C, v - bv * C
        urban = cls == 1
        street = ((fu < road_w) | (fv < road_w)) & urban
        h1, h2 = _hash01(bu, bv, 21), _hash01(bu, bv, 22)
        x0, x1 = road_w + 2 + 8 * h1, C - 3 - 8 * h2
        y0, y1 = road_w + 2 + 8 * h2, C - 3 - 8 * h1
        b = (fu > x0) & (fu < x1) & (fv > y0) & (fv < y1) & urban & (_hash01(bu, bv, 23) < 0.85)
        img = torch.where(street[None], _ASPHALT[:, None, None], img)
        building |= b
        roof = torch.where(b, (_hash01(bu, bv, 24) * len(_ROOFS)).long(), roof)
    rural = (cls == 2) | (cls == 3) | (cls == 6)
    if bool(rural.any()):  # scattered farmhouses, same look as town buildings
        C = 150.0
        bu, bv = torch.floor(u / C).long(), torch.floor(v / C).long()
        fu, fv = u - bu * C, v - bv * C
        h1, h2 = _hash01(bu, bv, 31), _hash01(bu, bv, 32)
        x0, y0 = 20 + 90 * h1, 20 + 90 * h2
        bw, bh = 14 + 12 * _hash01(bu, bv, 33), 14 + 12 * _hash01(bu, bv, 34)
        b = ((fu > x0) & (fu < x0 + bw) & (fv > y0) & (fv < y0 + bh) & rural
             & (_hash01(bu, bv, 35) < 0.3))
        building |= b
        roof = torch.where(b, (_hash01(bu, bv, 36) * len(_ROOFS)).long(), roof)
    roof_img = _ROOFS[roof].permute(2, 0, 1) + (rand(H, W)[None] - 0.5) * 0.05
    img = torch.where(building[None], roof_img, img)

    # long roads across the scene (not over water or no-data), gently curving
    n_roads = int(1 + rand(1).item() * (1 + (H + W) / 1500))
    road_all = torch.zeros(H, W, dtype=torch.bool)
    bend = low * 25.0
    for _ in range(n_roads):
        ry, rx, phi = rand(1).item() * H, rand(1).item() * W, rand(1).item() * np.pi
        width = 4.0 + 4.0 * rand(1).item()
        dist = (xx - rx) * np.sin(phi) - (yy - ry) * np.cos(phi) + bend
        road_all |= dist.abs() < width / 2
    road_all &= (cls != 5) & (cls != 0)
    road_col = torch.where((cls == 1)[None], _ASPHALT[:, None, None], _DIRT[:, None, None])
    img = torch.where(road_all[None], road_col + (rand(H, W)[None] - 0.5) * 0.04, img)
    building &= ~road_all

    # ---- 5. finish -------------------------------------------------------------------------
    gain = 0.92 + 0.16 * rand(1).item()
    img = (img * gain).clamp_(0, 1).mul_(255).round_().div_(255)
    if num_classes == 2:
        mask = building.long()
    else:
        mask = cls.long()
    return img.contiguous(), mask.contiguous()


class SyntheticUHR(torch.utils.data.Dataset):
    """A built-in dataset of procedurally generated UHR aerial scenes (no download).

    Convention:
        Scene i is ``generate_scene(size, num_classes, seed, i)``: identical bytes for the
        same (seed, index) on a machine, different scenes for different seeds. Samples are
        what the real datasets return: {"image": float32 (3, H, W) in [0, 1], "mask": int64
        (H, W), "id": "synthetic-<seed>-<i>"}. Classes and palette are DeepGlobe's (first
        `num_classes` of them; with num_classes=2: background/building), and, as on
        DeepGlobe, class 0 "unknown" is left out of the mean IoU (``exclude_from_mean``).
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
