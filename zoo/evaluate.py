"""``python -m zoo.evaluate``: the papers' metrics of a checkpoint on a split, and its speed.

    python -m zoo.evaluate --config NAME|PATH --checkpoint FILE [--split val|test] [--tta]
                           [--data-root DIR] [--set key=value ...] [--speed] [--json FILE]

Metrics are accumulated in one confusion matrix over the split (``zoo.metrics``): mIoU and
F1 over the classes the dataset's paper averages, overall pixel accuracy, and a per-class
table. ``--tta`` averages the softmax over the 8 flips/rotations. ``--speed`` times whole-image
inference with the protocol of the WSDNet/ISDNet papers: batch 1, warm-up, synchronised
timing, median FPS, and peak memory (``torch.cuda.max_memory_allocated`` on a GPU; peak RSS
on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Mapping

import numpy as np
import torch

from zoo.config import ConfigError, load_config
from zoo.io import CheckpointError, atomic_write_text, load_checkpoint
from zoo.tasks import Task, make_task


def _tta_logits(task: Task, model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the dihedral group (4 rotations x optional horizontal flip)."""
    total = None
    for flip in (False, True):
        x = image.flip(-1) if flip else image
        for k in range(4):
            p = torch.softmax(task.predict(model, x.rot90(k, (-2, -1))).float(), 1)
            p = p.rot90(-k, (-2, -1))
            p = p.flip(-1) if flip else p
            total = p if total is None else total + p
    return total / 8


@torch.no_grad()
def evaluate_model(task: Task, model: torch.nn.Module, dataset, cfg: Mapping[str, Any],
                   device: torch.device, limit: int = 0, progress: bool = True,
                   tta: bool | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (every image, or the first ``limit``)."""
    from zoo.metrics import SegmentationMetrics

    was_training = model.training
    model.eval()
    tta = cfg["eval"]["tta"] if tta is None else tta
    metrics = SegmentationMetrics.for_dataset(dataset, task.num_classes)
    n = len(dataset) if not limit else min(limit, len(dataset))
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="evaluate", dynamic_ncols=True,
                       disable=not sys.stderr.isatty())
        except ImportError:
            pass
    for i in range(n):
        sample = dataset[i]
        image = sample["image"][None].to(device)
        logits = _tta_logits(task, model, image) if tta else task.predict(model, image)
        metrics.update(logits.argmax(1).cpu(), sample["mask"][None])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.train(was_training)
    result = metrics.compute()
    result["class_names"] = list(getattr(dataset, "CLASSES", []))
    result["exclude_from_mean"] = list(metrics.exclude_from_mean)
    result["images"] = n
    return result


@torch.no_grad()
def save_predictions(task: Task, model: torch.nn.Module, dataset, cfg: Mapping[str, Any],
                     device: torch.device, folder: str, count: int = 4) -> list[str]:
    """Colour masks and overlays of the first ``count`` images of ``dataset``."""
    from PIL import Image

    from zoo.data.base import colorize

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
    from PIL import Image

    from zoo.data.base import colorize

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


def measure_speed(task: Task, model: torch.nn.Module, size: tuple[int, int],
                  device: torch.device, warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """Batch-1 whole-image inference speed at ``size``: median FPS and peak memory."""
    model.eval()
    # a refiner's input is a crude mask (one map per class), every other model's an RGB image
    x = torch.rand(1, int(getattr(task, "input_channels", 3)), *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        for _ in range(warmup):
            task.predict(model, x)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            task.predict(model, x)
            sync()
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out = {"size": list(size), "median_s": med, "fps": 1.0 / med, "runs": runs,
           "device": str(device)}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    from zoo.backbones._weights import WeightsError
    from zoo.data.base import DataFileError
    from zoo.data_factory import build_dataset
    from zoo.train import pick_device

    p = argparse.ArgumentParser(prog="python -m zoo.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default=None, choices=("val", "test"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--tta", action="store_true", help="8-way flip/rotation test-time augmentation")
    p.add_argument("--speed", action="store_true", help="also time batch-1 inference")
    p.add_argument("--speed-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--json", default=None, help="write the metrics here")
    args = p.parse_args(argv)
    try:
        overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
        cfg = load_config(args.config, overrides)
        device = pick_device(cfg["train"]["device"])
        task = make_task(cfg)
        model = task.build_model().to(device)
        load_checkpoint(args.checkpoint, model)
        split = args.split or cfg["eval"]["split"]
        dataset = build_dataset(cfg, split)
        result = evaluate_model(task, model, dataset, cfg, device, tta=args.tta)
        if args.speed:
            size = tuple(args.speed_size) if args.speed_size else tuple(dataset[0]["image"].shape[-2:])
            result["speed"] = measure_speed(task, model, size, device)
    except (ConfigError, CheckpointError, DataFileError, WeightsError, FileNotFoundError) as exc:
        print(f"zoo.evaluate: error: {exc}", file=sys.stderr)
        return 2
    names = result["class_names"]
    print(f"{split}: {result['images']} images  mIoU {result['miou']:.4f}  F1 {result['f1']:.4f}"
          f"  accuracy {result['accuracy']:.4f}")
    print(f"{'class':>14}  {'IoU':>7}  {'F1':>7}")
    for k, (iou, f1) in enumerate(zip(result["iou"], result["f1_per_class"])):
        mark = " (not in mean)" if k in result["exclude_from_mean"] else ""
        label = names[k] if k < len(names) else str(k)
        print(f"{label:>14}  {iou:7.4f}  {f1:7.4f}{mark}")
    if "speed" in result:
        s = result["speed"]
        mem = s.get("peak_mb", s.get("peak_rss_mb"))
        print(f"speed: {s['fps']:.3f} FPS at {s['size'][0]}x{s['size'][1]} on {s['device']}, "
              f"peak memory {mem:.0f} MB")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
