"""Family ``wsdnet``: WSDNet trained on batches of equal-size random crops; predicts a whole
image in one forward pass, or through ``uhrops.sliding_window`` windows when
``eval.sliding`` is set or the image is larger than ``eval.max_whole_pixels``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uhrops.tiling import PatchGrid, sliding_window
from zoo.core.errors import ConfigError
from zoo.engine.task import Autocast, StepTerms, Task, register_family
from zoo.wsdnet.losses import WaveletSmoothLoss, WSDNetLoss
from zoo.wsdnet.model import WSDNet

__all__ = ["WSDNetTask"]


@register_family
class WSDNetTask(Task):
    family = "wsdnet"

    def build_model(self) -> nn.Module:
        kwargs = dict(self.cfg["model"]["kwargs"])
        for key in ("aspp_dilations", "sr_channels", "mean", "std"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        model = WSDNet(self.num_classes, **kwargs)
        pretrained = dict(self.cfg["model"]["pretrained"])
        unknown = set(pretrained) - {"resnet18", "stdc1"}
        if unknown:
            raise ConfigError(f"model.pretrained: unknown backbone(s) {sorted(unknown)} for "
                              f"WSDNet; use resnet18 and/or stdc1 (paths of local files).")
        if pretrained:
            model.load_backbones(resnet=pretrained.get("resnet18"), stdc=pretrained.get("stdc1"))
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

    @torch.no_grad()
    def predict(self, model: nn.Module, image: Tensor) -> Tensor:
        ev = self.cfg["eval"]
        h, w = image.shape[-2:]
        if not (ev["sliding"] or h * w > ev["max_whole_pixels"]):
            return model(image)
        wh, ww = ev["window"]
        stride = (max(1, wh - ev["window_overlap"]), max(1, ww - ev["window_overlap"]))
        grid = PatchGrid.from_stride((h, w), (wh, ww), stride)
        return sliding_window(model, image, grid, batch_size=int(ev["batch_size"]))
