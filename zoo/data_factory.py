"""Build the datasets a config names (synthetic or one of the real benchmarks)."""

from __future__ import annotations

from typing import Any, Mapping

from zoo.config import ConfigError

# Held-out synthetic scenes use seeds far from the training seed.
SYNTHETIC_VAL_SEED_OFFSET = 1000


def build_dataset(cfg: Mapping[str, Any], split: str, transform=None):
    """The dataset of ``split`` ("train", "val" or "test") for ``cfg``."""
    if cfg.get("family") == "fctl_refine":  # the CSRN learns from crude masks, not images
        from zoo.fctl.make_refine_data import refine_dataset

        return refine_dataset(cfg, split, transform)
    data = cfg["data"]
    kind = data["dataset"]
    if kind == "synthetic":
        from zoo.data.synthetic import SyntheticUHR

        seed = data["synthetic_seed"]
        n = data["synthetic_train"]
        if split != "train":
            seed += SYNTHETIC_VAL_SEED_OFFSET + (0 if split == "val" else 1)
            n = data["synthetic_val"]
        return SyntheticUHR(n, size=tuple(data["synthetic_size"]),
                            num_classes=cfg["model"]["num_classes"], seed=seed,
                            transform=transform)
    root = data["root"]
    if not root:
        raise ConfigError(f"data.dataset={kind!r} needs data.root: pass --data-root DIR "
                          f"(see the README's dataset section for the expected layout).")
    split_name = {"train": data["train_split"], "val": data["val_split"],
                  "test": data["test_split"]}.get(split, split)
    if kind == "deepglobe":
        from zoo.data.deepglobe import DeepGlobe

        return DeepGlobe(root, split=split_name, transform=transform)
    if kind == "inria":
        from zoo.data.inria import InriaAerial

        return InriaAerial(root, split=split_name, transform=transform)
    if kind == "urur":
        from zoo.data.urur import URUR

        return URUR(root, split=split_name, transform=transform)
    if kind == "folder":
        import os

        from zoo.data.folder import ImageFolderSegmentation

        return ImageFolderSegmentation(os.path.join(root, split_name, "images"),
                                       os.path.join(root, split_name, "masks"),
                                       num_classes=cfg["model"]["num_classes"])
    raise ConfigError(f"data.dataset: unknown dataset {kind!r}.")
