"""``python -m zoo.fctl.make_refine_data``: crude masks for training the CSRN.

    python -m zoo.fctl.make_refine_data --config fctl_deepglobe_refine [--splits train val]
        [--data-root DIR] [--local-checkpoint FILE] [--out DIR] [--set key=value ...]

Runs the early-stopped local model of the refine config over every image of the requested
splits and writes one ``<out>/<split>/<id>.npz`` per image, atomically and resumably. Why
the masks come from an early-stopped model, what each file holds and how the folder's
manifest is checked: :mod:`zoo.fctl.refine_masks`. This module is the command: arguments,
the run, and one error handler.
"""

from __future__ import annotations

import argparse
import os

from torch import Tensor

from zoo.cli.errors import report
from zoo.cli.overrides import flag_overrides
from zoo.config import load_config
from zoo.core.errors import CheckpointError, ConfigError, ZooError
from zoo.core.runtime import pick_device
from zoo.data.registry import build_dataset
from zoo.fctl.local_model import checkpoint_fingerprint, load_local_model
from zoo.fctl.pipeline import FCtLSegmenter
from zoo.fctl.refine_masks import write_refine_masks

PROG = "zoo.fctl.make_refine_data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.fctl.make_refine_data",
                                description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="the refine config (family fctl_refine)")
    p.add_argument("--splits", nargs="+", default=["train", "val"],
                   choices=("train", "val", "test"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--local-checkpoint", default=None,
                   help="override refine.local_checkpoint (the early local model)")
    p.add_argument("--out", default=None, help="override refine.masks (the output folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, flag_overrides(
            args.overrides, **{"data.root": args.data_root,
                               "refine.local_checkpoint": args.local_checkpoint,
                               "refine.masks": args.out}))
        ref = cfg["refine"]
        for key in ("masks", "local_config", "local_checkpoint"):
            if not ref[key]:
                raise ConfigError(f"refine.{key} is not set in {args.config}; pass --set "
                                  f"refine.{key}=...")
        local_cfg = load_config(ref["local_config"])
        device = pick_device(cfg["train"]["device"])
        if not os.path.isfile(ref["local_checkpoint"]):
            raise CheckpointError(f"refine.local_checkpoint: no file {ref['local_checkpoint']} "
                                  f"(train {ref['local_config']} first).")
        f = cfg["fctl"]
        scales = list(local_cfg["fctl"]["contexts"])
        segmenter: list[FCtLSegmenter] = []

        def segment(image: Tensor) -> Tensor:
            # built on first use: a rerun that only skips finished images loads no model
            if not segmenter:
                model = load_local_model(local_cfg, ref["local_checkpoint"], device)
                segmenter.append(FCtLSegmenter(
                    model, patch_size=f["patch_size"], min_overlap=f["min_overlap"],
                    batch_size=f["sub_batch"], context_scales=scales or None, merge="mean",
                    out_device="cpu"))
            return segmenter[0](image)

        source = {"local_config": ref["local_config"],
                  "local_model": dict(local_cfg["model"]["kwargs"]),
                  "local_checkpoint_fingerprint": checkpoint_fingerprint(ref["local_checkpoint"]),
                  "patch_size": f["patch_size"], "min_overlap": f["min_overlap"],
                  "contexts": scales, "dataset": cfg["data"]["dataset"]}
        for split in args.splits:
            # the source images of the config's dataset, not the refine masks
            dataset = build_dataset(cfg, split)
            counts = write_refine_masks(segment, dataset, ref["masks"], split, source,
                                        device=device, progress=args.progress)
            print(f"{split}: wrote {counts['written']}, skipped {counts['skipped']} (already "
                  f"done) -> {os.path.join(ref['masks'], split)}")
    except (ZooError, ValueError, OSError) as exc:  # write_refine_masks refuses with ValueError
        return report(PROG, exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
