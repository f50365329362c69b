"""``python -m zoo.evaluate``: the papers' metrics of a checkpoint on a split, and its speed.

    python -m zoo.evaluate --config NAME|PATH --checkpoint FILE [--split val|test] [--tta]
                           [--data-root DIR] [--set key=value ...] [--speed] [--json FILE]

Metrics are accumulated in one confusion matrix over the split (``zoo.metrics``): mIoU and F1
over the classes the dataset's paper averages, pixel accuracy over the pixels of the classes it
counts (DeepGlobe's unknown pixels are left out, as from the mean; the summary line names what
each metric leaves out), and a per-class table. ``--tta`` averages the softmax over the 8
flips/rotations (without the flag, ``eval.tta`` of the config decides). ``data.val_limit``
(when not 0) caps the number of images. ``--speed`` times whole-image inference with the
protocol of the WSDNet/ISDNet papers: batch 1, warm-up, synchronised timing, median FPS, and
peak memory (``torch.cuda.max_memory_allocated`` on a GPU; peak RSS on the CPU). Both run an
eval copy of the model prepared as ``eval.fold_bn``, ``eval.channels_last`` and
``eval.compile`` say (``zoo.engine.inference.prepare_for_eval``).
"""

from __future__ import annotations

import argparse
import json

from zoo.cli.errors import report
from zoo.cli.overrides import flag_overrides
from zoo.config import load_config
from zoo.core.atomic import atomic_write_text
from zoo.core.errors import ZooError
from zoo.core.runtime import pick_device
from zoo.engine.evaluator import evaluate_model, measure_speed
from zoo.engine.families import make_task
from zoo.metrics import class_mark, metrics_line

PROG = "zoo.evaluate"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.evaluate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default=None, choices=("val", "test"),
                   help="default: eval.split of the config")
    p.add_argument("--data-root", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--tta", action="store_true", default=None,
                   help="8-way flip/rotation test-time augmentation (default: eval.tta)")
    p.add_argument("--speed", action="store_true", help="also time batch-1 inference")
    p.add_argument("--speed-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--json", default=None, help="write the metrics here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, flag_overrides(
            args.overrides, **{"data.root": args.data_root, "eval.split": args.split,
                               "eval.tta": "true" if args.tta else None}))
        device = pick_device(cfg["train"]["device"])
        task = make_task(cfg)
        model = task.build_model().to(device)
        # through the family: FCtL also reads the authors' released .pth files
        task.load_weights(model, args.checkpoint)
        split = cfg["eval"]["split"]
        dataset = task.build_dataset(split)
        result = evaluate_model(task, model, dataset, cfg, device,
                                limit=int(cfg["data"]["val_limit"]))
        if args.speed:
            size = tuple(args.speed_size) if args.speed_size else \
                tuple(dataset[0]["image"].shape[-2:])
            result["speed"] = measure_speed(task, model, size, device)
    except ZooError as exc:
        return report(PROG, exc)
    names = result["class_names"]
    print(f"{split}: {result['images']} images  {metrics_line(result)}")
    print(f"{'class':>14}  {'IoU':>7}  {'F1':>7}")
    for k, (iou, f1) in enumerate(zip(result["iou"], result["f1_per_class"])):
        mark = class_mark(result, k)
        label = names[k] if k < len(names) else str(k)
        print(f"{label:>14}  {iou:7.4f}  {f1:7.4f}" + (f"  {mark}" if mark else ""))
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
