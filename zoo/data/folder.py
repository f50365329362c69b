"""A user's own imagery: a folder of images and a folder of masks."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .base import (IMAGE_EXTENSIONS, DataFileError, SegmentationDataset, Transform, check_root,
                   palette_to_index, split_stem)

__all__ = ["ImageFolderSegmentation", "default_palette"]

_IMAGE_SUFFIXES = ("_sat", "_image", "_img", "_rgb")
_MASK_SUFFIXES = ("_mask", "_label", "_labels", "_gt")


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """A fixed, well-spread colour per class (for visualisation), class 0 black."""
    out = [(0, 0, 0)]
    for k in range(1, num_classes):
        # golden-ratio hue walk at full saturation; deterministic
        h = (k * 0.618033988749895) % 1.0
        i = int(h * 6)
        f = h * 6 - i
        q, t = int(255 * (1 - f)), int(255 * f)
        out.append([(255, t, 0), (q, 255, 0), (0, 255, t), (0, q, 255), (t, 0, 255),
                    (255, 0, q)][i % 6])
    return tuple(out)


def _key(stem: str, suffixes: Sequence[str]) -> str:
    for s in suffixes:
        if stem.lower().endswith(s):
            return stem[: -len(s)]
    return stem


class ImageFolderSegmentation(SegmentationDataset):
    """Images and masks of your own data, paired by file name.

    Convention:
        An image ``<name>[_sat|_image|_img|_rgb].<ext>`` in `images` is paired with the mask
        ``<name>[_mask|_label|_labels|_gt].<ext>`` in `masks` (any of JPEG/PNG/TIFF/BMP;
        masks should be lossless). Without `palette`, masks are single-channel class indices
        0..num_classes-1 with `ignore_index` for unlabelled pixels; with `palette`, masks are
        RGB colour masks mapped by exact colour (`ignore_color` -> ignore), and any other colour
        raises. An image without a mask raises (or is skipped with missing="skip").

    Args:
        images: folder of RGB images.
        masks: folder of masks.
        num_classes: number of classes.
        palette: one (R, G, B) per class for colour masks, or None for index masks.
        transform: callable on the sample dict.
        class_names: optional names (default "class0", ...).
        exclude_from_mean: classes left out of the mean IoU (e.g. (0,) for a background or
            "unknown" class, as the papers do on DeepGlobe).
        ignore_index: the "unlabelled" index (255).
        ignore_color: with a palette, a colour meaning "unlabelled".
        missing: "error" or "skip" for images without a mask.

    Raises:
        FileNotFoundError: a folder missing or no image/mask pair found.
        DataFileError: undecodable file, values outside the classes, colour outside the
            palette, or an image/mask size mismatch (raised when read; names the path).

    Example:
        >>> ds = ImageFolderSegmentation("my/images", "my/masks", num_classes=3)  # doctest: +SKIP
    """

    def __init__(self, images: str, masks: str, num_classes: int,
                 palette: Sequence[Sequence[int]] | None = None,
                 transform: Transform | None = None,
                 class_names: Sequence[str] | None = None,
                 exclude_from_mean: Sequence[int] = (),
                 ignore_index: int = 255,
                 ignore_color: Sequence[int] | None = None,
                 missing: str = "error") -> None:
        op = "ImageFolderSegmentation()"
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not \
                1 <= num_classes <= 255:
            raise ValueError(f"{op}: `num_classes` must be an int in 1..255; got {num_classes!r}.")
        if palette is not None and len(palette) != num_classes:
            raise ValueError(f"{op}: `palette` has {len(palette)} colours but num_classes is "
                             f"{num_classes}. Fix: give one (R, G, B) per class.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{op}: `class_names` has {len(class_names)} names but "
                             f"num_classes is {num_classes}.")
        if missing not in ("error", "skip"):
            raise ValueError(f"{op}: `missing` must be 'error' or 'skip'; got {missing!r}.")
        for k in exclude_from_mean:
            if not 0 <= int(k) < num_classes:
                raise ValueError(f"{op}: `exclude_from_mean` holds {k}, not a class index "
                                 f"0..{num_classes - 1}.")
        images = check_root(images, op)
        masks = check_root(masks, op)
        mask_by_key: dict[str, str] = {}
        for name in sorted(os.listdir(masks)):
            stem, ext = split_stem(name)
            if ext in IMAGE_EXTENSIONS and not name.startswith("."):
                key = _key(stem, _MASK_SUFFIXES)
                if key in mask_by_key:
                    raise DataFileError(f"{op}: two masks for {key!r} in {masks}: "
                                        f"{os.path.basename(mask_by_key[key])} and {name}.")
                mask_by_key[key] = os.path.join(masks, name)
        samples, absent = [], []
        for name in sorted(os.listdir(images)):
            stem, ext = split_stem(name)
            if ext not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            key = _key(stem, _IMAGE_SUFFIXES)
            mask = mask_by_key.get(key, mask_by_key.get(stem))
            if mask is None:
                absent.append(name)
            else:
                samples.append((key, os.path.join(images, name), mask))
        if not samples:
            raise FileNotFoundError(f"{op}: no image in {images} has a mask in {masks} (pairs "
                                    f"are matched by name, e.g. a_sat.jpg + a_mask.png). Fix: "
                                    f"check both folders.")
        if absent and missing == "error":
            raise FileNotFoundError(f"{op}: {len(absent)} image(s) in {images} have no mask in "
                                    f"{masks}; first: {absent[:5]}. Fix: add the masks or "
                                    f"pass missing='skip'.")
        super().__init__(samples, transform)
        self.CLASSES = tuple(class_names) if class_names is not None else tuple(
            f"class{k}" for k in range(num_classes))
        self.PALETTE = (tuple(tuple(int(v) for v in c) for c in palette) if palette is not None
                        else default_palette(num_classes))
        self._colour_masks = palette is not None
        self.exclude_from_mean = tuple(int(k) for k in exclude_from_mean)
        self.ignore_index = ignore_index
        self.ignore_color = tuple(ignore_color) if ignore_color is not None else None
        self.root = images

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        if self._colour_masks:
            if array.ndim != 3 or array.shape[2] < 3:
                raise DataFileError(f"mask {path} is single-channel but a palette was given; "
                                    f"pass palette=None for index masks.")
            return palette_to_index(array[..., :3], self.PALETTE, path, self.ignore_index,
                                    self.ignore_color)
        if array.ndim == 3:
            raise DataFileError(f"mask {path} is a colour image (shape {array.shape}) but no "
                                f"palette was given. Fix: pass palette=[(R, G, B), ...] or save "
                                f"single-channel index masks.")
        return array
