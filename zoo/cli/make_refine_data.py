"""``python -m zoo.fctl.make_refine_data``: crude masks for training the CSRN.

    python -m zoo.fctl.make_refine_data --config fctl_deepglobe_refine [--splits train val]
        [--data-root DIR] [--local-checkpoint FILE] [--out DIR] [--set key=value ...]

The FCtL paper trains its refinement network on masks of a local model stopped early (after
20 of 50 epochs), so that the refiner sees the errors of a model that has not memorised the
training images (§4.2; never released, ``reference/fctl.md`` §10). This command runs that
local model (``refine.local_config`` + ``refine.local_checkpoint`` of the refine config) over
every image of the requested splits of the config's dataset, on the grid of the config's
``fctl.patch_size`` / ``fctl.min_overlap``, averages the patch logits into the crude mask and
stores, per image, ``<out>/<split>/<id>.npz``:

- ``logp``: uint8 (n, H, W), the crude mask's log-probabilities quantised in steps of 1/16:
  ``q = clip(round(-16 · log_softmax(logits)), 0, 255)`` (probabilities down to e^-16 are
  kept; compressed, about 10 MB for a DeepGlobe image instead of 168 MB of float32 logits).
  The CSRN only sees softmax(logits) and adds its residual to logits, and log_softmax differs
  from the logits by one constant per pixel, so training on log-probabilities is training on
  the logits, up to the quantisation;
- ``mask``: the ground truth (uint8, or int16 beyond 255 classes).

Every file is written atomically (temporary file, then rename), and images whose file exists
are skipped, so an interrupted run continues where it stopped. ``<out>/manifest.json``
records the classes and the source (local model, checkpoint fingerprint, grid); a folder made
by another local model is refused. :class:`RefineMasks` reads a split back for the trainer
(``family: fctl_refine`` configs read ``refine.masks``).
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
