"""Reading image/mask files and the dataset base class shared by every zoo dataset.

Every dataset returns the same sample, a dict::

    {"image": float32 tensor (3, H, W) in [0, 1]   (uint8 / 255, as torchvision's ToTensor),
     "mask":  int64 tensor (H, W), class indices, `ignore_index` (255) where unlabelled,
     "id":    str, the image's id (file stem without "_sat")}

and carries the attributes ``CLASSES`` (names), ``PALETTE`` (RGB per class),
``num_classes``, ``ignore_index``, ``exclude_from_mean`` (the classes left out of the
paper's mean IoU) and ``exclude_from_accuracy`` (the classes whose pixels the pixel accuracy
leaves out: "no data" classes such as DeepGlobe's unknown, see :mod:`zoo.metrics`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from zoo.core.errors import DataFileError, DataNotFoundError  # DataFileError re-exported

__all__ = [
    "DataFileError",
    "DataNotFoundError",
    "IMAGE_EXTENSIONS",
    "SegmentationDataset",
    "colorize",
    "read_image",
    "read_image_array",
    "read_mask_array",
    "warn_extra_bands",
    "warn_grey_image",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

Sample = dict
Transform = Callable[[Sample], Sample]


# How a command-line user points the zoo at a dataset; quoted in the fixes of data errors.
ROOT_FIX = "pass the dataset folder with --data-root DIR (data.root; root= in Python)"
SKIP_FIX = ("use only the pairs present with --set data.missing=skip (missing='skip' in "
            "Python)")


@contextmanager
def _no_pixel_limit() -> Iterator[None]:
    # Dataset tiles are local files the user chose to train on; UHR images legitimately
    # exceed Pillow's decompression-bomb threshold (89 Mpx), so it is lifted while reading.
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


_EXIF_ORIENTATION = 0x0112


def _open_array(path: str, kind: str = "mask") -> tuple[np.ndarray, str]:
    """Decode `path` fully; returns (array, PIL mode). Raises DataFileError naming the path.

    ``kind`` "image" decodes colours (a palette PNG gives its palette's RGB), "mask" keeps
    palette indices (they are the class indices). Both apply the file's EXIF orientation, so
    an image and a mask drawn on it as displayed stay aligned, and both return native-endian
    arrays (a big-endian 16-bit TIFF reads as its values)."""
    if not os.path.isfile(path):
        raise DataFileError(f"file not found: {path}. Fix: {ROOT_FIX}, or complete the "
                            f"download.")
    try:
        with _no_pixel_limit(), Image.open(path) as raw:
            raw.load()
            im = ImageOps.exif_transpose(raw) or raw
            mode = im.mode
            if mode in ("P", "PA") and kind == "image":
                arr = np.asarray(im.convert("RGB"))
                mode = "RGB"
            elif mode == "P":
                arr = np.asarray(im)  # palette indices are the class indices
            elif mode in ("RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "PA"):
                if kind == "image" and mode in ("RGBA", "RGBa", "RGBX"):
                    band = "alpha band" if mode != "RGBX" else "fourth band"
                    _warn_once("bands4", f"{path} is a 4-band {mode} image: its {band} is "
                               f"left out, and bands 1-3 are read as R, G, B (every later "
                               f"such image too: this warning is shown once). Fix: if bands "
                               f"1-3 are not red, green, blue in that order, write an RGB "
                               f"copy first (e.g. gdal_translate -b 1 -b 2 -b 3 with the "
                               f"bands you mean).", stacklevel=4)
                arr = np.asarray(im.convert("RGB"))
                mode = "RGB"
            elif mode.startswith("I;16") or mode in ("I", "F"):
                arr = np.asarray(im)
            elif mode in ("1", "LA", "La"):
                arr = np.asarray(im.convert("L"))
                mode = "L"
            else:
                arr = np.asarray(im)
            if arr.dtype.byteorder not in ("=", "|"):
                arr = arr.astype(arr.dtype.newbyteorder("="))  # torch takes native order only
    except DataFileError:
        raise
    except Exception as exc:  # PIL raises OSError, UnidentifiedImageError, ValueError, ...
        raise DataFileError(
            f"cannot decode {path}: {type(exc).__name__}: {exc}. Fix: re-download or "
            f"re-extract this file (it is truncated, corrupt or not an image)."
        ) from exc
    return arr, mode


def read_image(path: str) -> torch.Tensor:
    """Read an RGB image file into a float32 tensor in [0, 1].

    Convention:
        Returns (3, H, W) float32 = uint8 / 255 (torchvision ``ToTensor`` semantics). Grey
        images (L, 1, LA) are repeated to 3 channels; palette images (P, PA) give their
        palette colours; RGBA/CMYK/YCbCr are converted to RGB (alpha dropped); 16-bit images
        (I;16, I;16L, I;16B, either byte order) are scaled by 1/65535. The EXIF orientation
        is applied (the image as displayed, as OpenCV reads it; masks get the same). Pillow
        reads JPEG, PNG, BMP and (uncompressed, LZW, deflate) TIFF/GeoTIFF, which covers
        DeepGlobe, Inria and URUR. Georeferencing is not kept.

    Args:
        path: the image file.

    Returns:
        float32 tensor (3, H, W).

    Raises:
        DataFileError: the file is missing or cannot be decoded (the message names it).

    Example:
        >>> img = read_image("855_sat.jpg")  # doctest: +SKIP
        >>> img.shape  # doctest: +SKIP
        torch.Size([3, 2448, 2448])
    """
    arr, scale = read_image_array(path)
    t = torch.from_numpy(np.array(arr.transpose(2, 0, 1), order="C"))
    return t.to(torch.float32).div_(scale)


def read_image_array(path: str) -> tuple[np.ndarray, float]:
    """The pixels :func:`read_image` turns into floats, undivided: ((H, W, 3) uint8 or
    uint16 array, 255.0 or 65535.0). ``read_image(path)`` is this array, as float32, divided
    by the scale (a caller converting a window at a time gets the same values)."""
    arr, mode = _open_array(path, "image")
    if arr.dtype == np.uint16 or mode.startswith("I;16"):
        scale = 65535.0
    elif arr.dtype == np.uint8 or arr.dtype == bool:
        scale = 255.0
    else:
        raise DataFileError(
            f"cannot use {path} as an image: pixel type {arr.dtype} (mode {mode}) is not 8- or "
            f"16-bit. Fix: convert it to 8-bit RGB."
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        warn_grey_image(path, stacklevel=3)
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DataFileError(f"cannot use {path} as an RGB image: array shape {arr.shape}. "
                            f"Fix: convert it to 3-channel RGB.")
    if arr.shape[2] > 3:
        warn_extra_bands(path, arr.shape[2], (1, 2, 3), stacklevel=3)
    return arr[:, :, :3], scale


_WARNED: set[str] = set()


def warn_grey_image(path: str, stacklevel: int = 3) -> None:
    """The one-time warning for a one-band (grey) image given to an RGB model: what is done
    (the band repeated into R, G and B) and the fix. Every image reader of the zoo (Pillow
    here, GDAL in :mod:`zoo.engine.rasters`) says it with these words."""
    _warn_once("grey", f"{path} is a one-band (grey) image; the models take RGB, so its "
               f"band is repeated into R, G and B (every later grey image too: this "
               f"warning is shown once). Fix: give colour images to a model trained on colour "
               f"ones (on grey copies it sees no colour); to keep the grey image, write it "
               f"as RGB first and this warning goes away.", stacklevel=stacklevel + 1)


def warn_extra_bands(path: str, count: int, used: Sequence[int], stacklevel: int = 3) -> None:
    """The one-time warning for an image of ``count`` bands of which the RGB model is given
    only the 1-based bands ``used`` (as R, G, B): which bands were read and which left out,
    and the fix."""
    used = [int(b) for b in used]
    left = [b for b in range(1, count + 1) if b not in used]
    read = ("bands 1-3" if used == [1, 2, 3] else f"band {used[0]}" if len(used) == 1 else
            "bands " + ", ".join(map(str, used)))
    as_rgb = "is repeated into R, G and B" if len(used) == 1 else "are read as R, G, B"
    dropped = (f"band {left[0]} is" if len(left) == 1 else
               f"bands {left[0]}..{left[-1]} are" if left == list(range(left[0], count + 1))
               else "bands " + ", ".join(map(str, left)) + " are")
    _warn_once(f"bands{count}", f"{path} is a {count}-band image: {dropped} left out, and "
               f"{read} {as_rgb} (every later such image too: this warning is shown once). "
               f"Fix: if those are not the bands you mean (red, green, blue in that order), "
               f"write an RGB copy first (e.g. gdal_translate -b 1 -b 2 -b 3 with the bands "
               f"you mean).",
               stacklevel=stacklevel + 1)


def _warn_once(kind: str, message: str, stacklevel: int = 3) -> None:
    """A UserWarning the first time an image of ``kind`` is converted (one per process: a
    dataset of grey images would otherwise repeat it for every file)."""
    if kind not in _WARNED:
        _WARNED.add(kind)
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


def read_mask_array(path: str) -> tuple[np.ndarray, str]:
    """Read a mask file undecoded: (H, W) or (H, W, 3) integer array and its PIL mode.

    Convention:
        Palette ("P") PNGs give their palette indices, grey PNG/TIFF their values, RGB files
        an (H, W, 3) uint8 array. Each dataset turns this into class indices itself. The
        EXIF orientation is applied, as for images (:func:`read_image`).

    Args:
        path: the mask file.

    Returns:
        (array, mode).

    Raises:
        DataFileError: missing or undecodable file (the message names it).

    Example:
        >>> arr, mode = read_mask_array("855_mask.png")  # doctest: +SKIP
        >>> arr.shape, mode  # doctest: +SKIP
        ((2448, 2448, 3), 'RGB')
    """
    return _open_array(path, "mask")


def image_size(path: str) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels (as decoded:
    after the EXIF orientation, like :func:`read_image`)."""
    if not os.path.isfile(path):
        raise DataFileError(f"file not found: {path}. Fix: {ROOT_FIX}, or complete the "
                            f"download.")
    try:
        with _no_pixel_limit(), Image.open(path) as im:
            w, h = im.size
            # EXIF orientations 5-8 turn the image a quarter: the decoded size is (w, h).
            if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as exc:
        raise DataFileError(f"cannot decode {path}: {type(exc).__name__}: {exc}. Fix: "
                            f"re-download or re-extract this file.") from exc
    return h, w


def colorize(mask: torch.Tensor | np.ndarray, palette: Sequence[Sequence[int]],
             ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Colour an index mask with a palette.

    Convention:
        Channels-last uint8 output, as stored in PNG files. Indices outside the palette
        (e.g. 255 = ignore) get `ignore_color`.

    Args:
        mask: (H, W) integer mask (tensor or array).
        palette: one (R, G, B) per class.
        ignore_color: colour for indices without a palette entry.

    Returns:
        uint8 array (H, W, 3).

    Example:
        >>> colorize(np.array([[0, 1]]), [(0, 0, 0), (255, 255, 255)])[0, 1].tolist()
        [255, 255, 255]
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    lut = np.empty((256, 3), dtype=np.uint8)
    lut[:] = np.asarray(ignore_color, dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if mask.dtype == np.uint8:  # every value indexes the table: no int64 copies of the mask
        return lut[mask]
    m = mask.astype(np.int64)
    out_of_range = (m < 0) | (m > 255)
    m = np.where(out_of_range, 255, m)
    return lut[m]


# How to repair a 0/255 mask whose edges an interpolating resize turned into grey values.
RESAMPLED_BINARY_FIX = ("Fix: re-make the mask from the original with nearest-neighbour "
                        "resampling (gdalwarp -r near; PIL Image.NEAREST), or threshold this one "
                        "at 128 (building = value >= 128) and save it as 0/255; no data.* "
                        "setting can recover it")


def resampled_binary_error(values: Sequence[int], path: str) -> str | None:
    """The message for a 0/255 building mask resampled with interpolation (grey values
    between 0 and 255 along the edges), or None when ``values`` do not look like one."""
    present = {int(v) for v in values}
    grey = sorted(v for v in present if 1 < v < 255)
    if not (0 in present and 255 in present and grey):
        return None
    shown = f"{grey[:6]}" + (" ..." if len(grey) > 6 else "")
    return (f"mask {path} holds {len(present)} distinct values, {len(grey)} of them between 0 "
            f"and 255 (values {shown}): a 0/255 mask resampled with interpolation (bilinear or "
            f"bicubic), whose edges became grey. {RESAMPLED_BINARY_FIX}.")


def _check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, path: str,
                       ignore_declared: bool = True) -> None:
    """DataFileError unless every value is a class index or ``ignore_index``.

    With ``ignore_declared=False`` (the ignore value is a default, not the dataset's rule) a
    two-class mask holding the ignore value and no pixel of class 1 is refused too: that is
    a 0/255 binary mask, whose foreground would silently become "ignore".
    """
    if num_classes == 2 and mask.size:
        present = np.unique(mask) if mask.dtype != np.uint8 else \
            np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        resampled = resampled_binary_error(present.tolist(), path)
        if resampled is not None:
            raise DataFileError(resampled)
    if not ignore_declared and num_classes == 2 and mask.size:
        if ignore_index in present and 1 not in present:
            raise DataFileError(
                f"mask {path} holds the values {present[:10].tolist()}: read as class indices "
                f"that is class 0 and 'ignore' ({ignore_index}) only, which is how a binary "
                f"0/{ignore_index} mask (e.g. Inria's gt) would lose every foreground pixel. "
                f"Fix: for 0/255 masks --set data.mask_encoding=binary (or --set "
                f"data.like=inria); if {ignore_index} really marks unlabelled pixels, declare "
                f"it with --set data.ignore_index={ignore_index}.")
    if mask.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    else:
        lo, hi = int(mask.min(initial=0)), int(mask.max(initial=0))
        if lo >= 0 and hi < num_classes:
            return
        present = np.unique(mask)
    bad = present[((present < 0) | (present >= num_classes)) & (present != ignore_index)]
    if bad.size:
        raise DataFileError(
            f"mask {path} holds values {bad[:10].tolist()} outside the classes "
            f"0..{num_classes - 1} (and ignore {ignore_index}). Fix: convert the mask to class "
            f"indices, or declare its encoding: --set data.mask_encoding=binary for 0/255 "
            f"masks, --set data.palette=[[R, G, B], ...] for colour masks, --set "
            f"model.num_classes=N for more classes (or check that this is the right dataset)."
        )


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: a list of (id, image path, mask path) read into the common sample dict.

    Subclasses set the class attributes and implement :meth:`decode_mask`.
    """

    CLASSES: tuple[str, ...] = ()
    PALETTE: tuple[tuple[int, int, int], ...] = ()
    exclude_from_mean: tuple[int, ...] = ()
    exclude_from_accuracy: tuple[int, ...] = ()
    ignore_index: int = 255

    def __init__(self, samples: Sequence[tuple[str, str, str]],
                 transform: Transform | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    @property
    def ids(self) -> list[str]:
        return [s[0] for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        """File array -> (H, W) class indices (uint8 or int64). Override per dataset."""
        raise NotImplementedError

    #: False when ``ignore_index`` is a default rather than the dataset's declared rule; then
    #: a two-class mask that holds it and no class 1 is refused as a 0/255 binary mask.
    ignore_declared: bool = True

    def load_mask(self, path: str) -> torch.Tensor:
        arr, mode = read_mask_array(path)
        index = self.decode_mask(arr, mode, path)
        _check_mask_values(index, self.num_classes, self.ignore_index, path,
                           self.ignore_declared)
        return torch.from_numpy(np.ascontiguousarray(index).astype(np.int64))

    def load(self, i: int) -> Sample:
        """The i-th sample before the transform."""
        sid, image_path, mask_path = self.samples[i]
        image = read_image(image_path)
        mask = self.load_mask(mask_path)
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise DataFileError(
                f"image {image_path} is {image.shape[1]}x{image.shape[2]} but its mask "
                f"{mask_path} is {mask.shape[0]}x{mask.shape[1]} (H x W). Fix: pair each image "
                f"with its own full-size mask."
            )
        return {"image": image, "mask": mask, "id": sid}

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{type(self).__name__}: index {i} out of range for "
                             f"{len(self)} samples")
        sample = self.load(i % len(self))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, "
                f"exclude_from_mean={self.exclude_from_mean})")


# --- locating files -----------------------------------------------------------------------

def check_root(root: str, op: str) -> str:
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataNotFoundError(f"{op}: dataset root {root!r} does not exist or is not a "
                                f"folder. Fix: {ROOT_FIX}.")
    return root


def walk_files(root: str) -> Iterator[str]:
    """Every file under root (hidden folders skipped), in a sorted, reproducible order."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                yield os.path.join(dirpath, f)


def split_stem(path: str) -> tuple[str, str]:
    """(stem, lower-case extension) of a path."""
    name = os.path.basename(path)
    stem, ext = os.path.splitext(name)
    return stem, ext.lower()


def find_pairs(op: str, root: str, split: str, ids: Sequence[str] | None,
               split_ids: Callable[[str], list[str]], strip_id: Callable[[str], str],
               classify: Callable[[str, str], tuple[str, str] | None],
               example: Callable[[str], str], missing: str) -> tuple[str, list[tuple[str, str, str]]]:
    """Search ``root`` recursively for the image/mask files of a split (or of ``ids``).

    ``classify(path, stem)`` names a file's (id, "image" | "mask"), or None to skip it;
    ``example(first_id)`` shows the expected file names in the error for an empty split.
    Returns the checked root and the (id, image path, mask path) triples, in split order.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"{op}: `missing` must be 'error' or 'skip'; got {missing!r}.")
    root = check_root(root, op)
    if ids is None:
        wanted, desc = split_ids(split), f"{split!r} split"
    else:
        wanted, desc = [strip_id(x) for x in ids], "requested ids"
    wanted_set = set(wanted)
    index: dict[str, dict[str, list[str]]] = {}
    elsewhere: dict[str, set[str]] = {}  # ids of other splits present: id -> kinds found
    for path in walk_files(root):
        stem, ext = split_stem(path)
        if ext not in IMAGE_EXTENSIONS:
            continue
        found = classify(path, stem)
        if found is not None and found[0] in wanted_set:
            index.setdefault(found[0], {}).setdefault(found[1], []).append(path)
        elif found is not None:
            elsewhere.setdefault(found[0], set()).add(found[1])
    example_text = example(wanted[0]) if wanted else example("<id>")
    if ids is None and not index:
        others = sorted(k for k, kinds in elsewhere.items() if kinds == {"image", "mask"})
        if others:
            # A partial download whose labelled images all belong to other splits: pointing
            # at the folder again would not help; a split list of the images present would.
            raise DataNotFoundError(
                f"{op}: no image/mask pairs of the {desc} ({len(wanted)} ids) found under "
                f"{root}, which holds {len(others)} image/mask pair(s) of other splits (e.g. "
                f"{', '.join(others[:3])}). Fix: list the images to use for this split, one "
                f"id per line, in a file and pass --set data.split_files.{split}=FILE (keep "
                f"them out of the train list: --set data.split_files.train=FILE2); or pass "
                f"the folder that holds this split with --data-root DIR.")
    return root, resolve_pairs(op, root, wanted, index, desc, example_text, missing)


def resolve_pairs(op: str, root: str, wanted: Sequence[str],
                  index: dict[str, dict[str, list[str]]], split_desc: str,
                  example: str, missing: str) -> list[tuple[str, str, str]]:
    """Turn an id -> {"image": [...], "mask": [...]} index into (id, image, mask) triples.

    Raises FileNotFoundError for an empty split or (missing="error") absent files, and
    DataFileError for an id found twice.
    """
    samples = []
    absent = []
    for sid in wanted:
        entry = index.get(sid, {})
        imgs, masks = entry.get("image", []), entry.get("mask", [])
        for kind, found in (("image", imgs), ("mask", masks)):
            if len(found) > 1:
                raise DataFileError(
                    f"{op}: {len(found)} {kind} files for id {sid!r} under {root}: "
                    f"{found[:3]}. Fix: keep one copy, or pass root= pointing at one layout.")
        if not imgs or not masks:
            absent.append((sid, "image" if not imgs else "mask"))
            continue
        samples.append((sid, imgs[0], masks[0]))
    if not samples:
        raise DataNotFoundError(
            f"{op}: no image/mask pairs of the {split_desc} ({len(wanted)} ids) found under "
            f"{root}. Expected files like {example}. Fix: {ROOT_FIX}; the layouts accepted "
            f"are in the README's dataset section.")
    if absent and missing == "error":
        shown = ", ".join(f"{sid} ({what})" for sid, what in absent[:5])
        raise DataNotFoundError(
            f"{op}: {len(absent)} of the {len(wanted)} ids of the {split_desc} are missing under "
            f"{root} (found {len(samples)}); first: {shown}. Fix: complete the download, or "
            f"{SKIP_FIX}.")
    return samples


def read_split_list(dataset: str, split_file: str) -> list[str]:
    """Lines of a split list shipped in zoo/data/splits/<dataset>/<split_file>."""
    path = os.path.join(os.path.dirname(__file__), "splits", dataset, split_file)
    return read_id_file(path, f"the shipped {dataset} split list")


def read_id_file(path: str, what: str) -> list[str]:
    """The ids of a split list file: one per line (file names or stems), blank lines and
    ``#`` comments left out; DataNotFoundError naming ``what`` when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except OSError as exc:
        raise DataNotFoundError(f"{what}: cannot read {path} ({exc.strerror or exc}). Fix: "
                                f"give the path of a text file with one image id or file "
                                f"name per line.") from None
    ids = [line for line in lines if line]
    if not ids:
        raise DataNotFoundError(f"{what}: {path} lists no image. Fix: one image id or file "
                                f"name per line.")
    return ids


def palette_to_index(rgb: np.ndarray, palette: Sequence[Sequence[int]], path: str = "<array>",
                     ignore_index: int = 255,
                     ignore_color: Sequence[int] | None = None) -> np.ndarray:
    """Map an (H, W, 3) colour mask to class indices by exact palette colour.

    Convention:
        Colour k of `palette` -> k; `ignore_color` (if given) -> `ignore_index`. Any other
        colour raises DataFileError naming the file and up to 5 offending colours (a colour
        mask saved as JPEG, or a wrong palette, is caught instead of training on garbage).

    Args:
        rgb: uint8 (H, W, 3).
        palette: one (R, G, B) per class.
        path: the file name, for messages.
        ignore_index: index for `ignore_color`.
        ignore_color: an extra colour meaning "unlabelled", or None.

    Returns:
        uint8 (H, W) indices.

    Example:
        >>> palette_to_index(np.array([[[9, 9, 9]]], np.uint8), [(0, 0, 0), (9, 9, 9)]).tolist()
        [[1]]
    """
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) \
        | rgb[..., 2].astype(np.int32)
    keys = [(int(r) << 16) | (int(g) << 8) | int(b) for r, g, b in palette]
    values = list(range(len(palette)))
    if ignore_color is not None:
        r, g, b = ignore_color
        keys.append((int(r) << 16) | (int(g) << 8) | int(b))
        values.append(ignore_index)
    keys_arr = np.asarray(keys, dtype=np.int32)
    order = np.argsort(keys_arr)
    sorted_keys = keys_arr[order]
    pos = np.searchsorted(sorted_keys, code)
    pos_c = np.minimum(pos, len(sorted_keys) - 1)
    hit = sorted_keys[pos_c] == code
    if not hit.all():
        bad = np.unique(code[~hit])[:5]
        colours = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in bad]
        raise DataFileError(
            f"mask {path} holds {int((~hit).sum())} pixels with colours outside the palette, "
            f"e.g. {colours}. Fix: pass the dataset's palette, or save masks losslessly (PNG), "
            f"or give single-channel index masks.")
    lut = np.asarray(values, dtype=np.uint8)[order]
    return lut[pos_c]
