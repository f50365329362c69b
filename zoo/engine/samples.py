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
from typing import Any, Iterator, Mapping

import torch


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
    """Counter -> (image (3, h, w), mask (h, w)) with the configured augmentation.

    The pipeline is built from :mod:`zoo.data.transforms` (the papers' transforms) with one
    generator per counter, in mmseg's order: ``resize_ratio`` (Inria: 0.8), a random
    ``crop_size`` crop with ``cat_max_ratio`` (images smaller than the crop are padded with
    0 / the ignore index; ``crop_size: null`` keeps whole images, as FCtL trains),
    ``hflip``/``vflip`` probabilities, ``rotate90`` (FCtL's k*90 degrees), ``rotate``
    (ISDNet's arbitrary angle in ``rotate_degrees``), ``photometric`` (mmseg's
    PhotoMetricDistortion).
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

    def pipeline(self, g: torch.Generator):
        from zoo.data import transforms as T

        c, ig = self.cfg, self.ignore_index
        steps: list[Any] = []
        if float(c.get("resize_ratio", 1.0)) != 1.0:
            steps.append(T.Resize(ratio=float(c["resize_ratio"])))
        if c.get("crop_size"):
            steps.append(T.RandomCrop(tuple(c["crop_size"]), float(c.get("cat_max_ratio", 1.0)),
                                      ignore_index=ig, generator=g))
        if c.get("hflip", 0.0):
            steps.append(T.RandomHorizontalFlip(float(c["hflip"]), generator=g))
        if c.get("vflip", 0.0):
            steps.append(T.RandomVerticalFlip(float(c["vflip"]), generator=g))
        if c.get("rotate90", 0.0):
            steps.append(T.RandomRot90(float(c["rotate90"]), generator=g))
        if c.get("rotate", 0.0):
            steps.append(T.RandomRotate(float(c["rotate"]), tuple(c["rotate_degrees"]),
                                        ignore_index=ig, generator=g))
        if c.get("photometric", False):
            steps.append(T.PhotometricDistortion(generator=g))
        return T.Compose(steps)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[self.image_index(k)]
        g = torch.Generator().manual_seed(_mix(self.seed, k, 0xA))
        out = self.pipeline(g)(sample)
        return out["image"].contiguous(), out["mask"].contiguous()


def poly_lr(base_lr: float, it: int, iters: int, power: float, min_lr: float = 0.0,
            warmup_iters: int = 0) -> float:
    """Polynomial decay per iteration (mmseg/FCtL), with an optional linear warm-up."""
    if warmup_iters and it < warmup_iters:
        return base_lr * (it + 1) / warmup_iters
    frac = min(1.0, it / max(1, iters))
    return (base_lr - min_lr) * math.pow(1.0 - frac, power) + min_lr
