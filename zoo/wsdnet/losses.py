"""WSDNet's losses: the Wavelet Smooth Loss (paper Eq. 4) and the total training loss (Eq. 5).

The Wavelet Smooth Loss compares the super-resolution head's reconstruction with the
normalised input in the Haar wavelet domain: an L2 term on the low-frequency subbands and an
L1 term on the high-frequency ones, summed over L levels. It follows decision 6 of
``shared/reference/wsdnet.md``: by default the full packet tree (every subband split again,
4**l subbands at level l, in groups of four children of one parent; child 0 is the
low-frequency one, children 1-3 the high-frequency ones), the low term at every level, the
orthonormal Haar scale, and Eq. 4's sum over the subbands of each level (``sum_bands``).
Because the Haar transform is linear, the
loss is computed on the difference ``pred - target`` with one transform.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks
from uhrops.wavelet import haar_dwt2d, haar_packet2d, haar_wavedec2

__all__ = [
    "WSDNetLoss",
    "WaveletSmoothLoss",
    "labelled_cross_entropy",
    "structure_distillation_loss",
    "wavelet_smooth_loss",
    "wavelet_smooth_loss_haar1",
]

TREES = ("packet", "mallat")
LL_SCALES = ("orthonormal", "average")
REDUCTIONS = ("mean", "sum_bands")


def _check_weight(value: object, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}(): `{name}` must be a number; got {type(value).__name__} {value!r}.")
    if not value >= 0:
        raise ValueError(f"{op}(): `{name}` must be >= 0; got {value}.")
    return float(value)


def _check_options(levels: object, lambda_low: object, lambda_high: object, tree: object,
                   low_every_level: object, ll_scale: object, reduction: object, op: str) -> None:
    checks.check_int(levels, "levels", op, minimum=1, maximum=8)
    _check_weight(lambda_low, "lambda_low", op)
    _check_weight(lambda_high, "lambda_high", op)
    checks.check_choice(tree, "tree", op, TREES)
    if not isinstance(low_every_level, bool):
        raise TypeError(f"{op}(): `low_every_level` must be a bool; got {low_every_level!r}.")
    checks.check_choice(ll_scale, "ll_scale", op, LL_SCALES)
    checks.check_choice(reduction, "reduction", op, REDUCTIONS)


def _reduce(x: Tensor, band_dims: int, reduction: str) -> Tensor:
    """Mean over everything ("mean"), or per-band means summed over the bands ("sum_bands").

    ``x`` is (B, C, *bands, h, w) with ``band_dims`` band axes.
    """
    if reduction == "mean":
        return x.mean()
    per_band = x.mean(dim=(0, 1, -2, -1)) if band_dims else x.mean()
    return per_band.sum()


def wavelet_smooth_loss(pred: Tensor, target: Tensor, levels: int = 3, lambda_low: float = 1.0,
                        lambda_high: float = 0.8, tree: str = "packet",
                        low_every_level: bool = True, ll_scale: str = "orthonormal",
                        reduction: str = "sum_bands") -> Tensor:
    """WSDNet's Wavelet Smooth Loss between a reconstruction and its target (paper Eq. 4).

    Convention:
        - ``L = sum_{l=1..levels} (lambda_low * L2_l + lambda_high * L1_l)`` on the orthonormal
          Haar coefficients of ``pred - target`` (= the difference of the two transforms).
        - ``tree="packet"`` (default): level l has the 4**l subbands of the full packet tree
          (:func:`uhrops.haar_packet2d`); they form 4**(l-1) groups of four children of one
          level-(l-1) parent; child 0 (A) is low-frequency, children 1-3 (H, V, D)
          high-frequency. ``tree="mallat"``: only the approximation is split again
          (:func:`uhrops.haar_wavedec2`); level l has LL_l (low) and its H, V, D (high).
        - ``L2_l``: squared error of the low-frequency subbands of level l; ``L1_l``: absolute
          error of the high-frequency ones. ``reduction="sum_bands"`` (default, Eq. 4 as
          written): the mean error of each subband (over batch, channels and positions),
          summed over the subbands of the level: over the 4**(l-1) low children and the
          3 * 4**(l-1) high children of the packet tree (the sums over b and over i = 2..4),
          or over LL_l and H, V, D with "mallat". ``"mean"``: one mean over all those
          coefficients (an average over the subbands instead of Eq. 4's sum; with the packet
          tree and L = 3 it weighs the loss about 8x less against cross-entropy).
        - ``low_every_level=True`` (default, as Eq. 4): the L2 term at every level; False: at
          the last level only (with "mallat" the low band and all details are then an
          orthonormal basis).
        - ``ll_scale="orthonormal"`` (default): coefficients as the orthonormal transform gives
          them (a constant image c has level-l approximation 2**l * c); ``"average"``: level-l
          coefficients divided by 2**l (block means), i.e. L2_l scaled by 4**-l and L1_l by
          2**-l.
        - ``pred`` and ``target``: same shape (B, C, H, W), dtype and device; H and W divisible
          by 2**levels (ValueError otherwise). Differentiable in both (the L1 subgradient
          at 0 is 0). fp16/bf16 inputs are transformed and reduced in float32 and the loss is
          float32.

    Args:
        pred: reconstruction (B, C, H, W).
        target: target image (B, C, H, W).
        levels: L (3 in the paper).
        lambda_low: weight of the low-frequency L2 terms (1.0).
        lambda_high: weight of the high-frequency L1 terms (0.8).
        tree: "packet" or "mallat".
        low_every_level: L2 term at every level or only the last.
        ll_scale: "orthonormal" or "average".
        reduction: "sum_bands" (Eq. 4) or "mean".

    Returns:
        Scalar tensor.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> float(wavelet_smooth_loss(x, x))
        0.0
    """
    op = "wavelet_smooth_loss"
    checks.check_image(pred, "pred", op)
    checks.check_image(target, "target", op)
    checks.check_same_device(op, pred=pred, target=target)
    checks.check_same_dtype(op, pred=pred, target=target)
    if pred.shape != target.shape:
        raise ValueError(f"{op}(): `pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} "
                         f"must have the same shape.")
    _check_options(levels, lambda_low, lambda_high, tree, low_every_level, ll_scale, reduction, op)
    B, C, H, W = pred.shape
    m = 1 << levels
    if H % m or W % m or H == 0 or W == 0:
        raise ValueError(f"{op}(): the image size ({H}, {W}) must be divisible by "
                         f"2**levels = {m}. Fix: crop both images to "
                         f"({max(m, H - H % m)}, {max(m, W - W % m)}) or use fewer levels.")
    if pred.dtype in (torch.float16, torch.bfloat16):
        pred, target = pred.float(), target.float()  # no rounding of the difference
    return _wsl_from_level1(haar_dwt2d(pred - target), levels, lambda_low, lambda_high, tree,
                            low_every_level, ll_scale, reduction)


def _wsl_from_level1(p1: Tensor, levels: int, lambda_low: float, lambda_high: float, tree: str,
                     low_every_level: bool, ll_scale: str, reduction: str) -> Tensor:
    """Eq. 4 from the first Haar level of the difference, ``p1`` (B, C, 4, h, w) in (A, H, V,
    D) order: both trees start with the same single-level DWT, so this is all the loss needs
    (the reconstruction-side path of :func:`wavelet_smooth_loss_haar1` never builds the
    full-resolution difference)."""
    B, C = p1.shape[:2]
    total = p1.new_zeros(())
    if tree == "packet":
        p, n = p1.unsqueeze(2), 1  # (B, C, n, 4, h, w): the 4 children of n parents
        for level in range(1, levels + 1):
            h, w = p.shape[-2:]
            s = 0.5 ** level if ll_scale == "average" else 1.0
            if low_every_level or level == levels:
                total = total + (lambda_low * s * s) * _reduce(p[:, :, :, 0].square(), 1, reduction)
            high = p[:, :, :, 1:].abs().flatten(2, 3)
            total = total + (lambda_high * s) * _reduce(high, 1, reduction)
            n *= 4
            if level < levels:  # the next level: one more split of each of the n subbands
                p = haar_packet2d(p.reshape(B, C * n, h, w), 1)
                p = p.reshape(B, C, n, 4, *p.shape[-2:])
        return total
    low, high = p1[:, :, 0], p1[:, :, 1:]
    if low_every_level:
        for level in range(1, levels + 1):
            if level > 1:
                low, (high,) = haar_wavedec2(low, 1)
            s = 0.5 ** level if ll_scale == "average" else 1.0
            total = total + (lambda_low * s * s) * _reduce(low.square(), 0, reduction)
            total = total + (lambda_high * s) * _reduce(high.abs(), 1, reduction)
        return total
    highs = [high]
    if levels > 1:
        low, coarser = haar_wavedec2(low, levels - 1)
        highs += list(coarser)
    for level, high in enumerate(highs, start=1):
        s = 0.5 ** level if ll_scale == "average" else 1.0
        total = total + (lambda_high * s) * _reduce(high.abs(), 1, reduction)
    s = 0.5 ** levels if ll_scale == "average" else 1.0
    return total + (lambda_low * s * s) * _reduce(low.square(), 0, reduction)


def wavelet_smooth_loss_haar1(pred_bands: Tensor, target: Tensor, levels: int = 3,
                              lambda_low: float = 1.0, lambda_high: float = 0.8,
                              tree: str = "packet", low_every_level: bool = True,
                              ll_scale: str = "orthonormal",
                              reduction: str = "sum_bands") -> Tensor:
    """:func:`wavelet_smooth_loss` of the reconstruction whose first Haar level is
    ``pred_bands``, without building that reconstruction.

    Convention:
        - ``pred_bands`` (B, 4C, H/2, W/2): the level-1 orthonormal Haar subbands of the
          reconstruction, channel ``4c + b`` = band b in (A, H, V, D) of channel c (the
          layout of :func:`zoo.wsdnet.model.dwt_channels`); the reconstruction is
          ``idwt_channels(pred_bands)``. ``target`` (B, C, H, W).
        - the value equals ``wavelet_smooth_loss(idwt_channels(pred_bands), target, ...)``
          (the IWT is orthonormal and exactly inverted by the first DWT level); the
          full-resolution difference is never formed, only the target's first level, so the
          SR head can stop at 1/2 resolution. Options as in :func:`wavelet_smooth_loss`.

    Example:
        >>> t = torch.rand(1, 3, 16, 16)
        >>> from zoo.wsdnet.model import dwt_channels
        >>> float(wavelet_smooth_loss_haar1(dwt_channels(t), t))
        0.0
    """
    op = "wavelet_smooth_loss_haar1"
    checks.check_image(pred_bands, "pred_bands", op)
    checks.check_image(target, "target", op)
    checks.check_same_device(op, pred_bands=pred_bands, target=target)
    checks.check_same_dtype(op, pred_bands=pred_bands, target=target)
    _check_options(levels, lambda_low, lambda_high, tree, low_every_level, ll_scale, reduction, op)
    B, C, H, W = target.shape
    m = 1 << levels
    if H % m or W % m or H == 0 or W == 0:
        raise ValueError(f"{op}(): the target size ({H}, {W}) must be divisible by "
                         f"2**levels = {m}. Fix: crop to ({max(m, H - H % m)}, "
                         f"{max(m, W - W % m)}) (and the bands to half that) or use fewer levels.")
    if tuple(pred_bands.shape) != (B, 4 * C, H // 2, W // 2):
        raise ValueError(f"{op}(): `pred_bands` must be (B, 4C, H/2, W/2) = ({B}, {4 * C}, "
                         f"{H // 2}, {W // 2}) for a target {tuple(target.shape)}; got "
                         f"{tuple(pred_bands.shape)}.")
    if target.dtype in (torch.float16, torch.bfloat16):
        pred_bands, target = pred_bands.float(), target.float()
    p1 = pred_bands.unflatten(1, (C, 4)) - haar_dwt2d(target)
    return _wsl_from_level1(p1, levels, lambda_low, lambda_high, tree, low_every_level,
                            ll_scale, reduction)


class WaveletSmoothLoss(nn.Module):
    """Module form of :func:`wavelet_smooth_loss` (stores the options; see its Convention).

    Example:
        >>> loss = WaveletSmoothLoss()
        >>> float(loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)))
        0.0
    """

    def __init__(self, levels: int = 3, lambda_low: float = 1.0, lambda_high: float = 0.8,
                 tree: str = "packet", low_every_level: bool = True,
                 ll_scale: str = "orthonormal", reduction: str = "sum_bands") -> None:
        super().__init__()
        _check_options(levels, lambda_low, lambda_high, tree, low_every_level, ll_scale,
                       reduction, "WaveletSmoothLoss")
        self.levels = levels
        self.lambda_low = float(lambda_low)
        self.lambda_high = float(lambda_high)
        self.tree = tree
        self.low_every_level = low_every_level
        self.ll_scale = ll_scale
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return wavelet_smooth_loss(pred, target, self.levels, self.lambda_low, self.lambda_high,
                                   self.tree, self.low_every_level, self.ll_scale, self.reduction)

    def forward_haar1(self, pred_bands: Tensor, target: Tensor) -> Tensor:
        """The same loss from the reconstruction's level-1 subbands
        (:func:`wavelet_smooth_loss_haar1`)."""
        return wavelet_smooth_loss_haar1(pred_bands, target, self.levels, self.lambda_low,
                                         self.lambda_high, self.tree, self.low_every_level,
                                         self.ll_scale, self.reduction)

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, lambda_low={self.lambda_low}, "
                f"lambda_high={self.lambda_high}, tree={self.tree!r}, "
                f"low_every_level={self.low_every_level}, ll_scale={self.ll_scale!r}, "
                f"reduction={self.reduction!r}")


def structure_distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """ISDNet's structure-distillation (feature affinity) loss L_sd.

    Convention:
        - ``teacher`` is bilinearly resized (align_corners=False) to ``student``'s size; each
          feature map is flattened to (B, C, N) and every *channel* is L2-normalised over the
          N positions; the affinities are the (B, N, N) matrices ``F^T F``; the loss is the
          mean absolute difference, with the teacher's affinity detached.
        - computed in float32 (autocast disabled inside), whatever the input dtype.
        - memory O(B N^2): N = (H/32)^2 for WSDNet's 1/32 feature (1521 for a 1248 crop,
          6400 for 2560: 164 MB per matrix in float32).

    Args:
        student: (B, C, h, w), the deep branch's feature (``"feat_deep"``).
        teacher: (B, C, H', W'), the SR head's feature (``"feat_sr"``).

    Returns:
        Scalar tensor.
    """
    op = "structure_distillation_loss"
    checks.check_image(student, "student", op)
    checks.check_image(teacher, "teacher", op)
    if student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"{op}(): `student` {tuple(student.shape)} and `teacher` "
                         f"{tuple(teacher.shape)} need the same batch and channel sizes.")
    def affinity(f: Tensor) -> Tensor:
        f = F.normalize(f.flatten(2).float(), dim=2)
        return f.transpose(1, 2) @ f

    with torch.autocast(student.device.type, enabled=False):
        teacher = F.interpolate(teacher.float(), size=student.shape[-2:], mode="bilinear",
                                align_corners=False)
        return (affinity(student) - affinity(teacher).detach()).abs().mean()


def labelled_cross_entropy(logits: Tensor, mask: Tensor, ignore_index: int) -> Tensor:
    """Cross-entropy averaged over the pixels of ``mask`` that are not ``ignore_index``
    (0 when none is; differentiable either way)."""
    # The mean over the labelled pixels written as sum / count on the device: asking whether
    # any pixel is labelled would cost a device-to-host sync every step. With none labelled
    # the sum is 0 (still connected to the graph) and the count is clamped to 1.
    total = F.cross_entropy(logits, mask, ignore_index=ignore_index, reduction="sum")
    return total / (mask != ignore_index).sum().clamp(min=1)


class WSDNetLoss(nn.Module):
    """WSDNet's training loss (paper Eq. 5): ``CE(seg) + aux_weight * CE(aux) + WSL (+ L_sd)``.

    Convention:
        - ``outputs`` is :class:`zoo.wsdnet.WSDNet`'s train-mode dict; ``mask`` (B, H, W) int64
          class indices with ``ignore_index`` (255) for unlabelled pixels.
        - cross-entropy: mean over the labelled pixels (zero when none is labelled).
        - WSL: :class:`WaveletSmoothLoss` between ``outputs["recon"]`` and ``outputs["image"]``
          (the normalised input); when H or W is not divisible by 2**levels both are cropped
          (top-left) to the largest multiple first. With ``outputs["recon_bands"]`` (the
          reconstruction's level-1 subbands, ``WSDNet(sr_output="haar1")``) the same loss is
          computed from them (:meth:`WaveletSmoothLoss.forward_haar1`).
        - ``structure_distillation=True`` adds ``sd_weight *``
          :func:`structure_distillation_loss` (``"feat_deep"`` vs ``"feat_sr"``); off by
          default (decision 8).

    Args:
        aux_weight: lambda_3, weight of the auxiliary CE on the ASPP logits (0.1).
        wsl: the Wavelet Smooth Loss module (default ``WaveletSmoothLoss()``).
        wsl_weight: its weight (1.0).
        structure_distillation: add ISDNet's L_sd.
        sd_weight: its weight (1.0).
        ignore_index: label value ignored by the CE terms (255).

    Example:
        >>> from zoo.wsdnet import WSDNet
        >>> model, crit = WSDNet(3).train(), WSDNetLoss()
        >>> out = model(torch.rand(2, 3, 64, 64))
        >>> loss = crit(out, torch.randint(0, 3, (2, 64, 64)))
        >>> loss.backward()
    """

    def __init__(self, aux_weight: float = 0.1, wsl: WaveletSmoothLoss | None = None,
                 wsl_weight: float = 1.0, structure_distillation: bool = False,
                 sd_weight: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        op = "WSDNetLoss"
        self.aux_weight = _check_weight(aux_weight, "aux_weight", op)
        self.wsl_weight = _check_weight(wsl_weight, "wsl_weight", op)
        self.sd_weight = _check_weight(sd_weight, "sd_weight", op)
        self.structure_distillation = bool(structure_distillation)
        self.ignore_index = checks.check_int(ignore_index, "ignore_index", op)
        self.wsl = wsl if wsl is not None else WaveletSmoothLoss()

    def forward(self, outputs: Mapping[str, Tensor], mask: Tensor,
                return_terms: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Total loss; with ``return_terms`` also ``{"seg", "aux", "wsl"[, "sd"]}`` (detached)."""
        op = "WSDNetLoss"
        if not isinstance(outputs, Mapping):
            raise TypeError(f"{op}(): `outputs` must be the dict WSDNet returns in train mode; got "
                            f"{type(outputs).__name__}. Fix: call model.train() before the "
                            f"forward pass.")
        # "recon_bands" (an SR head built with output="haar1") replaces "recon".
        recon_key = "recon_bands" if "recon_bands" in outputs else "recon"
        need = ["seg", "aux", recon_key, "image"] + (
            ["feat_deep", "feat_sr"] if self.structure_distillation else [])
        lacking = [k for k in need if k not in outputs]
        if lacking:
            raise ValueError(f"{op}(): `outputs` lacks {lacking}. Fix: pass WSDNet's train-mode "
                             f"output dict unchanged.")
        checks.check_tensor(mask, "mask", op)
        seg = outputs["seg"]
        if mask.dim() != 3 or mask.shape[0] != seg.shape[0] or mask.shape[-2:] != seg.shape[-2:]:
            raise ValueError(f"{op}(): `mask` must be (B, H, W) = ({seg.shape[0]}, "
                             f"{seg.shape[-2]}, {seg.shape[-1]}) like the logits; got "
                             f"{tuple(mask.shape)}.")
        if mask.dtype != torch.long:
            raise TypeError(f"{op}(): `mask` must be int64 class indices; got {mask.dtype}. Fix: "
                            f"mask.long().")
        terms = {
            "seg": labelled_cross_entropy(seg, mask, self.ignore_index),
            "aux": labelled_cross_entropy(outputs["aux"], mask, self.ignore_index),
        }
        recon, image = outputs[recon_key], outputs["image"]
        m = 1 << self.wsl.levels
        H, W = image.shape[-2:]
        Hc, Wc = H - H % m, W - W % m
        if min(Hc, Wc) == 0:
            raise ValueError(f"{op}(): the image ({H}, {W}) is smaller than 2**levels = {m} "
                             f"on a side; the Wavelet Smooth Loss needs at least that. Fix: "
                             f"use larger crops or fewer levels.")
        image = image[..., :Hc, :Wc]
        dt = torch.promote_types(recon.dtype, image.dtype)
        if recon_key == "recon_bands":
            # The top-left crop's first Haar level is the top-left of the bands (Hc even).
            recon = recon[..., :Hc // 2, :Wc // 2]
            terms["wsl"] = self.wsl.forward_haar1(recon.to(dt), image.to(dt))
        else:
            recon = recon[..., :Hc, :Wc]
            terms["wsl"] = self.wsl(recon.to(dt), image.to(dt))
        total = terms["seg"] + self.aux_weight * terms["aux"] + self.wsl_weight * terms["wsl"]
        if self.structure_distillation:
            terms["sd"] = structure_distillation_loss(outputs["feat_deep"], outputs["feat_sr"])
            total = total + self.sd_weight * terms["sd"]
        if return_terms:
            return total, {k: v.detach() for k, v in terms.items()}
        return total
