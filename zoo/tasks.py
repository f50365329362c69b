"""The two model families the trainer knows: how to build, train one step, and predict.

- ``wsdnet``: whole-image model trained on random crops (batches of equal-size crops);
  predicts a whole image in one forward pass, or through ``uhrops.sliding_window`` windows
  when ``eval.sliding`` is set.
- ``fctl``: patch model with contexts; one training step takes the patches of
  ``fctl.images_per_step`` whole images in sub-batches of ``fctl.sub_batch`` and accumulates
  their gradients (the official protocol); predicts with :class:`zoo.fctl.FCtLSegmenter`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


class Task:
    family = ""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.num_classes = int(cfg["model"]["num_classes"])

    def samples_per_step(self) -> int:
        return int(self.cfg["train"]["batch_size"])

    def crop_cfg(self) -> dict[str, Any]:
        return dict(self.cfg["data"])

    def build_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_loss(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_step(self, model: nn.Module, loss_fn: nn.Module, images: torch.Tensor,
                   masks: torch.Tensor, autocast) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class WSDNetTask(Task):
    family = "wsdnet"

    def build_model(self) -> nn.Module:
        from zoo.wsdnet import WSDNet

        kwargs = dict(self.cfg["model"]["kwargs"])
        for key in ("aspp_dilations", "sr_channels", "mean", "std"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        model = WSDNet(self.num_classes, **kwargs)
        pretrained = dict(self.cfg["model"]["pretrained"])
        unknown = set(pretrained) - {"resnet18", "stdc1"}
        if unknown:
            from zoo.config import ConfigError

            raise ConfigError(f"model.pretrained: unknown backbone(s) {sorted(unknown)} for "
                              f"WSDNet; use resnet18 and/or stdc1 (paths of local files).")
        if pretrained:
            model.load_backbones(resnet=pretrained.get("resnet18"), stdc=pretrained.get("stdc1"))
        return model

    def build_loss(self) -> nn.Module:
        from zoo.wsdnet.losses import WaveletSmoothLoss, WSDNetLoss

        kwargs = dict(self.cfg["loss"]["kwargs"])
        wsl_kwargs = kwargs.pop("wsl", None)
        wsl = WaveletSmoothLoss(**wsl_kwargs) if wsl_kwargs else None
        return WSDNetLoss(wsl=wsl, **kwargs)

    def train_step(self, model, loss_fn, images, masks, autocast) -> dict[str, float]:
        with autocast():
            out = model(images)
        # Losses in float32 whatever the autocast dtype.
        out = {k: v.float() for k, v in out.items()}
        loss, terms = loss_fn(out, masks, return_terms=True)
        loss.backward()
        result = {"loss": float(loss.detach())}
        result.update({k: float(v) for k, v in terms.items()})
        return result

    @torch.no_grad()
    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        ev = self.cfg["eval"]
        h, w = image.shape[-2:]
        if not (ev["sliding"] or h * w > ev["max_whole_pixels"]):
            return model(image)
        from uhrops.tiling import PatchGrid, sliding_window

        wh, ww = ev["window"]
        stride = (max(1, wh - ev["window_overlap"]), max(1, ww - ev["window_overlap"]))
        grid = PatchGrid.from_stride((h, w), (wh, ww), stride)
        return sliding_window(model, image, grid, batch_size=int(ev["batch_size"]))


class FCtLTask(Task):
    family = "fctl"

    def samples_per_step(self) -> int:
        return int(self.cfg["fctl"]["images_per_step"])

    def crop_cfg(self) -> dict[str, Any]:
        data = dict(self.cfg["data"])
        data["crop_size"] = None  # FCtL trains on whole images cut into its patch grid
        return data

    def _contexts(self) -> list[Any]:
        return list(self.cfg["fctl"]["contexts"])

    def build_model(self) -> nn.Module:
        from zoo.fctl import FCtL

        kwargs = dict(self.cfg["model"]["kwargs"])
        model = FCtL(self.num_classes, **kwargs)
        f = self.cfg["fctl"]
        if f["init_stage"]:
            from zoo.io import read_checkpoint

            tensors, _ = read_checkpoint(f["init_stage"])
            weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
            own = model.state_dict()
            usable = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
            if not usable:
                raise RuntimeError(f"fctl.init_stage={f['init_stage']}: no tensor fits this "
                                   f"model; is it a checkpoint of an FCtL stage?")
            model.load_state_dict(usable, strict=False)
        if f["context_checkpoints"]:
            from zoo.io import read_checkpoint

            states = []
            for path in f["context_checkpoints"]:
                tensors, _ = read_checkpoint(path)
                states.append({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            model.load_context_encoders(*states)
        return model

    def build_loss(self) -> nn.Module:
        from zoo.losses import FocalLoss

        return FocalLoss(**dict(self.cfg["loss"]["kwargs"]))

    def _segmenter(self, model: nn.Module):
        from zoo.fctl.pipeline import FCtLSegmenter

        f = self.cfg["fctl"]
        return FCtLSegmenter(model, patch_size=f["patch_size"], min_overlap=f["min_overlap"],
                             batch_size=f["sub_batch"])

    def train_step(self, model, loss_fn, images, masks, autocast) -> dict[str, float]:
        seg = self._segmenter(model)
        total = 0.0
        count = 0
        batches = list(seg.training_batches(images, masks))
        n_patches = sum(b[0].shape[0] for b in batches)
        for patches, contexts, patch_masks in batches:
            with autocast():
                logits = model(patches, contexts)
            # Mean over every patch of the step: each sub-batch is weighted by its share.
            loss = loss_fn(logits.float(), patch_masks) * (patches.shape[0] / n_patches)
            loss.backward()
            total += float(loss.detach())
            count += patches.shape[0]
        return {"loss": total, "patches": float(count)}

    @torch.no_grad()
    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        return self._segmenter(model).logits(image)


def make_task(cfg: Mapping[str, Any]) -> Task:
    return {"wsdnet": WSDNetTask, "fctl": FCtLTask}[cfg["family"]](cfg)
