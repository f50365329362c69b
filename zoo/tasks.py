"""The two model families the trainer knows: how to build, train one step, and predict.

- ``wsdnet``: whole-image model trained on random crops (batches of equal-size crops);
  predicts a whole image in one forward pass, or through ``uhrops.sliding_window`` windows
  when ``eval.sliding`` is set.
- ``fctl``: patch model with contexts; one training step takes the patches of
  ``fctl.images_per_step`` whole images in sub-batches of ``fctl.sub_batch`` and accumulates
  their gradients (the official protocol); predicts with :class:`zoo.fctl.FCtLSegmenter`.
- ``fctl_refine``: FCtL's refinement network (:class:`zoo.fctl.CSRN`) trained on the crude
  masks of an early local model (``python -m zoo.fctl.make_refine_data``); its samples are
  those masks (log-probabilities, (n, H, W)) with the ground truth, cut into the FCtL grid
  with the same sub-batching and accumulation as ``fctl``; predicts the refined mask.
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

    def build_model(self) -> nn.Module:
        from zoo.fctl import FCtL

        model = FCtL(self.num_classes, **dict(self.cfg["model"]["kwargs"]))
        f = self.cfg["fctl"]
        pretrained = dict(self.cfg["model"]["pretrained"])
        if set(pretrained) - {"vgg16"}:
            from zoo.config import ConfigError

            raise ConfigError(f"model.pretrained: FCtL takes only vgg16 (a local ImageNet VGG16 "
                              f"file); got {sorted(pretrained)}.")
        if pretrained.get("vgg16"):
            from zoo.backbones.vgg import load_vgg16_imagenet

            load_vgg16_imagenet(model.encoder, pretrained["vgg16"])
        if f["init_stage"]:
            # The previous stage's local encoder, decoder and matching correlation: every
            # tensor whose name and shape agree (FCtL's own stage-to-stage rule).
            from zoo.io import read_model_weights

            own = model.state_dict()
            usable = {k: v for k, v in read_model_weights(f["init_stage"]).items()
                      if k in own and own[k].shape == v.shape}
            if not usable:
                from zoo.io import CheckpointError

                raise CheckpointError(f"fctl.init_stage={f['init_stage']}: no tensor fits this "
                                      f"model; is it a checkpoint of an FCtL stage?")
            model.load_state_dict(usable, strict=False)
        if f["context_checkpoints"]:
            from zoo.io import read_model_weights

            states = [read_model_weights(path) for path in f["context_checkpoints"]]
            model.load_context_encoders(*states)
        return model

    def build_loss(self) -> nn.Module:
        from zoo.losses import FocalLoss

        return FocalLoss(**dict(self.cfg["loss"]["kwargs"]))

    def _scales(self, model: nn.Module) -> tuple:
        override = self.cfg["fctl"]["contexts"]
        return tuple(override) if override else tuple(model.context_scales)

    def train_step(self, model, loss_fn, images, masks, autocast) -> dict[str, float]:
        """All patches of every image, in sub-batches, one backward per sub-batch.

        As the released code: the step's gradient is the SUM of the sub-batch mean losses
        (so it grows with the number of patches); the logged loss is their mean.
        """
        import torch.nn.functional as F

        from uhrops.tiling import PatchGrid, extract_contexts, extract_patches
        from zoo.fctl.pipeline import resize_global

        net = getattr(model, "module", model)
        f = self.cfg["fctl"]
        p = (int(f["patch_size"]),) * 2
        sub = int(f["sub_batch"])
        losses: list[float] = []
        for b in range(images.shape[0]):
            image, mask = images[b:b + 1], masks[b:b + 1]
            if net.stage == "global":  # DeepGlobe's whole-image model at the patch size
                small = resize_global(image, p)
                small_mask = F.interpolate(mask[:, None].float(), size=p, mode="nearest")
                with autocast():
                    logits = model(small)
                loss = loss_fn(logits.float(), small_mask[:, 0].long())
                loss.backward()
                losses.append(float(loss.detach()))
                continue
            grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), p, f["min_overlap"])
            patches = extract_patches(image, grid)
            labels = extract_patches(mask[:, None].float(), grid)[:, 0].round().long()
            ctxs: list[torch.Tensor | None] = []
            feats: list[torch.Tensor | None] = []
            for name, s in zip(net.context_names, self._scales(net)):
                if s == "global":
                    ctxs.append(None)
                    feats.append(net.encode_context(name, resize_global(image, p)))
                else:
                    ctxs.append(extract_contexts(image, grid, float(s)))
                    feats.append(None)
            for i in range(0, patches.shape[0], sub):
                part = [c[i:i + sub] if c is not None else None for c in ctxs]
                with autocast():
                    logits = model(patches[i:i + sub], tuple(part),
                                   context_features=feats if any(x is not None for x in feats)
                                   else None)
                loss = loss_fn(logits.float(), labels[i:i + sub])
                loss.backward()
                losses.append(float(loss.detach()))
        return {"loss": sum(losses) / len(losses), "sub_batches": float(len(losses))}

    def _segmenter(self, model: nn.Module):
        from zoo.fctl.pipeline import FCtLSegmenter

        f = self.cfg["fctl"]
        net = getattr(model, "module", model)
        return FCtLSegmenter(net, patch_size=f["patch_size"], min_overlap=f["min_overlap"],
                             batch_size=f["sub_batch"], context_scales=self._scales(net))

    @torch.no_grad()
    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        return self._segmenter(model)(image)


class RefineTask(FCtLTask):
    """FCtL's CSRN: focal loss on refined patches of crude masks, FCtL's step protocol."""

    family = "fctl_refine"

    @property
    def input_channels(self) -> int:
        """A sample is a crude mask: one log-probability map per class."""
        return self.num_classes

    def build_model(self) -> nn.Module:
        from zoo.config import ConfigError
        from zoo.fctl.csrn import CSRN

        if self.cfg["model"]["pretrained"] or self.cfg["fctl"]["init_stage"]:
            raise ConfigError("the refine stage trains a CSRN from scratch: model.pretrained and "
                              "fctl.init_stage do not apply (use model.init to start from a "
                              "CSRN checkpoint).")
        if self.cfg["train"]["predictions"]:
            # save_predictions draws overlays on RGB images; refine samples are masks.
            raise ConfigError("train.predictions must be 0 for family fctl_refine (its samples "
                              "are crude masks, not images).")
        return CSRN(self.num_classes, **dict(self.cfg["model"]["kwargs"]))

    def _grid(self, size):
        from uhrops.tiling import PatchGrid

        f = self.cfg["fctl"]
        return PatchGrid.from_min_overlap(tuple(size), (int(f["patch_size"]),) * 2,
                                          f["min_overlap"])

    def train_step(self, model, loss_fn, images, masks, autocast) -> dict[str, float]:
        """Every patch of every crude mask with its context window, in sub-batches.

        ``images`` (B, n, H, W) are crude log-probabilities; as for the local model the
        step's gradient is the sum of the sub-batch mean losses and the logged loss their
        mean.
        """
        from uhrops.tiling import extract_contexts, extract_patches

        net = getattr(model, "module", model)
        sub = int(self.cfg["fctl"]["sub_batch"])
        losses: list[float] = []
        for b in range(images.shape[0]):
            crude, mask = images[b:b + 1], masks[b:b + 1]
            grid = self._grid(crude.shape[-2:])
            local = extract_patches(crude, grid)
            context = extract_contexts(crude, grid, net.context_scale)
            labels = extract_patches(mask[:, None].float(), grid)[:, 0].round().long()
            for i in range(0, local.shape[0], sub):
                with autocast():
                    logits = model(local[i:i + sub], context[i:i + sub])
                loss = loss_fn(logits.float(), labels[i:i + sub])
                loss.backward()
                losses.append(float(loss.detach()))
        return {"loss": sum(losses) / len(losses), "sub_batches": float(len(losses))}

    @torch.no_grad()
    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Refined logits of a crude mask (1, n, H, W) (merged by averaging)."""
        from zoo.fctl.csrn import refine_logits

        net = getattr(model, "module", model)
        return refine_logits(net, image, self._grid(image.shape[-2:]),
                             int(self.cfg["fctl"]["sub_batch"]))


def make_task(cfg: Mapping[str, Any]) -> Task:
    return {"wsdnet": WSDNetTask, "fctl": FCtLTask,
            "fctl_refine": RefineTask}[cfg["family"]](cfg)
