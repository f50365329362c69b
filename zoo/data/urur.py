"""URUR (Ji et al., CVPR 2023): 3,008 images of 5120x5120 from 63 cities, 8 classes.

Classes and colours in the official order of the URUR README (github.com/jankyee/URUR):
others, building, farmland, greenhouse, woodland, bareland, water, road. The split comes
with the data (its train/val/test folders); no list is shipped.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .base import (IMAGE_EXTENSIONS, ROOT_FIX, SKIP_FIX, DataFileError, DataNotFoundError,
                   SegmentationDataset, Transform, check_root, palette_to_index, split_stem)

__all__ = ["URUR", "CLASSES", "PALETTE"]

CLASSES = ("others", "building", "farmland", "greenhouse", "woodland", "bareland", "water", "road")
PALETTE = ((0, 0, 0), (230, 230, 230), (95, 163, 7), (100, 100, 100), (200, 230, 160),
           (255, 255, 100), (150, 200, 250), (240, 100, 80))

_SPLITS = ("train", "val", "test")
# (image folder, label folder) relative to root, in the order they are tried.
_LAYOUTS = (
    ("{s}/image", "{s}/label"),      # the release layout
    ("{s}/images", "{s}/labels"),
    ("imgs/{s}", "labels/{s}"),      # RUE
    ("img_dir/{s}", "ann_dir/{s}"),  # mmsegmentation
)


class URUR(SegmentationDataset):
    """URUR: RGB images with single-channel index label PNGs, 8 classes, all in the mean.

    Convention:
        Layout ``root/{train,val,test}/{image,label}/`` (the release), also
        ``{train,...}/{images,labels}``, ``imgs/{split}`` + ``labels/{split}`` (RUE) and
        ``img_dir/{split}`` + ``ann_dir/{split}``. Images and labels are paired by file stem.
        Labels are index PNGs 0..7 in the official order (0 = others), 255 = ignore; a colour
        label is mapped by the official palette exactly (other colours raise). The mean IoU
        runs over all 8 classes: ``exclude_from_mean = ()``.

    Args:
        root: dataset folder.
        split: "train", "val" or "test".
        ids: optional subset of image stems.
        transform: callable on the sample dict.
        missing: "error" (default): an image without a label raises; "skip": it is left out.

    Raises:
        FileNotFoundError: `root` or the split folders missing, or the split empty.
        DataFileError: undecodable file, bad label values or size mismatch (named).

    Example:
        >>> ds = URUR("data/URUR", split="val")  # doctest: +SKIP
    """

    CLASSES = CLASSES
    PALETTE = PALETTE
    exclude_from_mean = ()

    def __init__(self, root: str, split: str = "train", ids: Sequence[str] | None = None,
                 transform: Transform | None = None, missing: str = "error") -> None:
        op = "URUR()"
        if split not in _SPLITS:
            raise ValueError(f"{op}: `split` must be one of {_SPLITS}; got {split!r}.")
        if missing not in ("error", "skip"):
            raise ValueError(f"{op}: `missing` must be 'error' or 'skip'; got {missing!r}.")
        root = check_root(root, op)
        for img_rel, lab_rel in _LAYOUTS:
            img_dir = os.path.join(root, img_rel.format(s=split))
            lab_dir = os.path.join(root, lab_rel.format(s=split))
            if os.path.isdir(img_dir) and os.path.isdir(lab_dir):
                break
        else:
            tried = ", ".join(a.format(s=split) for a, _ in _LAYOUTS)
            raise DataNotFoundError(
                f"{op}: no image/label folders for split {split!r} under {root} (tried {tried} "
                f"with their label folders). Fix: {ROOT_FIX}: the folder that holds train/, val/, "
                f"test/.")
        images = {}
        for name in sorted(os.listdir(img_dir)):
            stem, ext = split_stem(name)
            if ext in IMAGE_EXTENSIONS and not name.startswith("."):
                images[stem] = os.path.join(img_dir, name)
        labels = {}
        for name in sorted(os.listdir(lab_dir)):
            stem, ext = split_stem(name)
            if ext in IMAGE_EXTENSIONS and not name.startswith("."):
                labels[stem] = os.path.join(lab_dir, name)
        wanted = sorted(images) if ids is None else [os.path.splitext(os.path.basename(i))[0]
                                                     for i in ids]
        samples, absent = [], []
        for sid in wanted:
            if sid in images and sid in labels:
                samples.append((sid, images[sid], labels[sid]))
            else:
                absent.append(sid)
        if not samples:
            raise DataNotFoundError(f"{op}: split {split!r} is empty: no image with a label in "
                                    f"{img_dir} and {lab_dir}. Fix: {ROOT_FIX}.")
        if absent and missing == "error":
            raise DataNotFoundError(
                f"{op}: {len(absent)} image(s) of split {split!r} have no label (or image) in "
                f"{img_dir} / {lab_dir}; first: {absent[:5]}. Fix: complete the download or "
                f"{SKIP_FIX}.")
        super().__init__(samples, transform)
        self.root = root
        self.split = split

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        if array.ndim == 2:
            return array
        if array.ndim == 3 and array.shape[2] >= 3:
            return palette_to_index(array[..., :3], PALETTE, path)
        raise DataFileError(f"URUR label {path} has shape {array.shape}; expected an index PNG.")
