"""``python -m zoo.export``: export a trained model to ONNX for ONNX Runtime / TensorRT.

    python -m zoo.export --config NAME|PATH --checkpoint FILE --out model.onnx
                         [--size H W | --dynamic] [--opset N] [--set key=value ...]

WSDNet exports as the whole-image network (normalisation and padding inside); ``--dynamic``
makes batch, height and width dynamic (height and width multiples of 32; ``zoo.infer
--engine onnxruntime`` pads other sizes as the model does), ``--size H W`` fixes them
(default without either: ``eval.window``). FCtL exports its local model for one stage (patch
and context windows in, patch logits out) at ``fctl.patch_size`` with a dynamic batch. The
file's ``metadata_props`` record the normalisation, classes, palette, input names and the
resolved config, so ``python -m zoo.infer --engine onnxruntime --model model.onnx`` needs
nothing else. Needs ``pip install 'uhrops[onnx]'``.
"""

from __future__ import annotations

import argparse
import os

from zoo.cli.errors import report
from zoo.config import load_config
from zoo.core.errors import ZooError
from zoo.engine.families import make_task

PROG = "zoo.export"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="shipped config name or a YAML path")
    p.add_argument("--checkpoint", required=True, help="zoo.train checkpoint (or a released "
                   "FCtL .pth, as zoo.infer reads it)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                       help="fixed input size (WSDNet: any; FCtL: the square patch size)")
    shape.add_argument("--dynamic", action="store_true",
                       help="dynamic batch and (WSDNet) spatial size, multiples of 32")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from uhrops.export import MissingExtraError

    try:
        cfg = load_config(args.config, args.overrides)
        task = make_task(cfg)
        model = task.build_model()
        task.load_weights(model, args.checkpoint)
        from zoo.engine.onnx_export import export_onnx

        meta = export_onnx(task, model, args.out, checkpoint=args.checkpoint,
                           size=args.size, dynamic=args.dynamic, opset_version=args.opset)
    except (ZooError, MissingExtraError) as exc:
        return report(PROG, exc)
    size = meta["zoo.size"]
    print(f"{args.out}: {cfg['family']} ({os.path.getsize(args.out) / 2**20:.1f} MiB), inputs "
          f"{meta['zoo.inputs']}, size {'dynamic' if size == 'null' else size}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
