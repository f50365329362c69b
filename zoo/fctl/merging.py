"""From local masks to one mask: montage, averaging, CSRN refinement, and where seams lie.

The FCtL paper's Table 6 compares three ways of building the high-resolution mask from the
local masks of a patch grid. uhrops defines them on the same local predictions (one local
pass per image), so that only the merging differs:

- **montage** (non-overlapping): every pixel takes the logits of exactly one patch, the one
  whose centre is nearest along each axis (ties go to the earlier patch). On an overlapping
  grid this cuts every overlap at its middle, so each pixel comes from the patch in which it
  lies deepest. :func:`montage_patches`.
- **averaging**: the mean of the logits of every patch covering the pixel
  (:func:`uhrops.tiling.merge_patches` with ``reduction="mean"``); FCtL's summed logits have
  the same argmax.
- **CSRN**: averaging, then the refinement pass of :func:`zoo.fctl.refine_logits`.

**Seams.** Along one axis a seam is a boundary between two pixel rows (or columns) where one
of these merges switches patches: a patch border inside the image (where averaging gains or
loses a patch: every start > 0 and every end < the image size) or a montage cut (where the
owning patch changes). For a product grid each seam spans the whole image, so the seams are
full horizontal and vertical lines. The **seam band** of width d holds the pixels within d
pixels of a seam: rows y - d .. y + d - 1 around a horizontal seam at y (between rows y - 1
and y), likewise for columns. The paper measures "boundary artifacts" there; uhrops reports
d = 16 px for 508 px patches (:data:`SEAM_BAND_508`) and scales it with the patch size.

:func:`evaluate_merges` runs the three merges on a dataset and reports mIoU over all pixels
and over the seam band (one confusion matrix each per method, accumulated over the split, the
papers' convention).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from uhrops import checks
from uhrops.tiling import PatchGrid, check_grid, merge_patches
from zoo.fctl.csrn import CSRN, refine_logits

__all__ = ["montage_patches", "montage_cuts", "seam_positions", "seam_band_mask",
           "evaluate_merges", "SEAM_BAND_508", "seam_band_width"]

SEAM_BAND_508 = 16  # band half-width in pixels for FCtL's 508 px patches


def seam_band_width(patch_size: int, band_508: float = SEAM_BAND_508) -> int:
    """The seam band half-width for a patch size, scaled from FCtL's 508 px patches.

    Convention:
        ``max(1, round(band_508 · patch_size / 508))``: 16 at 508, 2 at 64, 1 at 16.

    Example:
        >>> seam_band_width(64)
        2
    """
    p = checks.check_int(patch_size, "patch_size", "seam_band_width", 1)
    return max(1, int(round(band_508 * p / 508)))


def montage_cuts(starts: Sequence[int], patch: int) -> list[int]:
    """First pixel owned by each patch after the first, along one axis (montage ownership).

    Convention:
        Pixel r (centre r + 0.5) belongs to the patch whose centre s_i + p/2 is nearest, ties
        to the earlier one, so patches i and i + 1 split at the midpoint of their centres and
        patch i + 1 owns from ``(s_i + s_{i+1} + p + 1) // 2`` on. Returns len(starts) - 1
        positions (not clipped to the image).

    Example:
        >>> montage_cuts([0, 388, 776], 508)
        [448, 836]
    """
    return [(a + b + patch + 1) // 2 for a, b in zip(starts, starts[1:])]


def montage_patches(patches: Tensor, grid: PatchGrid) -> Tensor:
    """Non-overlapping montage: each pixel from the one patch whose centre is nearest.

    Convention:
        - patches (B·N, C, ph, pw) in :func:`uhrops.tiling.extract_patches` order ->
          (B, C, H, W). Along each axis patch i owns [cut_{i-1}, cut_i) of
          :func:`montage_cuts` (clipped to the patch and the image), so on a grid that
          covers the image every pixel is copied from exactly one patch; pixels no patch
          covers are 0.
        - Not differentiable by design (evaluation only): runs under no_grad.

    Args:
        patches: (B·N, C, ph, pw) floating tensor, N = len(grid).
        grid: the grid the patches come from.

    Returns:
        (B, C, H, W) tensor, same dtype and device.

    Example:
        >>> from uhrops.tiling import extract_patches
        >>> g = PatchGrid.from_min_overlap(48, 32, 8)
        >>> x = torch.rand(1, 2, 48, 48)
        >>> torch.equal(montage_patches(extract_patches(x, g), g), x)
        True
    """
    op = "montage_patches"
    patches = checks.check_image(patches, "patches", op)
    grid = check_grid(grid, op)
    n = len(grid)
    ph, pw = grid.patch_size
    if tuple(patches.shape[-2:]) != (ph, pw) or patches.shape[0] % n or patches.shape[0] == 0:
        raise ValueError(f"{op}(): `patches` must be (B*{n}, C, {ph}, {pw}) for this grid; got "
                         f"{tuple(patches.shape)}. Fix: pass all patches of the grid in "
                         "extract_patches order.")
    H, W = grid.image_size
    B = patches.shape[0] // n

    def spans(starts: Sequence[int], p: int, size: int) -> list[tuple[int, int]]:
        cuts = montage_cuts(starts, p)
        lo = [0] + cuts
        hi = cuts + [size]
        return [(max(a, s), min(b, s + p, size)) for a, b, s in zip(lo, hi, starts)]

    rows, cols = spans(grid.ys, ph, H), spans(grid.xs, pw, W)
    out = patches.new_zeros((B, patches.shape[1], H, W))
    p = patches.reshape(B, n, patches.shape[1], ph, pw)
    with torch.no_grad():
        for i, ((a, b), y) in enumerate(zip(rows, grid.ys)):
            for j, ((c, d), x) in enumerate(zip(cols, grid.xs)):
                if a < b and c < d:
                    out[:, :, a:b, c:d] = p[:, i * len(cols) + j, :, a - y:b - y, c - x:d - x]
    return out


def seam_positions(grid: PatchGrid) -> tuple[list[int], list[int]]:
    """Seams of a grid: (rows, columns) y where a merge switches patches between y-1 and y.

    Convention:
        Along an axis of size S with starts s_i and patch p: every s_i > 0, every s_i + p < S
        (patch borders inside the image, where averaging changes) and every montage cut in
        (0, S) (:func:`montage_cuts`). Sorted, without duplicates. A single patch along an
        axis gives no seam there.

    Example:
        >>> seam_positions(PatchGrid.from_min_overlap(48, 32, 8))
        ([16, 24, 32], [16, 24, 32])
    """
    grid = check_grid(grid, "seam_positions")

    def axis(starts: Sequence[int], p: int, size: int) -> list[int]:
        pos = {s for s in starts if s > 0} | {s + p for s in starts if s + p < size}
        pos |= {c for c in montage_cuts(starts, p) if 0 < c < size}
        return sorted(pos)

    return (axis(grid.ys, grid.patch_size[0], grid.image_size[0]),
            axis(grid.xs, grid.patch_size[1], grid.image_size[1]))


def seam_band_mask(grid: PatchGrid, width: int, device: torch.device | str | None = None
                   ) -> Tensor:
    """Boolean (H, W) mask of the pixels within ``width`` pixels of a seam of ``grid``.

    Convention:
        Row r is in the band of the horizontal seam y (:func:`seam_positions`) when
        y - width <= r < y + width (its centre r + 0.5 is closer than ``width`` to the seam
        line); columns likewise; the band is the union over all seams of both axes, each
        seam a full line. ``width`` = 16 for 508 px patches (:func:`seam_band_width` scales
        it).

    Args:
        grid: the patch grid.
        width: half-width of the band in pixels (>= 1).
        device: device of the mask.

    Returns:
        (H, W) bool tensor.

    Example:
        >>> m = seam_band_mask(PatchGrid.from_min_overlap(48, 32, 8), 2)
        >>> int(m[:, 0].sum()), int(m[0].sum())
        (12, 12)
    """
    op = "seam_band_mask"
    grid = check_grid(grid, op)
    w = checks.check_int(width, "width", op, 1)
    H, W = grid.image_size
    rows, cols = seam_positions(grid)

    def band(positions: list[int], size: int) -> Tensor:
        m = torch.zeros(size, dtype=torch.bool, device=device)
        for y in positions:
            m[max(y - w, 0):min(y + w, size)] = True
        return m

    return band(rows, H)[:, None] | band(cols, W)[None, :]


PatchFn = Callable[[Tensor], "tuple[Tensor, PatchGrid]"]


@torch.no_grad()
def evaluate_merges(patch_fn: PatchFn, dataset: Any, refiners: Mapping[str, CSRN] | None = None,
                    *, band_width: int | None = None, batch_size: int = 4,
                    num_classes: int | None = None, limit: int = 0,
                    device: torch.device | str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Montage vs averaging vs CSRN on a dataset: mIoU overall and in the seam band.

    Convention:
        - ``patch_fn(image)`` maps one image (1, 3, H, W) (moved to ``device``) to its local
          patch logits (N, n, p, p) and their grid (:meth:`zoo.fctl.FCtLSegmenter.
          patch_logits` for FCtL). From those one set of patches: "montage"
          (:func:`montage_patches`), "averaging" (mean merge) and, per entry of
          ``refiners``, ``"csrn@<name>"`` = :func:`~zoo.fctl.refine_logits` of the
          averaged logits (refiners are put in eval mode).
        - Per method one confusion matrix over all labelled pixels and one over the seam band
          (:func:`seam_band_mask` of each image's grid, half-width ``band_width``, default
          :func:`seam_band_width` of the patch size), accumulated over the split; metrics as
          :func:`zoo.metrics.metrics_from_confusion` with the dataset's
          ``exclude_from_mean`` (the papers' mIoU).

    Args:
        patch_fn: image -> (patch logits, grid).
        dataset: samples with "image" (3, H, W) and "mask" (H, W); ``num_classes``,
            ``exclude_from_mean`` and ``ignore_index`` attributes are used when present.
        refiners: name -> CSRN (e.g. {"1.5": ..., "2": ..., "2.5": ...}).
        band_width: seam band half-width in pixels.
        batch_size: patches per refiner call.
        num_classes: n (default ``dataset.num_classes``).
        limit: evaluate the first ``limit`` images only (0: all).
        device: where the images go (default: the CPU).
        progress: print one line per image to stderr.

    Returns:
        {"methods": {name: {"miou", "f1", "accuracy", "iou", "band_miou", "band_f1",
        "band_accuracy", "band_iou"}}, "images", "pixels", "band_pixels",
        "band_fraction", "band_width", "patch_size", "exclude_from_mean"}.
    """
    from zoo.metrics import masked_confusion_matrix, metrics_from_confusion

    refiners = dict(refiners or {})
    for name, r in refiners.items():
        if not isinstance(r, CSRN):
            raise TypeError(f"evaluate_merges(): refiners[{name!r}] must be a CSRN; got "
                            f"{type(r).__name__}.")
        r.eval()
    K = int(num_classes or dataset.num_classes)
    ignore = getattr(dataset, "ignore_index", 255)
    exclude = tuple(getattr(dataset, "exclude_from_mean", ()))
    names = ["montage", "averaging"] + [f"csrn@{k}" for k in refiners]
    full = {m: torch.zeros(K, K, dtype=torch.int64) for m in names}
    band = {m: torch.zeros(K, K, dtype=torch.int64) for m in names}
    n = len(dataset) if not limit else min(limit, len(dataset))
    pixels = band_pixels = 0
    used_width, patch = band_width, None
    for i in range(n):
        sample = dataset[i]
        image = sample["image"][None]
        if device is not None:
            image = image.to(device)
        target = sample["mask"].long()
        patches, grid = patch_fn(image)
        patch = grid.patch_size[0]
        used_width = band_width or seam_band_width(patch)
        in_band = seam_band_mask(grid, used_width)
        labelled = target != ignore if ignore is not None else torch.ones_like(target, dtype=bool)
        pixels += int(labelled.sum())
        band_pixels += int((labelled & in_band).sum())
        averaged = merge_patches(patches, grid, "mean")
        logits = {"montage": montage_patches(patches, grid), "averaging": averaged}
        for name, refiner in refiners.items():
            logits[f"csrn@{name}"] = refine_logits(refiner, averaged, grid, batch_size,
                                                   out_device=averaged.device)
        for m, lg in logits.items():
            pred = lg.argmax(1)[0].cpu()
            full[m] += masked_confusion_matrix(pred, target, None, K, ignore)
            band[m] += masked_confusion_matrix(pred, target, in_band, K, ignore)
        if progress:
            print(f"evaluate_merges: image {i + 1}/{n}", file=sys.stderr)
    methods = {}
    for m in names:
        a = metrics_from_confusion(full[m], exclude)
        b = metrics_from_confusion(band[m], exclude)
        methods[m] = {"miou": a["miou"], "f1": a["f1"], "accuracy": a["accuracy"],
                      "iou": a["iou"], "band_miou": b["miou"], "band_f1": b["f1"],
                      "band_accuracy": b["accuracy"], "band_iou": b["iou"]}
    return {"methods": methods, "images": n, "pixels": pixels, "band_pixels": band_pixels,
            "band_fraction": band_pixels / max(pixels, 1), "band_width": used_width,
            "patch_size": patch, "exclude_from_mean": list(exclude)}
