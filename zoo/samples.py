"""Training samples that depend only on (seed, sample counter): exact resume, any worker count.

The trainer numbers every training sample it will ever draw: iteration ``it`` of a run with
global batch ``B`` uses counters ``it*B .. it*B + B-1``, and process ``r`` of ``W`` takes the
``r``-th contiguous slice of them. Counter ``k`` picks image ``perm_e[k mod N]`` where
``perm_e`` is a fixed permutation for epoch ``e = k // N``, and its augmentation draws from a
generator seeded by ``(seed, k)``. So a resumed run, a run with data-loader workers and a
run split over processes all see exactly the same samples.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F


def _mix(*values: int) -> int:
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class CounterSampler(torch.utils.data.Sampler[int]):
    """Yields this process's sample counters for iterations ``start_iter .. iters - 1``."""

    def __init__(self, start_iter: int, iters: int, global_batch: int, rank: int = 0,
                 world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"train.batch_size={global_batch} must be divisible by the number "
                             f"of processes ({world}).")
        self.start_iter, self.iters = start_iter, iters
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.local = global_batch // world

    def __iter__(self) -> Iterator[int]:
        for it in range(self.start_iter, self.iters):
            first = it * self.global_batch + self.rank * self.local
            yield from range(first, first + self.local)

    def __len__(self) -> int:
        return max(0, self.iters - self.start_iter) * self.local


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_mix(seed, epoch, 0xE))
    return torch.randperm(n, generator=g)


class AugmentedCrops(torch.utils.data.Dataset):
    """Counter -> (image (3, h, w), mask (h, w)) crop with the configured augmentation.

    Augmentations (``data`` section of the config): ``resize_ratio`` (bilinear image,
    nearest mask), a random ``crop_size`` crop (images smaller than the crop are padded with
    0 and the mask with the ignore index), ``hflip``/``vflip`` probabilities, ``rotate90``
    (probability of k*90 degrees), and ``photometric`` (brightness +-32/255, contrast and
    saturation x[0.5, 1.5], each with probability 0.5, as mmseg's PhotoMetricDistortion
    without the hue step).
    """

    def __init__(self, dataset: Any, data_cfg: Mapping[str, Any], seed: int,
                 ignore_index: int = 255) -> None:
        self.dataset = dataset
        self.cfg = dict(data_cfg)
        self.seed = seed
        self.ignore_index = ignore_index
        self._perm_cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:  # counters are unbounded; the sampler decides how many
        return 2**62

    def image_index(self, k: int) -> int:
        n = len(self.dataset)
        epoch, pos = divmod(k, n)
        perm = self._perm_cache.get(epoch)
        if perm is None:
            perm = epoch_permutation(n, self.seed, epoch)
            self._perm_cache = {epoch: perm}
        return int(perm[pos])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[self.image_index(k)]
        g = torch.Generator().manual_seed(_mix(self.seed, k, 0xA))
        return augment(sample["image"], sample["mask"], self.cfg, g, self.ignore_index)


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def augment(image: torch.Tensor, mask: torch.Tensor, cfg: Mapping[str, Any], g: torch.Generator,
            ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    ratio = float(cfg.get("resize_ratio", 1.0))
    if ratio != 1.0:
        h, w = image.shape[-2:]
        size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                              antialias=ratio < 1)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    ch, cw = cfg.get("crop_size", [image.shape[-2], image.shape[-1]])
    image, mask = random_crop(image, mask, (int(ch), int(cw)), g, ignore_index)
    if _rand(g) < float(cfg.get("hflip", 0.0)):
        image, mask = image.flip(-1), mask.flip(-1)
    if _rand(g) < float(cfg.get("vflip", 0.0)):
        image, mask = image.flip(-2), mask.flip(-2)
    if _rand(g) < float(cfg.get("rotate90", 0.0)) and image.shape[-1] == image.shape[-2]:
        k = 1 + int(torch.randint(0, 3, (), generator=g))
        image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
    if cfg.get("photometric", False):
        image = photometric(image, g)
    return image.contiguous(), mask.contiguous()


def random_crop(image: torch.Tensor, mask: torch.Tensor, size: Sequence[int], g: torch.Generator,
                ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    ch, cw = size
    h, w = image.shape[-2:]
    if h < ch or w < cw:
        ph, pw = max(0, ch - h), max(0, cw - w)
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        mask = F.pad(mask, (0, pw, 0, ph), value=ignore_index)
        h, w = image.shape[-2:]
    y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
    x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
    return image[:, y0:y0 + ch, x0:x0 + cw], mask[y0:y0 + ch, x0:x0 + cw]


def photometric(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if _rand(g) < 0.5:
        image = image + (_rand(g) * 64 - 32) / 255
    if _rand(g) < 0.5:
        image = image * (0.5 + _rand(g))
    if _rand(g) < 0.5:
        gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
        image = gray + (image - gray) * (0.5 + _rand(g))
    return image.clamp(0.0, 1.0)


def poly_lr(base_lr: float, it: int, iters: int, power: float, min_lr: float = 0.0,
            warmup_iters: int = 0) -> float:
    """Polynomial decay per iteration (mmseg/FCtL), with an optional linear warm-up."""
    if warmup_iters and it < warmup_iters:
        return base_lr * (it + 1) / warmup_iters
    frac = min(1.0, it / max(1, iters))
    return (base_lr - min_lr) * math.pow(1.0 - frac, power) + min_lr
