"""``python -m zoo.infer``: segment image files of any size with a trained checkpoint.

    python -m zoo.infer --config NAME|PATH --checkpoint FILE IMAGE [IMAGE ...] --out DIR
                        [--tta] [--set key=value ...] [--overwrite]

For each image ``<name>.<ext>`` it writes ``<name>_mask.png`` (class indices),
``<name>_color.png`` (the dataset palette) and ``<name>_overlay.png`` (image and colours
half and half). A GeoTIFF input also gets ``<name>_mask.tif`` carrying the input's
georeferencing tags (model pixel scale, tie points, GeoKey directory), so GIS tools place the
mask where the image is. Images larger than ``eval.window`` are streamed through
``uhrops.sliding_window`` (WSDNet) or the patch pipeline (FCtL), so memory stays at one
window batch plus the output. Images whose three outputs already exist are skipped (a folder
run that was interrupted resumes where it stopped); ``--overwrite`` recomputes them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping

import torch

from zoo.config import ConfigError, load_config
from zoo.io import CheckpointError, load_checkpoint, remove_stale_temporaries
from zoo.tasks import Task, make_task

GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)  # GeoTIFF tags (scale, tiepoint, ...)


def _palette(cfg: Mapping[str, Any], num_classes: int):
    kind = cfg["data"]["dataset"]
    try:
        if kind in ("deepglobe", "synthetic"):
            from zoo.data.deepglobe import PALETTE

            if num_classes <= len(PALETTE) and num_classes != 2:
                return PALETTE[:num_classes]
        if kind == "urur":
            from zoo.data.urur import PALETTE

            return PALETTE
    except ImportError:
        pass
    from zoo.data.folder import default_palette

    if num_classes == 2:
        return ((0, 0, 0), (255, 255, 255))
    return default_palette(num_classes)


def _geo_tags(path: str) -> dict[int, Any]:
    if not path.lower().endswith((".tif", ".tiff")):
        return {}
    from PIL import Image

    try:
        with Image.open(path) as im:
            tags = getattr(im, "tag_v2", {})
            return {t: tags[t] for t in GEO_TAGS if t in tags}
    except Exception:
        return {}


def infer_file(task: Task, model: torch.nn.Module, path: str, out_dir: str, palette,
               device: torch.device, tta: bool = False) -> list[str]:
    from PIL import Image

    from zoo.data.base import read_image
    from zoo.evaluate import _tta_logits, write_mask_files

    image = read_image(path)
    name = os.path.splitext(os.path.basename(path))[0]
    x = image[None].to(device)
    with torch.no_grad():
        logits = _tta_logits(task, model, x) if tta else task.predict(model, x)
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
    tags = _geo_tags(path)
    if tags:
        from PIL import TiffImagePlugin

        info = TiffImagePlugin.ImageFileDirectory_v2()
        for tag, value in tags.items():
            info[tag] = value
        tif = os.path.join(out_dir, f"{name}_mask.tif")
        tmp = tif + ".tmp.tif"
        Image.fromarray(pred.to(torch.uint8).numpy()).save(tmp, tiffinfo=info)
        os.replace(tmp, tif)
        written.append(tif)
    return written


def _done(out_dir: str, path: str) -> bool:
    name = os.path.splitext(os.path.basename(path))[0]
    if _geo_tags(path) and not os.path.exists(os.path.join(out_dir, f"{name}_mask.tif")):
        return False  # stopped between the PNGs and the GeoTIFF mask: not done
    return all(os.path.exists(os.path.join(out_dir, f"{name}_{k}.png"))
               for k in ("mask", "color", "overlay"))


def main(argv: list[str] | None = None) -> int:
    from zoo.backbones._weights import WeightsError
    from zoo.train import pick_device

    p = argparse.ArgumentParser(prog="python -m zoo.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, TIFF/GeoTIFF)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tta", action="store_true", help="8-way flip/rotation test-time augmentation")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--overwrite", action="store_true", help="recompute images already done")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        device = pick_device(cfg["train"]["device"])
        task = make_task(cfg)
        model = task.build_model().to(device).eval()
        load_checkpoint(args.checkpoint, model)
    except (ConfigError, CheckpointError, WeightsError) as exc:
        print(f"zoo.infer: error: {exc}", file=sys.stderr)
        return 2
    missing = [f for f in args.images if not os.path.isfile(f)]
    if missing:
        print(f"zoo.infer: error: image file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    palette = _palette(cfg, task.num_classes)
    os.makedirs(args.out, exist_ok=True)
    remove_stale_temporaries(args.out)  # half-written files of an interrupted run
    todo = [f for f in args.images if args.overwrite or not _done(args.out, f)]
    if len(todo) < len(args.images):
        print(f"skipping {len(args.images) - len(todo)} image(s) already segmented in {args.out}")
    try:
        from tqdm import tqdm

        items = tqdm(todo, desc="infer", disable=not sys.stderr.isatty())
    except ImportError:
        items = todo
    failures = 0
    for path in items:
        try:
            written = infer_file(task, model, path, args.out, palette, device, args.tta)
            print(f"{path} -> {', '.join(os.path.basename(w) for w in written)}")
        except OSError as exc:  # an undecodable file is reported, the others go on
            failures += 1
            print(f"zoo.infer: error: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
