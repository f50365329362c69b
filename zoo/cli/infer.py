"""``python -m zoo.infer``: segment image files of any size with a trained checkpoint.

    python -m zoo.infer --config NAME|PATH --checkpoint FILE INPUT [INPUT ...] --out DIR
                        [--outputs auto|mask,color,overlay,tif,probs] [--tta]
                        [--set key=value ...] [--overwrite]
    python -m zoo.infer --engine onnxruntime --model FILE.onnx INPUT [INPUT ...] --out DIR
                        [--config NAME|PATH] [...the same options]
    torchrun --nproc_per_node=K -m zoo.infer ...   (the same, on K processes)

INPUT is an image file, a folder (its image files) or a glob pattern ("tiles/*.tif").
Outputs per image ``<name>``: ``tif`` = ``<name>_mask.tif``, a tiled (512), DEFLATE-compressed
Cloud-Optimized GeoTIFF with the input's CRS, transform and nodata, a colour table and the
dataset's mask values (0/255 for Inria, class indices otherwise); ``probs`` =
``<name>_probs.tif``, one uint8 band per class (255·probability); the PNGs ``mask`` (class
indices), ``color`` (the palette) and ``overlay`` (image and colours half and half). The
default ``auto`` writes ``tif`` for a georeferenced input and the three PNGs otherwise.

Memory: an image whose whole-image inference fits ``eval.max_memory`` GiB (default 5; the
family's estimate) is read whole; a larger one is streamed from the file window by window
(GeoTIFF/COG/BigTIFF through rasterio: ``pip install "uhrops[geo]"``), one row of windows and
one band of rows in memory whatever its size. Progress is kept per band of 1024 rows next to
the outputs (``.<name>.parts/``): a run killed at any moment and started again continues
where it stopped and writes the same files. Under torchrun (RANK / WORLD_SIZE) a folder's
images are shared out between the processes, or, with fewer images than processes, the
bands of each image; the files are the same as with one process. Images whose outputs exist
are skipped; ``--overwrite`` recomputes them. ``--tta`` averages 8 flips/rotations (without
the flag, ``eval.tta`` decides; it needs the image in memory).

``--engine onnxruntime --model model.onnx`` (a ``python -m zoo.export`` file) runs the same
pipeline with ONNX Runtime as the per-window call (:mod:`zoo.engine.onnx_engine`);
``--config`` and ``--checkpoint`` are then optional (the config recorded in the file is used).
"""

from __future__ import annotations

import argparse
import glob
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
from zoo.data.base import IMAGE_EXTENSIONS
from zoo.data.registry import dataset_rules, palette_for
from zoo.engine.families import make_task
from zoo.engine.predictions import infer_file, is_done
from zoo.engine.segment_file import OUTPUTS, Settings, settings_signature

PROG = "zoo.infer"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None,
                   help="config name or path (required with --engine pytorch)")
    p.add_argument("--checkpoint", default=None, help="checkpoint (--engine pytorch)")
    p.add_argument("--engine", choices=("pytorch", "onnxruntime"), default="pytorch",
                   help="what runs the network on each window (default: pytorch)")
    p.add_argument("--model", default=None, help="exported .onnx file (--engine onnxruntime)")
    p.add_argument("images", nargs="+",
                   help="image files (JPEG, PNG, TIFF/GeoTIFF/COG...), folders, glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--outputs", default="auto",
                   help=f"comma-separated subset of {','.join(OUTPUTS)}, or auto (default: "
                        "tif for georeferenced inputs, mask,color,overlay otherwise)")
    p.add_argument("--tta", action="store_true", default=None,
                   help="8-way flip/rotation test-time augmentation (default: eval.tta)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--overwrite", action="store_true", help="recompute images already done")
    return p.parse_args(argv)


def parse_outputs(text: str) -> tuple[str, ...] | None:
    if text.strip() == "auto":
        return None
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in OUTPUTS]
    if bad or not kinds:
        raise ValueError(f"--outputs: unknown output(s) {bad or [text]}; choose from "
                         f"{', '.join(OUTPUTS)} (comma-separated), or auto.")
    return kinds


def expand_inputs(items: list[str]) -> tuple[list[str], list[str]]:
    """(image files, inputs that matched nothing): folders give their image files (sorted),
    patterns their matches (sorted); files are kept in the order given, once each."""
    files, missing = [], []
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS)
                           and os.path.isfile(os.path.join(item, f)))
        elif os.path.isfile(item):
            found = [item]
        elif glob.has_magic(item):
            found = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
        else:
            found = []
        if not found:
            missing.append(item)
        files += [f for f in found if f not in files]
    return files, missing


def _world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) otherwise."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, world) if world > 1 and 0 <= rank < world else (0, 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = flag_overrides(args.overrides, **{"eval.tta": "true" if args.tta else None})
    try:
        outputs = parse_outputs(args.outputs)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
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
        try:
            encoding = dataset_rules(cfg).mask_encoding
        except ZooError:
            encoding = "index"
    except (ZooError, MissingExtraError) as exc:
        return report(PROG, exc)
    images, missing = expand_inputs(args.images)
    if missing:
        print(f"{PROG}: error: no image file at: {', '.join(missing)}", file=sys.stderr)
        return 2
    rank, world = _world()
    os.makedirs(args.out, exist_ok=True)
    if rank == 0:
        remove_stale_temporaries(args.out)  # half-written files of an interrupted run
    todo = [f for f in images if args.overwrite or not is_done(args.out, f, outputs)]
    if len(todo) < len(images) and rank == 0:
        print(f"skipping {len(images) - len(todo)} image(s) already segmented in {args.out}")
    share_images = world > 1 and len(todo) >= world
    if share_images:  # whole images per process; otherwise every process takes bands
        todo = todo[rank::world]
    base = Settings(palette=palette, mask_encoding=encoding, outputs=outputs,
                    tta=bool(cfg["eval"]["tta"]),
                    rank=0 if share_images else rank, world=1 if share_images else world,
                    signature=settings_signature(args.checkpoint or args.model, cfg),
                    # the others' bands take as long as ours: wait for them generously
                    wait_timeout_s=max(3600.0, float(cfg["train"]["dist_timeout"]) * 6))
    speaks = rank == 0 or share_images
    failures = 0
    for path in todo:
        share = 1 if share_images else world  # a rank's bar counts its own bands
        bar = Progress(_pixels(path) // share, desc=os.path.basename(path), every=1,
                       unit="pixels", enabled=speaks)
        base.progress = lambda px, msg, bar=bar: bar.update(n=px)
        try:
            written = infer_file(task, model, path, args.out, palette, device,
                                 base.tta, settings=base)
            if written:
                print(f"{path} -> {', '.join(os.path.basename(w) for w in written)}")
        except (OSError, ValueError) as exc:  # an undecodable file is reported, the others go on
            failures += 1
            print(f"{PROG}: error: {exc}", file=sys.stderr)
        finally:
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


def _pixels(path: str) -> int:
    """The band progress total: the image's pixels (0 when it cannot be opened: the error
    comes from the inference itself)."""
    from PIL import Image

    from zoo.engine.rasters import PIL_SUFFIXES, open_image

    try:
        if path.lower().endswith(PIL_SUFFIXES):
            with Image.open(path) as im:  # the header only
                return im.size[0] * im.size[1]
        with open_image(path) as src:
            return src.image_size[0] * src.image_size[1]
    except Exception:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
