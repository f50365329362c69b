"""DeepGlobe Land Cover 2018 (Demir et al., CVPR-W 2018): 803 labelled 2448x2448 RGB images.

Splits: the 454 / 207 / 142 lists of GLNet (github.com/VITA-Group/GLNet @ 7b7bdee), used by
FCtL, ISDNet and WSDNet, shipped in ``zoo/data/splits/deepglobe/``: "train" = train.txt,
"val" = crossvali.txt (validation during training), "test" = test.txt (the reported split).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from .base import (DataFileError, SegmentationDataset, Transform, find_pairs,
                   read_split_list)

__all__ = ["DeepGlobe", "CLASSES", "PALETTE", "rgb_to_index", "index_to_rgb", "split_ids"]

CLASSES = ("unknown", "urban", "agriculture", "rangeland", "forest", "water", "barren")
PALETTE = ((0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255),
           (255, 255, 255))

# (R>=128, G>=128, B>=128) as a 3-bit number R*4 + G*2 + B -> class index.
# Bits 4 = pure red is not in the palette and becomes 0 "unknown" (GLNet's mapping sends every
# colour outside the palette to 0).
_BITS_TO_CLASS = np.zeros(8, dtype=np.uint8)
for _cls, (_r, _g, _b) in enumerate(PALETTE):
    _BITS_TO_CLASS[(_r >= 128) * 4 + (_g >= 128) * 2 + (_b >= 128)] = _cls

_SPLIT_FILES = {"train": "train.txt", "val": "crossvali.txt", "crossvali": "crossvali.txt",
                "test": "test.txt"}


def rgb_to_index(rgb: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Convert a DeepGlobe colour mask to class indices 0..6.

    Convention:
        Channels last (..., 3), as the PNG files store it. Each channel is binarised at 128
        (value >= 128 -> on), then the 3-bit colour is mapped through the palette: unknown
        (0,0,0)=0, urban (0,255,255)=1, agriculture (255,255,0)=2, rangeland (255,0,255)=3,
        forest (0,255,0)=4, water (0,0,255)=5, barren (255,255,255)=6. The one binarised
        colour outside the palette, red (255,0,0), becomes 0 "unknown" (as GLNet's mapping).
        Binarising makes JPEG-like colour noise harmless (exact matching would not be).

    Args:
        rgb: uint8 array or tensor (..., 3).

    Returns:
        uint8 array (...) for an array input, int64 tensor (...) for a tensor input.

    Example:
        >>> rgb_to_index(np.array([[[0, 255, 255], [250, 10, 250]]], dtype=np.uint8)).tolist()
        [[1, 3]]
    """
    is_tensor = isinstance(rgb, torch.Tensor)
    arr = rgb.detach().cpu().numpy() if is_tensor else np.asarray(rgb)
    if arr.ndim < 1 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_index(): `rgb` must be channels-last (..., 3); got shape "
                         f"{tuple(arr.shape)}. Fix: for a (3, H, W) tensor pass "
                         f"rgb.permute(1, 2, 0).")
    on = [(arr[..., c] >= 128).astype(np.uint8) for c in range(3)]
    bits = (on[0] << 2) | (on[1] << 1) | on[2]
    out = _BITS_TO_CLASS[bits]
    return torch.from_numpy(out.astype(np.int64)) if is_tensor else out


def index_to_rgb(index: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Convert class indices 0..6 back to the DeepGlobe colour mask.

    Convention:
        Output channels last (..., 3) uint8; inverse of :func:`rgb_to_index` on palette
        colours. Indices outside 0..6 (e.g. 255 = ignore) become black (0,0,0).

    Args:
        index: integer array or tensor (...).

    Returns:
        uint8 array (..., 3) (tensor if a tensor was given).

    Example:
        >>> index_to_rgb(np.array([5])).tolist()
        [[0, 0, 255]]
    """
    is_tensor = isinstance(index, torch.Tensor)
    arr = index.detach().cpu().numpy() if is_tensor else np.asarray(index)
    lut = np.zeros((257, 3), dtype=np.uint8)
    lut[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    a = arr.astype(np.int64)
    a = np.where((a < 0) | (a >= len(PALETTE)), 256, a)
    out = lut[a]
    return torch.from_numpy(out) if is_tensor else out


def split_ids(split: str) -> list[str]:
    """The image ids ("855", ...) of a shipped split: "train" (454), "val" (207), "test" (142)."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"DeepGlobe: `split` must be one of 'train', 'val', 'test'; got "
                         f"{split!r}.")
    return [_strip_id(x) for x in read_split_list("deepglobe", _SPLIT_FILES[split])]


def _strip_id(name: str) -> str:
    name = os.path.basename(str(name))
    for suffix in ("_sat.jpg", "_sat.png", "_sat", "_mask.png", "_mask"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _classify(path: str, stem: str) -> tuple[str, str] | None:
    if stem.endswith("_sat"):
        return stem[:-4], "image"
    if stem.endswith("_mask"):
        return stem[:-5], "mask"
    return None


class DeepGlobe(SegmentationDataset):
    """DeepGlobe Land Cover: RGB images with 7 classes, masks converted on the fly.

    Convention:
        Accepted layouts under `root` (searched recursively; files are matched by id):

          * the official download: one flat folder of ``<id>_sat.jpg`` and ``<id>_mask.png``
            (RGB colour masks);
          * GLNet/FCtL: ``{train,crossvali,offical_crossvali}/{Sat,Label}/`` with the same
            names (the split still comes from the shipped lists, not from the folders);
          * ISDNet: ``img_dir/{train,val,test}/<id>_sat.jpg`` + ``rgb2id/.../<id>_mask.png``.

        Masks may be RGB colour masks (converted by :func:`rgb_to_index`, channels binarised
        at 128) or single-channel index masks 0..6 (255 = ignore) that are used as they are.
        Class 0 "unknown" is a class of the model (7 outputs) but the papers leave it out of
        the mean IoU: ``exclude_from_mean = (0,)``; the pixel accuracy leaves its pixels out
        too (``exclude_from_accuracy = (0,)``).
        Samples: {"image": float32 (3, H, W) in [0, 1], "mask": int64 (H, W), "id": str}.

    Args:
        root: dataset folder.
        split: "train" (454), "val" (207, GLNet's crossvali) or "test" (142).
        ids: explicit ids ("855" or "855_sat.jpg") instead of the split list.
        transform: callable on the sample dict (see :mod:`zoo.data.transforms`).
        missing: "error" (default) raises when some ids of the split are absent; "skip" keeps
            the pairs found. A split with no pair at all always raises.

    Raises:
        FileNotFoundError: `root` missing, no pair of the split found, or (missing="error")
            some pairs absent; the message names the root and the first missing ids.
        DataFileError: a file cannot be decoded, or a mask's size differs from its image
            (raised when the sample is read; names the paths).

    Example:
        >>> ds = DeepGlobe("data/deepglobe", split="val")  # doctest: +SKIP
        >>> s = ds[0]; s["image"].shape, s["mask"].unique()  # doctest: +SKIP
    """

    CLASSES = CLASSES
    PALETTE = PALETTE
    exclude_from_mean = (0,)
    # "unknown" marks land the annotators could not name, not a class to get right: the pixel
    # accuracy leaves those pixels out as the mean IoU does
    exclude_from_accuracy = (0,)

    def __init__(self, root: str, split: str = "train", ids: Sequence[str] | None = None,
                 transform: Transform | None = None, missing: str = "error") -> None:
        root, samples = find_pairs(
            "DeepGlobe()", root, split, ids, split_ids, _strip_id, _classify,
            lambda i: f"{i}_sat.jpg and {i}_mask.png", missing)
        super().__init__(samples, transform)
        self.root = root
        self.split = split if ids is None else None

    def decode_mask(self, array: np.ndarray, mode: str, path: str) -> np.ndarray:
        if array.ndim == 3 and array.shape[2] >= 3:
            return rgb_to_index(array[:, :, :3])
        if array.ndim == 2:
            return array
        raise DataFileError(f"DeepGlobe mask {path} has shape {array.shape} (mode {mode}); "
                            f"expected an RGB colour mask or a single-channel index mask.")
