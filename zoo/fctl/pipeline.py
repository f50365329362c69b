"""Whole-image FCtL inference on uhrops' tiling ops (the paper's test protocol).

The released code (``helper.py``: ``get_patch_info``, ``global2patch``, ``global2bigpatch``,
``patch2global``; ``reference/fctl.md`` §6) segments an ultra-high-resolution image by

1. a grid of 508 px patches overlapping by at least 50 px
   (:meth:`uhrops.tiling.PatchGrid.from_min_overlap`: 6x6 on 2448, 11x11 on 5000);
2. for every patch the context windows (x2 and x3 on Inria, x3 on DeepGlobe) centred on it,
   padded with black outside the image and resized to 508 with PIL's antialiased bilinear
   filter (:func:`uhrops.tiling.extract_contexts`); on DeepGlobe also the whole image resized
   to 508, whose pool5 features are computed once per image;
3. the model on batches of patches, the raw logits summed where patches overlap
   (:func:`uhrops.tiling.sliding_window` with ``reduction="sum"``), then argmax;
4. at test time optionally 8-way test-time augmentation: {identity, horizontal flip} x
   rot90 k = 0..3 of the whole image, each result transformed back and summed.

Optionally (uhrops' CSRN, never in the released code, ``reference/fctl.md`` §10) a refinement
pass follows step 3: the local logits are averaged into a crude mask, a :class:`zoo.fctl.CSRN`
refines every patch of it with its context window, and the refined patches are averaged again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops.tiling import PatchGrid, extract_contexts, sliding_window
from zoo.fctl.csrn import CSRN, refine_logits
from zoo.fctl.model import FCtL

__all__ = ["FCtLSegmenter", "resize_global"]


def resize_global(image: Tensor, size: Sequence[int], antialias: bool = True) -> Tensor:
    """The whole image resized to ``size`` (DeepGlobe's global context).

    Convention:
        Bilinear with half-pixel centres; ``antialias=True`` is PIL's ``Image.resize(...,
        BILINEAR)`` on down-scaling (FCtL resizes the 2448 image to 508 this way).

    Args:
        image: (B, C, H, W) floating tensor.
        size: (h, w).
        antialias: antialiased filtering when shrinking.

    Returns:
        (B, C, h, w) tensor.

    Example:
        >>> resize_global(torch.rand(1, 3, 96, 96), (32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """
    image = checks.check_image(image, "image", "resize_global")
    return F.interpolate(image, size=(int(size[0]), int(size[1])), mode="bilinear",
                         align_corners=False, antialias=antialias)


def _context_callable(scale: float, patch: tuple[int, int], pad_value: float,
                      antialias: bool) -> Callable[[Tensor, Tensor], Tensor]:
    """A sliding_window context callable for non-default padding/filtering."""

    def ctx(image_b: Tensor, boxes: Tensor) -> Tensor:
        H, W = image_b.shape[-2:]
        out = []
        for y0, x0, _, _ in boxes.tolist():
            g = PatchGrid((H, W), patch, (int(y0),), (int(x0),))
            out.append(extract_contexts(image_b, g, scale, pad_value=pad_value,
                                        antialias=antialias))
        return torch.cat(out, 0)

    return ctx


class FCtLSegmenter(nn.Module):
    """Segment images of any size with an :class:`FCtL` model, as FCtL's test code does.

    Convention:
        - ``forward(image)``: image (B, 3, H, W) floating, in [0, 1] by default (FCtL feeds
          ``ToTensor()`` values) -> summed logits (B, n, H, W) float32 on ``out_device``
          (default: the image's device). ``predict(image)`` -> (B, H, W) int64 argmax.
        - Patches of ``patch_size`` on ``PatchGrid.from_min_overlap(.., min_overlap)``;
          ``batch_size`` patches (with their contexts) go through the model at a time on the
          model's device, while the image and the merged logits may stay on the CPU, so
          peak device memory is one batch whatever the image size.
        - Contexts follow ``model.context_scales`` (or ``context_scales``): a number s is the
          s x patch window centred on the patch, outside pixels = ``pad_value`` (black),
          resized to the patch size (``antialias``: PIL-like filtering); "global" is the whole
          image resized to the patch size, encoded once per image (and per TTA transform).
        - Overlapping logits are summed (``merge="sum"``, the released code; the argmax
          equals that of averaged logits) or averaged (``merge="mean"``).
        - ``refiner`` (a :class:`~zoo.fctl.CSRN`, default None = FCtL as released): local pass
          -> local logits averaged into a crude mask -> :func:`~zoo.fctl.refine_logits` over
          the same grid -> refined patches averaged. An untrained refiner gives the
          ``merge="mean"`` result. The refiner runs on the model's device, in eval mode.
        - :meth:`patch_logits` returns the local logits of every patch of one image unmerged
          (for montage / averaging / refinement comparisons).
        - ``mean``/``std`` (default None: none, faithful) normalise every network input after
          cropping, so padding stays black in image space.
        - ``tta=True``: the 8 transforms {identity, hflip} x rot90^k of the image, each
          segmented and transformed back, summed.
        - Stage "global" models (DeepGlobe's whole-image FCN) see the image resized to the
          patch size; their logits are resized back bilinearly (uhrops' choice: the released
          code never runs that stage at test time).
        - Runs under ``torch.no_grad()`` with the model in eval mode (restored afterwards).

    Args:
        model: the FCtL model (any stage).
        patch_size: p (508).
        min_overlap: minimal overlap between patches (50).
        batch_size: patches per forward (FCtL's test scripts use 16 / 8).
        tta: 8-way flip/rot90 test-time augmentation.
        context_scales: override of ``model.context_scales``.
        pad_value: value outside the image in context windows.
        antialias: antialiased resizing of contexts and of the global image.
        mean, std: optional per-channel normalisation of the network inputs.
        out_device: device of the merged logits (default: the image's).
        progress: tqdm progress bar per image.
        merge: "sum" (FCtL) or "mean": how overlapping local logits are merged.
        refiner: optional CSRN for a refinement pass (same classes as ``model``).

    Example:
        >>> seg = FCtLSegmenter(FCtL(2, "inria", "fcn"), patch_size=32, min_overlap=8)
        >>> seg.predict(torch.rand(1, 3, 48, 40)).shape
        torch.Size([1, 48, 40])
    """

    def __init__(self, model: FCtL, patch_size: int = 508, min_overlap: float = 50,
                 batch_size: int = 4, tta: bool = False,
                 context_scales: Sequence[float | str] | None = None, pad_value: float = 0.0,
                 antialias: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None,
                 out_device: torch.device | str | None = None, progress: bool = False,
                 merge: str = "sum", refiner: CSRN | None = None) -> None:
        super().__init__()
        op = "FCtLSegmenter"
        if not isinstance(model, FCtL):
            raise TypeError(f"{op}(): `model` must be a zoo FCtL; got {type(model).__name__}.")
        self.merge = checks.check_choice(merge, "merge", op, ("sum", "mean"))
        if refiner is not None:
            if not isinstance(refiner, CSRN):
                raise TypeError(f"{op}(): `refiner` must be a zoo CSRN or None; got "
                                f"{type(refiner).__name__}.")
            if refiner.num_classes != model.num_classes:
                raise ValueError(f"{op}(): `refiner` refines {refiner.num_classes} classes but "
                                 f"the model predicts {model.num_classes}. Fix: build "
                                 f"CSRN({model.num_classes}, ...).")
        self.refiner = refiner
        self.model = model
        self.patch_size = checks.check_int(patch_size, "patch_size", op, 1)
        self.min_overlap = min_overlap
        self.batch_size = checks.check_int(batch_size, "batch_size", op, 1)
        self.tta = bool(tta)
        scales = tuple(model.context_scales if context_scales is None else context_scales)
        if len(scales) != len(model.context_names):
            raise ValueError(f"{op}(): the model takes {len(model.context_names)} context(s) "
                             f"{model.context_names}; got context_scales {scales}.")
        for s in scales:
            if s != "global" and (isinstance(s, bool) or not isinstance(s, (int, float))
                                  or not s > 0):
                raise ValueError(f"{op}(): each context scale must be a positive number or "
                                 f"'global'; got {s!r}.")
        self.context_scales = scales
        self.pad_value = float(pad_value)
        self.antialias = bool(antialias)
        if (mean is None) != (std is None):
            raise ValueError(f"{op}(): give both `mean` and `std` or neither.")
        if mean is not None:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                                 persistent=False)
        else:
            self.mean = self.std = None
        self.out_device = out_device
        self.progress = bool(progress)

    def _norm(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _segment_one(self, image: Tensor) -> Tensor:
        """Merged (and refined) logits (1, n, H, W) of one image (1, 3, H, W), no TTA."""
        if self.refiner is None:
            return self._local_one(image, self.merge)
        # The refiner was trained on averaged logits (a single patch's scale), not on sums.
        crude = self._local_one(image, "mean")
        grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), self.patch_size,
                                          self.min_overlap)
        return refine_logits(self.refiner, crude, grid, self.batch_size, device=self._device(),
                             out_device=crude.device)

    def patch_logits(self, image: Tensor) -> tuple[Tensor, PatchGrid]:
        """Local logits of every patch of one image, unmerged, and the grid.

        Convention:
            image (1, 3, H, W) -> ((N, n, p, p) float32 on ``out_device`` in the order of
            ``grid.boxes``, grid). ``merge_patches(patches, grid, "sum")`` is
            ``forward(image)`` without TTA and refiner. Holds all N patches (about 260 MB for
            a DeepGlobe image). Stage "global" models have no patches (ValueError).
        """
        op = "FCtLSegmenter.patch_logits"
        image = checks.check_image(image, "image", op)
        if image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"{op}(): `image` must be one RGB image (1, 3, H, W); got shape "
                             f"{tuple(image.shape)}. Fix: call it per image.")
        if self.model.stage == "global":
            raise ValueError(f"{op}(): a stage 'global' model segments the resized whole "
                             "image, not patches.")
        kept: list[Tensor] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self._local_one(image, "sum", keep=kept)
        finally:
            self.model.train(was_training)
        grid = PatchGrid.from_min_overlap(tuple(image.shape[-2:]), self.patch_size,
                                          self.min_overlap)
        return torch.cat(kept, 0), grid

    def _local_one(self, image: Tensor, reduction: str,
                   keep: list[Tensor] | None = None) -> Tensor:
        """Local logits of one image merged with ``reduction``; ``keep`` collects the
        patch outputs in grid order."""
        model, dev = self.model, self._device()
        H, W = image.shape[-2:]
        p = (self.patch_size, self.patch_size)
        out_device = image.device if self.out_device is None else torch.device(self.out_device)
        if model.stage == "global":
            small = resize_global(image, p, self.antialias).to(dev)
            logits = model(self._norm(small)).float()
            return F.interpolate(logits, size=(H, W), mode="bilinear",
                                 align_corners=False).to(out_device)
        grid = PatchGrid.from_min_overlap((H, W), p, self.min_overlap)
        specs: list = []
        feats: list[Tensor | None] = []
        for name, s in zip(model.context_names, self.context_scales):
            if s == "global":
                g = resize_global(image, p, self.antialias).to(dev)
                feats.append(model.encode_context(name, self._norm(g)))
            else:
                feats.append(None)
                if self.pad_value == 0.0 and self.antialias:
                    specs.append(float(s))
                else:
                    specs.append(_context_callable(float(s), p, self.pad_value, self.antialias))

        def fn(patches: Tensor, *ctx: Tensor) -> Tensor:
            it = iter(ctx)
            ctxs = [None if f is not None else self._norm(next(it)) for f in feats]
            out = model(self._norm(patches), tuple(ctxs), context_features=feats).float()
            if keep is not None:
                keep.append(out.to(out_device))
            return out

        return sliding_window(fn, image, grid, self.batch_size, contexts=specs,
                              out_device=out_device, progress=self.progress,
                              reduction=reduction, device=dev)

    def _segment(self, image: Tensor) -> Tensor:
        return torch.cat([self._segment_one(image[b:b + 1]) for b in range(image.shape[0])], 0)

    def forward(self, image: Tensor) -> Tensor:
        op = "FCtLSegmenter"
        image = checks.check_image(image, "image", op)
        if image.shape[1] != 3:
            raise ValueError(f"{op}(): `image` must have 3 channels (RGB); got "
                             f"{image.shape[1]}.")
        was_training = self.model.training
        self.model.eval()
        refiner_training = self.refiner is not None and self.refiner.training
        if self.refiner is not None:
            self.refiner.eval()
        try:
            with torch.no_grad():
                if not self.tta:
                    return self._segment(image)
                total: Tensor | None = None
                for flip in (False, True):
                    base = image.flip(-1) if flip else image
                    for k in range(4):
                        y = self._segment(torch.rot90(base, k, (-2, -1)))
                        y = torch.rot90(y, -k, (-2, -1))
                        if flip:
                            y = y.flip(-1)
                        total = y if total is None else total + y
                assert total is not None
                return total
        finally:
            self.model.train(was_training)
            if self.refiner is not None:
                self.refiner.train(refiner_training)

    def predict(self, image: Tensor) -> Tensor:
        """Class map (B, H, W) int64: argmax of :meth:`forward`."""
        return self.forward(image).argmax(1)

    def extra_repr(self) -> str:
        return (f"patch_size={self.patch_size}, min_overlap={self.min_overlap}, "
                f"batch_size={self.batch_size}, tta={self.tta}, "
                f"context_scales={self.context_scales}, pad_value={self.pad_value}, "
                f"antialias={self.antialias}, merge={self.merge!r}")
