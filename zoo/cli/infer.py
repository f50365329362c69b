"""``python -m zoo.infer``: segment image files of any size with a trained checkpoint.

    python -m zoo.infer --config NAME|PATH --checkpoint FILE IMAGE [IMAGE ...] --out DIR
                        [--tta] [--set key=value ...] [--overwrite]
    python -m zoo.infer --engine onnxruntime --model FILE.onnx IMAGE [IMAGE ...] --out DIR
                        [--config NAME|PATH] [--tta] [--set key=value ...] [--overwrite]

For each image ``<name>.<ext>`` it writes ``<name>_mask.png`` (class indices),
``<name>_color.png`` (the dataset palette) and ``<name>_overlay.png`` (image and colours
half and half). A GeoTIFF input also gets ``<name>_mask.tif`` carrying the input's
georeferencing tags (model pixel scale, tie points, GeoKey directory), so GIS tools place the
mask where the image is. Images larger than ``eval.window`` are streamed through
``uhrops.sliding_window`` (WSDNet) or the patch pipeline (FCtL), so memory stays at one
window batch plus the output. Images whose three outputs already exist are skipped (a folder
run that was interrupted resumes where it stopped); ``--overwrite`` recomputes them.
``--tta`` averages 8 flips/rotations (without the flag, ``eval.tta`` of the config decides).

``--engine onnxruntime --model model.onnx`` (a ``python -m zoo.export`` file) runs the same
pipeline with ONNX Runtime as the per-window call (:mod:`zoo.engine.onnx_engine`);
``--config`` and ``--checkpoint`` are then optional (the config recorded in the file is used).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from uhrops.export import MissingExtraError
from zoo.cli.errors import report
from zoo.cli.overrides import flag_overrides
from zoo.config import load_config
from zoo.core.atomic import remove_stale_temporaries
from zoo.core.errors import ConfigError, ZooError
from zoo.core.progress import Progress
from zoo.core.runtime import pick_device
from zoo.data.registry import palette_for
from zoo.engine.families import make_task
from zoo.engine.predictions import infer_file, is_done

PROG = "zoo.infer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="config name or path (required with --engine pytorch)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (--engine pytorch)")
    p.add_argument("--engine", choices=("pytorch", "onnxruntime"), default="pytorch",
                   help="what runs the network on each window (default: pytorch)")
    p.add_argument("--model", default=None, help="exported .onnx file (--engine onnxruntime)")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, TIFF/GeoTIFF)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tta", action="store_true", default=None,
                   help="8-way flip/rotation test-time augmentation (default: eval.tta)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--overwrite", action="store_true", help="recompute images already done")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = flag_overrides(args.overrides, **{"eval.tta": "true" if args.tta else None})
    try:
        if args.engine == "onnxruntime":
            cfg, model, device = _onnx_engine(args, overrides)
        else:
            if args.config is None or args.checkpoint is None:
                raise ConfigError("--engine pytorch needs --config and --checkpoint (or use "
                                  "--engine onnxruntime --model FILE).")
            if args.model is not None:
                raise ConfigError("--model is the ONNX file of --engine onnxruntime. Fix: add "
                                  "--engine onnxruntime, or pass --checkpoint.")
            cfg = load_config(args.config, overrides)
            device = pick_device(cfg["train"]["device"])
            model = None
        task = make_task(cfg)
        if model is None:
            model = task.build_model().to(device).eval()
            # through the family: FCtL also reads the authors' released .pth files
            task.load_weights(model, args.checkpoint)
        palette = palette_for(cfg)
    except (ZooError, MissingExtraError) as exc:
        return report(PROG, exc)
    missing = [f for f in args.images if not os.path.isfile(f)]
    if missing:
        print(f"{PROG}: error: image file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    remove_stale_temporaries(args.out)  # half-written files of an interrupted run
    todo = [f for f in args.images if args.overwrite or not is_done(args.out, f)]
    if len(todo) < len(args.images):
        print(f"skipping {len(args.images) - len(todo)} image(s) already segmented in {args.out}")
    bar = Progress(len(todo), desc="infer", every=0, unit="images")
    failures = 0
    for path in todo:
        try:
            written = infer_file(task, model, path, args.out, palette, device,
                                 bool(cfg["eval"]["tta"]))
            print(f"{path} -> {', '.join(os.path.basename(w) for w in written)}")
        except OSError as exc:  # an undecodable file is reported, the others go on
            failures += 1
            print(f"{PROG}: error: {exc}", file=sys.stderr)
        bar.update()
    bar.close()
    return 1 if failures else 0


def _onnx_engine(args: argparse.Namespace, overrides: list[str]):
    """(config, ONNX Runtime stand-in model, CPU device) for --engine onnxruntime."""
    from zoo.config import apply_overrides
    from zoo.engine.onnx_engine import load_engine

    if args.model is None:
        raise ConfigError("--engine onnxruntime needs --model FILE (a python -m zoo.export "
                          "file).")
    if args.checkpoint is not None:
        raise ConfigError("--checkpoint applies to --engine pytorch; the .onnx file holds the "
                          "weights. Fix: drop --checkpoint.")
    cfg = load_config(args.config) if args.config is not None else None
    model, cfg = load_engine(args.model, cfg)
    apply_overrides(cfg, overrides)
    # the stand-in takes and returns CPU tensors; ONNX Runtime runs on its own providers
    return cfg, model, torch.device("cpu")


if __name__ == "__main__":
    raise SystemExit(main())
