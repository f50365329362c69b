"""Labels-only merging: ``sliding_window(..., argmax=True)``.

The blended value of a pixel needs every class of every patch covering it, so its argmax can
only be taken once the pixel is final. The streamed path finishes rows one patch row at a time
in a (1, C, ph, W) accumulator, and each finished band is reduced to its labels (and winning
values) as it is handed over: memory holds that accumulator plus the labels, never C x H x W.

That accumulator still grows with the class count and the image width (100 classes of a
10240-pixel-wide image at ph = 512: 2 GB). With ``max_accumulator_bytes`` the image is cut
into column bands whose accumulators fit (:func:`column_bands`), merged one after another
through :func:`~uhrops.tiling.stream.run_streamed`'s ``cols``; the patch columns that straddle
two bands run once for each. A pixel is merged from the same patches in the same order as in
the whole-width call, so its labels are that call's wherever ``fn`` gives a patch the same
output in another batch. With a ``sink`` the rows are done in strips
(:func:`row_strips`, each recomputing the patch row above it) so that the labels waiting for
their strip's last band stay within the same bytes.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from uhrops._dtypes import accumulation_dtype
from uhrops.tiling.stream import column_grids, probe_output, run_streamed

__all__ = ["LabelBuffer", "LabelSink", "accumulator_bound", "column_bands", "label_dtype",
           "row_strips", "run_labels", "smallest_accumulator_bytes", "smallest_band_width"]


def label_dtype(channels: int) -> torch.dtype:
    """The smallest integer dtype holding labels 0 … channels - 1: uint8 up to 256 classes,
    int16 up to 32768, int32 above."""
    if channels <= 256:
        return torch.uint8
    if channels <= 32768:
        return torch.int16
    return torch.int32


def _reduce(band: Tensor, op: str) -> tuple[Tensor, Tensor]:
    """(labels, winning values) of a merged band (1, C, h, w), ties to the first maximal
    channel as ``torch.argmax``."""
    if band.shape[1] == 0:
        raise ValueError(f"{op}(): argmax=True needs `fn` to return at least one channel; got "
                         f"{tuple(band.shape)}. Fix: return (k, C_out, ph, pw) with "
                         f"C_out >= 1, or call without argmax.")
    value, index = torch.max(band[0], dim=0)
    return index, value


class LabelSink:
    """A band sink that forwards the labels (and winning values, with ``score``) of each
    finished band (1, C, h, W) to ``sink`` as ``(y0, labels)`` or ``(y0, (labels, score))``,
    (1, h, W) each. Bands arrive top to bottom, each row once."""

    def __init__(self, sink: Callable[[int, Any], Any], score: bool, op: str) -> None:
        self.sink, self.score, self.op = sink, score, op

    def __call__(self, y0: int, band: Tensor) -> None:
        index, value = _reduce(band, self.op)
        lab = index.to(label_dtype(band.shape[1]))[None]
        self.sink(y0, (lab, value[None]) if self.score else lab)


class LabelBuffer:
    """The labels (and scores) of image rows ``rows[0]:rows[1]``, all ``width`` columns,
    filled piece by piece: ``put(y0, x0, band)`` reduces a merged band (1, C, h, w) along C
    into rows y0:y0 + h, columns x0:x0 + w. Allocated at the first piece (its dtype follows
    C); every piece must have the first one's C."""

    def __init__(self, rows: tuple[int, int], width: int, score: bool, op: str) -> None:
        self.rows, self.width, self.score, self.op = rows, width, score, op
        self.channels = -1
        self.labels: Tensor | None = None
        self.scores: Tensor | None = None

    def put(self, y0: int, x0: int, band: Tensor) -> None:
        index, value = _reduce(band, self.op)
        C = band.shape[1]
        if self.labels is None:
            self.channels = C
            n = self.rows[1] - self.rows[0]
            self.labels = torch.zeros((n, self.width), dtype=label_dtype(C),
                                      device=band.device)
            if self.score:
                self.scores = torch.zeros((n, self.width), dtype=band.dtype, device=band.device)
        elif C != self.channels:
            raise ValueError(f"{self.op}(): `fn` returned {C} channels for rows {y0}.. of "
                             f"columns {x0}.., {self.channels} before. Fix: make fn return "
                             f"the same number of channels for every batch.")
        r, h, w = y0 - self.rows[0], band.shape[-2], band.shape[-1]
        self.labels[r:r + h, x0:x0 + w].copy_(index)
        if self.scores is not None:
            self.scores[r:r + h, x0:x0 + w].copy_(value)

    def sink(self, x0: int = 0) -> Callable[[int, Tensor], None]:
        """A band sink filling columns from x0 on."""
        return lambda y0, band: self.put(y0, x0, band)

    def result(self) -> Tensor | tuple[Tensor, Tensor] | None:
        """(1, rows, W) labels (and scores); None if nothing was put (see :meth:`zeros`)."""
        if self.labels is None:
            return None
        if self.scores is None:
            return self.labels[None]
        return self.labels[None], self.scores[None]


def _spans(starts: Sequence[int], p: int, size: int, cuts: Sequence[int]) -> list[int]:
    """Per consecutive pair of ``cuts``, the width of the patches meeting [a, b)."""
    out = []
    for a, b in zip(cuts, cuts[1:]):
        meet = starts[bisect.bisect_right(starts, a - p):bisect.bisect_left(starts, b)]
        out.append(min(meet[-1] + p, size) - meet[0] if meet else 0)
    return out


def column_bands(xs: Sequence[int], pw: int, W: int, max_width: int) -> list[tuple[int, int]]:
    """Image columns [0, W) cut into bands [c0, c1), as few as possible, each met by patches
    spanning at most ``max_width`` columns; bands end at patch starts (there only the one patch
    column across the cut runs twice). Empty when even two neighbouring cuts span more."""
    xs = list(xs)
    cuts = sorted({x for x in xs if 0 < x < W} | {0, W})
    if max(_spans(xs, pw, W, cuts)) > max_width:
        return []
    bands, i = [], 0
    while cuts[i] < W:
        j = i + 1  # the next cut always fits (checked above); go as far as the span allows
        while j + 1 < len(cuts) and _spans(xs, pw, W, [cuts[i], cuts[j + 1]])[0] <= max_width:
            j += 1
        bands.append((cuts[i], cuts[j]))
        i = j
    return bands


def smallest_band_width(xs: Sequence[int], pw: int, W: int) -> int:
    """The least ``max_width`` :func:`column_bands` accepts."""
    cuts = sorted({x for x in xs if 0 < x < W} | {0, W})
    return max(_spans(list(xs), pw, W, cuts))


def smallest_accumulator_bytes(grid: Any, channels: int,
                               dtype: torch.dtype = torch.float32) -> int:
    """The least ``max_accumulator_bytes`` that ``sliding_window(argmax=True)`` accepts for
    ``grid`` and an ``fn`` returning ``channels`` channels of ``dtype`` (callers that would
    rather widen their bound than be refused take the larger of the two)."""
    (H, W), (ph, pw) = grid.image_size, grid.patch_size
    per_column = channels * min(ph, H) * accumulation_dtype(dtype).itemsize
    return smallest_band_width(grid.xs, pw, W) * per_column


def accumulator_bound(grid: Any, channels: int, max_bytes: int,
                      dtype: torch.dtype = torch.float32) -> int | None:
    """What a caller that knows C_out passes as ``max_accumulator_bytes`` to keep the merge
    within ``max_bytes`` without ever being refused: None when the whole width fits (no
    bands, and no extra call of ``fn`` to learn C_out), else the larger of ``max_bytes`` and
    :func:`smallest_accumulator_bytes`."""
    (H, W), ph = grid.image_size, grid.patch_size[0]
    if channels * min(ph, H) * W * accumulation_dtype(dtype).itemsize <= max_bytes:
        return None
    return max(max_bytes, smallest_accumulator_bytes(grid, channels, dtype))


def row_strips(ys: Sequence[int], rows: tuple[int, int], max_rows: int
               ) -> list[tuple[int, int]]:
    """Rows [r0, r1) cut at patch row starts into strips of at most ``max_rows`` rows where the
    starts allow (a strip is at least from one start to the next)."""
    r0, r1 = rows
    cuts = [r0] + [y for y in ys if r0 < y < r1] + [r1]
    strips, i = [], 0
    while i + 1 < len(cuts):
        j = i + 1
        while j + 1 < len(cuts) and cuts[j + 1] - cuts[i] <= max_rows:
            j += 1
        strips.append((cuts[i], cuts[j]))
        i = j
    return strips


def run_labels(fn: Callable[..., Tensor], reader: Any, grid: Any, batch_size: int,
               ctx_specs: Sequence[Any], sink: Callable[[int, Any], Any] | None,
               out_device: torch.device | None, device: torch.device | None, reduction: str,
               weight: Any, progress: bool, op: str, rows: tuple[int, int] | None,
               score: bool, max_bytes: int | None) -> Tensor | tuple[Tensor, Tensor] | None:
    """The labels-only merge of one image (arguments checked by sliding_window): the labels
    of ``rows`` (default all) as (1, rows, W), or handed to ``sink``; within ``max_bytes``
    of accumulator when given (see the module docstring)."""
    (H, W), (ph, pw) = grid.image_size, grid.patch_size
    rows = (0, H) if rows is None else rows

    def merge(sink_: Callable[[int, Tensor], Any], rows_: tuple[int, int],
              cols: tuple[int, int] | None = None) -> None:
        run_streamed(fn, reader, grid, batch_size, ctx_specs, sink_, out_device, device,
                     reduction, weight, progress, op, rows_, cols)

    def unbanded() -> Tensor | tuple[Tensor, Tensor] | None:
        if sink is not None:
            merge(LabelSink(sink, score, op), rows)
            return None
        whole = LabelBuffer(rows, W, score, op)
        merge(whole.sink(), rows)
        return whole.result()

    if max_bytes is None:
        return unbanded()
    y = probe_output(fn, reader, grid, ctx_specs, device, op)
    C, itemsize = int(y.shape[1]), accumulation_dtype(y.dtype).itemsize
    per_column = max(C * min(ph, H) * itemsize, 1)
    label_bytes = label_dtype(max(C, 1)).itemsize + (y.element_size() if score else 0)
    del y
    bands = column_bands(grid.xs, pw, W, max_bytes // per_column)
    if not bands:
        need = smallest_band_width(grid.xs, pw, W) * per_column
        raise ValueError(f"{op}(): max_accumulator_bytes={max_bytes} is below the smallest "
                         f"column band this grid allows, {need} bytes (C_out={C} x "
                         f"{min(ph, H)} rows x {itemsize} bytes for each column of the widest "
                         f"span of patches between two neighbouring patch starts). Fix: "
                         f"max_accumulator_bytes >= {need}, or None for one band of the whole "
                         f"width.")
    if len(bands) == 1:
        return unbanded()
    strips = [rows] if sink is None else row_strips(
        grid.ys, rows, max(max_bytes // (W * label_bytes), 1))
    for strip in strips:
        part = LabelBuffer(strip, W, score, op)
        for c0, c1 in bands:
            if column_grids(grid, (c0, c1)) is not None:  # else a gap of a hand-made grid
                merge(part.sink(c0), strip, (c0, c1))
        got = part.result()
        assert got is not None  # some band has patches: every grid has one
        if sink is None:
            return got
        sink(strip[0], got)
    return None
