"""Family ``wsdnet``: WSDNet trained on batches of equal-size random crops; predicts a whole
image in one forward pass, or through ``uhrops.sliding_window`` windows when
``eval.sliding`` is set or the whole-image pass would not fit ``eval.max_memory``; streams
images from their files window by window (:meth:`WSDNetTask.stream_predict`)."""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

from uhrops.tiling import PatchGrid, sliding_window
from uhrops.tiling.argmax import accumulator_bound
from zoo.core.errors import ConfigError
from zoo.engine.task import Autocast, StepTerms, Task, pretrained_files, register_family
from zoo.wsdnet.losses import WaveletSmoothLoss, WSDNetLoss
from zoo.wsdnet.model import WSDNet

__all__ = ["WSDNetTask"]


@register_family
class WSDNetTask(Task):
    family = "wsdnet"
    skips_empty_windows = True
    pretrained_backbones = {
        "resnet18": "ResNet18-V1c ImageNet weights (mmcv's open-mmlab://resnet18_v1c, "
                    "resnet18_v1c-b5776b93.pth; a torchvision resnet18 file leaves the deep "
                    "stem random)",
        "stdc1": "STDC1 ImageNet weights (STDC-Seg's STDCNet813M_73.91.tar)",
    }

    def build_model(self) -> nn.Module:
        kwargs = dict(self.cfg["model"]["kwargs"])
        for key in ("aspp_dilations", "sr_channels", "mean", "std"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        try:
            model = WSDNet(self.num_classes, **kwargs)
        except (TypeError, ValueError) as exc:  # a misspelt key or a bad value
            raise ConfigError(f"model.kwargs: {exc} (config keys: the WSDNet constructor's "
                              f"arguments, see zoo.wsdnet.WSDNet)") from exc
        raw = self.cfg["model"]["pretrained"]
        unknown = set(raw) - set(self.pretrained_backbones) if isinstance(raw, dict) else set()
        if unknown:
            raise ConfigError(f"model.pretrained: unknown backbone(s) {sorted(unknown)} for "
                              f"WSDNet; use resnet18 and/or stdc1 (paths of local files, or "
                              f"none).")
        pretrained = pretrained_files(self.cfg)
        self.pretrained_report = {}
        self.weight_sources = {}
        if pretrained:
            reports = model.load_backbones(resnet=pretrained.get("resnet18"),
                                           stdc=pretrained.get("stdc1"))
            own = model.state_dict()
            for name, key, part in (("resnet18", "resnet", "backbone"),
                                    ("stdc1", "stdc", "shallow")):
                if key in reports:
                    self.pretrained_report[name] = {"file": os.fspath(pretrained[name]),
                                                    **reports[key]}
                    src = f"ImageNet file {os.fspath(pretrained[name])} (model.pretrained.{name})"
                    self.weight_sources.update({f"{part}.{k}": src for k in reports[key]["loaded"]
                                                if f"{part}.{k}" in own})
            for name, rep in self.pretrained_report.items():
                if rep["kept"]:
                    # A torchvision resnet18 file has a 7x7 stem, not V1c's three 3x3 convs:
                    # the stages load and the stem silently stays random without this.
                    layers = sorted({k.rsplit(".", 1)[0] for k in rep["kept"]})
                    warnings.warn(
                        f"model.pretrained.{name} ({rep['file']}) leaves {len(rep['kept'])} "
                        f"tensor(s) of the {name} backbone at their random initialisation, in "
                        f"layers {', '.join(layers)}. Fix: pass "
                        f"{self.pretrained_backbones[name]}; or, to keep them random on "
                        f"purpose, ignore this warning.",
                        UserWarning, stacklevel=2)
        return model

    def build_loss(self) -> nn.Module:
        kwargs = dict(self.cfg["loss"]["kwargs"])
        wsl_kwargs = kwargs.pop("wsl", None)
        wsl = WaveletSmoothLoss(**wsl_kwargs) if wsl_kwargs else None
        return WSDNetLoss(wsl=wsl, **kwargs)

    def step(self, model: nn.Module, loss_fn: nn.Module, images: Tensor, masks: Tensor,
             autocast: Autocast) -> StepTerms:
        with autocast():
            out = model(images)
        # Losses in float32 whatever the autocast dtype.
        out = {k: v.float() for k, v in out.items()}
        loss, terms = loss_fn(out, masks, return_terms=True)
        loss.backward()
        return {"loss": loss.detach(), **terms}

    def _window_grid(self, h: int, w: int) -> PatchGrid:
        ev = self.cfg["eval"]
        wh, ww = ev["window"]
        stride = (max(1, wh - ev["window_overlap"]), max(1, ww - ev["window_overlap"]))
        return PatchGrid.from_stride((h, w), (wh, ww), stride)

    @torch.no_grad()
    def predict(self, model: nn.Module, image: Tensor) -> Tensor:
        ev = self.cfg["eval"]
        h, w = image.shape[-2:]
        if not ev["sliding"] and self.fits_in_memory(h, w):
            return model(image)
        return sliding_window(model, image, self._window_grid(h, w),
                              batch_size=int(ev["batch_size"]))

    @torch.no_grad()
    def stream_predict(self, model: nn.Module, reader, sink, rows=None, device=None,
                       labels: bool = False, max_accumulator_bytes: int | None = None) -> None:
        """The windows of :meth:`predict`'s sliding path, read from ``reader`` and merged one
        row of windows at a time (bitwise the in-memory sliding path's logits, or their
        argmax with ``labels``)."""
        h, w = reader.image_size
        grid = self._window_grid(h, w)
        bound = None
        if labels and max_accumulator_bytes is not None:  # widened rather than refused
            bound = accumulator_bound(grid, self.num_classes, max_accumulator_bytes)
        sliding_window(model, reader, grid, batch_size=int(self.cfg["eval"]["batch_size"]),
                       sink=sink, rows=rows, device=device, out_device="cpu", argmax=labels,
                       max_accumulator_bytes=bound)
