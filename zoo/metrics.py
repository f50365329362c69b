"""Segmentation metrics with the conventions of the FCtL / ISDNet / WSDNet papers.

One confusion matrix is accumulated over all pixels of all images of a split (rows =
ground truth, columns = prediction, as FCtL's ``bincount(n * gt + pred)``), then:

* IoU_k = TP_k / (TP_k + FP_k + FN_k); a class absent from both prediction and ground
  truth has 0/0 = NaN, counted as **0** (FCtL's ``nan_to_num``), which lowers the mean;
* mIoU = mean of IoU_k over the classes not in `exclude_from_mean`. DeepGlobe excludes
  class 0 "unknown" (its pixels stay in the matrix, so unknown pixels predicted as class k
  are false positives of k); Inria's reported "mIoU" is the building IoU (exclude class 0
  background); URUR averages all 8 classes;
* F1 = mean over the same classes of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) (0/0 -> 0);
* accuracy = pixel accuracy over the pixels whose ground truth is a class not in
  `exclude_from_accuracy`: correct / counted (rows of the matrix summed without those
  classes' rows; a counted pixel predicted as a left-out class is wrong). DeepGlobe leaves its
  "unknown" class (0) out of the accuracy as out of the mean IoU, so both speak of the same
  pixels; Inria keeps its background (a real class, not "no data": its building IoU counts
  background pixels as false positives), so its accuracy is over every labelled pixel; URUR
  leaves out nothing. The classes counted are named in the result (``accuracy_classes``).

Pixels whose ground truth is `ignore_index` are left out entirely.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["SegmentationMetrics", "confusion_matrix", "masked_confusion_matrix",
           "class_mark", "metrics_from_confusion", "metrics_line"]


def _labels(pred: torch.Tensor, target: torch.Tensor, op: str) -> torch.Tensor:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{op}: `pred` and `target` must be tensors; got "
                        f"{type(pred).__name__} and {type(target).__name__}.")
    if pred.is_floating_point() and pred.dim() == target.dim() + 1:
        pred = pred.argmax(1 if pred.dim() > 2 else 0)  # logits (B, K, H, W) or (K, H, W)
    if pred.is_floating_point() or pred.is_complex() or target.is_floating_point():
        raise TypeError(f"{op}: `pred` and `target` must be integer label maps (or `pred` "
                        f"logits with a class dimension); got {pred.dtype} and {target.dtype}. "
                        f"Fix: pass logits.argmax(1) and an integer mask.")
    if pred.shape != target.shape:
        raise ValueError(f"{op}: `pred` has shape {tuple(pred.shape)} but `target` has "
                         f"{tuple(target.shape)}. Fix: resize the prediction to the mask size.")
    if pred.device != target.device:
        raise ValueError(f"{op}: `pred` is on {pred.device} but `target` on {target.device}. "
                         f"Fix: move them to one device.")
    return pred


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """Confusion matrix of one batch: rows = ground truth, columns = prediction.

    Convention:
        ``C[i, j]`` = number of pixels with target i predicted as j (FCtL/GLNet layout).
        Pixels with target == `ignore_index` are skipped; any other target or prediction
        outside 0..num_classes-1 raises (instead of being silently dropped). Float `pred`
        with one more dimension than `target` is taken as logits and arg-maxed over dim 1.

    Args:
        pred: integer labels (any shape) or logits (B, K, H, W).
        target: integer labels, same shape as the labels.
        num_classes: K.
        ignore_index: ground-truth value to skip (None: none).

    Returns:
        int64 (K, K) on the inputs' device.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    op = "confusion_matrix()"
    pred = _labels(pred, target, op)
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    if t.numel():
        bad_t = (t < 0) | (t >= num_classes)
        bad_p = (p < 0) | (p >= num_classes)
        if bool(bad_t.any()):
            raise ValueError(f"{op}: `target` holds values {t[bad_t].unique()[:8].tolist()} "
                             f"outside 0..{num_classes - 1} (ignore_index={ignore_index}). Fix: "
                             f"check num_classes and the mask encoding.")
        if bool(bad_p.any()):
            raise ValueError(f"{op}: `pred` holds values {p[bad_p].unique()[:8].tolist()} "
                             f"outside 0..{num_classes - 1}. Fix: check num_classes.")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes) \
        .view(num_classes, num_classes)


def masked_confusion_matrix(pred: torch.Tensor, target: torch.Tensor,
                            mask: torch.Tensor | None, num_classes: int,
                            ignore_index: int | None = 255) -> torch.Tensor:
    """:func:`confusion_matrix` of the pixels where ``mask`` is True (a region of interest).

    Convention:
        ``mask`` is a bool tensor broadcastable to the label shape (e.g. an (H, W) seam band
        for (B, H, W) labels) or None (every pixel). Pixels outside the mask count nowhere;
        inside it the rules of :func:`confusion_matrix` apply (ignore_index skipped).

    Args:
        pred: integer labels or logits (B, K, H, W).
        target: integer labels.
        mask: bool region, broadcastable to the labels, or None.
        num_classes: K.
        ignore_index: ground-truth value to skip (None: none).

    Returns:
        int64 (K, K), rows = ground truth.

    Example:
        >>> masked_confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]),
        ...                         torch.tensor([True, False, True]), 2).tolist()
        [[1, 1], [0, 0]]
    """
    op = "masked_confusion_matrix()"
    pred = _labels(pred, target, op)
    if mask is None:
        return confusion_matrix(pred, target, num_classes, ignore_index)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{op}: `mask` must be a bool tensor (True = counted) or None; got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}. Fix: mask.bool().")
    try:
        region = torch.broadcast_to(mask.to(target.device), target.shape)
    except RuntimeError:
        raise ValueError(f"{op}: `mask` of shape {tuple(mask.shape)} does not broadcast to "
                         f"the labels {tuple(target.shape)}. Fix: pass an (H, W) or "
                         f"label-shaped mask.") from None
    return confusion_matrix(pred[region], target[region], num_classes, ignore_index)


def metrics_from_confusion(confusion: torch.Tensor, exclude_from_mean: Sequence[int] = (),
                           exclude_from_accuracy: Sequence[int] = ()) -> dict:
    """The papers' metrics from a (K, K) confusion matrix (rows = ground truth).

    Convention:
        See the module docstring: per-class IoU and F1 with 0/0 -> 0, means over the classes
        not in `exclude_from_mean`, pixel accuracy over the pixels whose ground truth is not
        in `exclude_from_accuracy` (0.0 when there are none).

    Args:
        confusion: (K, K) counts.
        exclude_from_mean: classes left out of `miou` and `f1` (their pixels still count in
            the matrix: as false positives of the class predicted).
        exclude_from_accuracy: classes whose ground-truth pixels `accuracy` leaves out
            (DeepGlobe's "unknown"); () counts every labelled pixel.

    Returns:
        dict with float ``miou``, ``f1``, ``accuracy``; lists ``iou``, ``f1_per_class``
        (all K classes); ``mean_classes`` and ``accuracy_classes`` (the class indices the
        means average and whose ground-truth pixels the accuracy counts); ``confusion`` as a
        nested list of ints.

    Example:
        >>> m = metrics_from_confusion(torch.tensor([[3, 1], [0, 4]]), exclude_from_mean=(0,))
        >>> m["miou"], m["accuracy"]
        (0.8, 0.875)
        >>> m = metrics_from_confusion(torch.tensor([[3, 1], [1, 4]]), (0,), (0,))
        >>> m["accuracy"], m["accuracy_classes"]
        (0.8, [1])
    """
    c = confusion.detach().to("cpu", torch.float64)
    K = c.shape[0]
    tp = c.diag()
    gt = c.sum(1)
    pr = c.sum(0)
    union = gt + pr - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))
    f1_den = gt + pr
    f1 = torch.where(f1_den > 0, 2 * tp / f1_den.clamp(min=1), torch.zeros_like(tp))
    keep = [k for k in range(K) if k not in set(int(e) for e in exclude_from_mean)]
    counted = [k for k in range(K) if k not in set(int(e) for e in exclude_from_accuracy)]
    total = gt[counted].sum()
    return {
        "miou": float(iou[keep].mean()) if keep else 0.0,
        "f1": float(f1[keep].mean()) if keep else 0.0,
        "accuracy": float(tp[counted].sum() / total) if total > 0 else 0.0,
        "iou": [float(v) for v in iou],
        "f1_per_class": [float(v) for v in f1],
        "mean_classes": keep,
        "accuracy_classes": counted,
        "confusion": [[int(v) for v in row] for row in confusion.detach().cpu().tolist()],
    }


class SegmentationMetrics:
    """Accumulate one confusion matrix over a split and report mIoU / F1 / accuracy.

    Convention:
        The papers' conventions (module docstring): per-class IoU with NaN -> 0, mean over
        the classes not in `exclude_from_mean` (DeepGlobe (0,), Inria (0,) = building IoU,
        URUR ()), F1 = mean of 2TP/(2TP+FP+FN) over the same classes, accuracy = pixel
        accuracy over the pixels whose ground truth is not in `exclude_from_accuracy`
        (DeepGlobe (0,): the unknown pixels the mean IoU leaves out; Inria and URUR (): every
        labelled pixel). The matrix lives on the device of the first update (GPU updates do
        not synchronise); :meth:`all_reduce` sums it over processes. Rows = ground truth.

    Args:
        num_classes: K.
        exclude_from_mean: classes left out of the means.
        ignore_index: ground-truth value skipped (255).
        exclude_from_accuracy: classes whose pixels the accuracy leaves out; a subset of
            `exclude_from_mean` (a class averaged in the IoU keeps its pixels).

    Example:
        >>> m = SegmentationMetrics(3, exclude_from_mean=(0,))
        >>> m.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
        >>> round(m.compute()["miou"], 3)
        0.25
    """

    def __init__(self, num_classes: int, exclude_from_mean: Sequence[int] = (),
                 ignore_index: int | None = 255,
                 exclude_from_accuracy: Sequence[int] = ()) -> None:
        op = "SegmentationMetrics()"
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"{op}: `num_classes` must be a positive int; got {num_classes!r}.")
        ex = tuple(int(k) for k in exclude_from_mean)
        for k in ex:
            if not 0 <= k < num_classes:
                raise ValueError(f"{op}: `exclude_from_mean` holds {k}, not a class in "
                                 f"0..{num_classes - 1}.")
        if len(set(ex)) >= num_classes:
            raise ValueError(f"{op}: `exclude_from_mean` {ex} leaves no class for the mean.")
        ex_acc = tuple(int(k) for k in exclude_from_accuracy)
        if not set(ex_acc) <= set(ex):
            raise ValueError(f"{op}: `exclude_from_accuracy` {ex_acc} holds classes the mean "
                             f"IoU averages (exclude_from_mean={ex}); the accuracy may leave "
                             f"out only pixels the mean leaves out. Fix: add them to "
                             f"`exclude_from_mean` or drop them from `exclude_from_accuracy`.")
        self.num_classes = num_classes
        self.exclude_from_mean = ex
        self.exclude_from_accuracy = ex_acc
        self.ignore_index = ignore_index
        self.confusion: torch.Tensor = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @classmethod
    def for_dataset(cls, dataset: object, num_classes: int | None = None) -> "SegmentationMetrics":
        """Metrics with a dataset's conventions: a dataset object (uses its ``num_classes``,
        ``exclude_from_mean``, ``ignore_index``, ``exclude_from_accuracy``) or the name of a
        declared dataset
        ("deepglobe" (7 classes), "inria" (2), "urur" (8), "synthetic"), whose rules are read
        from :func:`zoo.data.registry.declared_rules` (the single table of them)."""
        if isinstance(dataset, str):
            from zoo.data.registry import declared_rules  # zoo.data imports torch datasets

            try:
                rules = declared_rules(dataset, num_classes)
            except ValueError as exc:
                raise ValueError(f"SegmentationMetrics.for_dataset(): {exc}") from None
            return cls(num_classes or len(rules.classes), rules.exclude_from_mean,
                       rules.ignore_index, rules.exclude_from_accuracy)
        return cls(num_classes or dataset.num_classes,
                   getattr(dataset, "exclude_from_mean", ()),
                   getattr(dataset, "ignore_index", 255),
                   getattr(dataset, "exclude_from_accuracy", ()))

    def reset(self) -> None:
        self.confusion = torch.zeros_like(self.confusion)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `pred` labels (or logits with a class dim 1) and `target` labels."""
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.confusion.device != cm.device:
            if self.confusion.any():
                cm = cm.to(self.confusion.device)
            else:
                self.confusion = self.confusion.to(cm.device)
        self.confusion += cm

    def all_reduce(self) -> None:
        """Sum the matrix over the processes of the default torch.distributed group."""
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.confusion)

    def compute(self) -> dict:
        """:func:`metrics_from_confusion` of the matrix with this split's class rules."""
        return metrics_from_confusion(self.confusion, self.exclude_from_mean,
                                      self.exclude_from_accuracy)

    def __repr__(self) -> str:
        return (f"SegmentationMetrics(num_classes={self.num_classes}, "
                f"exclude_from_mean={self.exclude_from_mean}, ignore_index={self.ignore_index}, "
                f"exclude_from_accuracy={self.exclude_from_accuracy})")


def _left_out(classes: Sequence[int], num_classes: int, names: Sequence[str]) -> str:
    """The class names (or indices) missing from ``classes``, e.g. "unknown"."""
    out = [k for k in range(num_classes) if k not in set(classes)]
    return ", ".join(names[k] if k < len(names) else str(k) for k in out)


def metrics_line(metrics: dict) -> str:
    """``mIoU .. F1 .. accuracy ..`` of a result, each marked with the classes it leaves out.

    Convention:
        Reads ``miou``, ``f1``, ``accuracy``, ``iou`` (for K), ``mean_classes``,
        ``accuracy_classes`` and ``class_names`` (indices when absent); a metric over every
        class carries no mark. The summary lines of ``zoo.train`` and ``zoo.evaluate`` use
        it, so both say the same.

    Example:
        >>> m = metrics_from_confusion(torch.tensor([[3, 1], [1, 4]]), (0,), (0,))
        >>> metrics_line({**m, "class_names": ["void", "road"]})
        'mIoU 0.6667 (void not in the mean)  F1 0.8000  accuracy 0.8000 (void pixels left out)'
    """
    k = len(metrics.get("iou", []))
    names = list(metrics.get("class_names") or [])
    out_mean = _left_out(metrics.get("mean_classes", range(k)), k, names)
    out_acc = _left_out(metrics.get("accuracy_classes", range(k)), k, names)
    return (f"mIoU {metrics['miou']:.4f}" + (f" ({out_mean} not in the mean)" if out_mean else "")
            + f"  F1 {metrics['f1']:.4f}  accuracy {metrics['accuracy']:.4f}"
            + (f" ({out_acc} pixels left out)" if out_acc else ""))


def class_mark(metrics: dict, k: int) -> str:
    """What the metrics leave out of class ``k``, for a per-class line: "" for a class every
    metric counts, else "(not in the mean)" and, when its pixels are left out of the
    accuracy too, "(its pixels not in the accuracy)".

    Example:
        >>> m = metrics_from_confusion(torch.tensor([[3, 1], [1, 4]]), (0,), (0,))
        >>> class_mark(m, 0), class_mark(m, 1)
        ('(not in the mean)  (its pixels not in the accuracy)', '')
    """
    n = len(metrics.get("iou", []))
    marks = []
    if k not in set(metrics.get("mean_classes", range(n))):
        marks.append("(not in the mean)")
    if k not in set(metrics.get("accuracy_classes", range(n))):
        marks.append("(its pixels not in the accuracy)")
    return "  ".join(marks)
