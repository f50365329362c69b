"""The training loop: validate, keep the best checkpoint, evaluate at the end.

A run folder holds ``config.yaml`` (resolved), ``log.jsonl`` (one JSON line per logged
step), ``checkpoints/last.safetensors`` and ``best.safetensors`` (by validation mIoU; each
with a readable ``.json`` twin), ``metrics.json`` (the closing evaluation of
``eval.split`` with the best checkpoint, both named in it; when that split is ``val`` the best
checkpoint's validation is reused, not re-scored) and
``predictions/`` (colour masks and overlays of a few validation images). Nothing is written
there before the config, the model and the data have been built and one sample of each
split has been read: a run that fails on its data leaves no folder behind.

Off a terminal, a progress line is printed every ``train.log_every`` iterations (iteration,
loss terms, lr, it/s, ETA) and one per validation; on a terminal a tqdm bar shows the same.
The loss terms stay on the device between those lines (no device-to-host sync per step);
a NaN/Inf loss is caught at the next line, validation or checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from zoo.config import config_hash, dump_config
from zoo.core import distributed as dist_utils
from zoo.core.atomic import atomic_write_text, remove_stale_temporaries
from zoo.core.checkpoint import load_checkpoint, save_checkpoint
from zoo.core.errors import ConfigError, ZooError
from zoo.core.progress import Progress
from zoo.core.rng import rng_state, set_rng_state
from zoo.core.runtime import make_autocast, pick_device
from zoo.engine.evaluator import evaluate_model
from zoo.engine.families import make_task
from zoo.engine.predictions import save_predictions
from zoo.engine.runlog import JsonlLog
from zoo.engine.samples import AugmentedCrops, CounterSampler, poly_lr
from zoo.engine.task import StepTerms, Task, pretrained_files, terms_to_floats
from zoo.metrics import metrics_line

__all__ = ["Interrupted", "build_optimizer", "train", "train_step"]


def build_optimizer(model: torch.nn.Module, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if train["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                               weight_decay=train["weight_decay"])
    cls = torch.optim.Adam if train["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=train["lr"], weight_decay=train["weight_decay"])


class Interrupted(RuntimeError):
    """Raised by ``train(stop_after=k)`` right after iteration k's checkpoint (tests use it to
    stand for a process killed there)."""


def _probe(dataset: Any, split: str) -> None:
    # One sample read before the run folder is written: a missing or undecodable file, or a
    # mask that does not fit the dataset's rules, fails here and leaves nothing behind.
    if len(dataset):
        dataset[0]


class _Finite:
    """Whether every loss term so far was finite, kept on the device until asked."""

    def __init__(self) -> None:
        self.ok: Tensor | None = None
        self.since = 0

    def add(self, terms: StepTerms) -> None:
        values = [v.detach().float().reshape(1) for v in terms.values()
                  if isinstance(v, Tensor)]
        if values:
            step_ok = torch.isfinite(torch.cat(values)).all()
            self.ok = step_ok if self.ok is None else self.ok & step_ok

    def check(self, it: int, last: Mapping[str, float] | None = None) -> None:
        if self.ok is not None and not bool(self.ok):
            shown = f" (last terms {last})" if last else ""
            raise FloatingPointError(f"iteration {it}: a loss became NaN/Inf at or before this "
                                     f"iteration{shown}; lower train.lr or use --set "
                                     f"train.amp=none.")
        self.ok = None


def train(cfg: dict[str, Any], out: str, resume: bool = False,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run the training described by ``cfg`` into folder ``out``; returns the final metrics."""
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
    if main_proc and not resume and os.path.exists(last_path):
        raise ConfigError(f"{out} already holds a run ({last_path}); pass --resume to "
                          f"continue it or --out to start a new one.")

    task: Task = make_task(cfg)
    model = task.build_model()
    sources = dict(task.weight_sources)
    if cfg["model"]["init"]:
        versions = {k: v._version for k, v in model.state_dict(keep_vars=True).items()}
        task.load_weights(model, cfg["model"]["init"], partial=cfg["model"]["init_partial"])
        # every tensor the loader wrote (an in-place copy bumps its version counter)
        src = f"checkpoint {cfg['model']['init']} (model.init)"
        sources.update({k: src for k, v in model.state_dict(keep_vars=True).items()
                        if v._version != versions.get(k)})
    pretrained_report = _pretrained_report(task, cfg, model, sources)
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
    ddp_model = model
    if distributed:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    iters = int(tcfg["iters"])
    global_batch = task.samples_per_step()
    train_set = task.build_dataset("train")
    val_set = task.build_dataset("val")
    eval_split = str(cfg["eval"]["split"])
    rng = rng_state()  # the probes must not move the RNG a resumed run restores
    _probe(train_set, "train")
    _probe(val_set, "val")
    # The closing evaluation's split is read now: a run must not train for hours and then
    # find it cannot score the split its config names.
    eval_set = val_set if eval_split == "val" else _eval_dataset(task, cfg, eval_split)
    set_rng_state(state["rng"] if resume else rng)
    if not resume and not cfg["model"]["init"]:
        # After the data checks (a data error is the first thing to fix), before anything is
        # written. A resumed run or one initialised from a checkpoint overwrites the
        # backbones, so only a from-scratch start is checked.
        task.check_pretrained()

    # The config and the data are known good: only now is the run folder written.
    if main_proc:
        os.makedirs(ckpt_dir, exist_ok=True)
        for folder in (out, ckpt_dir):  # half-written files of a killed earlier attempt
            remove_stale_temporaries(folder)
        dump_config(cfg, os.path.join(out, "config.yaml"))
        if pretrained_report is not None:
            _print_pretrained(pretrained_report)
            atomic_write_text(os.path.join(out, "pretrained.json"),
                              json.dumps(pretrained_report, indent=1) + "\n")
    dist_utils.barrier()

    ignore = int(getattr(train_set, "ignore_index", 255))
    crops = AugmentedCrops(train_set, task.crop_cfg(), seed=tcfg["seed"], ignore_index=ignore)
    sampler = CounterSampler(start_iter, iters, global_batch, rank, world)
    loader = torch.utils.data.DataLoader(
        crops, batch_size=global_batch // world, sampler=sampler,
        num_workers=loader_workers(cfg["data"]["num_workers"]), drop_last=False,
        # Its own generator: making an iterator must not draw from the global RNG, whose
        # state a resumed run restores (dropout draws from it).
        generator=torch.Generator().manual_seed(tcfg["seed"]))
    autocast = make_autocast(tcfg["amp"], device)
    scaler = torch.amp.GradScaler(device.type) if tcfg["amp"] == "fp16" else None
    val_limit = int(cfg["data"]["val_limit"])

    log = JsonlLog(os.path.join(out, "log.jsonl"), main_proc, start_iter if resume else None)
    bar = Progress(iters, start_iter, cfg["name"], every=tcfg["log_every"], enabled=main_proc)

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
    finite = _Finite()
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
        terms = train_step(task, ddp_model, loss_fn, images, masks, autocast, scaler,
                           optimizer, tcfg["grad_clip"])
        it += 1
        samples_since += images.shape[0] * world
        finite.add(terms)
        validate = bool(tcfg["val_every"]) and (it % tcfg["val_every"] == 0 or it == iters)
        save = it % tcfg["ckpt_every"] == 0 or it == iters
        if it % tcfg["log_every"] == 0 or it == iters:
            values = terms_to_floats(terms)  # the one sync of the logged steps
            finite.check(it, values)
            now = time.perf_counter()
            log.write({"iter": it, "lr": lr, **values,
                       "samples_per_s": samples_since / max(now - t_last, 1e-9)})
            t_last, samples_since = now, 0
            bar.update({**values, "lr": lr})
        else:
            if validate or save:
                finite.check(it)
            bar.update()
        if validate:
            metrics = evaluate_model(task, model, val_set, cfg, device, limit=val_limit,
                                     progress=False)
            ddp_model.train()
            log.write({"iter": it, "val_miou": metrics["miou"], "val_f1": metrics["f1"],
                       "val_accuracy": metrics["accuracy"]})
            bar.write(f"{cfg['name']}: iter {it}/{iters}  val {metrics_line(metrics)}  "
                      f"({metrics['images']} images)")
            if metrics["miou"] > best_miou:
                best_miou = metrics["miou"]
                checkpoint(best_path, it, {"val": metrics})
        if save:
            checkpoint(last_path, it)
            dist_utils.barrier()
        if stop_after is not None and it == stop_after:
            raise Interrupted(f"stopped after iteration {it}")
    bar.close()

    # Final evaluation of eval.split with the best weights (the last ones when validation
    # never ran).
    final_path = best_path if os.path.exists(best_path) else last_path
    dist_utils.barrier()
    final_state = load_checkpoint(final_path, model)
    metrics = _closing_metrics(final_state, eval_split)
    if metrics is None:
        if main_proc:
            print(f"zoo.train: closing evaluation: {eval_split} split, "
                  f"{os.path.relpath(final_path, out)} (iteration "
                  f"{int(final_state['iteration'])})", file=sys.stderr)
        metrics = evaluate_model(task, model, eval_set, cfg, device, limit=val_limit,
                                 progress=main_proc, every=tcfg["log_every"])
        metrics["scored"] = "closing evaluation"
    metrics["split"] = eval_split
    metrics["split_name"] = _split_label(cfg, eval_split)
    metrics["checkpoint"] = os.path.relpath(final_path, out)
    metrics["checkpoint_iteration"] = int(final_state["iteration"])
    metrics["iterations"] = iters
    if main_proc:
        atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(metrics, indent=1))
        save_predictions(task, model, val_set, cfg, device, os.path.join(out, "predictions"),
                         count=tcfg["predictions"])
    dist_utils.shutdown()
    return metrics


def loader_workers(requested: int) -> int:
    """``data.num_workers`` clamped to the cores this process may run on: the paper configs
    ask for 4, and more loader processes than cores only compete with the training step
    (PyTorch warns about it); on a larger machine the config's number is kept."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(int(requested), cores))


def _eval_dataset(task: Task, cfg: Mapping[str, Any], split: str) -> Any:
    """The dataset of ``eval.split`` (not val), read once; an error says which key asked for
    it and how to score another split instead."""
    if split not in ("train", "test"):
        raise ConfigError(f"eval.split: {split!r} is not a split; expected val or test (the "
                          f"paper configs: test). Fix: --set eval.split=test or "
                          f"--set eval.split=val.")
    try:
        dataset = task.build_dataset(split)
        _probe(dataset, split)
    except ZooError as exc:
        raise type(exc)(
            f"eval.split={split}: the closing evaluation scores the {split} split, which "
            f"cannot be read: {exc} Fix: make the {split} split readable (--set "
            f"data.split_files.{split}=FILE lists its images), or score the validation split "
            f"instead with --set eval.split=val.") from exc
    return dataset


def _closing_metrics(state: Mapping[str, Any], split: str) -> dict[str, Any] | None:
    """The metrics the best checkpoint already holds for ``split`` (its validation, with the
    same images, TTA and weights), so the closing evaluation does not score them again;
    None when the split is another one or the checkpoint was not written by a validation."""
    held = state.get("val")
    if split != "val" or not isinstance(held, Mapping):
        return None
    metrics = dict(held)
    metrics["scored"] = f"validation at iteration {int(state['iteration'])} (not re-scored)"
    return metrics


def _split_label(cfg: Mapping[str, Any], split: str) -> str:
    """The split's name in the dataset (``data.<split>_split``), or the split list file that
    replaces it."""
    data = cfg["data"]
    listed = (data.get("split_files") or {}).get(split)
    if listed:
        return f"{split} (data.split_files.{split}={listed})"
    named = data.get(f"{split}_split", split)
    return split if named == split else f"{split} ({data['dataset']} {named!r})"


RANDOM = "the model's initialisation (random, or fixed by the architecture)"


def _pretrained_report(task: Task, cfg: Mapping[str, Any], model: torch.nn.Module,
                       sources: Mapping[str, str]) -> dict[str, Any] | None:
    """Where the weights start from, for ``pretrained.json`` (None: the family loads no
    backbone): one entry per backbone, and under ``"parts"`` every top-level part of the
    model with the number of tensors taken from each source (``sources``: state-dict key ->
    source; the keys not listed kept the model's initialisation)."""
    if not task.pretrained_backbones:
        return None
    files = pretrained_files(cfg)
    init = cfg["model"]["init"]
    out: dict[str, Any] = {}
    for name in task.pretrained_backbones:
        rep = task.pretrained_report.get(name)
        if init:
            # model.init overwrites whatever the backbones were given
            out[name] = {"file": init, "state": "loaded from model.init", "source": "model.init"}
        elif rep is None:
            out[name] = {"file": None, "state": "random (no file given)"}
        else:
            source = rep.get("source", f"model.pretrained.{name}")
            out[name] = {"file": rep["file"] if "source" in rep else files.get(name, rep["file"]),
                         "source": source,
                         "state": "partly random" if rep["kept"] else "loaded",
                         "loaded": len(rep["loaded"]), "left_random": list(rep["kept"]),
                         "unused_file_keys": list(rep["ignored"])}
    parts: dict[str, dict[str, int]] = {}
    for key in model.state_dict():
        part = key.split(".", 1)[0]
        src = sources.get(key, RANDOM)
        parts.setdefault(part, {})
        parts[part][src] = parts[part].get(src, 0) + 1
    out["parts"] = parts
    return out


def _print_pretrained(report: Mapping[str, Any]) -> None:
    for name, rep in report.items():
        if name == "parts":
            continue
        if rep["file"] is None:
            print(f"zoo.train: {name}: random initialisation (no file given)", file=sys.stderr)
            continue
        if "loaded" not in rep:
            print(f"zoo.train: {name}: from {rep['source']} ({rep['file']})", file=sys.stderr)
            continue
        via = "" if rep["source"].startswith("model.pretrained") else f" ({rep['source']})"
        print(f"zoo.train: {name}: {rep['file']}{via}: {rep['loaded']} tensors loaded, "
              f"{len(rep['left_random'])} left random"
              + (f" ({', '.join(rep['left_random'][:6])}"
                 f"{', ...' if len(rep['left_random']) > 6 else ''})" if rep['left_random'] else "")
              + f", {len(rep['unused_file_keys'])} keys of the file unused", file=sys.stderr)
    for part, counts in report.get("parts", {}).items():
        shown = "; ".join(f"{n} from {src}" for src, n in counts.items())
        print(f"zoo.train: weights of {part}: {shown}", file=sys.stderr)


def train_step(task: Task, model: torch.nn.Module, loss_fn: torch.nn.Module, images: Tensor,
               masks: Tensor, autocast, scaler, optimizer: torch.optim.Optimizer,
               grad_clip: float) -> StepTerms:
    """One optimisation step; the returned terms stay on the device."""
    if scaler is None:
        terms = task.step(model, loss_fn, images, masks, autocast)
    else:
        # fp16: scale the loss inside the task's backward by wrapping the loss function.
        terms = task.step(model, _ScaledLoss(loss_fn, scaler), images, masks, autocast)
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
    def __init__(self, inner: torch.nn.Module, scaler: torch.amp.GradScaler) -> None:
        super().__init__()
        self.inner, self.scaler = inner, scaler

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):
            return (self.scaler.scale(out[0]),) + out[1:]
        return self.scaler.scale(out)
