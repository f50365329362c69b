"""A user's own imagery: a folder of images and a folder of masks."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .base import (IMAGE_EXTENSIONS, SKIP_FIX, DataFileError, DataNotFoundError,
                   SegmentationDataset, Transform, check_root, palette_to_index, split_stem)
from .deepglobe import rgb_to_index
from .inria import binary_mask

__all__ = ["ImageFolderSegmentation", "MASK_ENCODINGS", "default_palette"]

# How mask files hold the classes (a dataset's rule; data.mask_encoding in a config):
#   index          single-channel class indices, `ignore_index` for unlabelled pixels
#   palette        RGB colours matched exactly to the palette (`ignore_color` -> ignore)
#   binary         two classes stored 0/255 (Inria's gt) or 0/1 (255 = ignore in 0/1 masks)
#   rgb_binarised  DeepGlobe's rule: each channel binarised at 128, then the palette
#                  (single-channel index masks are taken as they are)
MASK_ENCODINGS = ("index", "palette", "binary", "rgb_binarised")

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
        raises. `mask_encoding` names the rule explicitly (see ``MASK_ENCODINGS``: "binary"
        reads 0/255 building masks as classes 0/1). An image without a mask raises (or is
        skipped with missing="skip"). A value that fits no class raises with the values found
        and the fix; when `ignore_index` is left at its default, a two-class mask holding 255
        and no 1 raises too (a 0/255 binary mask would otherwise lose its foreground to
        "ignore"): pass mask_encoding="binary", or ignore_index=255 to declare it.

    Args:
        images: folder of RGB images.
        masks: folder of masks.
        num_classes: number of classes.
        palette: one (R, G, B) per class for colour masks, or None for index masks.
        transform: callable on the sample dict.
        class_names: optional names (default "class0", ...).
        exclude_from_mean: classes left out of the mean IoU (e.g. (0,) for a background or
            "unknown" class, as the papers do on DeepGlobe).
        exclude_from_accuracy: classes whose pixels the pixel accuracy leaves out (a "no
            data" class such as DeepGlobe's unknown; a subset of `exclude_from_mean`).
        ignore_index: the "unlabelled" index (None: 255, not declared, see above).
        ignore_color: with a palette, a colour meaning "unlabelled".
        missing: "error" or "skip" for images without a mask.
        mask_encoding: one of ``MASK_ENCODINGS`` (default: "palette" with a palette, else
            "index").
        ids: only these images (ids or file names, e.g. from a split list file), in this
            order; absent ones raise (or are skipped with missing="skip").

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
                 ignore_index: int | None = None,
                 ignore_color: Sequence[int] | None = None,
                 missing: str = "error",
                 mask_encoding: str | None = None,
                 exclude_from_accuracy: Sequence[int] = (),
                 ids: Sequence[str] | None = None) -> None:
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
        encoding = mask_encoding or ("palette" if palette is not None else "index")
        if encoding not in MASK_ENCODINGS:
            raise ValueError(f"{op}: `mask_encoding` must be one of {MASK_ENCODINGS}; got "
                             f"{mask_encoding!r}.")
        if encoding in ("palette", "rgb_binarised") and palette is None:
            raise ValueError(f"{op}: mask_encoding={encoding!r} needs a `palette` (one "
                             f"(R, G, B) per class).")
        if encoding == "binary" and num_classes != 2:
            raise ValueError(f"{op}: mask_encoding='binary' is for two classes; got "
                             f"num_classes={num_classes}.")
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
        found: dict[str, tuple[str, str]] = {}  # key -> (image file name, its mask)
        absent = []
        for name in sorted(os.listdir(images)):
            stem, ext = split_stem(name)
            if ext not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            key = _key(stem, _IMAGE_SUFFIXES)
            mask = mask_by_key.get(key, mask_by_key.get(stem))
            if mask is None:
                absent.append(name)
            else:
                found[key] = (name, mask)
        if ids is not None:
            wanted = [_key(split_stem(str(i))[0], _IMAGE_SUFFIXES + _MASK_SUFFIXES) for i in ids]
            absent = [k for k in wanted if k not in found]
            samples = [(k, os.path.join(images, found[k][0]), found[k][1]) for k in wanted
                       if k in found]
        else:
            samples = [(k, os.path.join(images, n), m) for k, (n, m) in found.items()]
        if not samples:
            listed = f" of the {len(ids)} listed ids" if ids is not None else ""
            raise DataNotFoundError(f"{op}: no image{listed} in {images} has a mask in {masks} "
                                    f"(pairs are matched by name, e.g. a_sat.jpg + a_mask.png). "
                                    f"Fix: check both folders (--data-root DIR holds "
                                    f"<split>/images and <split>/masks, or images/ and masks/).")
        if absent and missing == "error":
            raise DataNotFoundError(f"{op}: {len(absent)} image(s) in {images} have no mask in "
                                    f"{masks}; first: {absent[:5]}. Fix: add the masks or "
                                    f"{SKIP_FIX}.")
        super().__init__(samples, transform)
        self.CLASSES = tuple(class_names) if class_names is not None else tuple(
            f"class{k}" for k in range(num_classes))
        self.PALETTE = (tuple(tuple(int(v) for v in c) for c in palette) if palette is not None
                        else default_palette(num_classes))
        self.mask_encoding = encoding
        self.exclude_from_mean = tuple(int(k) for k in exclude_from_mean)
        self.exclude_from_accuracy = tuple(int(k) for k in exclude_from_accuracy)
        if not set(self.exclude_from_accuracy) <= set(self.exclude_from_mean):
            raise ValueError(f"{op}: `exclude_from_accuracy` {self.exclude_from_accuracy} holds "
                             f"classes the mean IoU averages (exclude_from_mean="
                             f"{self.exclude_from_mean}). Fix: leave out of the accuracy only "
                             f"classes left out of the mean.")
        self.ignore_declared = ignore_index is not None
        self.ignore_index = 255 if ignore_index is None else int(ignore_index)
        self.ignore_color = tuple(ignore_color) if ignore_color is not None else None
        self.root = images

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        encoding = self.mask_encoding
        if encoding == "binary":
            return binary_mask(array, path)
        if encoding == "rgb_binarised" and array.ndim == 3 and array.shape[2] >= 3:
            return rgb_to_index(array[:, :, :3])
        if encoding == "palette":
            if array.ndim != 3 or array.shape[2] < 3:
                raise DataFileError(f"mask {path} is single-channel but a palette was given. "
                                    f"Fix: for index masks drop the palette (palette=None; "
                                    f"--set data.mask_encoding=index).")
            return palette_to_index(array[..., :3], self.PALETTE, path, self.ignore_index,
                                    self.ignore_color)
        if array.ndim == 3:
            raise DataFileError(f"mask {path} is a colour image (shape {array.shape}) but no "
                                f"palette was given. Fix: pass palette=[(R, G, B), ...] (--set "
                                f"data.palette=[[R, G, B], ...]) or save single-channel index "
                                f"masks.")
        return array
