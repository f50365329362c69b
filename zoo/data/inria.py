"""Inria Aerial Image Labeling (Maggiori et al., IGARSS 2017): 180 labelled 5000x5000 tiles.

Splits: the 126 / 27 / 27 lists of FCtL (github.com/liqiokkk/FCtL @ 6fdb0c0, ``txt_1/``),
used by FCtL and ISDNet, shipped in ``zoo/data/splits/inria/``: "train" = train.txt, "val" =
crossvali.txt, "test" = test.txt.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .base import (IMAGE_EXTENSIONS, DataFileError, SegmentationDataset, Transform, find_pairs,
                   read_split_list, resampled_binary_error)

__all__ = ["InriaAerial", "CLASSES", "PALETTE", "split_ids"]

CLASSES = ("background", "building")
PALETTE = ((0, 0, 0), (255, 255, 255))

_SPLIT_FILES = {"train": "train.txt", "val": "crossvali.txt", "crossvali": "crossvali.txt",
                "test": "test.txt"}


def split_ids(split: str) -> list[str]:
    """The tile ids ("austin1", ...) of a shipped split: "train" (126), "val" (27), "test" (27)."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"InriaAerial: `split` must be one of 'train', 'val', 'test'; got "
                         f"{split!r}.")
    return [_strip_id(x) for x in read_split_list("inria", _SPLIT_FILES[split])]


def _strip_id(name: str) -> str:
    name = os.path.basename(str(name))
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
        stem = name
    for suffix in ("_sat", "_mask", "_gt"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def binary_mask(array: np.ndarray, path: str) -> np.ndarray:
    """0/255 or 0/1 building mask -> 0/1 (255 kept as ignore in a 0/1 mask).

    A mask containing any 1 is read as 0/1 (values 255 = ignore); otherwise 0/255 (the
    official ``gt/*.tif``) is divided by 255. Any other value raises DataFileError.
    """
    if array.ndim == 3:
        if array.shape[2] >= 3 and not (np.array_equal(array[..., 0], array[..., 1])
                                        and np.array_equal(array[..., 0], array[..., 2])):
            raise DataFileError(f"Inria mask {path} is a colour image with different channels; "
                                f"expected a single-channel 0/255 or 0/1 building mask.")
        array = array[..., 0]
    if array.dtype != np.uint8:
        if array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise DataFileError(f"Inria mask {path} holds values outside 0..255; expected "
                                f"0/255 or 0/1.")
        array = array.astype(np.uint8)
    present = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
    extra = sorted(set(present.tolist()) - {0, 1, 255})
    if extra:
        resampled = resampled_binary_error(present.tolist(), path)
        if resampled is not None:
            raise DataFileError(f"Inria {resampled}")
        raise DataFileError(f"Inria mask {path} holds values {extra[:10]}; expected a building "
                            f"mask with values 0/255 (official gt) or 0/1 (FCtL layout). "
                            f"Fix: save it with background 0 and building 255 (or 1).")
    if 1 in present:
        return array
    return (array == 255).astype(np.uint8)


def _classify(path: str, stem: str) -> tuple[str, str] | None:
    """Official names (images/<id>.tif, gt/<id>.tif) and FCtL's (<id>_sat, <id>_mask)."""
    if stem.endswith("_sat"):
        return stem[:-4], "image"
    if stem.endswith("_mask"):
        return stem[:-5], "mask"
    if stem.endswith("_gt"):
        return stem[:-3], "mask"
    parent = os.path.basename(os.path.dirname(path)).lower()
    if parent == "images":
        return stem, "image"
    if parent == "gt":
        return stem, "mask"
    return None


class InriaAerial(SegmentationDataset):
    """Inria Aerial: RGB tiles with a binary building mask (0 background, 1 building).

    Convention:
        Accepted layouts under `root` (searched recursively; files matched by tile id):

          * official: ``images/<city><n>.tif`` + ``gt/<city><n>.tif`` (gt values 0/255), e.g.
            root = ``AerialImageDataset/`` or its ``train/`` folder;
          * FCtL renamed: ``{train,crossvali,offical_crossvali}/{Sat,Label}/<city><n>_sat.tif``
            + ``<city><n>_mask.png`` (values 0/1); ISDNet's ``imgs/``/``labels/`` likewise;
          * any folder of ``<id>_sat.<ext>`` with ``<id>_mask.<ext>`` or ``<id>_gt.<ext>``.

        Masks are returned as 0/1 (a mask holding any 1 is taken as 0/1 with 255 = ignore,
        otherwise 0/255 is divided by 255). The TIFFs are read with Pillow (uncompressed and
        LZW GeoTIFFs; georeferencing is not kept). The papers' Inria "mIoU" is the building
        IoU: ``exclude_from_mean = (0,)``.

    Args:
        root: dataset folder.
        split: "train" (126), "val" (27, FCtL's crossvali) or "test" (27).
        ids: explicit tile ids ("austin1" or "austin1_sat.tif") instead of the split list.
        transform: callable on the sample dict.
        missing: "error" (default) or "skip" (use the pairs present).

    Raises:
        FileNotFoundError: `root` missing, no pair found, or missing="error" and pairs absent.
        DataFileError: undecodable file, bad mask values or image/mask size mismatch (named).

    Example:
        >>> ds = InriaAerial("AerialImageDataset/train", split="val")  # doctest: +SKIP
    """

    CLASSES = CLASSES
    PALETTE = PALETTE
    exclude_from_mean = (0,)

    def __init__(self, root: str, split: str = "train", ids: Sequence[str] | None = None,
                 transform: Transform | None = None, missing: str = "error") -> None:
        root, samples = find_pairs(
            "InriaAerial()", root, split, ids, split_ids, _strip_id, _classify,
            lambda i: f"images/{i}.tif and gt/{i}.tif", missing)
        super().__init__(samples, transform)
        self.root = root
        self.split = split if ids is None else None

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        return binary_mask(array, path)
