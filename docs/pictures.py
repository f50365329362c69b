"""The documentation's pictures, drawn from the ops themselves (run by the Sphinx build; also
``python docs/pictures.py OUT_DIR``).

- ``haar_bands.png``: a synthetic aerial scene and its level-1 Haar bands (A, H, V, D);
- ``laplacian_levels.png``: the scene's Laplacian pyramid, each level at its own size;
- ``window_weights.png``: the weight of one window (constant, Gaussian, Hann) and the
  per-pixel weight sums over an image the window slides across.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

import uhrops
from zoo.data.synthetic import SyntheticUHR

GAP = 8


def _to_u8(x: torch.Tensor, symmetric: bool = False, from_zero: bool = False) -> np.ndarray:
    """(C, H, W) or (H, W) float -> uint8 HWC/HW, stretched to its own range (``symmetric``:
    0 is mid-grey; ``from_zero``: 0 is black and the maximum white)."""
    a = x.detach().double().numpy()
    if from_zero:
        a = a / max(float(a.max()), 1e-12)
    elif symmetric:
        m = max(float(np.abs(a).max()), 1e-12)
        a = (a / m + 1) / 2
    else:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / max(hi - lo, 1e-12)
    a = (a * 255).round().clip(0, 255).astype(np.uint8)
    return a.transpose(1, 2, 0) if a.ndim == 3 else a


def _row(images: list[Image.Image], labels: list[str]) -> Image.Image:
    """Images side by side on white, bottom-aligned, each with a label above."""
    h = max(im.height for im in images) + 20
    w = sum(im.width for im in images) + GAP * (len(images) + 1)
    canvas = Image.new("RGB", (w, h + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    x = GAP
    for im, label in zip(images, labels):
        canvas.paste(im.convert("RGB"), (x, h - im.height))
        draw.text((x, h - im.height - 16), label, fill=(0, 0, 0))
        x += im.width + GAP
    return canvas


def scene(size: int = 256) -> torch.Tensor:
    """A synthetic aerial scene (1, 3, size, size) in [0, 1]."""
    return SyntheticUHR(1, size=(size, size), seed=7)[0]["image"][None]


def haar_bands(path: str) -> None:
    x = scene()
    y = uhrops.haar_dwt2d(x)[0]  # (3, 4, 128, 128)
    lum = y.mean(0)  # the bands of the mean over colours
    ims = [Image.fromarray(_to_u8(x[0])).resize((128, 128), Image.BILINEAR)]
    ims += [Image.fromarray(_to_u8(lum[0]))]
    ims += [Image.fromarray(_to_u8(lum[b], symmetric=True)) for b in (1, 2, 3)]
    _row(ims, ["image (shown 1/2)", "A", "H", "V", "D"]).save(path)


def laplacian_levels(path: str) -> None:
    x = scene()
    levels = uhrops.laplacian_pyramid(x, 3)
    ims = [Image.fromarray(_to_u8(h[0].mean(0), symmetric=True)) for h in levels[:-1]]
    ims.append(Image.fromarray(_to_u8(levels[-1][0])))
    labels = [f"h{i} {tuple(h.shape[-2:])}" for i, h in enumerate(levels[:-1])]
    _row(ims, labels + [f"g3 {tuple(levels[-1].shape[-2:])}"]).save(path)


def window_weights(path: str) -> None:
    patch, image = 64, (160, 224)
    grid = uhrops.PatchGrid.from_stride(image, patch, 40)
    ims, labels = [], []
    windows = {"constant": torch.ones(patch, patch), "gaussian": uhrops.gaussian_weight(patch),
               "hann": uhrops.hann_weight(patch)}
    for name, w in windows.items():
        ims.append(Image.fromarray(_to_u8(w, from_zero=True)).resize((patch * 2, patch * 2), Image.NEAREST))
        total = uhrops.merge_patches(w.expand(len(grid), 1, patch, patch).contiguous(), grid,
                                     reduction="sum")[0, 0]
        ims.append(Image.fromarray(_to_u8(total, from_zero=True)))
        labels += [f"{name} window", "sum over the image"]
    _row(ims, labels).save(path)


def draw_all(out_dir: str) -> list[str]:
    """Draw every picture into ``out_dir``; the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    written = []
    for fn in (haar_bands, laplacian_levels, window_weights):
        path = os.path.join(out_dir, fn.__name__ + ".png")
        fn(path)
        written.append(path)
    return written


if __name__ == "__main__":
    print("\n".join(draw_all(sys.argv[1] if len(sys.argv) > 1 else "docs/_generated")))
