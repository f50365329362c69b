"""Whole-image FCtL inference on uhrops' tiling ops (the paper's test protocol).

The released code (``helper.py``: ``get_patch_info``, ``global2patch``, ``global2bigpatch``,
``patch2global``; ``reference/fctl.md`` §6) segments an ultra-high-resolution image by

1. a grid of 508 px patches overlapping by at least 50 px
   (:meth:`uhrops.tiling.PatchGrid.from_min_overlap`: 6x6 on 2448, 11x11 on 5000);
2. for every patch the context windows (x2 and x3 on Inria, x3 on DeepGlobe) centred on it,
   padded with black outside the image and resized to 508 with PIL's antialiased bilinear
   filter on the 8-bit image; on DeepGlobe also the whole image resized to 508, whose pool5
   features are computed once per image. ``context_resize="released"`` does exactly that
   (:func:`released_contexts`, :func:`released_resize_global`); the default "float" resizes
   the float image with :func:`uhrops.tiling.extract_contexts` (differentiable, any device,
   within 1/255 of the released bytes, enough to move released checkpoints' logits by ~2e-3);
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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from uhrops import checks
from uhrops.tiling import PatchGrid, extract_contexts, sliding_window
from uhrops.tiling.argmax import accumulator_bound
from zoo.core.tta import dihedral_sum, to_view
from zoo.data.transforms import apply_normalization, register_normalization
from zoo.fctl.csrn import CSRN, refine_logits
from zoo.fctl.model import FCtL

__all__ = ["CONTEXT_RESIZES", "FCtLSegmenter", "released_contexts", "released_resize_global",
           "resize_global", "streamed_resize_global"]

# "float": uhrops.extract_contexts / antialiased torch bilinear on float tensors
# (differentiable, on any device; within 1/255 of the released inputs). "released": the
# released pipeline byte for byte: the 8-bit image, a black-padded crop, PIL bilinear on uint8.
CONTEXT_RESIZES = ("float", "released")


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


def _aa_weights(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) float64 rows of the antialiased bilinear filter of ``F.interpolate(...,
    antialias=True)`` along one axis (PyTorch's rule: triangle of half-width max(scale, 1)
    in input pixels, centres at scale·(i + 0.5), rows normalised to sum 1)."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        j = torch.arange(lo, hi, dtype=torch.float64)
        row = (1.0 - ((j - centre + 0.5) * inv).abs()).clamp(min=0.0)
        total = float(row.sum())
        w[i, lo:hi] = row / total if total > 0 else row
    return w


def streamed_resize_global(reader, size: Sequence[int], rows_per_read: int = 256) -> Tensor:
    """:func:`resize_global` (antialiased) of the image a ``uhrops.sliding_window`` reader
    serves, reading it a strip of rows at a time: (1, C, h, w) float32.

    Convention:
        The filter is separable, so each strip is resized along W, then added into the
        output with its rows' H weights: the image is never held whole. Same weights as
        ``F.interpolate(..., antialias=True)`` when shrinking (the global image always is),
        summed in another order (float64 accumulation): within ~1e-6 of the in-memory
        resize.
    """
    H, W = reader.image_size
    h, w = int(size[0]), int(size[1])
    wy = _aa_weights(H, h)  # (h, H)
    wx = _aa_weights(W, w).t().contiguous()  # (W, w)
    out = None
    for a in range(0, H, rows_per_read):
        b = min(a + rows_per_read, H)
        strip = reader.read(a, 0, b, W)
        strip = (strip if strip.dim() == 3 else strip[0]).to(torch.float64)  # (C, rows, W)
        t = strip @ wx  # (C, rows, w)
        part = torch.einsum("hr,crw->chw", wy[:, a:b], t)
        out = part if out is None else out + part
    assert out is not None
    return out[None].to(torch.float32)


def _to_uint8(image: Tensor, op: str) -> np.ndarray:
    """(1, 3, H, W) values in [0, 1] -> (H, W, 3) uint8, the 8-bit image the released code reads.

    ``ToTensor()`` values are k/255, so rounding recovers the file's bytes exactly.
    """
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{op}(): the released resize works on the 8-bit image, so `image` must "
                         f"hold values in [0, 1] (ToTensor()); got values in [{lo:.4g}, "
                         f"{hi:.4g}]. Fix: pass the image before normalising (FCtLSegmenter "
                         "takes `mean`/`std` for that) or use context_resize='float'.")
    u8 = (image[0].detach().to("cpu", torch.float64) * 255.0).round().to(torch.uint8)
    return np.ascontiguousarray(u8.permute(1, 2, 0).numpy())


def _from_uint8(arrays: list[np.ndarray], like: Tensor) -> Tensor:
    """(h, w, 3) uint8 arrays -> (k, 3, h, w) in [0, 1] with ``like``'s dtype and device."""
    t = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return (t.to(torch.float32) / 255.0).to(like.device, like.dtype)


def _window(patch: int, scale: float) -> tuple[int, int]:
    """(window side, offset of the patch in it): extract_contexts' rule, round(scale * p).

    For FCtL's integer scales this is the released ``global2bigpatch``: the image padded by
    (mul - 1) * p / 2 on every side, a mul * p crop at the patch's corner.
    """
    side = max(int(np.floor(scale * patch + 0.5)), 1)
    return side, (side - patch) // 2


def released_contexts(image: Tensor, grid: PatchGrid, scale: float,
                      size: Sequence[int] | None = None) -> Tensor:
    """Context windows as the released code makes them (``helper.global2bigpatch``).

    Convention:
        For every patch of ``grid`` (in ``grid.boxes`` order), the window of round(scale·p)
        pixels centred on the patch (the window of :func:`uhrops.extract_contexts`) is cut from the 8-bit image (``image`` * 255, rounded),
        black (0) outside the image, and resized to ``size`` with PIL's
        ``Image.resize(..., BILINEAR)`` on uint8 (antialiased, rounded as PIL rounds). The
        result is that uint8 image / 255: the released context input to the network, exactly.
        Not differentiable (use :func:`uhrops.extract_contexts` for training).

    Args:
        image: (1, 3, H, W) floating, values in [0, 1].
        grid: the patch grid of ``image``.
        scale: the window as a multiple of the patch size (FCtL: 2 or 3).
        size: (h, w) of the output (default: the patch size).

    Returns:
        (N, 3, h, w) tensor, ``image``'s dtype and device.

    Example:
        >>> g = PatchGrid.from_min_overlap(96, 32, 8)
        >>> released_contexts(torch.rand(1, 3, 96, 96), g, 3).shape
        torch.Size([16, 3, 32, 32])
    """
    op = "released_contexts"
    image = checks.check_image(image, "image", op)
    if image.shape[0] != 1:
        raise ValueError(f"{op}(): `image` must be one image (1, C, H, W); got shape "
                         f"{tuple(image.shape)}. Fix: call it per image.")
    if not isinstance(grid, PatchGrid):
        raise TypeError(f"{op}(): `grid` must be a uhrops PatchGrid; got {type(grid).__name__}.")
    if tuple(grid.image_size) != tuple(image.shape[-2:]):
        raise ValueError(f"{op}(): `grid` is for images of {tuple(grid.image_size)} but `image` "
                         f"is {tuple(image.shape[-2:])}. Fix: build the grid for this image.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{op}(): `scale` must be a positive number (3 for FCtL's x3 "
                         f"context); got {scale!r}.")
    ph, pw = grid.patch_size
    oh, ow = (ph, pw) if size is None else (int(size[0]), int(size[1]))
    src = _to_uint8(image, op)
    H, W = src.shape[:2]
    lh, oy = _window(ph, float(scale))
    lw, ox = _window(pw, float(scale))
    out = []
    for y0, x0 in [(y, x) for y in grid.ys for x in grid.xs]:  # grid.boxes order
        top, left = int(y0) - oy, int(x0) - ox
        # The released code pads the whole image with black and crops; filling a black
        # canvas with the part of the window inside the image gives the same bytes.
        canvas = np.zeros((lh, lw, src.shape[2]), np.uint8)
        sy0, sx0 = max(top, 0), max(left, 0)
        sy1, sx1 = min(top + lh, H), min(left + lw, W)
        if sy1 > sy0 and sx1 > sx0:
            canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = src[sy0:sy1, sx0:sx1]
        out.append(np.asarray(Image.fromarray(canvas).resize((ow, oh), Image.BILINEAR)))
    return _from_uint8(out, image)


def released_resize_global(image: Tensor, size: Sequence[int]) -> Tensor:
    """DeepGlobe's global image as released: the 8-bit image PIL-bilinear resized to ``size``.

    Convention:
        (1, 3, H, W) in [0, 1] -> (1, 3, h, w) = PIL ``Image.resize((w, h), BILINEAR)`` of the
        uint8 image, / 255; ``image``'s dtype and device. Not differentiable.
    """
    op = "released_resize_global"
    image = checks.check_image(image, "image", op)
    if image.shape[0] != 1:
        raise ValueError(f"{op}(): `image` must be one image (1, C, H, W); got shape "
                         f"{tuple(image.shape)}. Fix: call it per image.")
    small = Image.fromarray(_to_uint8(image, op)).resize((int(size[1]), int(size[0])),
                                                         Image.BILINEAR)
    return _from_uint8([np.asarray(small)], image)


def _released_callable(scale: float, patch: tuple[int, int]) -> Callable[[Tensor, Tensor], Tensor]:
    """A sliding_window context callable making the released context windows."""

    def ctx(image_b: Tensor, boxes: Tensor) -> Tensor:
        H, W = image_b.shape[-2:]
        # A batch's boxes need not form a grid: one single-patch grid each.
        return torch.cat([released_contexts(image_b, PatchGrid((H, W), patch, (int(y0),),
                                                                (int(x0),)), scale)
                          for y0, x0, _, _ in boxes.tolist()], 0)

    return ctx


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
          ``context_resize="released"`` makes both from the 8-bit image with PIL, byte for
          byte as the released code (the image must then hold [0, 1] values).
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
          segmented and transformed back, summed. With ``context_resize="released"`` the
          global image is, as in the released evaluation, resized once from the image and
          then flipped and rotated with each view (not resized from each view: PIL's two
          uint8 passes round differently once the axes are swapped).
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
        context_resize: "float" (default: :func:`uhrops.extract_contexts` and antialiased torch
            bilinear on the float image, within 1/255 of the released inputs) or "released"
            (:func:`released_contexts` / :func:`released_resize_global`: the 8-bit image, PIL
            bilinear on uint8, the released inputs exactly; use it to reproduce released
            checkpoints' outputs, whose logits with contexts move by up to ~2e-3 otherwise).

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
                 merge: str = "sum", refiner: CSRN | None = None,
                 context_resize: str = "float") -> None:
        super().__init__()
        op = "FCtLSegmenter"
        # (or a stand-in that is called the same way: the ONNX Runtime engine's OnnxFCtL)
        if not isinstance(model, FCtL) and not getattr(model, "fctl_compatible", False):
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
        self.context_resize = checks.check_choice(context_resize, "context_resize", op,
                                                  CONTEXT_RESIZES)
        if self.context_resize == "released" and (self.pad_value != 0.0 or not self.antialias):
            raise ValueError(f"{op}(): context_resize='released' pads with black and filters as "
                             f"PIL does; got pad_value={pad_value!r}, antialias={antialias!r}. "
                             "Fix: keep pad_value=0 and antialias=True, or use "
                             "context_resize='float'.")
        if (mean is None) != (std is None):
            raise ValueError(f"{op}(): give both `mean` and `std` or neither.")
        register_normalization(self, mean, std)
        self.out_device = out_device
        self.progress = bool(progress)

    def _norm(self, x: Tensor) -> Tensor:
        return apply_normalization(x, self.mean, self.std)

    def _global(self, image: Tensor, p: tuple[int, int]) -> Tensor:
        """The whole image at the patch size (DeepGlobe's global context / stage)."""
        if self.context_resize == "released":
            return released_resize_global(image, p)
        return resize_global(image, p, self.antialias)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _segment_one(self, image: Tensor, glob: Tensor | None = None) -> Tensor:
        """Merged (and refined) logits (1, n, H, W) of one image (1, 3, H, W), no TTA;
        ``glob``: the global context image to use (None: the image resized)."""
        given = None if glob is None else (lambda: glob)
        if self.refiner is None:
            return self._local_one(image, self.merge, global_image=given)
        # The refiner was trained on averaged logits (a single patch's scale), not on sums.
        crude = self._local_one(image, "mean", global_image=given)
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

    def stream(self, reader, sink, rows: tuple[int, int] | None = None,
               labels: bool = False, max_accumulator_bytes: int | None = None) -> None:
        """Segment the image a ``uhrops.sliding_window`` reader serves (e.g. a GeoTIFF read
        window by window), handing the merged local logits to ``sink(y0, band)`` band by
        band (``rows``: only those output rows): the same patches, contexts, batches and sums
        as :meth:`forward`, so the same logits bit for bit, in memory bounded by one batch
        and one row of patches. A "global" context is the image resized by
        :func:`streamed_resize_global` (within ~1e-6 of the in-memory resize). Not for TTA,
        a refiner, the "global" stage, ``context_resize="released"`` or non-default
        padding/filtering (ValueError: they need the whole image). ``labels``: the sink gets
        the (1, h, W) argmax of those logits instead (``sliding_window(argmax=True)``, its
        accumulator within ``max_accumulator_bytes`` when given)."""
        op = "FCtLSegmenter.stream"
        why = ("tta=True" if self.tta else "a refiner" if self.refiner is not None else
               "the 'global' stage" if self.model.stage == "global" else
               "context_resize='released'" if self.context_resize == "released" else
               "pad_value/antialias other than 0/True"
               if (self.pad_value != 0.0 or not self.antialias) else None)
        if why is not None:
            raise ValueError(f"{op}(): {why} needs the whole image in memory; streaming reads "
                             f"windows. Fix: segment the image with forward() (raise "
                             f"eval.max_memory in zoo.infer), or drop that option.")
        p = (self.patch_size, self.patch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self._local_one(reader, self.merge, sink=sink, rows=rows,
                                global_image=lambda: streamed_resize_global(reader, p),
                                labels=labels, max_bytes=max_accumulator_bytes)
        finally:
            self.model.train(was_training)

    def _local_one(self, image, reduction: str, keep: list[Tensor] | None = None,
                   sink=None, rows=None, global_image=None,
                   labels: bool = False, max_bytes: int | None = None) -> Tensor | None:
        """Local logits of one image merged with ``reduction``; ``keep`` collects the
        patch outputs in grid order. ``image`` may be a reader (with ``sink``, ``rows`` and
        ``global_image``, see :meth:`stream`)."""
        model, dev = self.model, self._device()
        streamed = not isinstance(image, Tensor)
        H, W = image.image_size if streamed else image.shape[-2:]
        p = (self.patch_size, self.patch_size)
        out_device = (torch.device("cpu") if streamed else image.device) \
            if self.out_device is None else torch.device(self.out_device)
        if model.stage == "global":
            small = self._global(image, p).to(dev)
            logits = model(self._norm(small)).float()
            return F.interpolate(logits, size=(H, W), mode="bilinear",
                                 align_corners=False).to(out_device)
        grid = PatchGrid.from_min_overlap((H, W), p, self.min_overlap)
        specs: list = []
        feats: list[Tensor | None] = []
        for name, s in zip(model.context_names, self.context_scales):
            if s == "global":
                g = (global_image() if global_image is not None
                     else self._global(image, p)).to(dev)
                feats.append(model.encode_context(name, self._norm(g)))
            else:
                feats.append(None)
                if self.context_resize == "released":
                    specs.append(_released_callable(float(s), p))
                elif self.pad_value == 0.0 and self.antialias:
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

        bound = None
        if labels and max_bytes is not None:  # widened to the narrowest band, not refused
            bound = accumulator_bound(grid, model.num_classes, max_bytes)
        return sliding_window(fn, image, grid, self.batch_size, contexts=specs,
                              out_device=out_device, progress=self.progress,
                              reduction=reduction, device=dev, sink=sink, rows=rows,
                              argmax=labels, max_accumulator_bytes=bound)

    def _segment(self, image: Tensor, glob: Tensor | None = None) -> Tensor:
        return torch.cat([self._segment_one(image[b:b + 1],
                                            None if glob is None else glob[b:b + 1])
                          for b in range(image.shape[0])], 0)

    def _released_tta_global(self, image: Tensor) -> Tensor | None:
        """The released evaluation's global image under TTA: resized ONCE from the image as
        given (``helper.Evaluator.eval_test``: ``images_global = resize(images, size_g)``
        before the view loop), then flipped and rotated with each view, never resized from
        a view. None when another rule applies (float resizing, no global context)."""
        if (self.context_resize != "released" or "global" not in self.context_scales
                or self.model.stage == "global"):
            return None
        p = (self.patch_size, self.patch_size)
        return torch.cat([released_resize_global(image[b:b + 1], p)
                          for b in range(image.shape[0])], 0)

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
                glob = self._released_tta_global(image)
                # The views are the released ones: rot90^k (counter-clockwise, as PIL's
                # rotate(90) applied k times) of the image, then of its horizontal flip; the
                # global image (resized once) turns with each view.
                return dihedral_sum(lambda view, flip, k: self._segment(
                    view, None if glob is None else to_view(glob, flip, k)), image)
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
                f"antialias={self.antialias}, merge={self.merge!r}, "
                f"context_resize={self.context_resize!r}")
