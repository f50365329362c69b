"""Streaming sliding-window inference: windows read from a *reader*, finished row bands handed
to a *sink*, so that memory holds one batch and one row band, whatever the image height.

The entry is :func:`uhrops.tiling.sliding_window` with a reader as ``image`` and/or ``sink=``;
:class:`WindowReader` and :class:`BandSink` say what those are, and :class:`TensorReader` is
the reader over a tensor already in memory. The loop is the in-memory path's
(:func:`~uhrops.tiling.loop.run_batches`) and so is the arithmetic (the same
:class:`~uhrops.tiling.normalisers.PatchPlacer`, patches placed in the same row-major order),
only into a buffer of one patch row's height instead of the whole output, so results are
bitwise equal to the in-memory call.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from uhrops import checks
from uhrops._dtypes import accumulation_dtype
from uhrops.tiling.batches import check_batch_output
from uhrops.tiling.buffers import empty_buffer
from uhrops.tiling.grid import PatchGrid
from uhrops.tiling.loop import run_batches
from uhrops.tiling.normalisers import PatchPlacer, uncovered_spans
from uhrops.tiling.ops import context_window, contexts_torch

__all__ = ["BandSink", "TensorReader", "WindowReader", "check_reader", "column_grids",
           "patch_range", "probe_output", "run_streamed"]


@runtime_checkable
class WindowReader(Protocol):
    """What :func:`~uhrops.tiling.sliding_window` reads an image through, window by window.

    Convention:
        - ``image_size``: (H, W) of the whole image.
        - ``read(y0, x0, y1, x1)`` returns rows y0:y1 and columns x0:x1 (ends exclusive,
          always inside the image) of one image as a (C, h, w) or (1, C, h, w) floating
          tensor; every window of one call has the same C and dtype. The window may be a
          view: it is copied into the batch before ``fn`` sees it.
        - A GeoTIFF read window by window, a memory map, or :class:`TensorReader`.
    """

    image_size: tuple[int, int]

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:
        ...


@runtime_checkable
class BandSink(Protocol):
    """What receives the finished output rows of a streamed
    :func:`~uhrops.tiling.sliding_window`.

    Convention:
        ``sink(y0, band)`` is called top to bottom, each output row exactly once: ``band`` is
        (1, C_out, h, W) and holds rows y0:y0 + h. It is a view of the call's accumulator,
        valid during the call only: copy what you keep.
    """

    def __call__(self, y0: int, band: Tensor) -> Any:
        ...


class TensorReader:
    """A :class:`WindowReader` over an in-memory (1, C, H, W) or (C, H, W) tensor (views,
    no copies).

    Example:
        >>> r = TensorReader(torch.arange(12.0).reshape(1, 3, 4))
        >>> r.image_size, r.read(1, 1, 3, 3).shape
        ((3, 4), torch.Size([1, 1, 2, 2]))
    """

    def __init__(self, image: Tensor) -> None:
        self.image = image if image.dim() == 4 else image[None]
        self.image_size = (int(self.image.shape[-2]), int(self.image.shape[-1]))

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:
        return self.image[:, :, y0:y1, x0:x1]


def check_reader(reader: object, op: str) -> tuple[int, int]:
    """The (H, W) of a reader, or a TypeError saying what a reader is."""
    size = getattr(reader, "image_size", None)
    if not callable(getattr(reader, "read", None)) or not isinstance(size, (tuple, list)) \
            or len(size) != 2:
        raise TypeError(
            f"{op}(): `image` must be a (B, C, H, W) tensor or a reader: an object with "
            f"`image_size` = (H, W) and `read(y0, x0, y1, x1)` returning that window as a "
            f"(C, h, w) or (1, C, h, w) tensor; got {type(reader).__name__}. Fix: pass a "
            f"tensor, or add those two members to your reader (see sliding_window's example).")
    return (checks.check_int(size[0], "image.image_size[0]", op, 1),
            checks.check_int(size[1], "image.image_size[1]", op, 1))


def _read(reader: Any, y0: int, x0: int, y1: int, x1: int, op: str) -> Tensor:
    """reader.read(...) as (1, C, y1 - y0, x1 - x0), checked."""
    t = reader.read(y0, x0, y1, x1)
    if isinstance(t, Tensor) and t.dim() == 3:
        t = t[None]
    if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[0] != 1 \
            or tuple(t.shape[-2:]) != (y1 - y0, x1 - x0):
        got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{op}(): the reader's read({y0}, {x0}, {y1}, {x1}) must return a "
                         f"(C, {y1 - y0}, {x1 - x0}) or (1, C, {y1 - y0}, {x1 - x0}) tensor; "
                         f"got {got}. Fix: return exactly the window asked for, one image "
                         f"(call sliding_window once per image of a batch).")
    checks.check_float(t, "image.read(...) output", op)
    return t


def _read_context(reader: Any, H: int, W: int, top: int, left: int, wh: int, ww: int,
                  ph: int, pw: int, op: str,
                  check: Callable[[Tensor, str], Tensor] | None = None) -> Tensor:
    """The context of one patch: the part of the window inside the image is read, and the
    in-memory helper pads and resizes it. The window is cut where the image ends, so the
    crop's borders are the image's borders wherever the window crosses them: same output."""

    a, b = max(top, 0), min(top + wh, H)
    c, d = max(left, 0), min(left + ww, W)
    sub = _read(reader, a, c, b, d, op)
    if check is not None:
        check(sub, f"context window read({a}, {c}, {b}, {d})")
    return contexts_torch(sub, [top - a], [left - c], wh, ww, ph, pw, 0.0, True)


class _Bands:
    """The accumulator of one patch row (rows ys[i] : ys[i] + ph) and the hand-over of
    finished rows to the sink.

    Rows [ys[i], ys[i + 1]) are final once every patch of row i is placed (later patches start
    at ys[i + 1] or below); the rest of the row's band, where the next patch row overlaps it,
    is moved to the top of the buffer and added to by the next row, exactly as the in-memory
    output would be at those rows."""

    def __init__(self, ys: Sequence[int], ph: int, H: int, W: int, channels: int,
                 acc_dtype: torch.dtype, out_dtype: torch.dtype, device: torch.device,
                 uncovered_cols: Sequence[tuple[int, int]], sink: Callable[[int, Tensor], Any],
                 rows: tuple[int, int]):

        self.ys, self.ph, self.H, self.W = list(ys), ph, H, W
        self.out_dtype, self.sink = out_dtype, sink
        self.lo, self.hi = rows  # only these image rows reach the sink
        self.buf = empty_buffer((1, channels, min(ph, H), W), acc_dtype, device)
        for a, b in uncovered_cols:  # never written by a patch: zero for good (carries keep it)
            self.buf[..., a:b].zero_()
        self.row = -1
        self.emitted = self.lo  # the next image row the sink gets

    def _give(self, y0: int, band: Tensor) -> None:
        a, b = max(y0, self.lo), min(y0 + band.shape[-2], self.hi)
        if a >= b:  # outside the rows asked for (a warm-up row of a partial run)
            return
        band = band[:, :, a - y0:b - y0]
        self.sink(a, band if band.dtype == self.out_dtype else band.to(self.out_dtype))
        self.emitted = b

    def _zeros_until(self, y: int) -> None:
        """Rows no patch covers (only in hand-made grids with gaps) are zero, as in memory."""
        y = min(y, self.hi)
        if y > self.emitted:
            z = torch.zeros((1, self.buf.shape[1], y - self.emitted, self.W),
                            dtype=self.buf.dtype, device=self.buf.device)
            self._give(self.emitted, z)

    def open(self, i: int) -> None:
        """Finish patch row i - 1 (if any) and make the buffer hold row i."""
        y = self.ys[i]
        if self.row < 0:
            self._zeros_until(y)
        else:
            py = self.ys[self.row]
            pend = min(py + self.ph, self.H)
            self._give(py, self.buf[:, :, :min(y, pend) - py])
            self._zeros_until(y)
            if pend > y:  # the overlap with row i moves up by `shift` rows; chunks of at
                # most `shift` rows, top first, never overwrite rows not yet moved, so no
                # C x overlap x W temporary is needed (C can be 100 classes of a wide image)
                shift, n = y - py, pend - y
                for a in range(0, n, shift):
                    b = min(a + shift, n)
                    self.buf[:, :, a:b].copy_(self.buf[:, :, a + shift:b + shift])
        self.row = i

    def view(self) -> tuple[Tensor, int]:
        """(buffer, image row of its first row)."""
        return self.buf, self.ys[self.row]

    def close(self) -> None:
        if self.row >= 0:
            py = self.ys[self.row]
            self._give(py, self.buf[:, :, :min(py + self.ph, self.H) - py])
        self._zeros_until(self.H)


def patch_range(grid: Any, rows: tuple[int, int], batch_size: int
                ) -> tuple[int, int, int, int]:
    """(first, end) of the patches (row-major) that cover image rows [r0, r1), and (kb, ke),
    the run of whole batches of the full call that holds them.

    Rows >= r0 receive nothing from patch rows that end at or above r0, so starting at the
    first patch row that reaches r0 gives those rows exactly the full call's operations; the
    rows above it that the same patches touch hold partial sums and are not handed out. The
    batches are the full call's (``fn`` sees the same batches: a network whose results
    depend on the batch composition gives the same bits too)."""
    H = grid.image_size[0]
    ph = grid.patch_size[0]
    nx = len(grid.xs)
    need = [i for i, y in enumerate(grid.ys) if y < rows[1] and min(y + ph, H) > rows[0]]
    if not need:
        return 0, 0, 0, 0
    first, end = need[0] * nx, (need[-1] + 1) * nx
    total = len(grid.ys) * nx
    return first, end, first // batch_size * batch_size, \
        min(-(-end // batch_size) * batch_size, total)


class _ReaderBatches:
    """The streamed source: each patch's window (and context windows) read through the
    reader into a batch buffer (the previous one when free). Every window must have the first
    one's channels and dtype: a batch is filled in place, where 1 channel would be broadcast
    over 3 and a 4th would start a new batch shape that fn was never checked with."""

    def __init__(self, reader: Any, grid: Any, ctx_specs: Sequence[Any],
                 device: torch.device | None, op: str) -> None:
        self.reader, self.grid, self.ctx_specs, self.device, self.op = (
            reader, grid, ctx_specs, device, op)
        self.reuses = device is None  # a batch sent elsewhere is a copy: nothing to refill
        self.starts = [(y, x) for y in grid.ys for x in grid.xs]
        self.first_in: tuple[int, torch.dtype] | None = None  # the first window's format

    def same_input(self, t: Tensor, where: str) -> Tensor:
        now = (int(t.shape[1]), t.dtype)
        if self.first_in is None:
            self.first_in = now
        elif now != self.first_in:
            raise ValueError(f"{self.op}(): the reader's {where} has (channels, dtype) {now}, "
                             f"the first window had {self.first_in}. Fix: make the reader "
                             f"return the same channels and dtype for every window (e.g. "
                             f"repeat a grey band, drop an alpha band, convert once).")
        return t

    def batch(self, k0: int, k1: int, spare: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        (H, W), (ph, pw), op = self.grid.image_size, self.grid.patch_size, self.op
        batch = None
        for r, (y, x) in enumerate(self.starts[k0:k1]):
            hh, ww = min(ph, H - y), min(pw, W - x)
            t = self.same_input(_read(self.reader, y, x, y + hh, x + ww, op),
                                f"window read({y}, {x}, {y + hh}, {x + ww})")
            if batch is None:
                shape = (k1 - k0, t.shape[1], ph, pw)
                if spare is not None and tuple(spare.shape) == shape \
                        and spare.dtype == t.dtype and spare.device == t.device:
                    batch, spare = spare, None
                else:
                    batch = empty_buffer(shape, t.dtype, t.device)
            if hh < ph or ww < pw:
                batch[r].zero_()
            batch[r, :, :hh, :ww].copy_(t[0])
            del t
        assert batch is not None
        if self.device is not None:
            batch = batch.to(self.device)
        extra = []
        for c in self.ctx_specs:
            if callable(c):  # an in-memory image's callables get the image itself
                src = self.reader.image if isinstance(self.reader, TensorReader) else self.reader
                part = c(src, self.grid.boxes[k0:k1])
            else:
                wh, wwc, oy, ox = context_window(self.grid, c)
                part = torch.cat([_read_context(self.reader, H, W, y - oy, x - ox, wh, wwc,
                                                ph, pw, op, self.same_input)
                                  for y, x in self.starts[k0:k1]], 0)
            extra.append(part if self.device is None else part.to(self.device))
        return batch, extra


class _BandTarget:
    """The streamed target: each output placed into one patch row's band (:class:`_Bands`),
    finished rows handed to the sink; patches outside [first, end) run only for their batch's
    sake (a partial run, see :func:`patch_range`)."""

    def __init__(self, grid: Any, sink: Callable[[int, Tensor], Any], rows: tuple[int, int],
                 needed: tuple[int, int], out_device: torch.device | None, reduction: str,
                 weight: Any, op: str) -> None:
        self.grid, self.sink, self.rows, self.needed = grid, sink, rows, needed
        self.out_device, self.reduction, self.weight, self.op = out_device, reduction, weight, op
        self.bands: _Bands | None = None
        self.placer: PatchPlacer | None = None

    def start(self, y: Tensor) -> None:
        (H, W), (ph, pw) = self.grid.image_size, self.grid.patch_size
        odev = self.out_device if self.out_device is not None else y.device
        self.bands = _Bands(self.grid.ys, ph, H, W, y.shape[1], accumulation_dtype(y.dtype),
                            y.dtype, odev, uncovered_spans(self.grid.xs, pw, W), self.sink,
                            self.rows)
        self.placer = PatchPlacer(self.grid, self.weight, self.reduction, self.bands.buf,
                                  self.op)

    def add(self, y: Tensor, k0: int, k1: int) -> None:
        bands, placer = self.bands, self.placer
        assert bands is not None and placer is not None
        yo = y.to(device=bands.buf.device)
        nx = len(self.grid.xs)
        for r, k in enumerate(range(k0, k1)):
            if not self.needed[0] <= k < self.needed[1]:  # run for the batch's sake
                continue
            if k // nx != bands.row:
                bands.open(k // nx)
            buf, top = bands.view()
            placer.place(buf, top, yo[r:r + 1], k)

    def finish(self, fn: Callable[..., Tensor], reader: Any) -> None:
        if self.bands is None:  # rows no patch covers (a gap of a hand-made grid): zeros
            (H, W), (ph, pw) = self.grid.image_size, self.grid.patch_size
            t = _read(reader, 0, 0, 1, 1, self.op)
            probe = fn(empty_buffer((1, t.shape[1], ph, pw), t.dtype, t.device).zero_())
            self.bands = _Bands(self.grid.ys, ph, H, W, probe.shape[1], probe.dtype,
                                probe.dtype, self.out_device or probe.device, (), self.sink,
                                self.rows)
        self.bands.close()


def column_grids(grid: Any, cols: tuple[int, int]) -> tuple[PatchGrid, PatchGrid, int] | None:
    """The patch columns that meet image columns [c0, c1): ``(read_grid, place_grid, left)``,
    or None when no patch does (a gap of a hand-made grid).

    ``read_grid`` keeps those columns at their places in the whole image (windows and their
    contexts are read there); ``place_grid`` is the same patches over the image cut to their
    span [left, right), which is where they are merged. A pixel of [c0, c1) is covered by the
    same patches, in the same order, in both and in ``grid``: its Σw, its first (writing)
    patch and its sum are the whole-width merge's, bit for bit. Pixels of the span outside
    [c0, c1) miss the patches beyond it and are not handed out."""
    (H, W), (ph, pw) = grid.image_size, grid.patch_size
    c0, c1 = cols
    xs = list(grid.xs)
    meet = xs[bisect.bisect_right(xs, c0 - pw):bisect.bisect_left(xs, c1)]
    if not meet:
        return None
    left, right = meet[0], min(meet[-1] + pw, W)
    read_grid = PatchGrid(grid.image_size, grid.patch_size, grid.ys, tuple(meet))
    place_grid = PatchGrid((H, right - left), grid.patch_size, grid.ys,
                           tuple(x - left for x in meet))
    return read_grid, place_grid, left


def probe_output(fn: Callable[..., Tensor], reader: Any, grid: Any, ctx_specs: Sequence[Any],
                 device: torch.device | None, op: str) -> Tensor:
    """``fn``'s output for the grid's first patch alone (checked like every batch): what a
    caller that must size buffers before the first band learns C_out and the dtype from."""
    batch, extra = _ReaderBatches(reader, grid, ctx_specs, device, op).batch(0, 1, None)
    with torch.no_grad():
        y = fn(batch, *extra)
    check_batch_output(y, 0, 1, 1, len(grid), grid.patch_size, None, op)
    return y


def run_streamed(fn: Callable[..., Tensor], reader: Any, grid: Any, batch_size: int,
                 ctx_specs: Sequence[Any], sink: Callable[[int, Tensor], Any] | None,
                 out_device: torch.device | None, device: torch.device | None, reduction: str,
                 weight: Any, progress: bool, op: str,
                 rows: tuple[int, int] | None = None,
                 cols: tuple[int, int] | None = None) -> Tensor | None:
    """The streaming body of sliding_window (arguments already checked there): the batch
    loop of :mod:`uhrops.tiling.loop` from a reader into one patch row's band.

    ``cols=(c0, c1)`` (with a ``sink``) merges only the patch columns that meet image
    columns c0:c1 into a band as wide as their span (:func:`column_grids`) and hands the
    sink ``(y0, band)`` with band (1, C_out, h, c1 - c0): those columns of the whole-width
    call, bit for bit where ``fn`` gives each patch the same output in its new batch
    (batches are cut from these patches alone)."""
    H, W = grid.image_size
    rows = (0, H) if rows is None else rows
    place_grid = grid
    if cols is not None:
        assert sink is not None, "cols needs a sink"
        grids = column_grids(grid, cols)
        if grids is None:
            raise ValueError(f"{op}(): no patch meets columns {cols[0]}:{cols[1]}.")
        grid, place_grid, left = grids
        a, b, whole_sink = cols[0] - left, cols[1] - left, sink

        def sink(y0: int, band: Tensor) -> None:
            whole_sink(y0, band[..., a:b])

    first_k, end_k, kb, ke = patch_range(grid, rows, batch_size)
    out: Tensor | None = None
    if sink is None:  # no sink: rows r0:r1 of the output (all rows: the whole output)
        def sink(y0: int, band: Tensor) -> None:
            nonlocal out
            if out is None:
                out = empty_buffer((1, band.shape[1], rows[1] - rows[0], W), band.dtype,
                                   band.device)
            out[:, :, y0 - rows[0]:y0 - rows[0] + band.shape[-2]].copy_(band)

    source = _ReaderBatches(reader, grid, ctx_specs, device, op)
    target = _BandTarget(place_grid, sink, rows, (first_k, end_k), out_device, reduction,
                         weight, op)
    with torch.no_grad():
        run_batches(fn, source, target, grid.patch_size, batch_size, len(grid), (kb, ke),
                    progress, op)
        target.finish(fn, reader)
    return out
