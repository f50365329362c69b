"""``python -m zoo.train``: train a zoo model, validate, keep the best checkpoint, evaluate.

    python -m zoo.train [--config NAME|PATH] [--data-root DIR] [--out DIR]
                        [--set key=value ...] [--resume]

With no arguments it runs the ``quickstart`` config: WSDNet on the built-in synthetic
dataset on the CPU, then an evaluation on held-out synthetic scenes, into
``runs/quickstart/``. Every run folder holds ``config.yaml`` (resolved), ``log.jsonl`` (one
JSON line per logged step), ``checkpoints/last.safetensors`` and ``best.safetensors`` (by
validation mIoU; each with a readable ``.json`` twin), ``metrics.json`` (the final
evaluation) and ``predictions/`` (colour masks and overlays of a few validation images).

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
import contextlib
import json
import os
import random
import sys
import time
from typing import Any, Mapping

import numpy as np
import torch

from zoo import distributed as dist_utils
from zoo.config import ConfigError, config_hash, dump_config, load_config
from zoo.data_factory import build_dataset
from zoo.io import CheckpointError, atomic_write_text, load_checkpoint, \
    remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from zoo.samples import AugmentedCrops, CounterSampler, poly_lr
from zoo.tasks import Task, make_task


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is visible; use "
                          f"--set train.device=cpu.")
    return dev


def make_autocast(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def build_optimizer(model: torch.nn.Module, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                               weight_decay=train["weight_decay"])
    cls = torch.optim.Adam if train["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=train["lr"], weight_decay=train["weight_decay"])


class JsonlLog:
    """Append-only JSON-lines log; on resume, lines past the checkpoint's iteration go."""

    def __init__(self, path: str, enabled: bool, resume_iter: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_iter is not None and os.path.exists(path):
            kept = []
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        if json.loads(line).get("iter", 0) <= resume_iter:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except json.JSONDecodeError:
                        break  # a torn last line from a killed process
            atomic_write_text(path, "".join(kept))
        elif resume_iter is None:
            atomic_write_text(path, "")

    def write(self, record: Mapping[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


def _progress(total: int, initial: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return None
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


class Interrupted(RuntimeError):
    """Raised by ``train(stop_after=k)`` right after iteration k's checkpoint (tests use it to
    stand for a process killed there)."""


def train(cfg: dict[str, Any], out: str, resume: bool = False,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run the training described by ``cfg`` into folder ``out``; returns the final metrics."""
    from zoo.evaluate import evaluate_model, save_predictions

    device = pick_device(cfg["train"]["device"])
    distributed = dist_utils.init_from_env(device.type, timeout_s=cfg["train"]["dist_timeout"])
    rank, world = dist_utils.world()
    main_proc = rank == 0
    tcfg = cfg["train"]
    torch.manual_seed(tcfg["seed"])
    random.seed(tcfg["seed"])  # transforms of user datasets may draw from these too
    np.random.seed(tcfg["seed"] % 2**32)
    if tcfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
    ckpt_dir = os.path.join(out, "checkpoints")
    last_path = os.path.join(ckpt_dir, "last.safetensors")
    best_path = os.path.join(ckpt_dir, "best.safetensors")
    if resume and not os.path.exists(last_path):
        # Job scripts on preemptible queues pass --resume every time, the first time included
        # (or after a kill before the first checkpoint): that is a fresh start, not an error.
        if main_proc:
            print(f"zoo.train: --resume: no checkpoint at {last_path} yet; starting from "
                  f"iteration 0.", file=sys.stderr)
        resume = False
    if main_proc:
        os.makedirs(ckpt_dir, exist_ok=True)
        for folder in (out, ckpt_dir):  # half-written files of a killed earlier attempt
            remove_stale_temporaries(folder)
        if not resume and os.path.exists(last_path):
            raise ConfigError(f"{out} already holds a run ({last_path}); pass --resume to "
                              f"continue it or --out to start a new one.")
        dump_config(cfg, os.path.join(out, "config.yaml"))
    dist_utils.barrier()

    task: Task = make_task(cfg)
    model = task.build_model()
    if cfg["model"]["init"]:
        load_checkpoint(cfg["model"]["init"], model)
    if distributed:
        model = dist_utils.convert_sync_batchnorm(model, device.type)
    model = model.to(device)
    if tcfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = task.build_loss().to(device)
    optimizer = build_optimizer(model, tcfg)
    chash = config_hash(cfg)

    start_iter, best_miou = 0, -1.0
    if resume:
        state = load_checkpoint(last_path, model, optimizer, expect_config_hash=chash)
        start_iter = int(state["iteration"])
        best_miou = float(state.get("best_miou", -1.0))
        set_rng_state(state["rng"])
    ddp_model = model
    if distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    iters = int(tcfg["iters"])
    global_batch = task.samples_per_step()
    train_set = build_dataset(cfg, "train")
    ignore = int(getattr(train_set, "ignore_index", 255))
    crops = AugmentedCrops(train_set, task.crop_cfg(), seed=tcfg["seed"], ignore_index=ignore)
    sampler = CounterSampler(start_iter, iters, global_batch, rank, world)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=global_batch // world, sampler=sampler,
        num_workers=cfg["data"]["num_workers"], drop_last=False,
        # Its own generator: making an iterator must not draw from the global RNG, whose
        # state a resumed run restores (dropout draws from it).
        generator=torch.Generator().manual_seed(tcfg["seed"]))
    val_set = build_dataset(cfg, "val")
    autocast = make_autocast(tcfg["amp"], device)
    scaler = torch.amp.GradScaler(device.type) if tcfg["amp"] == "fp16" else None

    log = JsonlLog(os.path.join(out, "log.jsonl"), main_proc, start_iter if resume else None)
    bar = _progress(iters, start_iter, cfg["name"], main_proc)

    def checkpoint(path: str, it: int, extra: Mapping[str, Any] | None = None) -> None:
        if not main_proc:
            return
        state = {"iteration": it, "best_miou": best_miou, "config_hash": chash,
                 "rng": rng_state(), "scheduler": {"kind": "poly", "iteration": it},
                 "family": cfg["family"], "num_classes": task.num_classes}
        if extra:
            state.update(extra)
        save_checkpoint(path, model, state, optimizer)

    it = start_iter
    t_last, samples_since = time.perf_counter(), 0
    ddp_model.train()
    data_iter = iter(loader)
    while it < iters:
        images, masks = next(data_iter)
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        if tcfg["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = poly_lr(tcfg["lr"], it, iters, tcfg["poly_power"], tcfg["min_lr"],
                     tcfg["warmup_iters"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        terms = _step(task, ddp_model, loss_fn, images, masks, autocast, scaler, optimizer,
                      tcfg["grad_clip"])
        it += 1
        samples_since += images.shape[0] * world
        if not all(map(lambda v: v == v and abs(v) != float("inf"), terms.values())):
            raise FloatingPointError(f"iteration {it}: a loss became NaN/Inf ({terms}); lower "
                                     f"train.lr or use --set train.amp=none.")
        if it % tcfg["log_every"] == 0 or it == iters:
            now = time.perf_counter()
            log.write({"iter": it, "lr": lr, **terms,
                       "samples_per_s": samples_since / max(now - t_last, 1e-9)})
            t_last, samples_since = now, 0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        if tcfg["val_every"] and (it % tcfg["val_every"] == 0 or it == iters):
            metrics = evaluate_model(task, model, val_set, cfg, device,
                                     limit=cfg["data"]["val_limit"], progress=False)
            ddp_model.train()
            log.write({"iter": it, "val_miou": metrics["miou"], "val_f1": metrics["f1"],
                       "val_accuracy": metrics["accuracy"]})
            if metrics["miou"] > best_miou:
                best_miou = metrics["miou"]
                checkpoint(best_path, it, {"val": metrics})
        if it % tcfg["ckpt_every"] == 0 or it == iters:
            checkpoint(last_path, it)
            dist_utils.barrier()
        if stop_after is not None and it == stop_after:
            raise Interrupted(f"stopped after iteration {it}")
    if bar is not None:
        bar.close()

    # Final evaluation with the best weights (the last ones when validation never ran).
    final_path = best_path if os.path.exists(best_path) else last_path
    dist_utils.barrier()
    load_checkpoint(final_path, model)
    metrics = evaluate_model(task, model, val_set, cfg, device, limit=0,
                             progress=main_proc)
    metrics["checkpoint"] = os.path.relpath(final_path, out)
    metrics["iterations"] = iters
    if main_proc:
        atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=1))
        save_predictions(task, model, val_set, cfg, device, os.path.join(out, "predictions"),
                         count=tcfg["predictions"])
    dist_utils.shutdown()
    return metrics


def _step(task, model, loss_fn, images, masks, autocast, scaler, optimizer, grad_clip):
    if scaler is None:
        terms = task.train_step(model, loss_fn, images, masks, autocast)
    else:
        # fp16: scale the loss inside the task's backward by wrapping the loss function.
        scaled = _ScaledLoss(loss_fn, scaler)
        terms = task.train_step(model, scaled, images, masks, autocast)
        scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return terms


class _ScaledLoss(torch.nn.Module):
    def __init__(self, inner, scaler):
        super().__init__()
        self.inner, self.scaler = inner, scaler

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.scaler.scale(out[0]),) + out[1:]
        return self.scaler.scale(out)


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
    from zoo.backbones._weights import WeightsError
    from zoo.data.base import DataFileError

    args = parse_args(argv)
    out = args.out
    try:
        overrides = list(args.overrides)
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        cfg = load_config(args.config, overrides)
        out = args.out or os.path.join("runs", cfg["name"])
        metrics = train(cfg, out, resume=args.resume)
    except (ConfigError, CheckpointError, DataFileError, WeightsError, FileNotFoundError) as exc:
        # bad input (a config, a checkpoint, a dataset or weights file): a message, no traceback
        print(f"zoo.train: error: {exc}", file=sys.stderr)
        last = os.path.join(out or "", "checkpoints", "last.safetensors")
        if out and not isinstance(exc, (ConfigError, CheckpointError)) and os.path.exists(last):
            print(f"zoo.train: the checkpoints written so far are kept in {os.path.dirname(last)}; "
                  f"fix the cause and continue with --resume.", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - only a lost peer is handled, the rest re-raised
        if not dist_utils.lost_peer(exc):
            raise
        rank, world = dist_utils.world()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"zoo.train: error: rank {rank} of {world}: the process group failed: another "
              f"process of the job died or did not answer within train.dist_timeout="
              f"{cfg['train']['dist_timeout']:g} s ({type(exc).__name__}: {first[:300]}). The "
              f"job is stopped; see the other processes' logs, then restart all of them with "
              f"--resume.", file=sys.stderr)
        return 3
    if dist_utils.world()[0] == 0:
        names = metrics.get("class_names") or []
        print(f"\n{cfg['name']}: mIoU {metrics['miou']:.4f}  F1 {metrics['f1']:.4f}  "
              f"accuracy {metrics['accuracy']:.4f}  ({out}/metrics.json)")
        for i, iou in enumerate(metrics.get("iou", [])):
            label = names[i] if i < len(names) else str(i)
            print(f"  {label:>12}: IoU {iou:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
