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
``<name>_probs.tif``, one uint8 band per class (255·probability; no nodata value, since 0 is
a probability: pixels without data are marked by an internal mask band); the PNGs ``mask``
(the same mask values as the GeoTIFF), ``color`` (the palette) and ``overlay`` (image and
colours half and half). The default ``auto`` writes ``tif`` for a georeferenced input
(transform, CRS or ground control points, which are carried over) and the three PNGs
otherwise. Bands are read in their declared colour order (red, green, blue), palette images
as their colours, and the valid pixels come from the input's mask over all its bands.

Outputs are named after the input's file name without its suffix, so two inputs with the
same name (``A/tile.tif`` and ``B/tile.tif``, ``x.png`` and ``x.tif``) are refused before any
work, naming both: run them with different ``--out`` folders.

Memory: an image whose whole-image inference fits ``eval.max_memory`` GiB (default 5; the
family's estimate) is read whole; a larger one is streamed from the file window by window
(GeoTIFF/COG/BigTIFF through rasterio: ``pip install "uhrops[geo]"``), one row of windows and
one band of rows in memory whatever its size. Progress is kept per band of 1024 rows next to
the outputs (``.<name>.parts/``): a run killed at any moment and started again continues
where it stopped (saying so, its progress starting from the work on disk) and writes the
same files; a damaged band file is recomputed. Under torchrun (RANK / WORLD_SIZE) the
processes first check in with each other (a missing one, or one with another WORLD_SIZE, is
an error after ``train.dist_timeout`` seconds, announced while waiting); the input list is
then partitioned (image i to rank i mod WORLD_SIZE) or, with fewer images than processes,
every image's bands are shared out; the files are the same as with one process. Images whose
outputs exist are skipped (inside each rank's share); ``--overwrite`` recomputes them. An
error in one image is reported and the others go on; the exit status is the number of
images that failed (0: all done; 2 also for bad arguments). ``--tta`` averages 8
flips/rotations (without the flag, ``eval.tta`` decides; it needs the image in memory).

With ``--engine pytorch`` the windows go through an eval copy of the model prepared as
``eval.fold_bn``, ``eval.channels_last`` and ``eval.compile`` say
(``zoo.engine.inference.prepare_for_eval``: batch norms folded, channels_last by default).
The images run with freed host memory kept for the next one (``eval.reuse_freed_memory``,
``zoo.core.runtime.reuse_freed_memory``), which spares the kernel's page faults.

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
from zoo.engine.inference import eval_allocator, eval_options, prepare_for_eval
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


def duplicate_names(images: list[str]) -> list[tuple[str, str]]:
    """Pairs of inputs that would write the same output files (``<name>_mask.tif`` ... are
    named by the file name without its suffix: ``A/tile.tif`` and ``B/tile.tif``, or
    ``x.png`` and ``x.tif``)."""
    first: dict[str, str] = {}
    pairs = []
    for f in images:
        stem = os.path.splitext(os.path.basename(f))[0]
        if stem in first:
            pairs.append((first[stem], f))
        else:
            first.setdefault(stem, f)
    return pairs


def check_out_dir(out: str) -> str | None:
    """None when ``out`` is (or can be made) a writable folder, else the error message."""
    try:
        os.makedirs(out, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return (f"--out {out}: a file is in the way (the path, or a folder above it, is a "
                f"file). Fix: give a folder path, e.g. --out {out}.d.")
    except OSError as exc:
        return (f"--out {out}: cannot create the folder ({exc.strerror}). Fix: choose a "
                f"folder you can write to, or create it with the right permissions.")
    if not os.access(out, os.W_OK | os.X_OK):
        return (f"--out {out}: the folder is not writable by this user. Fix: choose a folder "
                f"you can write to (or chmod u+w {out}).")
    return None


def share_of(images: list[str], rank: int, world: int) -> tuple[list[str], bool]:
    """(this rank's images, whether images are shared out): with at least ``world`` images a
    fixed partition of the whole input list (image i goes to rank i % world) that no rank's
    timing can change (images already done are skipped afterwards, inside a rank's own
    share); with fewer, every rank takes all images and they share out each image's bands."""
    if world > 1 and len(images) >= world:
        return images[rank::world], True
    return list(images), False


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every image was segmented, 2 for bad arguments, otherwise the
    number of images that failed (at most 125; each is reported and the others go on)."""
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
            model = prepare_for_eval(model, **eval_options(cfg))
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
    # Refused rather than renamed: a GIS user finds a tile's mask by the tile's name
    # (tile.tif -> tile_mask.tif); an invented "tile-2" would have to be mapped back by hand.
    clashes = duplicate_names(images)
    if clashes:
        listed = "; ".join(f"{a} and {b}" for a, b in clashes[:5])
        print(f"{PROG}: error: {len(clashes)} input(s) would write the same output files "
              f"(outputs are named after the file name without its suffix): {listed}. Fix: "
              f"run each folder (or suffix) with its own --out, or rename one of each pair.",
              file=sys.stderr)
        return 2
    bad_out = check_out_dir(args.out)
    if bad_out:
        print(f"{PROG}: error: {bad_out}", file=sys.stderr)
        return 2
    rank, world = _world()
    timeout_s = float(cfg["train"]["dist_timeout"])
    if world > 1:
        from zoo.core.distributed import RanksMissingError, wait_for_ranks

        try:
            wait_for_ranks(rank, world, timeout_s, PROG)
        except RanksMissingError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    if rank == 0:
        remove_stale_temporaries(args.out)  # half-written files of an interrupted run
    mine, share_images = share_of(images, rank, world)
    todo = [f for f in mine if args.overwrite or not is_done(args.out, f, outputs)]
    if len(todo) < len(mine) and (rank == 0 or share_images):
        print(f"skipping {len(mine) - len(todo)} image(s) already segmented in {args.out}"
              + (f" (rank {rank})" if share_images else ""))
    base = Settings(palette=palette, mask_encoding=encoding, outputs=outputs,
                    tta=bool(cfg["eval"]["tta"]),
                    rank=0 if share_images else rank, world=1 if share_images else world,
                    signature=settings_signature(args.checkpoint or args.model, cfg),
                    # a wait fails after this long without a new band from the others
                    wait_timeout_s=timeout_s)
    speaks = rank == 0 or share_images
    failed = []
    # freed host memory is kept for the next image (eval.reuse_freed_memory)
    with eval_allocator(cfg):
        for path in todo:
            bars: list[Progress] = []

            def start(done_px: int, total_px: int, resumed: bool, path=path, bars=bars) -> None:
                # a rank's bar counts its own bands, from the work already on disk
                desc = os.path.basename(path) + (" (resuming)" if resumed else "")
                if resumed and speaks:
                    print(f"{PROG}: {path}: resuming, {done_px / 1e6:.1f} of {total_px / 1e6:.1f} "
                          f"Mpx already on disk", file=sys.stderr)
                bars.append(Progress(total_px, initial=done_px, desc=desc, every=1,
                                     unit="pixels", enabled=speaks))

            base.start = start
            base.progress = lambda px, msg, bars=bars: bars[-1].update(n=px) if bars else None
            try:
                written = infer_file(task, model, path, args.out, palette, device,
                                     base.tta, settings=base)
                if written:
                    print(f"{path} -> {', '.join(os.path.basename(w) for w in written)}")
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one image's error never stops the others
                failed.append(path)
                print(f"{PROG}: error: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            finally:
                for bar in bars:
                    bar.close()
    if failed:
        print(f"{PROG}: {len(failed)} of {len(todo)} image(s) failed"
              + (f" on rank {rank}" if world > 1 else "") + f": {', '.join(failed[:10])}"
              + (" ..." if len(failed) > 10 else "") + ". Fix: see the errors above, then run "
              "the same command again (finished images and bands are kept).", file=sys.stderr)
    return min(len(failed), 125)


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
