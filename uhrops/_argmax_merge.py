"""Labels-only merging for sliding_window(..., argmax=True).

The blended value of a pixel needs every class of every patch covering it, so the argmax can
only be taken once a row of the image is final. The streaming path already finishes rows one
patch row at a time in a (1, C, ph, W) accumulator; here each finished band is reduced to its
label (and winning value) as it is handed over, and only the (H, W) label map is kept. Memory:
C x ph x W floats for the accumulator plus the labels, never C x H x W.

Private: the public entry is :func:`uhrops.tiling.sliding_window` with ``argmax=True``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["label_dtype", "sliding_argmax"]


def label_dtype(channels: int) -> torch.dtype:
    """The smallest integer dtype holding labels 0 … channels - 1: uint8 up to 256 classes,
    int16 up to 32768, int32 above."""
    if channels <= 256:
        return torch.uint8
    if channels <= 32768:
        return torch.int16
    return torch.int32


class _LabelSink:
    """Receives finished float bands (1, C, h, W) from the stream and keeps (or forwards) their
    argmax along C, with torch.max's rule for ties (the first maximal channel, as argmax)."""

    def __init__(self, H: int, W: int, sink: Callable[[int, Any], Any] | None, score: bool,
                 op: str, labels: Tensor | None = None, scores: Tensor | None = None) -> None:
        self.H, self.W, self.sink, self.score, self.op = H, W, sink, score, op
        self.labels, self.scores = labels, scores  # (H, W) each, allocated at the first band

    def __call__(self, y0: int, band: Tensor) -> None:
        C = band.shape[1]
        if C == 0:
            raise ValueError(f"{self.op}(): argmax=True needs `fn` to return at least one "
                             f"channel; got {tuple(band.shape)}. Fix: return (k, C_out, ph, pw) "
                             f"with C_out >= 1, or call without argmax.")
        value, index = torch.max(band[0], dim=0)
        lab = index.to(label_dtype(C))
        if self.sink is not None:
            self.sink(y0, (lab[None], value[None]) if self.score else lab[None])
            return
        h = band.shape[-2]
        if self.labels is None:
            # zeros: rows outside `rows=` stay 0 rather than uninitialised
            self.labels = torch.zeros((self.H, self.W), dtype=lab.dtype, device=band.device)
            if self.score:
                self.scores = torch.zeros((self.H, self.W), dtype=band.dtype,
                                          device=band.device)
        self.labels[y0:y0 + h].copy_(lab)
        if self.scores is not None:
            self.scores[y0:y0 + h].copy_(value)


def sliding_argmax(fn: Callable[..., Tensor], image: Any, grid: Any, batch_size: int,
                   contexts: Any, out_device: Any, progress: bool, reduction: str, weight: Any,
                   device: Any, sink: Callable[[int, Any], Any] | None, rows: Any,
                   score: bool) -> Tensor | tuple[Tensor, Tensor] | None:
    """sliding_window(..., argmax=True): the streamed merge, reduced band by band.

    An in-memory batch of B images runs image by image (so ``fn``'s batches never span two
    images here); each image's labels are bitwise those of ``merged.argmax(1)``, because the
    streamed bands are bitwise the in-memory merge's rows."""
    from uhrops.tiling import _sliding_window_streamed

    op = "sliding_window"
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] != 1 and sink is None:
        if image.shape[0] == 0:
            raise ValueError(f"{op}(): `image` has batch size 0 (shape {tuple(image.shape)}): "
                             f"there is no patch to run `fn` on. Fix: skip the call for an "
                             f"empty batch.")
        parts = [sliding_argmax(fn, image[b:b + 1], grid, batch_size, contexts, out_device,
                                progress, reduction, weight, device, None, rows, score)
                 for b in range(image.shape[0])]
        if score:
            return (torch.cat([p[0] for p in parts], 0),  # type: ignore[index]
                    torch.cat([p[1] for p in parts], 0))  # type: ignore[index]
        return torch.cat(parts, 0)  # type: ignore[arg-type]
    size = getattr(image, "image_size", None) if not isinstance(image, Tensor) else None
    H, W = (int(image.shape[-2]), int(image.shape[-1])) if isinstance(image, Tensor) else \
        (size if isinstance(size, (tuple, list)) and len(size) == 2 else (0, 0))
    keeper = _LabelSink(int(H), int(W), sink, score, op)
    _sliding_window_streamed(fn, image, grid, batch_size, contexts, out_device, progress,
                             reduction, weight, device, keeper, rows)
    if sink is not None:
        return None
    assert keeper.labels is not None
    labels = keeper.labels[None]
    if score:
        assert keeper.scores is not None
        return labels, keeper.scores[None]
    return labels
