"""Segmentation losses shared by the zoo models.

:func:`focal_loss` is the multi-class focal loss of FCtL's (and GLNet's) ``utils/loss.py``,
which both papers train with, with gamma = 3 and no alpha weighting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uhrops import checks

__all__ = ["focal_loss", "FocalLoss"]


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 3.0, eps: float = 1e-7,
               ignore_index: int | None = 255, reduction: str = "mean",
               check_labels: bool = True) -> Tensor:
    """Multi-class focal loss on raw logits, as FCtL/GLNet compute it.

    Convention:
        - logits (B, C, H, W), target (B, H, W) int64 class indices. Per pixel
          p_t = softmax(logits)[target], clamped to [eps, 1 - eps]; loss = -(1 - p_t)^gamma ·
          log p_t. No alpha weighting, every class counts (FCtL trains class 0 too).
        - ``reduction="mean"`` averages over the pixels whose target is not
          ``ignore_index`` (FCtL's masks have none, so it is the mean over all pixels, its
          ``size_average=True``); ``"sum"`` sums them; ``"none"`` returns (B, H, W) with 0 at
          ignored pixels. All pixels ignored gives 0 for "mean".
        - The softmax is computed in float32 for fp16/bf16 logits (result in float32).
        - Target values outside [0, C) other than ``ignore_index`` raise ValueError when
          ``check_labels`` (the default). That check reads the labels on the host (a
          device-to-host sync); the trainer turns it off because its masks were checked when
          they were read (:meth:`zoo.data.base.SegmentationDataset.load_mask`).

    Args:
        logits: (B, C, H, W) floating tensor.
        target: (B, H, W) integer tensor.
        gamma: focusing exponent (3 in FCtL).
        eps: probability clamp.
        ignore_index: label to leave out (None: none).
        reduction: "mean", "sum" or "none".
        check_labels: refuse out-of-range labels (syncs with the device).

    Returns:
        A scalar (or (B, H, W) for "none").

    Example:
        >>> focal_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        tensor(0.0866)
    """
    op = "focal_loss"
    logits = checks.check_image(logits, "logits", op)
    target = checks.check_tensor(target, "target", op)
    checks.check_rank(target, "target", op, 3, "(B, H, W)")
    checks.check_choice(reduction, "reduction", op, ("mean", "sum", "none"))
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"{op}(): `target` must hold integer class indices; got {target.dtype}. "
                        "Fix: target.long().")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"{op}(): `target` has shape {tuple(target.shape)} but `logits` "
                         f"{tuple(logits.shape)} needs ({logits.shape[0]}, {logits.shape[2]}, "
                         f"{logits.shape[3]}). Fix: resize one to the other.")
    n = logits.shape[1]
    target = target.long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None \
        else target != ignore_index
    bad = valid & ((target < 0) | (target >= n)) if check_labels else None
    if bad is not None and bool(bad.any()):
        raise ValueError(f"{op}(): `target` holds labels outside [0, {n}) (e.g. "
                         f"{int(target[bad][0])}) that are not ignore_index={ignore_index}. Fix: "
                         "map them to class indices (RGB masks must be converted first).")
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = F.log_softmax(x, dim=1)
    safe = torch.where(valid, target, torch.zeros_like(target))
    p_t = logp.gather(1, safe.unsqueeze(1)).squeeze(1).exp().clamp(eps, 1.0 - eps)
    loss = -(1.0 - p_t).pow(gamma) * p_t.log()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum().clamp(min=1)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss` (stores gamma, eps, ignore_index, reduction)."""

    def __init__(self, gamma: float = 3.0, eps: float = 1e-7, ignore_index: int | None = 255,
                 reduction: str = "mean", check_labels: bool = True) -> None:
        super().__init__()
        checks.check_choice(reduction, "reduction", "FocalLoss", ("mean", "sum", "none"))
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.check_labels = bool(check_labels)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.gamma, self.eps, self.ignore_index,
                          self.reduction, self.check_labels)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, eps={self.eps}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}")
