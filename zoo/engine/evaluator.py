"""Metrics of a model on a dataset with the papers' conventions, test-time augmentation, and
inference speed.

Metrics are accumulated in one confusion matrix over the split (:mod:`zoo.metrics`): mIoU
and F1 over the classes the dataset's paper averages, pixel accuracy over the pixels of the
classes it counts (DeepGlobe's unknown pixels left out, as from the mean), per class.
TTA averages the softmax over the 8 flips/rotations. Speed follows the WSDNet/ISDNet papers:
batch 1, warm-up, synchronised timing, median FPS, peak memory
(``torch.cuda.max_memory_allocated`` on a GPU; peak RSS on the CPU).
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any, Mapping

import torch
from torch import Tensor

from zoo.core.progress import Progress
from zoo.core.tta import dihedral_sum
from zoo.engine.inference import eval_allocator, eval_options, prepare_for_eval
from zoo.engine.task import Task
from zoo.metrics import SegmentationMetrics

__all__ = ["evaluate_model", "measure_speed", "tta_logits"]


def tta_logits(task: Task, model: torch.nn.Module, image: Tensor) -> Tensor:
    """Mean softmax over the dihedral group (4 rotations x optional horizontal flip, the
    views and order of :func:`zoo.core.tta.dihedral_sum`)."""
    return dihedral_sum(
        lambda view, flip, k: torch.softmax(task.predict(model, view).float(), 1), image) / 8


def predict_logits(task: Task, model: torch.nn.Module, image: Tensor, tta: bool) -> Tensor:
    """The task's logits of ``image`` (1, C, H, W), TTA-averaged probabilities with ``tta``."""
    return tta_logits(task, model, image) if tta else task.predict(model, image)


@torch.no_grad()
def evaluate_model(task: Task, model: torch.nn.Module, dataset: Any, cfg: Mapping[str, Any],
                   device: torch.device, limit: int = 0, progress: bool = True,
                   tta: bool | None = None, every: int = 10) -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (every image, or the first ``limit``).

    ``tta`` None takes ``eval.tta`` from the config. With ``progress`` a tqdm bar on a
    terminal, else a line every ``every`` images. The images go through an eval copy of
    ``model`` prepared as ``eval.fold_bn`` / ``eval.channels_last`` / ``eval.compile`` say
    (:func:`zoo.engine.inference.prepare_for_eval`); ``model`` itself keeps its mode and
    weights (training goes on from it).
    """
    model = prepare_for_eval(model, **eval_options(cfg))
    tta = cfg["eval"]["tta"] if tta is None else tta
    metrics = SegmentationMetrics.for_dataset(dataset, task.num_classes)
    n = len(dataset) if not limit else min(limit, len(dataset))
    bar = Progress(n, desc="evaluate", every=every, unit="images", enabled=progress)
    with eval_allocator(cfg):
        for i in range(n):
            sample = dataset[i]
            image = sample["image"][None].to(device)
            logits = predict_logits(task, model, image, tta)
            metrics.update(logits.argmax(1).cpu(), sample["mask"][None])
            bar.update()
    bar.close()
    result = metrics.compute()
    result["class_names"] = list(getattr(dataset, "CLASSES", []))
    result["exclude_from_mean"] = list(metrics.exclude_from_mean)
    result["exclude_from_accuracy"] = list(metrics.exclude_from_accuracy)
    result["images"] = n
    return result


def measure_speed(task: Task, model: torch.nn.Module, size: tuple[int, int],
                  device: torch.device, warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """Batch-1 whole-image inference speed at ``size``: median FPS and peak memory, of the
    model prepared as the task's config says (``eval.fold_bn``, ``eval.channels_last``,
    ``eval.compile``: compilation happens in the warm-up calls)."""
    model = prepare_for_eval(model, **eval_options(task.cfg))
    # a refiner's input is a crude mask (one map per class), every other model's an RGB image
    x = torch.rand(1, int(task.input_channels), *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad(), eval_allocator(task.cfg):
        for _ in range(warmup):
            task.predict(model, x)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            task.predict(model, x)
            sync()
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out = {"size": list(size), "median_s": med, "fps": 1.0 / med, "runs": runs,
           "device": str(device)}
    if device.type == "cuda":
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out
