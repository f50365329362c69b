"""Prediction files: class-index masks, colour masks and overlays of a dataset's first images
(a run's ``predictions/``), and :func:`infer_file` for any image file (``python -m
zoo.infer``; the work is in :mod:`zoo.engine.segment_file`).

For an image ``<name>`` :func:`write_mask_files` writes ``<name>_mask.png`` (the dataset's mask
values, as every mask output: class indices, 0/255 for Inria's binary masks),
``<name>_color.png`` (the palette) and ``<name>_overlay.png`` (image and colours half and
half), each atomically.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from zoo.data.base import colorize
from zoo.engine.segment_file import Settings, outputs_done, segment_file
from zoo.engine.task import Task

__all__ = ["GEO_TAGS", "infer_file", "is_done", "save_predictions", "write_mask_files"]

GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)  # GeoTIFF tags (scale, tiepoint, ...)


@torch.no_grad()
def save_predictions(task: Task, model: torch.nn.Module, dataset, cfg: Mapping[str, Any],
                     device: torch.device, folder: str, count: int = 4) -> list[str]:
    """Colour masks and overlays of the first ``count`` images of ``dataset``."""
    os.makedirs(folder, exist_ok=True)
    was_training = model.training
    model.eval()
    written = []
    for i in range(min(count, len(dataset))):
        sample = dataset[i]
        pred = task.predict(model, sample["image"][None].to(device)).argmax(1)[0].cpu()
        name = str(sample.get("id", i))
        written += write_mask_files(folder, name, pred, sample["image"], dataset.PALETTE,
                                    encoding=_encoding(cfg))
        gt = colorize(sample["mask"], dataset.PALETTE)
        path = os.path.join(folder, f"{name}_gt_color.png")
        Image.fromarray(gt).save(path)
        written.append(path)
    model.train(was_training)
    return written


def _encoding(cfg: Mapping[str, Any]) -> str:
    from zoo.core.errors import ZooError
    from zoo.data.registry import dataset_rules

    try:
        return dataset_rules(cfg).mask_encoding
    except (ZooError, KeyError, TypeError):
        return "index"


def write_mask_files(folder: str, name: str, pred: torch.Tensor, image: torch.Tensor,
                     palette, encoding: str = "index") -> list[str]:
    """``<name>_mask.png`` (the dataset's values: class indices, or 0/255 with ``encoding``
    "binary" as Inria's masks and zoo.infer's outputs), ``<name>_color.png`` and
    ``<name>_overlay.png``."""
    os.makedirs(folder, exist_ok=True)
    idx = pred.to(torch.uint8).numpy() if pred.dtype != torch.uint8 else pred.numpy()
    in_range = pred.dtype == torch.uint8 or pred.numel() == 0 or \
        (int(pred.min()) >= 0 and int(pred.max()) <= 255)
    color = colorize(idx if in_range else pred, palette)
    # The overlay row block by row block: the float temporaries of a whole UHR image would
    # be ~10x its uint8 size (measured 2.4 GB extra at 10240^2); same values.
    overlay = np.empty_like(color)
    step = max(1, (1 << 22) // max(1, color.shape[1]))
    for r in range(0, color.shape[0], step):
        rgb = (image[:, r:r + step].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
        mix = 0.5 * rgb.astype(np.uint8).astype(np.float32) + \
            0.5 * color[r:r + step].astype(np.float32)
        overlay[r:r + step] = mix.round()
    if encoding == "binary":  # the dataset's values (zoo.engine.segment_file.mask_values)
        from zoo.engine.segment_file import mask_values

        idx = mask_values(2, "binary")[0][idx]
    paths = [os.path.join(folder, f"{name}_{kind}.png") for kind in ("mask", "color", "overlay")]
    for path, arr in zip(paths, (idx, color, overlay)):
        tmp = path + ".tmp.png"
        Image.fromarray(arr).save(tmp)
        os.replace(tmp, path)
    return paths


def infer_file(task: Task, model: torch.nn.Module, path: str, out_dir: str, palette,
               device: torch.device, tta: bool = False,
               settings: Settings | None = None) -> list[str]:
    """Segment the image file ``path`` into ``out_dir``: :func:`zoo.engine.segment_file.
    segment_file` (``settings`` None: the palette and ``tta`` given, outputs chosen by the
    input: the GeoTIFF mask for a georeferenced image, the three PNGs otherwise)."""
    st = settings if settings is not None else Settings(palette=palette, tta=tta)
    return segment_file(task, model, path, out_dir, st, device)


def is_done(out_dir: str, path: str, outputs: Sequence[str] | None = None) -> bool:
    """Every output of ``path`` is in ``out_dir`` (``outputs`` None: the automatic choice)."""
    return outputs_done(out_dir, path, outputs)
