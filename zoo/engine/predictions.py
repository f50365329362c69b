"""Prediction files: class-index masks, colour masks and overlays of a dataset's first images
(a run's ``predictions/``) or of any image file (``python -m zoo.infer``), GeoTIFF tags kept.

For an image ``<name>`` it writes ``<name>_mask.png`` (class indices), ``<name>_color.png``
(the palette) and ``<name>_overlay.png`` (image and colours half and half), each atomically;
a GeoTIFF input also gets ``<name>_mask.tif`` carrying the input's georeferencing tags
(model pixel scale, tie points, GeoKey directory), so GIS tools place the mask where the
image is.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, TiffImagePlugin

from zoo.data.base import colorize, read_image
from zoo.engine.evaluator import predict_logits
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
        written += write_mask_files(folder, name, pred, sample["image"], dataset.PALETTE)
        gt = colorize(sample["mask"], dataset.PALETTE)
        path = os.path.join(folder, f"{name}_gt_color.png")
        Image.fromarray(gt).save(path)
        written.append(path)
    model.train(was_training)
    return written


def write_mask_files(folder: str, name: str, pred: torch.Tensor, image: torch.Tensor,
                     palette) -> list[str]:
    """``<name>_mask.png`` (indices), ``<name>_color.png`` and ``<name>_overlay.png``."""
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
    paths = [os.path.join(folder, f"{name}_{kind}.png") for kind in ("mask", "color", "overlay")]
    for path, arr in zip(paths, (idx, color, overlay)):
        tmp = path + ".tmp.png"
        Image.fromarray(arr).save(tmp)
        os.replace(tmp, path)
    return paths


def geo_tags(path: str) -> dict[int, Any]:
    if not path.lower().endswith((".tif", ".tiff")):
        return {}
    try:
        with Image.open(path) as im:
            tags = getattr(im, "tag_v2", {})
            return {t: tags[t] for t in GEO_TAGS if t in tags}
    except Exception:
        return {}


def infer_file(task: Task, model: torch.nn.Module, path: str, out_dir: str, palette,
               device: torch.device, tta: bool = False) -> list[str]:
    image = read_image(path)
    name = os.path.splitext(os.path.basename(path))[0]
    x = image[None].to(device)
    with torch.no_grad():
        logits = predict_logits(task, model, x, tta)
        del x
        # class indices straight into uint8, a block of rows at a time: a whole-image int64
        # argmax is 8 bytes a pixel (840 MB at 10240^2) on top of the logits
        H = logits.shape[-2]
        pred = torch.empty(logits.shape[-2:], dtype=torch.uint8 if task.num_classes <= 256
                           else torch.int64)
        step = max(1, (1 << 22) // max(1, logits.shape[-1]))
        for r in range(0, H, step):
            pred[r:r + step] = logits[0, :, r:r + step].argmax(0).cpu()
    del logits
    written = write_mask_files(out_dir, name, pred, image, palette)
    tags = geo_tags(path)
    if tags:
        info = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, value in tags.items():
            info[tag] = value
        tif = os.path.join(out_dir, f"{name}_mask.tif")
        tmp = tif + ".tmp.tif"
        Image.fromarray(pred.to(torch.uint8).numpy()).save(tmp, tiffinfo=info)
        os.replace(tmp, tif)
        written.append(tif)
    return written


def is_done(out_dir: str, path: str) -> bool:
    name = os.path.splitext(os.path.basename(path))[0]
    if geo_tags(path) and not os.path.exists(os.path.join(out_dir, f"{name}_mask.tif")):
        return False  # stopped between the PNGs and the GeoTIFF mask: not done
    return all(os.path.exists(os.path.join(out_dir, f"{name}_{k}.png"))
               for k in ("mask", "color", "overlay"))
