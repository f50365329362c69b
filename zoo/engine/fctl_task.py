"""Families ``fctl`` and ``fctl_refine``.

- ``fctl``: patch model with contexts; one training step takes the patches of
  ``fctl.images_per_step`` whole images in sub-batches of ``fctl.sub_batch`` and accumulates
  their gradients (the official protocol); predicts with :class:`zoo.fctl.FCtLSegmenter`.
- ``fctl_refine``: FCtL's refinement network (:class:`zoo.fctl.CSRN`) trained on the crude
  masks of an early local model (``python -m zoo.fctl.make_refine_data``); its samples are
  those masks (log-probabilities, (n, H, W)) with the ground truth, read by the family's own
  dataset (:class:`zoo.fctl.refine_masks.RefineMasks`, from ``refine.masks``), cut into the
  FCtL grid with the same sub-batching and accumulation as ``fctl``; predicts the refined
  mask.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from uhrops.tiling import PatchGrid, extract_contexts, extract_patches
from zoo.backbones.vgg import load_vgg16_imagenet
from zoo.core.checkpoint import is_safetensors, load_checkpoint, read_model_weights
from zoo.core.errors import CheckpointError, ConfigError
from zoo.core.progress import format_duration
from zoo.engine.accumulate import SubBatchLosses, sub_batches
from zoo.engine.task import Autocast, StepTerms, Task, pretrained_files, register_family
from zoo.fctl.checkpoints import load_official_checkpoints
from zoo.fctl.csrn import CSRN, refine_logits
from zoo.fctl.model import FCtL
from zoo.fctl.pipeline import FCtLSegmenter, resize_global
from zoo.fctl.refine_masks import refine_dataset
from zoo.losses import FocalLoss

__all__ = ["FCtLTask", "RefineTask", "shrink_labels"]


def _focal_loss(kwargs: dict[str, Any]) -> FocalLoss:
    loss = FocalLoss(**kwargs)
    # The masks were checked when they were read (SegmentationDataset.load_mask, RefineMasks
    # from checked masks); checking them again in the loss would sync with the device.
    loss.check_labels = False
    return loss


def _pil_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel along one axis, as PIL's NEAREST resize picks it.

    PIL (``ImagingScaleAffine``) starts at half a step, ``x = 0.5 * n_in / n_out``, adds the
    step once per output pixel in double precision and truncates. That is floor((i + 0.5) *
    n_in / n_out), torch's "nearest-exact", except where the centre falls on a pixel border
    (e.g. 2448 -> 300 at i = 12): there PIL's accumulated sum can land just below it and take
    the pixel before, so the sum is reproduced here addition by addition.
    """
    step = n_in / n_out
    steps = np.full(n_out, step, dtype=np.float64)
    steps[0] = step * 0.5
    return np.clip(np.add.accumulate(steps).astype(np.int64), 0, n_in - 1)


def shrink_labels(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Class map (B, H, W) integer -> (B, h, w) int64, as the released global stage shrinks it.

    The released code resizes the label image with PIL's NEAREST, which samples the source
    pixel under each output pixel's centre (see :func:`_pil_nearest_index`); torch's
    "nearest" samples floor(i * H / h) instead, about 1.9 source pixels away at 2448 -> 508.
    """
    h, w = int(size[0]), int(size[1])
    rows = torch.from_numpy(_pil_nearest_index(mask.shape[-2], h)).to(mask.device)
    cols = torch.from_numpy(_pil_nearest_index(mask.shape[-1], w)).to(mask.device)
    return mask.long().index_select(-2, rows).index_select(-1, cols)


def _labels(mask: Tensor, grid: PatchGrid) -> Tensor:
    return extract_patches(mask[:, None].float(), grid)[:, 0].round().long()


class StepProgress:
    """Lines inside one long training step: ``zoo.train: step: 40/216 patches  2.1 s/patch
    ETA 6m10s``, at most one every ``every_s`` seconds, on rank 0 only (stderr)."""

    def __init__(self, total: int, unit: str, every_s: float = 30.0) -> None:
        from zoo.core import distributed as dist_utils

        self.total, self.unit, self.every_s = int(total), unit, float(every_s)
        self.done = 0
        self.enabled = dist_utils.world()[0] == 0
        self.t0 = self.last = time.perf_counter()

    def add(self, n: int) -> None:
        self.done += int(n)
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.every_s or self.done >= self.total:
            return
        self.last = now
        per = (now - self.t0) / max(self.done, 1)
        print(f"zoo.train: step: {self.done}/{self.total} {self.unit}  {per:.2f} s/"
              f"{self.unit.rstrip('s')}  ETA {format_duration(per * (self.total - self.done))}",
              file=sys.stderr, flush=True)


@register_family
class FCtLTask(Task):
    family = "fctl"
    pretrained_backbones = {
        "vgg16": "ImageNet VGG16 weights (torchvision's vgg16-397923af.pth, as the released "
                 "code; FCN-8s's conv6/conv7 are taken from its fc6/fc7)",
    }

    def check_pretrained(self) -> None:
        # A stage started from the previous stage's checkpoint (fctl.init_stage) takes its
        # encoder from there, not from ImageNet: only the first stages (fcn, global) ask.
        if self.cfg["fctl"]["init_stage"]:
            return
        super().check_pretrained()

    def samples_per_step(self) -> int:
        return int(self.cfg["fctl"]["images_per_step"])

    def crop_cfg(self) -> dict[str, Any]:
        data = dict(self.cfg["data"])
        data["crop_size"] = None  # FCtL trains on whole images cut into its patch grid
        return data

    def build_model(self) -> nn.Module:
        model = FCtL(self.num_classes, **dict(self.cfg["model"]["kwargs"]))
        f = self.cfg["fctl"]
        pretrained = pretrained_files(self.cfg)  # without backbones left random ("none")
        if set(pretrained) - {"vgg16"}:
            raise ConfigError(f"model.pretrained: FCtL takes only vgg16 (a local ImageNet VGG16 "
                              f"file); got {sorted(pretrained)}.")
        self.pretrained_report = {}
        self.weight_sources = {}
        if pretrained.get("vgg16"):
            rep = load_vgg16_imagenet(model.encoder, pretrained["vgg16"])
            # The loader raises on any missing weight, so nothing of the encoder stays random.
            self.pretrained_report["vgg16"] = {"file": os.fspath(pretrained["vgg16"]),
                                               "loaded": rep["loaded"], "kept": [],
                                               "ignored": rep["unused"]}
            src = f"ImageNet file {os.fspath(pretrained['vgg16'])} (model.pretrained.vgg16)"
            self.weight_sources.update({f"encoder.{k}": src for k in rep["loaded"]})
        if f["init_stage"]:
            if os.path.isfile(f["init_stage"]) and not is_safetensors(f["init_stage"]):
                raise ConfigError(f"fctl.init_stage={f['init_stage']}: not a zoo.train "
                                  "checkpoint (a released .pth?). Fix: pass a released file as "
                                  "model.init, with model.init_partial=true where the released "
                                  "scripts start this stage from an earlier one, and set "
                                  "fctl.init_stage=null.")
            # The previous stage's local encoder, decoder and matching correlation: every
            # tensor whose name and shape agree (FCtL's own stage-to-stage rule).
            own = model.state_dict()
            usable = {k: v for k, v in read_model_weights(f["init_stage"]).items()
                      if k in own and own[k].shape == v.shape}
            if not usable:
                raise CheckpointError(f"fctl.init_stage={f['init_stage']}: no tensor fits this "
                                      f"model; is it a checkpoint of an FCtL stage?")
            model.load_state_dict(usable, strict=False)
            src = f"earlier stage {f['init_stage']} (fctl.init_stage)"
            self.weight_sources.update({k: src for k in usable})
            # The local encoder comes from the previous stage, whatever ImageNet file the
            # config also names (it was overwritten just now).
            encoder = [k for k in own if k.startswith("encoder.")]
            self.pretrained_report["vgg16"] = {
                "file": os.fspath(f["init_stage"]), "source": "fctl.init_stage",
                "loaded": [k for k in encoder if k in usable],
                "kept": [k for k in encoder if k not in usable], "ignored": []}
        if f["context_checkpoints"]:
            paths = list(f["context_checkpoints"])
            released = [os.path.isfile(p) and not is_safetensors(p) for p in paths]
            if all(released):  # the authors' stage files: only their VGG16 features are read
                if model.stage != "full" or len(paths) != len(model.context_names):
                    raise ConfigError(f"fctl.context_checkpoints: stage {model.stage!r} has "
                                      f"{len(model.context_names)} context encoder(s) "
                                      f"{list(model.context_names)}; got {len(paths)} file(s).")
                try:
                    load_official_checkpoints(model, None, paths)
                except ValueError as exc:
                    raise CheckpointError(f"fctl.context_checkpoints={paths}: {exc}") from None
            elif any(released):
                raise ConfigError(f"fctl.context_checkpoints={paths}: mixes released .pth "
                                  "files and zoo.train checkpoints. Fix: give both context "
                                  "encoders in one format.")
            else:
                states = [read_model_weights(path) for path in paths]
                model.load_context_encoders(*states)
            own = model.state_dict()
            for name, path in zip(model.context_names, paths):
                src = f"earlier stage {path} (fctl.context_checkpoints)"
                prefix = f"context_encoders.{name}.features."
                self.weight_sources.update({k: src for k in own if k.startswith(prefix)})
        return model

    def load_weights(self, model: nn.Module, path: str, partial: bool = False) -> None:
        """A zoo.train checkpoint (strict) or one of the authors' released ``.pth`` files.

        A released file goes through :func:`zoo.fctl.load_official_checkpoints`: complete
        unless ``partial`` (model.init_partial), the released stage start where the file is
        an earlier stage's (Inria B10/B15 and DeepGlobe medium from the FCN stage, DeepGlobe's
        final stage from the FCN stage); what stayed initialised is printed. Its context
        encoders come from ``fctl.context_checkpoints`` (a released file holds none).
        """
        net = getattr(model, "module", model)
        if not isinstance(net, FCtL):  # the refine family's CSRN: zoo.train checkpoints only
            return Task.load_weights(self, model, path, partial)
        if not os.path.isfile(path):
            load_checkpoint(path, model)  # raises the zoo's "checkpoint not found"
        # A truncated zoo checkpoint may have lost its header: its name still says what it is.
        if is_safetensors(path) or path.endswith(".safetensors"):
            if partial:
                raise ConfigError(f"model.init_partial=true applies to released .pth files; "
                                  f"{path} is a zoo.train checkpoint. Fix: start from an earlier "
                                  "stage's zoo.train checkpoint with fctl.init_stage (it takes "
                                  "the tensors that fit) and model.init_partial=false.")
            load_checkpoint(path, model)
            return
        if net.stage == "full" and not self.cfg["fctl"]["context_checkpoints"]:
            raise ConfigError(f"{path}: a released checkpoint holds no context "
                              "encoders. Fix: set fctl.context_checkpoints to the released "
                              "files of the context stages (Inria: B10, B15; DeepGlobe: medium, "
                              "global).")
        try:
            report = load_official_checkpoints(net, path, None, partial=bool(partial))
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        print(f"zoo: {path} (released FCtL checkpoint): {report}", file=sys.stderr)

    def build_loss(self) -> nn.Module:
        return _focal_loss(dict(self.cfg["loss"]["kwargs"]))

    #: seconds between the progress lines inside one step (a DeepGlobe step on a CPU takes
    #: minutes: 6 images x 36 patches); a step shorter than this prints nothing
    progress_every_s: float = 30.0

    def _scales(self, model: nn.Module) -> tuple:
        override = self.cfg["fctl"]["contexts"]
        return tuple(override) if override else tuple(model.context_scales)

    def step(self, model: nn.Module, loss_fn: nn.Module, images: Tensor, masks: Tensor,
             autocast: Autocast) -> StepTerms:
        """All patches of every image, in sub-batches, one backward per sub-batch."""
        net = getattr(model, "module", model)
        f = self.cfg["fctl"]
        p = (int(f["patch_size"]),) * 2
        acc = SubBatchLosses()
        per_image = 1 if net.stage == "global" else len(PatchGrid.from_min_overlap(
            tuple(images.shape[-2:]), p, f["min_overlap"]).boxes)
        total = images.shape[0] * per_image
        progress = StepProgress(total, "patches" if net.stage != "global" else "images",
                                every_s=self.progress_every_s)
        for b in range(images.shape[0]):
            image, mask = images[b:b + 1], masks[b:b + 1]
            if net.stage == "global":  # DeepGlobe's whole-image model at the patch size
                small = resize_global(image, p)
                with autocast():
                    logits = model(small)
                acc.backward(loss_fn(logits.float(), shrink_labels(mask, p)))
                progress.add(1)
                continue
            grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), p, f["min_overlap"])
            patches = extract_patches(image, grid)
            labels = _labels(mask, grid)
            ctxs: list[Tensor | None] = []
            feats: list[Tensor | None] = []
            for name, s in zip(net.context_names, self._scales(net)):
                if s == "global":
                    ctxs.append(None)
                    feats.append(net.encode_context(name, resize_global(image, p)))
                else:
                    ctxs.append(extract_contexts(image, grid, float(s)))
                    feats.append(None)
            features = feats if any(x is not None for x in feats) else None
            for part in sub_batches(patches.shape[0], int(f["sub_batch"])):
                contexts = tuple(c[part] if c is not None else None for c in ctxs)
                with autocast():
                    logits = model(patches[part], contexts, context_features=features)
                acc.backward(loss_fn(logits.float(), labels[part]))
                progress.add(part.stop - part.start)
        return acc.terms()

    def _segmenter(self, model: nn.Module) -> FCtLSegmenter:
        f = self.cfg["fctl"]
        net = getattr(model, "module", model)
        return FCtLSegmenter(net, patch_size=f["patch_size"], min_overlap=f["min_overlap"],
                             batch_size=f["sub_batch"], context_scales=self._scales(net),
                             context_resize=f["context_resize"])

    @torch.no_grad()
    def predict(self, model: nn.Module, image: Tensor) -> Tensor:
        return self._segmenter(model)(image)

    # the whole-image path already runs patch by patch: the image, the summed logits and one
    # batch of patches with contexts
    whole_image_bytes_per_pixel = 40.0
    whole_image_fixed_bytes = 1200 * 2**20

    @torch.no_grad()
    def stream_predict(self, model: nn.Module, reader, sink, rows=None, device=None,
                       labels: bool = False, max_accumulator_bytes: int | None = None) -> None:
        """:meth:`FCtLSegmenter.stream`: the patches and contexts read from ``reader``."""
        self._segmenter(model).stream(reader, sink, rows=rows, labels=labels,
                                      max_accumulator_bytes=max_accumulator_bytes)


@register_family
class RefineTask(FCtLTask):
    """FCtL's CSRN: focal loss on refined patches of crude masks, FCtL's step protocol."""

    family = "fctl_refine"
    pretrained_backbones: dict[str, str] = {}  # a CSRN from scratch: no ImageNet backbone

    @property
    def input_channels(self) -> int:  # type: ignore[override]
        """A sample is a crude mask: one log-probability map per class."""
        return self.num_classes

    def build_dataset(self, split: str, transform: Callable | None = None) -> Any:
        """The crude masks of ``split`` (``refine.masks``), not the dataset's images."""
        return refine_dataset(self.cfg, split, transform)

    def build_model(self) -> nn.Module:
        if pretrained_files(self.cfg) or self.cfg["fctl"]["init_stage"]:
            raise ConfigError("the refine stage trains a CSRN from scratch: model.pretrained and "
                              "fctl.init_stage do not apply (use model.init to start from a "
                              "CSRN checkpoint).")
        if self.cfg["train"]["predictions"]:
            # save_predictions draws overlays on RGB images; refine samples are masks.
            raise ConfigError("train.predictions must be 0 for family fctl_refine (its samples "
                              "are crude masks, not images).")
        return CSRN(self.num_classes, **dict(self.cfg["model"]["kwargs"]))

    def _grid(self, size) -> PatchGrid:
        f = self.cfg["fctl"]
        return PatchGrid.from_min_overlap(tuple(size), (int(f["patch_size"]),) * 2,
                                          f["min_overlap"])

    def step(self, model: nn.Module, loss_fn: nn.Module, images: Tensor, masks: Tensor,
             autocast: Autocast) -> StepTerms:
        """Every patch of every crude mask with its context window, in sub-batches.

        ``images`` (B, n, H, W) are crude log-probabilities; as for the local model the
        step's gradient is the sum of the sub-batch mean losses and the logged loss their
        mean.
        """
        net = getattr(model, "module", model)
        acc = SubBatchLosses()
        # the same lines inside the step as the local stages (every crude mask of a batch has
        # the batch's size, so one grid counts them all)
        progress = StepProgress(images.shape[0] * len(self._grid(images.shape[-2:]).boxes),
                                "patches", every_s=self.progress_every_s)
        for b in range(images.shape[0]):
            crude, mask = images[b:b + 1], masks[b:b + 1]
            grid = self._grid(crude.shape[-2:])
            local = extract_patches(crude, grid)
            context = extract_contexts(crude, grid, net.context_scale)
            labels = _labels(mask, grid)
            for part in sub_batches(local.shape[0], int(self.cfg["fctl"]["sub_batch"])):
                with autocast():
                    logits = model(local[part], context[part])
                acc.backward(loss_fn(logits.float(), labels[part]))
                progress.add(part.stop - part.start)
        return acc.terms()

    stream_predict = Task.stream_predict  # crude masks are not streamed from files

    @torch.no_grad()
    def predict(self, model: nn.Module, image: Tensor) -> Tensor:
        """Refined logits of a crude mask (1, n, H, W) (merged by averaging)."""
        net = getattr(model, "module", model)
        return refine_logits(net, image, self._grid(image.shape[-2:]),
                             int(self.cfg["fctl"]["sub_batch"]))
