"""``python -m zoo.train``: train a zoo model, validate, keep the best checkpoint, evaluate.

    python -m zoo.train [--config NAME|PATH] [--data-root DIR] [--out DIR]
                        [--set key=value ...] [--resume]

With no arguments it runs the ``quickstart`` config: WSDNet on the built-in synthetic
dataset on the CPU, then an evaluation on held-out synthetic scenes, into
``runs/quickstart/``. Every run folder holds ``config.yaml`` (resolved), ``log.jsonl`` (one
JSON line per logged step), ``checkpoints/last.safetensors`` and ``best.safetensors`` (by
validation mIoU; each with a readable ``.json`` twin), ``metrics.json`` (the closing
evaluation: the ``eval.split`` split, ``test`` in the paper configs, scored with the best
checkpoint; both named there and in the last lines printed) and ``predictions/`` (colour masks and overlays of a few validation images).
Nothing is written before the config and the data are known good. Off a terminal a progress
line is printed every ``train.log_every`` iterations (iteration, loss terms, lr, it/s, ETA).

Distributed: ``torchrun --nproc_per_node=N -m zoo.train ...`` (NCCL on GPUs, gloo on CPUs);
``train.batch_size`` is the global batch, split evenly; BatchNorm statistics are synced, so
results do not depend on N. A process whose peers died or stopped answering for
``train.dist_timeout`` seconds (default 600) stops with one error line and exit status 3.
Resuming (``--resume``) continues from ``checkpoints/last`` exactly: samples, augmentation
and the learning rate depend only on the iteration, and the RNG, model and optimizer states
are restored (bit-identical on the CPU).
"""

from __future__ import annotations

import argparse
import os
import sys

from zoo.cli.errors import report
from zoo.cli.overrides import flag_overrides
from zoo.config import load_config
from zoo.core import distributed as dist_utils
from zoo.core.errors import CheckpointError, ConfigError, ZooError
from zoo.engine.trainer import train
from zoo.metrics import class_mark, metrics_line

PROG = "zoo.train"


def closing_summary(name: str, metrics: dict, out: str) -> str:
    """The lines printed after a run: which split and checkpoint were scored, the metrics,
    and the per-class IoU, the classes left out of the mean (and of the accuracy) marked on
    the metrics line and on their own lines."""
    names = metrics.get("class_names") or []
    lines = [f"{name}: {metrics.get('split_name', metrics.get('split', '?'))} split, "
             f"{metrics.get('images', '?')} images, {metrics.get('checkpoint', '?')} (iteration "
             f"{metrics.get('checkpoint_iteration', '?')}): {metrics_line(metrics)}  "
             f"({out}/metrics.json)"]
    for i, iou in enumerate(metrics.get("iou", [])):
        label = names[i] if i < len(names) else str(i)
        mark = class_mark(metrics, i)
        lines.append(f"  {label:>12}: IoU {iou:.4f}" + (f"  {mark}" if mark else ""))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zoo.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="quickstart",
                   help="shipped config name (see zoo/configs) or a YAML path")
    p.add_argument("--data-root", default=None, help="dataset folder (sets data.root)")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.iters=200 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    cfg = None
    try:
        cfg = load_config(args.config, flag_overrides(args.overrides,
                                                      **{"data.root": args.data_root}))
        out = args.out or os.path.join("runs", cfg["name"])
        metrics = train(cfg, out, resume=args.resume)
    except ZooError as exc:
        # bad input (a config, a checkpoint, a dataset or weights file): a message, no traceback
        code = report(PROG, exc)
        last = os.path.join(out or "", "checkpoints", "last.safetensors")
        if out and not isinstance(exc, (ConfigError, CheckpointError)) and os.path.exists(last):
            print(f"{PROG}: the checkpoints written so far are kept in {os.path.dirname(last)}; "
                  f"fix the cause and continue with --resume.", file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - only a lost peer is handled, the rest re-raised
        if not dist_utils.lost_peer(exc):
            raise
        rank, world = dist_utils.world()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        timeout = cfg["train"]["dist_timeout"] if cfg else float("nan")
        print(f"{PROG}: error: rank {rank} of {world}: the process group failed: another "
              f"process of the job died or did not answer within train.dist_timeout="
              f"{timeout:g} s ({type(exc).__name__}: {first[:300]}). The "
              f"job is stopped; see the other processes' logs, then restart all of them with "
              f"--resume.", file=sys.stderr)
        return 3
    if dist_utils.world()[0] == 0:
        print("\n" + closing_summary(cfg["name"], metrics, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
