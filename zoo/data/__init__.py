"""Datasets (DeepGlobe, Inria Aerial, URUR, your own folders), the built-in synthetic UHR
dataset, and the joint image/mask transforms of the papers.

Every dataset returns ``{"image": float32 (3, H, W) in [0, 1], "mask": int64 (H, W), "id":
str}`` and has ``CLASSES``, ``PALETTE``, ``num_classes``, ``ignore_index`` (255),
``exclude_from_mean`` and ``exclude_from_accuracy`` (for
:class:`zoo.metrics.SegmentationMetrics`).
"""

from __future__ import annotations

from . import transforms
from .base import DataFileError, SegmentationDataset, colorize, read_image
from .deepglobe import DeepGlobe, index_to_rgb, rgb_to_index
from .folder import ImageFolderSegmentation
from .inria import InriaAerial
from .synthetic import SyntheticUHR, generate_scene
from .urur import URUR

__all__ = [
    "DataFileError",
    "DeepGlobe",
    "ImageFolderSegmentation",
    "InriaAerial",
    "SegmentationDataset",
    "SyntheticUHR",
    "URUR",
    "colorize",
    "generate_scene",
    "index_to_rgb",
    "read_image",
    "rgb_to_index",
    "transforms",
]
