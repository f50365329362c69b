"""Labels-only merging: ``sliding_window(..., argmax=True)``.

The blended value of a pixel needs every class of every patch covering it, so its argmax can
only be taken once a row of the image is final. The streamed path finishes rows one patch
row at a time in a (1, C, ph, W) accumulator; :class:`LabelSink` reduces each finished band
to its labels (and winning values) as it is handed over and keeps only those. Memory: the
C x ph x W accumulator plus the labels, never C x H x W.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["LabelSink", "label_dtype"]


def label_dtype(channels: int) -> torch.dtype:
    """The smallest integer dtype holding labels 0 … channels - 1: uint8 up to 256 classes,
    int16 up to 32768, int32 above."""
    if channels <= 256:
        return torch.uint8
    if channels <= 32768:
        return torch.int16
    return torch.int32


class LabelSink:
    """A band sink that keeps (or forwards to ``sink``) the argmax along C of each finished
    band (1, C, h, W), ties to the first maximal channel as ``torch.argmax``; with ``score``,
    the winning channel's value too. Bands arrive top to bottom, each row once."""

    def __init__(self, sink: Callable[[int, Any], Any] | None, score: bool, op: str) -> None:
        self.sink, self.score, self.op = sink, score, op
        self.labels: list[Tensor] = []
        self.scores: list[Tensor] = []

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
        self.labels.append(lab)
        if self.score:
            self.scores.append(value)

    def result(self) -> Tensor | tuple[Tensor, Tensor]:
        """The rows received, (1, rows, W) labels (and scores)."""
        labels = torch.cat(self.labels, 0)[None] if len(self.labels) > 1 else self.labels[0][None]
        if not self.score:
            return labels
        return labels, torch.cat(self.scores, 0)[None]
