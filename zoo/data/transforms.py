"""Joint image/mask transforms used by the papers, on the sample dict of the zoo datasets.

A sample is ``{"image": float (3, H, W) in [0, 1], "mask": int64 (H, W), ...}``; every
transform returns a new dict (other keys are passed through). Functional core (``hflip``,
``rot90``, ``crop``, ``rotate``, ``resize``, ``photometric_distortion``, ``normalize``,
``rgb_to_hsv``/``hsv_to_rgb``) plus thin classes that draw the random parameters.

Random draws use the torch global generator (seeded per DataLoader worker by PyTorch), or
the `generator` given to a transform, so pipelines are reproducible under ``torch.manual_seed``.

Paper pipelines:
    FCtL (both datasets): ``Compose([RandomHorizontalFlip(), RandomRot90()])``, no
    normalisation (``Normalize(None)``: the ``ToTensor`` values in [0, 1]).
    ISDNet / WSDNet (mmseg): ``Compose([Resize(ratio=0.8) (Inria only),
    RandomCrop((1224, 1224), cat_max_ratio=0.75) (DeepGlobe; 2000 Inria, 2560 URUR),
    RandomHorizontalFlip(), RandomRotate(prob=0.5, degrees=(90, 270)),
    PhotometricDistortion(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD",
    "Compose", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRot90", "RandomCrop",
    "RandomRotate", "Resize", "PhotometricDistortion", "Normalize",
    "hflip", "vflip", "rot90", "crop", "rotate", "resize", "photometric_distortion",
    "normalize", "rgb_to_hsv", "hsv_to_rgb", "register_normalization", "apply_normalization",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = dict


def _check_sample(sample: object, op: str) -> None:
    if not isinstance(sample, dict) or "image" not in sample:
        raise TypeError(f"{op}: expected a sample dict with 'image' (and 'mask'); got "
                        f"{type(sample).__name__}.")
    img = sample["image"]
    if not isinstance(img, torch.Tensor) or img.dim() != 3:
        raise ValueError(f"{op}: sample['image'] must be a (C, H, W) tensor; got "
                         f"{getattr(img, 'shape', type(img).__name__)}.")
    mask = sample.get("mask")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2
                             or tuple(mask.shape) != tuple(img.shape[1:])):
        raise ValueError(f"{op}: sample['mask'] must be an (H, W) tensor matching the image "
                         f"{tuple(img.shape[1:])}; got {getattr(mask, 'shape', type(mask))}.")


def _apply(sample: Sample, f_img: Callable[[torch.Tensor], torch.Tensor],
           f_mask: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Sample:
    out = dict(sample)
    out["image"] = f_img(sample["image"])
    if sample.get("mask") is not None:
        out["mask"] = (f_mask or f_img)(sample["mask"])
    return out


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


# --- functional --------------------------------------------------------------------------

def hflip(sample: Sample) -> Sample:
    """Mirror image and mask left-right.

    Convention: flips the last axis (W) of both, like ``torchvision`` ``hflip``.

    Args:
        sample: the sample dict.

    Returns:
        a new sample dict.

    Example:
        >>> s = hflip({"image": torch.rand(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long)})
    """
    _check_sample(sample, "hflip()")
    return _apply(sample, lambda t: t.flip(-1))


def vflip(sample: Sample) -> Sample:
    """Mirror image and mask top-bottom (flips the H axis).

    Args:
        sample: the sample dict.

    Returns:
        a new sample dict.

    Example:
        >>> s = vflip({"image": torch.rand(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long)})
    """
    _check_sample(sample, "vflip()")
    return _apply(sample, lambda t: t.flip(-2))


def rot90(sample: Sample, k: int) -> Sample:
    """Rotate image and mask by k * 90 degrees counter-clockwise.

    Convention: ``torch.rot90(t, k, dims=(-2, -1))`` (counter-clockwise as displayed, like
    ``numpy.rot90`` and PIL's ``rotate(90 * k)``); H and W swap for odd k. Exact (no
    interpolation).

    Args:
        sample: the sample dict.
        k: number of quarter turns (any int).

    Returns:
        a new sample dict.

    Example:
        >>> rot90({"image": torch.rand(3, 4, 5)}, 1)["image"].shape
        torch.Size([3, 5, 4])
    """
    _check_sample(sample, "rot90()")
    k = int(k) % 4
    return _apply(sample, lambda t: torch.rot90(t, k, dims=(-2, -1)).contiguous())


def crop(sample: Sample, top: int, left: int, height: int, width: int,
         ignore_index: int = 255, pad_value: float = 0.0) -> Sample:
    """Crop image and mask to the box (top, left, height, width); pad where it leaves the image.

    Convention: the box may extend past the image (or start at a negative offset); outside
    pixels get `pad_value` in the image and `ignore_index` in the mask, as mmseg pads after a
    crop larger than the image.

    Args:
        sample: the sample dict.
        top, left: box origin.
        height, width: box size (>= 1).
        ignore_index: mask value for padding.
        pad_value: image value for padding.

    Returns:
        a new sample dict with (C, height, width) / (height, width).

    Example:
        >>> crop({"image": torch.rand(3, 4, 4)}, 2, 2, 4, 4)["image"].shape
        torch.Size([3, 4, 4])
    """
    _check_sample(sample, "crop()")
    if height < 1 or width < 1:
        raise ValueError(f"crop(): `height` and `width` must be >= 1; got {height}x{width}.")
    H, W = sample["image"].shape[-2:]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + height, H), min(left + width, W)

    def f(t: torch.Tensor, fill: float) -> torch.Tensor:
        if top >= 0 and left >= 0 and top + height <= H and left + width <= W:
            return t[..., top:top + height, left:left + width].contiguous()
        out = t.new_full((*t.shape[:-2], height, width), fill)
        if y1 > y0 and x1 > x0:
            out[..., y0 - top:y1 - top, x0 - left:x1 - left] = t[..., y0:y1, x0:x1]
        return out

    return _apply(sample, lambda t: f(t, pad_value), lambda m: f(m, ignore_index))


def _rotation_grid(h: int, w: int, angle: float, device: torch.device) -> tuple[torch.Tensor,
                                                                                 torch.Tensor]:
    # source coordinates (x, y) of every output pixel, rotation about ((w-1)/2, (h-1)/2)
    # by `angle` degrees counter-clockwise as displayed (cv2.getRotationMatrix2D convention)
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    cx, cy = (w - 1) * 0.5, (h - 1) * 0.5
    ys = torch.arange(h, dtype=torch.float64, device=device)[:, None] - cy
    xs = torch.arange(w, dtype=torch.float64, device=device)[None, :] - cx
    # forward map (src -> dst): x' = c*x + s*y, y' = -s*x + c*y; inverse is the transpose
    src_x = c * xs - s * ys + cx
    src_y = s * xs + c * ys + cy
    return src_x, src_y


def rotate(sample: Sample, angle: float, pad_value: float = 0.0,
           ignore_index: int = 255) -> Sample:
    """Rotate image and mask by an arbitrary angle about the centre, keeping the size.

    Convention: as mmseg's ``RandomRotate`` (``mmcv.imrotate`` = ``cv2.warpAffine`` with
    ``cv2.getRotationMatrix2D(((w-1)/2, (h-1)/2), angle, 1)``): positive angles turn
    counter-clockwise as displayed, the output keeps (H, W), corners that come from outside
    are `pad_value` (image) / `ignore_index` (mask). The image is bilinearly interpolated
    (border pixels blend with `pad_value`), the mask takes the nearest source pixel.
    Multiples of 90 on square images equal :func:`rot90`.

    Args:
        sample: the sample dict.
        angle: degrees.
        pad_value: image fill.
        ignore_index: mask fill.

    Returns:
        a new sample dict.

    Example:
        >>> rotate({"image": torch.rand(3, 8, 8)}, 30.0)["image"].shape
        torch.Size([3, 8, 8])
    """
    _check_sample(sample, "rotate()")
    img = sample["image"]
    C, H, W = img.shape
    src_x, src_y = _rotation_grid(H, W, angle, img.device)

    def f_img(t: torch.Tensor) -> torch.Tensor:
        grid = torch.stack([src_x * (2.0 / max(W - 1, 1)) - 1, src_y * (2.0 / max(H - 1, 1)) - 1],
                           -1)[None].to(t.dtype if t.is_floating_point() else torch.float32)
        x = t[None].float() if not t.is_floating_point() else t[None]
        out = F.grid_sample(x - pad_value, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0] + pad_value
        return out.to(t.dtype)

    def f_mask(m: torch.Tensor) -> torch.Tensor:
        ix = torch.floor(src_x + 0.5).long()
        iy = torch.floor(src_y + 0.5).long()
        inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
        vals = m[iy.clamp(0, H - 1), ix.clamp(0, W - 1)]
        return torch.where(inside, vals, torch.full_like(vals, ignore_index))

    return _apply(sample, f_img, f_mask)


def resize(sample: Sample, size: Sequence[int], antialias: bool = False) -> Sample:
    """Resize image (bilinear) and mask (nearest) to `size` = (H, W).

    Convention: image with ``F.interpolate(mode="bilinear", align_corners=False)``, i.e.
    OpenCV's ``INTER_LINEAR`` pixel-centre convention as mmseg's ``Resize`` uses (no
    antialiasing unless asked); mask with ``mode="nearest-exact"`` (source pixel
    floor((i + 0.5) * in / out), as ``cv2.INTER_NEAREST_EXACT``).

    Args:
        sample: the sample dict.
        size: target (H, W).
        antialias: antialiased image downscaling.

    Returns:
        a new sample dict.

    Example:
        >>> resize({"image": torch.rand(3, 10, 10)}, (8, 8))["image"].shape
        torch.Size([3, 8, 8])
    """
    _check_sample(sample, "resize()")
    size = (int(size[0]), int(size[1]))
    if min(size) < 1:
        raise ValueError(f"resize(): `size` must be positive; got {size}.")

    def f_img(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None].float(), size=size, mode="bilinear", align_corners=False,
                             antialias=antialias)[0].to(t.dtype)

    def f_mask(m: torch.Tensor) -> torch.Tensor:
        return F.interpolate(m[None, None].float(), size=size, mode="nearest-exact")[0, 0] \
            .to(m.dtype)

    return _apply(sample, f_img, f_mask)


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> HSV with H in degrees [0, 360), S and V in [0, 1].

    Convention: OpenCV's float formula (``cv2.COLOR_RGB2HSV`` on float32): V = max,
    S = (V - min) / V (0 where V = 0), H from the max channel, 0 for grey pixels.

    Args:
        image: (..., 3, H, W) float.

    Returns:
        (..., 3, H, W) float.

    Example:
        >>> rgb_to_hsv(torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)).flatten().tolist()
        [0.0, 1.0, 1.0]
    """
    r, g, b = image.unbind(-3)
    v, _ = image.max(-3)
    mn, _ = image.min(-3)
    delta = v - mn
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(v == r, 60.0 * (g - b) / safe,
                    torch.where(v == g, 120.0 + 60.0 * (b - r) / safe,
                                240.0 + 60.0 * (r - g) / safe))
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    h = torch.where(h < 0, h + 360.0, h)
    return torch.stack([h, s, v], -3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV (H in degrees, S and V in [0, 1]) -> RGB; inverse of :func:`rgb_to_hsv`.

    Args:
        hsv: (..., 3, H, W) float.

    Returns:
        (..., 3, H, W) float.

    Example:
        >>> hsv_to_rgb(torch.tensor([120.0, 1.0, 1.0]).view(3, 1, 1)).flatten().tolist()
        [0.0, 1.0, 0.0]
    """
    h, s, v = hsv.unbind(-3)
    h = torch.remainder(h, 360.0) / 60.0

    def channel(n: float) -> torch.Tensor:
        k = torch.remainder(n + h, 6.0)
        return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)

    return torch.stack([channel(5.0), channel(3.0), channel(1.0)], -3)


def photometric_distortion(image: torch.Tensor, brightness: float = 0.0, contrast: float = 1.0,
                           saturation: float = 1.0, hue: float = 0.0,
                           contrast_first: bool = True) -> torch.Tensor:
    """Brightness, contrast, saturation and hue changes of mmseg's ``PhotoMetricDistortion``.

    Convention: on an image in [0, 1] (mmseg works in 0..255: its brightness delta 32
    equals 32/255 here). Order: brightness (add), contrast (multiply) if `contrast_first`,
    saturation (multiply S in HSV), hue (add degrees), contrast if not `contrast_first`;
    the result of each step is clipped to [0, 1] as mmseg clips to [0, 255]. Differences
    from mmseg: hue wraps on the 360 degree circle and S is clipped to [0, 1] (mmseg folds
    the float hue at 180 and lets S exceed 1).

    Args:
        image: (3, H, W) float in [0, 1].
        brightness: added value.
        contrast: factor.
        saturation: factor.
        hue: degrees added to H.
        contrast_first: contrast before (True) or after (False) the HSV steps.

    Returns:
        (3, H, W) float in [0, 1].

    Example:
        >>> photometric_distortion(torch.full((3, 2, 2), 0.5), brightness=0.1)[0, 0, 0].item()
        0.6000000238418579
    """
    x = image
    if brightness != 0.0:
        x = (x + brightness).clamp(0, 1)
    if contrast_first and contrast != 1.0:
        x = (x * contrast).clamp(0, 1)
    if saturation != 1.0 or hue != 0.0:
        hsv = rgb_to_hsv(x)
        h, s, v = hsv.unbind(-3)
        if saturation != 1.0:
            s = (s * saturation).clamp(0, 1)
        if hue != 0.0:
            h = torch.remainder(h + hue, 360.0)
        x = hsv_to_rgb(torch.stack([h, s, v], -3)).clamp(0, 1)
    if not contrast_first and contrast != 1.0:
        x = (x * contrast).clamp(0, 1)
    return x


def normalize(image: torch.Tensor, mean: Sequence[float] | None = IMAGENET_MEAN,
              std: Sequence[float] | None = IMAGENET_STD) -> torch.Tensor:
    """(image - mean) / std per channel; identity when mean and std are None.

    Convention: for an image in [0, 1] (ImageNet statistics are given in [0, 1] units:
    mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)). FCtL uses no normalisation
    (``mean=None, std=None``).

    Args:
        image: (C, H, W) or (B, C, H, W) float.
        mean: per-channel mean, or None.
        std: per-channel std, or None.

    Returns:
        the normalised image (a new tensor).

    Example:
        >>> normalize(torch.full((3, 1, 1), 0.485))[0].item()
        0.0
    """
    if mean is None and std is None:
        return image.clone()
    c = image.shape[-3]
    m = torch.as_tensor(mean if mean is not None else [0.0] * c, dtype=image.dtype,
                        device=image.device).view(-1, 1, 1)
    s = torch.as_tensor(std if std is not None else [1.0] * c, dtype=image.dtype,
                        device=image.device).view(-1, 1, 1)
    if m.numel() != c or s.numel() != c:
        raise ValueError(f"normalize(): `mean`/`std` need {c} values (one per channel); got "
                         f"{m.numel()} and {s.numel()}.")
    return (image - m) / s


def register_normalization(module: torch.nn.Module, mean: Sequence[float] | None,
                           std: Sequence[float] | None) -> None:
    """Give a model its input normalisation as buffers ``module.mean`` / ``module.std``.

    Convention:
        Both given: (1, C, 1, 1) float32 buffers that follow the module across devices but
        are not saved in its state dict (``persistent=False``: the statistics belong to the
        model's definition, so checkpoints written before or without them still load). Both
        None: the attributes are None and :func:`apply_normalization` is the identity.
        The models call this once (WSDNet with ImageNet's statistics, FCtL's whole-image
        segmenter with the ones it is given), so every model normalises the same way.

    Args:
        module: the model to hold the buffers.
        mean: per-channel mean in [0, 1] units (e.g. :data:`IMAGENET_MEAN`), or None.
        std: per-channel std, or None (with ``mean``).

    Example:
        >>> m = torch.nn.Module()
        >>> register_normalization(m, IMAGENET_MEAN, IMAGENET_STD)
        >>> tuple(m.mean.shape), "mean" in m.state_dict()
        ((1, 3, 1, 1), False)
    """
    if (mean is None) != (std is None):
        raise ValueError(f"register_normalization(): pass both `mean` and `std`, or neither; "
                         f"got mean={mean!r}, std={std!r}.")
    if mean is None:
        module.mean = module.std = None
        return
    module.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                           persistent=False)
    module.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                           persistent=False)


def apply_normalization(x: torch.Tensor, mean: torch.Tensor | None,
                        std: torch.Tensor | None) -> torch.Tensor:
    """``(x - mean) / std`` with the buffers of :func:`register_normalization` cast to the
    input's device and dtype (a half-precision input stays half); ``x`` itself when they
    are None."""
    if mean is None or std is None:
        return x
    return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)


# --- classes -----------------------------------------------------------------------------

class Compose:
    """Apply transforms in order.

    Example:
        >>> t = Compose([RandomHorizontalFlip(), Normalize(None)])
    """

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class _Random:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({opts})"


class RandomHorizontalFlip(_Random):
    """:func:`hflip` with probability `prob` (FCtL, mmseg: 0.5)."""

    def __init__(self, prob: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.prob = prob

    def __call__(self, sample: Sample) -> Sample:
        return hflip(sample) if _rand(self.generator) < self.prob else dict(sample)


class RandomVerticalFlip(_Random):
    """:func:`vflip` with probability `prob`."""

    def __init__(self, prob: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.prob = prob

    def __call__(self, sample: Sample) -> Sample:
        return vflip(sample) if _rand(self.generator) < self.prob else dict(sample)


class RandomRot90(_Random):
    """With probability `prob`, :func:`rot90` by a k drawn uniformly from `ks`.

    FCtL: prob 0.5, k in {1, 2, 3} (90, 180, 270 degrees).
    """

    def __init__(self, prob: float = 0.5, ks: Sequence[int] = (1, 2, 3),
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        if not ks:
            raise ValueError("RandomRot90(): `ks` must not be empty.")
        self.prob = prob
        self.ks = tuple(int(k) for k in ks)

    def __call__(self, sample: Sample) -> Sample:
        if _rand(self.generator) >= self.prob:
            return dict(sample)
        k = self.ks[int(torch.randint(len(self.ks), (), generator=self.generator))]
        return rot90(sample, k)


class RandomCrop(_Random):
    """Random crop of `size` = (h, w), mmseg semantics.

    Convention: the offset is uniform over valid positions; an image smaller than the crop
    is padded (image `pad_value`, mask `ignore_index`) at the bottom/right. With
    ``cat_max_ratio < 1`` up to 10 crops are tried until no single class (ignore excluded)
    covers more than that fraction of the labelled pixels (and at least 2 classes are present),
    as mmseg's RandomCrop; otherwise the last try is kept.
    """

    def __init__(self, size: Sequence[int] | int, cat_max_ratio: float = 1.0,
                 ignore_index: int = 255, pad_value: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        if isinstance(size, int):
            size = (size, size)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 1:
            raise ValueError(f"RandomCrop(): `size` must be positive; got {size}.")
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.pad_value = pad_value

    def _offset(self, H: int, W: int) -> tuple[int, int]:
        h, w = self.size
        top = int(torch.randint(max(H - h, 0) + 1, (), generator=self.generator))
        left = int(torch.randint(max(W - w, 0) + 1, (), generator=self.generator))
        return top, left

    def __call__(self, sample: Sample) -> Sample:
        _check_sample(sample, "RandomCrop()")
        H, W = sample["image"].shape[-2:]
        h, w = self.size
        top, left = self._offset(H, W)
        mask = sample.get("mask")
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(10):
                m = mask[top:top + h, left:left + w]
                cnt = torch.bincount(m[m != self.ignore_index].flatten())
                cnt = cnt[cnt > 0]
                if len(cnt) > 1 and float(cnt.max()) / float(cnt.sum()) < self.cat_max_ratio:
                    break
                top, left = self._offset(H, W)
        return crop(sample, top, left, h, w, self.ignore_index, self.pad_value)


class RandomRotate(_Random):
    """With probability `prob`, :func:`rotate` by an angle uniform in `degrees`.

    mmseg / ISDNet: prob 0.5, degrees (90, 270), image pad 0, mask pad 255.
    """

    def __init__(self, prob: float = 0.5, degrees: Sequence[float] = (90.0, 270.0),
                 pad_value: float = 0.0, ignore_index: int = 255,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.prob = prob
        self.degrees = (float(degrees[0]), float(degrees[1]))
        self.pad_value = pad_value
        self.ignore_index = ignore_index

    def __call__(self, sample: Sample) -> Sample:
        if _rand(self.generator) >= self.prob:
            return dict(sample)
        lo, hi = self.degrees
        angle = lo + (hi - lo) * _rand(self.generator)
        return rotate(sample, angle, self.pad_value, self.ignore_index)


class Resize:
    """:func:`resize` to a fixed `size` (H, W) or by a fixed `ratio` (ISDNet Inria: 0.8).

    With `ratio`, the target is round(H * ratio) x round(W * ratio).
    """

    def __init__(self, size: Sequence[int] | None = None, ratio: float | None = None,
                 antialias: bool = False) -> None:
        if (size is None) == (ratio is None):
            raise ValueError("Resize(): give exactly one of `size` and `ratio`.")
        if ratio is not None and not ratio > 0:
            raise ValueError(f"Resize(): `ratio` must be > 0; got {ratio}.")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.ratio = ratio
        self.antialias = antialias

    def __call__(self, sample: Sample) -> Sample:
        _check_sample(sample, "Resize()")
        if self.size is not None:
            size = self.size
        else:
            H, W = sample["image"].shape[-2:]
            size = (max(1, int(round(H * self.ratio))), max(1, int(round(W * self.ratio))))
        return resize(sample, size, self.antialias)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, ratio={self.ratio})"


class PhotometricDistortion(_Random):
    """mmseg's ``PhotoMetricDistortion`` (ISDNet/WSDNet training): each step with p = 0.5.

    Brightness delta uniform in +-`brightness_delta` (32/255), contrast and saturation
    factors uniform in `contrast_range` / `saturation_range` (0.5, 1.5), hue shift uniform
    integer degrees in +-`hue_delta` (18); contrast goes first or last with p = 0.5. See
    :func:`photometric_distortion` for the conventions. The mask is unchanged.
    """

    def __init__(self, brightness_delta: float = 32 / 255,
                 contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def __call__(self, sample: Sample) -> Sample:
        _check_sample(sample, "PhotometricDistortion()")
        r = self.generator

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * _rand(r)

        brightness = uniform(-self.brightness_delta, self.brightness_delta) \
            if _rand(r) < 0.5 else 0.0
        contrast_first = _rand(r) < 0.5
        contrast = uniform(*self.contrast_range) if _rand(r) < 0.5 else 1.0
        saturation = uniform(*self.saturation_range) if _rand(r) < 0.5 else 1.0
        hue = float(torch.randint(-self.hue_delta, self.hue_delta + 1, (), generator=r)) \
            if _rand(r) < 0.5 else 0.0
        out = dict(sample)
        out["image"] = photometric_distortion(sample["image"], brightness, contrast, saturation,
                                              hue, contrast_first)
        return out


class Normalize:
    """:func:`normalize` the image; `Normalize(None)` (FCtL) keeps [0, 1] values.

    Example:
        >>> Normalize()({"image": torch.full((3, 1, 1), 0.485)})["image"][0].item()
        0.0
    """

    def __init__(self, mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD) -> None:
        if mean is None and std is IMAGENET_STD:
            std = None  # Normalize(None): no normalisation
        if (mean is None) != (std is None):
            raise ValueError("Normalize(): give both `mean` and `std`, or neither (None).")
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"Normalize(): `std` must be positive; got {self.std}.")

    def __call__(self, sample: Sample) -> Sample:
        _check_sample(sample, "Normalize()")
        out = dict(sample)
        out["image"] = normalize(sample["image"], self.mean, self.std)
        return out

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"
