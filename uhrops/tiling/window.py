"""Sliding-window inference: run a network over every patch of an image, batch by batch,
and merge the results, in memory or streamed (:mod:`uhrops.tiling.stream`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import torch
from torch import Tensor

from uhrops import checks
from uhrops._backend import get_backend, use_backend
from uhrops._dtypes import accumulation_dtype
from uhrops.tiling.argmax import run_labels
from uhrops.tiling.buffers import pool_keep, pooled_empty
from uhrops.tiling.grid import PatchGrid, check_grid, check_image_grid
from uhrops.tiling.loop import run_batches
from uhrops.tiling.normalisers import PatchPlacer, weight_map, zero_uncovered
from uhrops.tiling.stream import TensorReader, check_reader, run_streamed
from uhrops.tiling.ops import (check_scale, context_window, contexts_torch, extract_contexts,
                               extract_patches, merge_patches, why_no_kernel)

__all__ = ["sliding_window"]


def _crop_boxes(image: Tensor, starts: Sequence[tuple[int, int]], ph: int, pw: int,
                out: Tensor) -> None:
    """Copy patches at `starts` of one image (1, C, H, W) into out (k, C, ph, pw)."""
    H, W = image.shape[-2:]
    for k, (y, x) in enumerate(starts):
        hh, ww = min(ph, H - y), min(pw, W - x)
        if hh < ph or ww < pw:
            out[k].zero_()
        out[k, :, :hh, :ww].copy_(image[0, :, y:y + hh, x:x + ww])


def _contexts_boxes(image: Tensor, grid: PatchGrid, starts: Sequence[tuple[int, int]],
                    scale: float) -> Tensor:
    """Contexts (scale) of the patches at `starts` of one image (1, C, H, W), no autograd."""
    wh, ww, oy, ox = context_window(grid, scale)
    ph, pw = grid.patch_size
    runs: list[tuple[int, list[int]]] = []  # consecutive patches of one row share the H pass
    for y, x in starts:
        if runs and runs[-1][0] == y:
            runs[-1][1].append(x - ox)
        else:
            runs.append((y, [x - ox]))
    parts = [contexts_torch(image, [y - oy], xs, wh, ww, ph, pw, 0.0, True) for y, xs in runs]
    return torch.cat(parts, 0) if len(parts) > 1 else parts[0]


def _torch_where_no_kernel(no_kernel: str | None) -> Any:
    """use_backend("torch") where "triton" is selected but the op has no kernel for the call.

    sliding_window has no kernel of its own and its no-grad path is plain PyTorch under every
    backend, so its differentiable path must not refuse (float64, contexts) what that path
    accepts."""
    if no_kernel is not None and get_backend() == "triton":
        return use_backend("torch")
    return contextlib.nullcontext()


def sliding_window(fn: Callable[..., Tensor], image: Tensor, grid: PatchGrid, batch_size: int,
                   contexts: Sequence[Union[float, Callable[[Tensor, Tensor], Tensor]]] = (),
                   out_device: torch.device | str | None = None, progress: bool = False, *,
                   reduction: str = "mean", weight: Union[str, Tensor, None] = None,
                   device: torch.device | str | None = None,
                   sink: Callable[[int, Tensor], Any] | None = None,
                   rows: tuple[int, int] | None = None, argmax: bool = False,
                   score: bool = False, max_accumulator_bytes: int | None = None
                   ) -> Union[Tensor, tuple[Tensor, Tensor], None]:
    """Run ``fn`` over every patch of ``grid``, batch by batch, and merge the results.

    Convention:
        - Patches are taken in the order of :func:`extract_patches` (batch-major, row-major)
          and sent to ``fn`` ``batch_size`` at a time (a batch may span two images). Each
          batch is a fresh tensor on ``device`` (default ``image.device``), never a view, so
          ``fn`` may modify it freely (in place too, with or without gradients; with
          gradients the change is part of the graph); ``image`` itself is never written to.
        - ``contexts``: for each entry the matching batch is passed as an extra argument,
          ``fn(patches, ctx_1, ctx_2, ...)``. A number is a context scale (as in
          :func:`extract_contexts` with its defaults: patch-sized output, black padding,
          antialiased); a callable ``c(image_b, boxes)`` gets one image (1, C, H, W) and the
          (k, 4) int64 boxes of its patches in the batch and returns a (k, ...) tensor.
        - ``fn`` returns (k, C_out, ph, pw), with the same C_out, dtype and device for every
          batch (a change raises ValueError naming the batch). Its output is only read (never
          modified in place, unlike MONAI 1.6.1 which multiplies the predictor's output in
          place) and is accumulated into a (B, C_out, H, W) output on ``out_device`` (default
          ``image.device``) with per-pixel factors w/Σw (Σw derived from the grid for one row
          of patches at a time, so no full-size normaliser is ever built); the result equals
          ``merge_patches(fn(extract_patches(image, grid)), grid, reduction, weight)``.
        - Memory: the output plus one batch (and its contexts) plus the normaliser of one
          row of patches (ph x W); patches are never all held. fp16/bf16 outputs are accumulated in
          float32. If ``fn``'s output requires grad (grad mode on and ``fn`` has trainable
          parameters, or ``image`` requires grad), the outputs are kept and merged with the
          differentiable :func:`merge_patches` instead, which holds all patch outputs (the
          autograd graph holds them anyway). Under ``use_backend("triton")`` the steps that
          have no Triton kernel (float64, contexts) take the PyTorch path in both modes.
        - Streaming (images of any size): ``image`` may be a *reader*, any object with
          ``image_size`` = (H, W) and ``read(y0, x0, y1, x1)`` returning that window of one
          image as a (C, h, w) or (1, C, h, w) floating tensor (a file opened window by
          window, a memory map, ...), and/or ``sink`` a callable ``sink(y0, band)`` that
          receives the finished output rows ``y0 : y0 + band.shape[-2]`` as a
          (1, C_out, h, W) tensor, top to bottom, each row exactly once. Then only the
          windows of one batch (and their contexts, read window by window) and an
          accumulator of one patch row (ph x W) are held, whatever the image height: the
          rows of a patch row are handed to the sink as soon as the next patch row starts
          below them. ``band`` is a view of that accumulator, valid during the call only
          (copy what you keep). Same patches, same batches, same factors w/Σw, same
          accumulation order as the in-memory call: the merged rows are bitwise equal to
          it. Without ``sink`` the rows are gathered into the returned tensor; with one,
          the call returns None. No autograd (run under ``torch.no_grad``); one image
          (B = 1); callable contexts receive the reader (the tensor, for a tensor image).
        - ``rows=(r0, r1)`` (streaming only) computes only output rows r0:r1, bitwise equal
          to those rows of the full call: it runs the full call's batches that hold the
          patches covering those rows (so a band can be resumed, or bands of one image shared
          out between processes, recomputing at most the one patch row above r0). Without
          a sink the call returns only those rows, a (1, C_out, r1 - r0, W) tensor (no
          rows that were not computed: nothing is returned that could be mistaken for
          output); with a sink, the sink receives only those rows.
        - Every window a reader returns must have the first window's channels and dtype
          (checked: ValueError naming the window).
        - ``argmax=True`` (labels only) returns the label map ``merged.argmax(1)``, (B, H, W)
          in the smallest integer dtype (uint8 up to 256 classes, int16 up to 32768), ties
          to the first maximal channel as ``torch.argmax``; ``score=True`` returns
          ``(labels, score)`` with score the merged value of the winning channel (the blended
          probability when ``fn`` returns probabilities), in ``fn``'s dtype. It runs the
          streaming path (in memory too: one image after another, batches never spanning two
          images), so only one patch row's accumulator (C_out x ph x W) is held, never
          C_out x H x W; the labels are bitwise the argmax of the full merge of the same
          batches (per image; with B > 1 the full call's batches may span two images, which
          can move ``fn``'s output by rounding, e.g. oneDNN convolutions). With a
          ``sink``, it receives ``(y0, labels)`` (1, h, W), or ``(y0, (labels, score))``;
          with ``rows`` and no sink, only those rows are returned, as without ``argmax``.
          No autograd (argmax has no gradient).
        - ``max_accumulator_bytes`` (with ``argmax``) bounds that accumulator whatever C_out and
          W: the columns are cut at patch starts into bands whose patches span at most
          max_accumulator_bytes / (C_out x ph x itemsize) columns (itemsize of the accumulation
          dtype: 4 for float32/fp16/bf16 outputs), merged one band after another; the patch
          column across each cut runs once for each of its two bands (100 classes of a 10240²
          image, 512² patches at stride 384: the whole width takes 2 GiB; 512 MiB gives 5 bands
          and 15 % more patches, 256 MiB 13 bands and 44 %), and ``fn`` runs once more, on the
          first patch alone, to learn C_out. A pixel is merged from the same patches in the same
          order as without the bound, so its labels and score are the same bits wherever ``fn``
          gives a patch the same output whatever its batch mates (batches are cut from each
          band's patches). With a ``sink``, rows are done in strips cut at patch row starts
          (each recomputing the patch row above it) whose labels fit the same bytes; the sink
          receives each strip's labels once its last band is merged. A bound below the narrowest
          band the grid allows is a ValueError giving the least that works. The bytes counted
          are the accumulator's; fn's output batch, the (ph, span) normaliser and the argmax's
          (ph, span) temporaries come on top.


    Args:
        fn: callable on a batch of patches (and contexts).
        image: (B, C, H, W) floating tensor, (H, W) == ``grid.image_size``; may stay on
            the CPU while ``fn`` runs elsewhere (see ``device``).
        grid: the patch grid.
        batch_size: patches per call of ``fn`` (>= 1).
        contexts: context scales and/or callables, one extra ``fn`` argument each.
        out_device: device of the merged output (default ``image.device``).
        progress: show a tqdm progress bar.
        reduction: "mean" or "sum", as in :func:`merge_patches`.
        weight: None, "constant", "gaussian", "hann" or a (ph, pw) tensor, as in
            :func:`merge_patches`.
        device: device the batches are sent to before ``fn`` (default ``image.device``;
            for a reader, where its windows are).
        sink: ``sink(y0, band)`` receiving finished row bands (streaming; see above).
        rows: (r0, r1): only these output rows (streaming; see above).
        argmax: return the label map instead of the merged channels (see above).
        score: with ``argmax``, also return the winning channel's merged value.
        max_accumulator_bytes: with ``argmax``, the most bytes of the merge's C_out-channel
            accumulator (None: one band of the whole width; see above).

    Returns:
        (B, C_out, H, W) tensor on ``out_device``; None when a ``sink`` took the rows;
        with ``argmax``, (B, H, W) labels (and (B, H, W) scores with ``score``).

    Example:
        >>> g = PatchGrid.from_stride(64, 32, 16)
        >>> x = torch.rand(1, 3, 64, 64)
        >>> y = sliding_window(lambda p: p[:, :1] * 2, x, g, batch_size=4)
        >>> torch.allclose(y, 2 * x[:, :1])
        True

        A reader of your own (here over a memory map; a GeoTIFF read window by window
        works the same way) and a sink writing each finished band out:

        >>> import numpy as np
        >>> class MemmapReader:
        ...     def __init__(self, array):  # (C, H, W) uint8, e.g. np.memmap of a raw file
        ...         self.array, self.image_size = array, array.shape[1:]
        ...     def read(self, y0, x0, y1, x1):
        ...         return torch.from_numpy(self.array[:, y0:y1, x0:x1] / 255.0).float()
        >>> pixels = np.random.randint(0, 256, (3, 64, 48), dtype=np.uint8)
        >>> rows = []
        >>> sliding_window(lambda p: p[:, :1] * 2, MemmapReader(pixels),
        ...                PatchGrid.from_stride((64, 48), 32, 16), batch_size=4,
        ...                sink=lambda y0, band: rows.append((y0, band.clone())))
        >>> [(y0, tuple(b.shape)) for y0, b in rows]
        [(0, (1, 1, 16, 48)), (16, (1, 1, 16, 48)), (32, (1, 1, 32, 48))]
    """
    op = "sliding_window"
    if not isinstance(argmax, bool) or not isinstance(score, bool) or (score and not argmax):
        raise ValueError(f"{op}(): `argmax` and `score` must be bools, and `score=True` needs "
                         f"`argmax=True`; got argmax={argmax!r}, score={score!r}. Fix: "
                         f"argmax=True, score=True for the labels and their merged value.")
    if max_accumulator_bytes is not None:
        if not argmax:
            raise ValueError(f"{op}(): `max_accumulator_bytes` bounds the labels-only merge and "
                             f"needs `argmax=True`; got argmax=False. Fix: argmax=True, or "
                             f"stream the merged channels with a `sink` (one patch row held).")
        max_accumulator_bytes = checks.check_int(max_accumulator_bytes,
                                                 "max_accumulator_bytes", op, 1)
    if argmax:
        return _labels_only(fn, image, grid, batch_size, contexts, out_device, bool(progress),
                            reduction, weight, device, sink, rows, score,
                            max_accumulator_bytes, op)
    a = _check_arguments(fn, image, grid, batch_size, contexts, out_device, reduction, weight,
                         device, sink, rows, op)
    if a.reader is not None:
        return run_streamed(fn, a.reader, a.grid, a.batch_size, a.ctx_specs, sink, a.out_device,
                            a.device, reduction, weight, bool(progress), op, a.rows)
    image, grid = a.image, a.grid
    # with autograd the patches come from the custom ops, so the image gets its gradient
    differentiable = torch.is_grad_enabled() and image.requires_grad
    source = _ImageBatches(image, grid, a.ctx_specs, a.device, differentiable)
    target = _Merged(image.shape[0], grid, a.out_device, reduction, weight, op)
    total = image.shape[0] * len(grid)
    spare = run_batches(fn, source, target, grid.patch_size, a.batch_size, total, (0, total),
                        bool(progress), op)
    return target.finish(spare)


class _ImageBatches:
    """The in-memory source: patches cropped from the image tensor into a batch buffer (the
    previous one when free), or with autograd sliced from :func:`extract_patches` (and
    :func:`extract_contexts`) so the image gets its gradient. A batch may span two images."""

    def __init__(self, image: Tensor, grid: PatchGrid, ctx_specs: Sequence[Any],
                 device: torch.device | None, differentiable: bool) -> None:
        self.image, self.grid, self.ctx_specs, self.device = image, grid, ctx_specs, device
        self.differentiable = differentiable
        self.reuses = not differentiable
        self.n = len(grid)
        self.starts = [(y, x) for y in grid.ys for x in grid.xs]
        if differentiable:
            with _torch_where_no_kernel(why_no_kernel("extract_patches", image.dtype)):
                self.all_patches = extract_patches(image, grid)
            with _torch_where_no_kernel(why_no_kernel("extract_contexts", image.dtype)):
                self.all_ctx = [extract_contexts(image, grid, c) if not callable(c) else None
                                for c in ctx_specs]

    def batch(self, k0: int, k1: int, spare: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        segs: list[tuple[int, list[int]]] = []  # (image, [patch index within the image])
        for k in range(k0, k1):
            b, i = divmod(k, self.n)
            if segs and segs[-1][0] == b:
                segs[-1][1].append(i)
            else:
                segs.append((b, [i]))
        image, (ph, pw) = self.image, self.grid.patch_size
        if self.differentiable:
            # a copy, not a slice: autograd forbids in-place changes to a view of a custom
            # op's output, and fn may modify its batch (one batch of extra memory)
            batch = self.all_patches[k0:k1].to(self.device, copy=True)
        else:
            with torch.no_grad():
                if spare is not None and spare.shape[0] == k1 - k0:
                    batch, spare = spare, None
                else:
                    pool_keep(spare)  # the full-size batch, for the next call
                    spare = None
                    batch = pooled_empty((k1 - k0, image.shape[1], ph, pw), image.dtype,
                                         image.device)
                r = 0
                for b, idx in segs:
                    _crop_boxes(image[b:b + 1], [self.starts[i] for i in idx], ph, pw,
                                batch[r:r + len(idx)])
                    r += len(idx)
                batch = batch.to(self.device)
        extra = []
        for j, c in enumerate(self.ctx_specs):
            if not callable(c) and self.differentiable:
                extra.append(self.all_ctx[j][k0:k1].to(self.device, copy=True))  # as above
                continue
            parts = []
            for b, idx in segs:
                if callable(c):
                    parts.append(c(image[b:b + 1], self.grid.boxes[idx]))
                else:
                    with torch.no_grad():
                        parts.append(_contexts_boxes(image[b:b + 1], self.grid,
                                                     [self.starts[i] for i in idx], c))
            extra.append((torch.cat(parts, 0) if len(parts) > 1 else parts[0]).to(self.device))
        return batch, extra


class _Merged:
    """The in-memory target: ``fn``'s outputs accumulated into the whole (B, C_out, H, W)
    output with their factors w/Σw (float32 for fp16/bf16 outputs), or, when they require
    grad, kept and merged by the differentiable :func:`merge_patches` at the end (the
    autograd graph holds them anyway)."""

    def __init__(self, images: int, grid: PatchGrid, out_device: torch.device | None,
                 reduction: str, weight: Any, op: str) -> None:
        self.images, self.grid, self.out_device = images, grid, out_device
        self.reduction, self.weight, self.op = reduction, weight, op
        self.n = len(grid)
        self.outs: list[Tensor] | None = None
        self.acc: Tensor | None = None
        self.placer: PatchPlacer | None = None
        self.out_dtype: torch.dtype | None = None

    def start(self, y: Tensor) -> None:
        self.out_dtype = y.dtype
        if torch.is_grad_enabled() and y.requires_grad:
            self.outs = []
            return
        (ph, pw), (H, W) = self.grid.patch_size, self.grid.image_size
        self.acc = pooled_empty((self.images, y.shape[1], H, W), accumulation_dtype(y.dtype),
                                self.out_device)
        zero_uncovered(self.acc, self.grid.ys, self.grid.xs, ph, pw)
        self.placer = PatchPlacer(self.grid, self.weight, self.reduction, self.acc, self.op)
        if self.placer.needs_norm_buffer:
            self.placer.norm_out = pooled_empty((min(ph, H), W), self.acc.dtype,
                                                self.acc.device)

    def add(self, y: Tensor, k0: int, k1: int) -> None:
        if self.outs is not None:
            self.outs.append(y.to(self.out_device))
            return
        assert self.acc is not None and self.placer is not None
        with torch.no_grad():
            yo = y.to(device=self.out_device)
            for r, k in enumerate(range(k0, k1)):
                b, i = divmod(k, self.n)
                # reads yo only: fn's output is never modified
                self.placer.place(self.acc[b:b + 1], 0, yo[r:r + 1], i)

    def finish(self, spare: Tensor | None) -> Tensor:
        if self.outs is not None:
            merged = torch.cat(self.outs, 0)
            self.outs = None
            with _torch_where_no_kernel(why_no_kernel("merge_patches", merged.dtype)):
                return merge_patches(merged, self.grid, self.reduction, self.weight)
        assert self.acc is not None and self.placer is not None and self.out_dtype is not None
        acc, self.acc = self.acc, None
        pool_keep(spare, self.placer.release())
        if acc.dtype == self.out_dtype:
            pool_keep(acc)  # reused by a later call once the caller has dropped it
            return acc
        return acc.to(self.out_dtype)


@dataclass
class _Arguments:
    """sliding_window's arguments, checked once; ``reader`` is set when the call streams
    (a reader as ``image``, a ``sink`` or ``rows``), ``image`` when it runs in memory."""

    grid: PatchGrid
    batch_size: int
    ctx_specs: list[Any]
    out_device: torch.device | None
    device: torch.device | None
    image: Tensor | None = None
    reader: Any = None
    rows: tuple[int, int] | None = None


def _check_arguments(fn: Any, image: Any, grid: Any, batch_size: Any, contexts: Any,
                     out_device: Any, reduction: Any, weight: Any, device: Any, sink: Any,
                     rows: Any, op: str) -> _Arguments:
    if not callable(fn):
        raise TypeError(f"{op}(): `fn` must be callable (a model or function on a batch of "
                        f"patches); got {type(fn).__name__}.")
    streamed = sink is not None or rows is not None or not isinstance(image, Tensor)
    if sink is not None and not callable(sink):
        raise TypeError(f"{op}(): `sink` must be a callable sink(y0, band) or None; got "
                        f"{type(sink).__name__}.")
    reader: Any = None
    if isinstance(image, Tensor):
        image = checks.check_image(image, "image", op)
        if streamed and image.shape[0] != 1:
            raise ValueError(f"{op}(): streaming into a `sink` takes one image (B = 1); got "
                             f"shape {tuple(image.shape)}. Fix: call it once per image.")
    else:
        check_reader(image, op)
        reader = image
    grid = check_grid(grid, op)
    if not streamed:
        check_image_grid(image, grid, op)
    else:
        if reader is None:
            reader = TensorReader(image)
        if tuple(reader.image_size) != grid.image_size:
            raise ValueError(f"{op}(): `image` is {reader.image_size[0]}x{reader.image_size[1]} "
                             f"but the grid was built for {grid.image_size[0]}x"
                             f"{grid.image_size[1]}. Fix: build the grid from the image size.")
    batch_size = checks.check_int(batch_size, "batch_size", op, 1)
    checks.check_choice(reduction, "reduction", op, ("mean", "sum"))
    if not isinstance(contexts, (list, tuple)):
        raise TypeError(f"{op}(): `contexts` must be a list or tuple of scales or callables; "
                        f"got {type(contexts).__name__}.")
    specs = [c if callable(c) else check_scale(c, op, f"contexts[{i}]")
             for i, c in enumerate(contexts)]
    # in memory the devices default to the image's; streamed, to where the windows are
    here = None if streamed else image.device
    out_device = here if out_device is None else checks.check_device(
        out_device, "out_device", op, usable=True)
    device = here if device is None else checks.check_device(device, "device", op, usable=True)
    # the weight is checked now, not at the first batch (no-grad) or in the final
    # merge_patches (with gradients: after every batch has run, under merge_patches' name)
    weight_map(weight, grid.patch_size, torch.empty(0, device=out_device or "cpu"), op)
    if not streamed and image.shape[0] == 0:
        raise ValueError(f"{op}(): `image` has batch size 0 (shape {tuple(image.shape)}): "
                         f"there is no patch to run `fn` on, so the output channels are unknown. "
                         f"Fix: skip the call for an empty batch.")
    if rows is not None:
        ok = isinstance(rows, (tuple, list)) and len(rows) == 2 and all(
            isinstance(r, int) and not isinstance(r, bool) for r in rows) \
            and 0 <= rows[0] < rows[1] <= grid.image_size[0]
        if not ok:
            raise ValueError(f"{op}(): `rows` must be a pair (r0, r1) of ints with 0 <= r0 < r1 "
                             f"<= H = {grid.image_size[0]}; got {rows!r}. Fix: e.g. "
                             f"rows=(0, {grid.image_size[0]}) for every row.")
        rows = (int(rows[0]), int(rows[1]))
    return _Arguments(grid, batch_size, specs, out_device, device,
                      image=None if streamed else image, reader=reader, rows=rows)


def _labels_only(fn: Callable[..., Tensor], image: Any, grid: Any, batch_size: int,
                 contexts: Any, out_device: Any, progress: bool, reduction: str, weight: Any,
                 device: Any, sink: Any, rows: Any, score: bool, max_bytes: int | None,
                 op: str) -> Union[Tensor, tuple[Tensor, Tensor], None]:
    """sliding_window(..., argmax=True): the streamed merge, each finished band reduced to its
    labels as it is handed over (see :mod:`uhrops.tiling.argmax`). A batch of B images runs
    image by image, so ``fn``'s batches never span two images here."""
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] > 1 and sink is None:
        parts = [_labels_only(fn, image[b:b + 1], grid, batch_size, contexts, out_device,
                              progress, reduction, weight, device, None, rows, score,
                              max_bytes, op)
                 for b in range(image.shape[0])]
        if score:
            return (torch.cat([p[0] for p in parts], 0),  # type: ignore[index]
                    torch.cat([p[1] for p in parts], 0))  # type: ignore[index]
        return torch.cat(parts, 0)  # type: ignore[arg-type]
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] == 0:
        raise ValueError(f"{op}(): `image` has batch size 0 (shape {tuple(image.shape)}): "
                         f"there is no patch to run `fn` on. Fix: skip the call for an "
                         f"empty batch.")
    # checked as a streamed call (a sink stands in when there is none)
    a = _check_arguments(fn, image, grid, batch_size, contexts, out_device, reduction, weight,
                         device, sink or (lambda y0, band: None), rows, op)
    return run_labels(fn, a.reader, a.grid, a.batch_size, a.ctx_specs, sink, a.out_device,
                      a.device, reduction, weight, progress, op, a.rows, score, max_bytes)
