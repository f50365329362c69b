"""What the trainer and the evaluator need from a model family, and the registry of families.

A family (``family:`` in a config) is a :class:`Task` subclass registered with
:func:`register_family`; :mod:`zoo.engine.families` imports every built-in one and builds tasks
(:func:`zoo.engine.families.make_task`).
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Mapping

import torch
from torch import Tensor, nn

from zoo.core.errors import ConfigError

__all__ = ["FAMILIES", "StepTerms", "Task", "pretrained_files", "register_family",
           "terms_to_floats"]

# A step's logged terms: 0-d tensors left on the device (converting them would sync with
# it), or plain numbers such as a count of sub-batches.
StepTerms = dict[str, "Tensor | float"]
Autocast = Callable[[], ContextManager]


class Task:
    """A model family: how to build its model and loss, take one training step, predict."""

    family = ""
    #: channels of a model input (RGB images; a refiner takes one map per class)
    input_channels = 3
    #: ``model.pretrained`` names this family loads -> the file each one expects (for the
    #: message of :meth:`check_pretrained`)
    pretrained_backbones: dict[str, str] = {}

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.num_classes = int(cfg["model"]["num_classes"])

    def samples_per_step(self) -> int:
        return int(self.cfg["train"]["batch_size"])

    def crop_cfg(self) -> dict[str, Any]:
        return dict(self.cfg["data"])

    def build_dataset(self, split: str, transform: Callable | None = None) -> Any:
        """The samples of ``split`` for this family (images of ``data.dataset`` by default)."""
        from zoo.data.registry import build_dataset

        return build_dataset(self.cfg, split, transform)

    def build_model(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_weights(self, model: nn.Module, path: str, partial: bool = False) -> None:
        """Fill ``model`` from the checkpoint at ``path`` (``model.init``, ``zoo.evaluate``).

        A zoo.train checkpoint of this very model, strictly; families that can read other
        formats (FCtL: the authors' released ``.pth`` files) override this. ``partial`` (keep
        the weights the file lacks) is only offered where a released recipe starts so.
        """
        from zoo.core.checkpoint import load_checkpoint

        if partial:
            raise ConfigError(f"model.init_partial=true: family {self.family!r} loads only "
                              "complete checkpoints of its own model. Fix: set "
                              "model.init_partial=false.")
        load_checkpoint(path, model)

    #: what :meth:`build_model` loaded into the backbones: backbone -> {"file", "loaded",
    #: "kept" (left at their initialisation), "ignored" (keys of the file not used), and
    #: "source" where the file is not an ImageNet one (e.g. "fctl.init_stage")}
    pretrained_report: dict[str, dict[str, Any]] = {}
    #: where :meth:`build_model` took each weight from: state-dict key -> source (file and
    #: config key); a key not listed kept the model's initialisation. ``pretrained.json``
    #: sums it per part of the model.
    weight_sources: dict[str, str] = {}

    def check_pretrained(self) -> None:
        """Refuse a from-scratch training of a ``model.require_pretrained`` config whose
        ``model.pretrained`` does not name every backbone (a file, or ``none``)."""
        model_cfg = self.cfg["model"]
        if not model_cfg["require_pretrained"] or model_cfg["pretrained"] == "none":
            return
        given = dict(model_cfg["pretrained"])
        lacking = [k for k in self.pretrained_backbones if k not in given]
        if not lacking:
            return
        files = ", ".join(f"{k}: {v}" for k, v in self.pretrained_backbones.items())
        example = ", ".join(f"{k}: /path/{k}.pth" for k in self.pretrained_backbones)
        have = f" (given: {sorted(pretrained_files(self.cfg))})" if given else ""
        raise ConfigError(
            f"model.pretrained: the config {self.cfg['name']!r} reproduces a paper that trains "
            f"from ImageNet backbones, but no file is given for {', '.join(lacking)}{have}. "
            f"Expected local files: {files}. Fix: --set model.pretrained='{{{example}}}', or "
            f"say random backbones on purpose with --set model.pretrained=none (or "
            f"<backbone>: none for one of them).")

    def build_loss(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, model: nn.Module, loss_fn: nn.Module, images: Tensor, masks: Tensor,
             autocast: Autocast) -> StepTerms:  # pragma: no cover - abstract
        """Forward and backward of one training step; the terms stay on the device."""
        raise NotImplementedError

    def train_step(self, model: nn.Module, loss_fn: nn.Module, images: Tensor, masks: Tensor,
                   autocast: Autocast) -> dict[str, float]:
        """:meth:`step` with its terms as Python floats (one sync; for callers that print)."""
        return terms_to_floats(self.step(model, loss_fn, images, masks, autocast))

    @torch.no_grad()
    def predict(self, model: nn.Module, image: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    #: estimated peak memory of :meth:`predict` on a whole image, bytes per pixel (model
    #: activations, input and logits), and the fixed part (weights, runtime)
    whole_image_bytes_per_pixel = 150.0  # WSDNet at 1024-1536² on the CPU: 112-136, + input, logits
    whole_image_fixed_bytes = 400 * 2**20

    #: the model is a plain (B, 3, h, w) -> logits network, so zoo.infer may leave out the
    #: windows of an image that hold only its nodata value
    skips_empty_windows = False

    def whole_image_bytes(self, height: int, width: int) -> float:
        """Estimated peak memory of segmenting a (height, width) image in one piece."""
        return self.whole_image_fixed_bytes + self.whole_image_bytes_per_pixel * height * width

    def fits_in_memory(self, height: int, width: int) -> bool:
        """Whether the whole-image path fits ``eval.max_memory`` (GiB) (and
        ``eval.max_whole_pixels`` when set above 0); otherwise images are streamed."""
        ev = self.cfg["eval"]
        cap = int(ev.get("max_whole_pixels", 0) or 0)
        if cap and height * width > cap:
            return False
        return self.whole_image_bytes(height, width) <= float(ev["max_memory"]) * 2**30

    def label_merge_bytes(self) -> int:
        """The bytes the streamed labels-only merge's class accumulator may hold
        (``eval.max_merge_memory`` GiB). Families widen it to the narrowest band their grid
        allows rather than refuse an image."""
        return max(int(float(self.cfg["eval"]["max_merge_memory"]) * 2**30), 1)

    def stream_predict(self, model: nn.Module, reader: Any,
                       sink: Callable[[int, Tensor], Any], rows: tuple[int, int] | None = None,
                       device: torch.device | None = None, labels: bool = False,
                       max_accumulator_bytes: int | None = None) -> None:
        """Logits of the image ``reader`` serves (``uhrops.sliding_window``'s reader), handed
        to ``sink(y0, band)`` band by band; ``rows``: only those output rows; ``labels``:
        the (1, h, W) integer label bands instead (``sliding_window(argmax=True)``: no
        logits leave the merge, for callers that write masks only), with the merge's
        accumulator within ``max_accumulator_bytes`` when given (``sliding_window``'s bound).
        None of the families here: NotImplementedError (the caller then reads the image
        whole)."""
        raise NotImplementedError(f"family {self.family!r} cannot stream images")


def pretrained_files(cfg: Mapping[str, Any]) -> dict[str, str]:
    """``model.pretrained`` as backbone -> file, without the backbones left random on purpose
    (``none`` for all, or ``<backbone>: none``)."""
    value = cfg["model"]["pretrained"]
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items()
            if not (v is None or (isinstance(v, str) and v.lower() == "none"))}


def terms_to_floats(terms: Mapping[str, Tensor | float]) -> dict[str, float]:
    return {k: float(v) for k, v in terms.items()}


FAMILIES: dict[str, type[Task]] = {}


def register_family(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` the task of ``family: <cls.family>`` configs."""
    if not cls.family or cls.family in FAMILIES:
        raise ValueError(f"register_family(): {cls.__name__} needs a new `family` name; got "
                         f"{cls.family!r} (known: {sorted(FAMILIES)}).")
    FAMILIES[cls.family] = cls
    return cls
