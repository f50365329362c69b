"""The datasets a config can name (``data.dataset``), each declared once with its rules.

A dataset's rules are what the rest of the zoo needs to know about its masks and metrics:
the class names, the palette (colour per class, for masks and overlays), the ignore value,
the classes left out of the mean IoU, and how mask files encode the classes (see
:data:`zoo.data.folder.MASK_ENCODINGS`). ``folder`` (your own images and masks) takes its
rules from the config (``data.classes``, ``data.palette``, ``data.ignore_index``,
``data.exclude_from_mean``, ``data.mask_encoding``) or inherits those of a declared dataset
(``data.like: deepglobe``), keys given next to ``like`` winning.

Every builder honours ``data.missing`` (``error`` | ``skip``: a partial download) and
``data.split_files.<split>`` (a text file of image ids replacing the shipped split list).
The configs and commands read this registry; nothing else lists the datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from zoo.core.errors import ConfigError, DataNotFoundError

from . import deepglobe, inria, urur
from .base import ROOT_FIX, Transform, read_id_file
from .folder import MASK_ENCODINGS, ImageFolderSegmentation, default_palette

__all__ = ["DATASETS", "DatasetRules", "DatasetSpec", "RULE_KEYS", "SYNTHETIC_VAL_SEED_OFFSET",
           "build_dataset", "dataset_names", "dataset_rules", "declared_rules", "palette_for",
           "register_dataset", "split_ids_from_config"]

#: Held-out synthetic scenes use seeds this far from the training seed.
SYNTHETIC_VAL_SEED_OFFSET = 1000

#: The data.* keys that state a folder dataset's rules (null: inherited or the default).
RULE_KEYS = ("like", "classes", "palette", "ignore_index", "exclude_from_mean", "mask_encoding")


@dataclass(frozen=True)
class DatasetRules:
    """How a dataset's masks and metrics work.

    Attributes:
        classes: class names, index order.
        palette: one (R, G, B) per class.
        ignore_index: the mask value of unlabelled pixels; None: none declared (255 is still
            left out of the metrics, but a two-class 0/255 mask is refused, see
            :class:`zoo.data.folder.ImageFolderSegmentation`).
        exclude_from_mean: classes the papers leave out of the mean IoU.
        mask_encoding: one of :data:`zoo.data.folder.MASK_ENCODINGS`.
        exclude_from_accuracy: classes whose pixels the pixel accuracy leaves out too ("no
            data" classes: DeepGlobe's unknown; not Inria's background, a real class).
    """

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = 255
    exclude_from_mean: tuple[int, ...] = ()
    mask_encoding: str = "index"
    exclude_from_accuracy: tuple[int, ...] = ()


Builder = Callable[[Mapping[str, Any], str, "Transform | None"], Any]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the configs can name: ``rules`` (None: from the config) and ``build(cfg,
    split, transform)`` -> the torch Dataset of a split ("train", "val" or "test")."""

    name: str
    rules: DatasetRules | None
    build: Builder


#: Every dataset a config can name, by name (filled by :func:`register_dataset`).
DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` under ``spec.name`` (a name is declared once)."""
    if spec.name in DATASETS:
        raise ValueError(f"register_dataset(): {spec.name!r} is declared twice.")
    DATASETS[spec.name] = spec
    return spec


def dataset_names() -> tuple[str, ...]:
    """The names a config's `data.dataset` may take, in declaration order."""
    return tuple(DATASETS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {name!r}; known: "
                          f"{', '.join(DATASETS)}.")
    return DATASETS[name]


# --- rules ----------------------------------------------------------------------------------

def _rgb_list(value: Any, key: str) -> tuple[tuple[int, int, int], ...]:
    ok = isinstance(value, list) and all(
        isinstance(c, (list, tuple)) and len(c) == 3 and
        all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        for c in value)
    if not ok:
        raise ConfigError(f"data.{key} must be a list of [R, G, B] colours (0..255); got "
                          f"{value!r}. Fix: e.g. --set 'data.{key}=[[0, 0, 0], [255, 255, 255]]'.")
    return tuple(tuple(int(v) for v in c) for c in value)  # type: ignore[misc]


def dataset_rules(cfg: Mapping[str, Any]) -> DatasetRules:
    """The rules of the dataset ``cfg`` names; for ``folder`` resolved from ``data.*`` and
    ``data.like``. ConfigError names the key, what was given and the fix."""
    data = cfg["data"]
    n = int(cfg["model"]["num_classes"])
    spec = _spec(data["dataset"])
    given = [k for k in RULE_KEYS if data.get(k) is not None]
    if spec.rules is not None or spec.name == "synthetic":
        if given:
            raise ConfigError(f"data.{given[0]} applies to data.dataset=folder only (the "
                              f"{spec.name} rules are fixed). Fix: remove it, or use "
                              f"--set data.dataset=folder --set data.like={spec.name}.")
        if spec.rules is not None:
            return spec.rules
        return _synthetic_rules(n)
    base: DatasetRules | None = None
    like = data.get("like")
    if like is not None:
        if like not in DATASETS or DATASETS[like].rules is None:
            named = [k for k, s in DATASETS.items() if s.rules is not None]
            raise ConfigError(f"data.like={like!r}: no such dataset with rules; use one of "
                              f"{named}.")
        base = DATASETS[like].rules
    if data.get("classes") is not None:
        classes = data["classes"]
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise ConfigError(f"data.classes must be a list of class names; got {classes!r}.")
        classes = tuple(classes)
    elif base is not None:
        classes = base.classes
    else:
        classes = tuple(f"class{k}" for k in range(n))
    if len(classes) != n:
        raise ConfigError(f"data.classes names {len(classes)} classes {list(classes)} but "
                          f"model.num_classes is {n}. Fix: --set model.num_classes="
                          f"{len(classes)}, or give {n} names.")
    palette = (_rgb_list(data["palette"], "palette") if data.get("palette") is not None
               else base.palette if base is not None else None)
    if palette is not None and len(palette) != n:
        raise ConfigError(f"data.palette has {len(palette)} colours but model.num_classes is "
                          f"{n}. Fix: one [R, G, B] per class.")
    encoding = data.get("mask_encoding") or (
        "palette" if data.get("palette") is not None else
        base.mask_encoding if base is not None else "index")
    if encoding not in MASK_ENCODINGS:
        raise ConfigError(f"data.mask_encoding must be one of {MASK_ENCODINGS}; got "
                          f"{encoding!r}.")
    if encoding in ("palette", "rgb_binarised") and palette is None:
        raise ConfigError(f"data.mask_encoding={encoding} needs data.palette. Fix: --set "
                          f"'data.palette=[[R, G, B], ...]' (one colour per class).")
    if encoding == "binary" and n != 2:
        raise ConfigError(f"data.mask_encoding=binary is for two classes; model.num_classes "
                          f"is {n}. Fix: --set model.num_classes=2.")
    ignore = data.get("ignore_index")
    if ignore is None and base is not None:
        ignore = base.ignore_index
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)
                               or not 0 <= ignore <= 255 or ignore < n):
        raise ConfigError(f"data.ignore_index must be an int in {n}..255 (not a class); got "
                          f"{ignore!r}.")
    exclude = data.get("exclude_from_mean")
    if exclude is None:
        exclude = list(base.exclude_from_mean) if base is not None else []
    if not (isinstance(exclude, list) and all(isinstance(k, int) and 0 <= k < n
                                              for k in exclude)):
        raise ConfigError(f"data.exclude_from_mean must be a list of class indices "
                          f"0..{n - 1}; got {exclude!r}. Fix: e.g. --set "
                          f"'data.exclude_from_mean=[0]'.")
    # a folder laid out like DeepGlobe keeps its "no data" class out of the accuracy while
    # that class stays out of the mean
    no_data = tuple(k for k in (base.exclude_from_accuracy if base is not None else ())
                    if k in exclude and k < n)
    return DatasetRules(classes, palette if palette is not None else default_palette(n),
                        ignore, tuple(exclude), encoding, no_data)


def declared_rules(name: str, num_classes: int | None = None) -> DatasetRules:
    """The fixed rules of a declared dataset (``synthetic`` with ``num_classes``, 7 by
    default): the one table the metrics (:meth:`zoo.metrics.SegmentationMetrics.for_dataset`)
    and the configs read. ValueError for ``folder`` (its rules come from a config) and for
    unknown names."""
    key = name.lower()
    fixed = [k for k, spec in DATASETS.items() if spec.rules is not None or k == "synthetic"]
    if key not in fixed:
        raise ValueError(f"declared_rules(): unknown dataset {name!r} (or one whose rules come "
                         f"from a config); expected one of {fixed}.")
    if key == "synthetic":
        return _synthetic_rules(7 if num_classes is None else num_classes)
    return DATASETS[key].rules  # type: ignore[return-value]


def _synthetic_rules(n: int) -> DatasetRules:
    if n == 2:
        return DatasetRules(inria.CLASSES, inria.PALETTE, 255, (0,), "index")
    return DatasetRules(deepglobe.CLASSES[:n], deepglobe.PALETTE[:n], 255,
                        (0,), "index", (0,))


def palette_for(cfg: Mapping[str, Any]) -> tuple[tuple[int, int, int], ...]:
    """The colours of the config's classes (masks and overlays written by the commands)."""
    n = int(cfg["model"]["num_classes"])
    name = cfg["data"]["dataset"]
    if name in ("deepglobe", "synthetic") and n <= len(deepglobe.PALETTE) and n != 2:
        return deepglobe.PALETTE[:n]
    if name in DATASETS and DATASETS[name].rules is not None and \
            len(DATASETS[name].rules.palette) == n:
        return DATASETS[name].rules.palette
    if name == "folder" and any(cfg["data"].get(k) is not None for k in ("palette", "like")):
        return dataset_rules(cfg).palette
    if n == 2:
        return ((0, 0, 0), (255, 255, 255))
    return default_palette(n)


# --- splits ---------------------------------------------------------------------------------

def split_name(data: Mapping[str, Any], split: str) -> str:
    """The dataset's own name for ``split`` ("train", "val", "test"), from ``data.*_split``."""
    return {"train": data["train_split"], "val": data["val_split"],
            "test": data["test_split"]}.get(split, split)


def split_ids_from_config(data: Mapping[str, Any], split: str) -> list[str] | None:
    """The ids listed in ``data.split_files.<split>`` (None: the dataset's own split)."""
    files = data.get("split_files") or {}
    unknown = sorted(set(files) - {"train", "val", "test"})
    if unknown:
        raise ConfigError(f"data.split_files: unknown split(s) {unknown}; use train, val or "
                          f"test, e.g. --set data.split_files.val=lists/val.txt.")
    path = files.get(split)
    if path is None:
        return None
    if not isinstance(path, str):
        raise ConfigError(f"data.split_files.{split} must be the path of a text file; got "
                          f"{path!r}.")
    return read_id_file(os.path.expanduser(path), f"data.split_files.{split}")


# --- builders -------------------------------------------------------------------------------

def _root(cfg: Mapping[str, Any]) -> str:
    root = cfg["data"]["root"]
    if not root:
        raise ConfigError(f"data.dataset={cfg['data']['dataset']!r} needs data.root: "
                          f"{ROOT_FIX} (the README's dataset section shows the expected "
                          f"layout).")
    return root


def _benchmark(cls: type) -> Builder:
    def build(cfg: Mapping[str, Any], split: str, transform: Transform | None) -> Any:
        data = cfg["data"]
        return cls(_root(cfg), split=split_name(data, split),
                   ids=split_ids_from_config(data, split), transform=transform,
                   missing=data["missing"])
    return build


def _build_synthetic(cfg: Mapping[str, Any], split: str, transform: Transform | None) -> Any:
    from .synthetic import SyntheticUHR

    data = cfg["data"]
    seed = data["synthetic_seed"]
    n = data["synthetic_train"]
    if split != "train":
        seed += SYNTHETIC_VAL_SEED_OFFSET + (0 if split == "val" else 1)
        n = data["synthetic_val"]
    return SyntheticUHR(n, size=tuple(data["synthetic_size"]),
                        num_classes=cfg["model"]["num_classes"], seed=seed, transform=transform)


def _build_folder(cfg: Mapping[str, Any], split: str, transform: Transform | None) -> Any:
    data = cfg["data"]
    root = _root(cfg)
    rules = dataset_rules(cfg)
    ids = split_ids_from_config(data, split)
    name = split_name(data, split)
    images, masks = os.path.join(root, name, "images"), os.path.join(root, name, "masks")
    if not os.path.isdir(images) and ids is not None:
        # one flat folder of every image, the split list choosing among them
        images, masks = os.path.join(root, "images"), os.path.join(root, "masks")
    if not os.path.isdir(images):
        raise DataNotFoundError(
            f"folder dataset: no folder {images} for split {split!r}. Fix: lay the data out "
            f"as DIR/{name}/images + DIR/{name}/masks and pass --data-root DIR, or keep "
            f"DIR/images + DIR/masks and list the split's images in a file: --set "
            f"data.split_files.{split}=FILE.")
    return ImageFolderSegmentation(
        images, masks, num_classes=len(rules.classes), palette=rules.palette,
        transform=transform,
        class_names=rules.classes, exclude_from_mean=rules.exclude_from_mean,
        ignore_index=rules.ignore_index, missing=data["missing"],
        mask_encoding=rules.mask_encoding, ids=ids,
        exclude_from_accuracy=rules.exclude_from_accuracy)


register_dataset(DatasetSpec("synthetic", None, _build_synthetic))
register_dataset(DatasetSpec(
    "deepglobe", DatasetRules(deepglobe.CLASSES, deepglobe.PALETTE, 255, (0,), "rgb_binarised",
                              (0,)),
    _benchmark(deepglobe.DeepGlobe)))
register_dataset(DatasetSpec(
    "inria", DatasetRules(inria.CLASSES, inria.PALETTE, 255, (0,), "binary"),
    _benchmark(inria.InriaAerial)))
register_dataset(DatasetSpec(
    "urur", DatasetRules(urur.CLASSES, urur.PALETTE, 255, (), "index"),
    _benchmark(urur.URUR)))
register_dataset(DatasetSpec("folder", None, _build_folder))


def build_dataset(cfg: Mapping[str, Any], split: str, transform: Transform | None = None
                  ) -> Any:
    """The dataset of ``split`` ("train", "val" or "test") that ``cfg`` names."""
    spec = _spec(cfg["data"]["dataset"])
    dataset_rules(cfg)  # refuses rule keys that do not apply before any file is read
    return spec.build(cfg, split, transform)
