"""Segment one image file of any size into its output files, in bands of rows that are kept
on disk as they finish: resumable, shareable between processes, bounded in memory.

How an image goes through (``python -m zoo.infer`` calls :func:`segment_file`):

1. The image is opened window by window (:mod:`zoo.engine.rasters`). When its whole-image
   inference fits ``eval.max_memory`` (the family's estimate, :meth:`Task.fits_in_memory`)
   it is read whole and segmented by :meth:`Task.predict` (TTA possible); otherwise the
   family streams it (:meth:`Task.stream_predict`: ``uhrops.sliding_window`` over the file,
   one row of windows in memory). Windows holding only the input's nodata value are not
   run when the family allows it (:class:`_SkipEmpty`; WSDNet).
2. The logits arrive band by band. Every :data:`BAND_ROWS` rows (two 512-pixel tiles) the
   class indices (uint8; 255 where the input has no data) and, when asked, the per-class
   probabilities (uint8, 255·softmax) are written to ``<out>/.<name>.parts/<y0>.part``
   (zlib), atomically. The part files are the progress record: a run killed at any moment
   and started again skips the bands already there and recomputes at most the one row of
   windows above the first missing band (``sliding_window(rows=...)`` gives exactly the
   rows of an uninterrupted run). ``plan.json`` next to them records what they were made
   with (image, checkpoint, settings); parts of another plan are discarded.
3. With ``world`` processes (torchrun: RANK / WORLD_SIZE) the bands are split into
   ``world`` contiguous runs, one per rank; every rank waits for all parts and rank 0
   assembles the outputs. The parts are the same whoever computed them, hence the files.
4. Assembly writes the requested outputs from the parts, band by band (memory: one band):
   ``<name>_mask.tif`` (tiled 512, DEFLATE, COG with overviews when GDAL can; CRS,
   transform (or ground control points) and nodata of the input; a colour table from the
   palette; the dataset's mask values: 0/255 for Inria's binary masks, class indices
   otherwise; nodata where the input has none), ``<name>_probs.tif`` (one uint8 band per
   class; no nodata value, every byte being a probability: an internal mask band marks the
   pixels without data), and the PNGs ``mask`` (the GeoTIFF's values), ``color`` (palette)
   and ``overlay`` (image and colours half and half), through a streaming PNG encoder. Then
   the parts are removed. A part that does not decompress to its band's size is removed
   and recomputed before it is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from zoo.core.atomic import atomic_write_bytes, atomic_write_text
from zoo.core.errors import DataFileError
from zoo.data.base import colorize
from zoo.engine.evaluator import predict_logits
from zoo.engine.maskfiles import TILE, PngWriter, write_geotiff
from zoo.engine.rasters import ImageSource, open_image
from zoo.engine.task import Task

__all__ = ["BAND_ROWS", "OUTPUTS", "PNG_OUTPUTS", "Settings", "output_paths", "outputs_done",
           "resolve_outputs", "segment_file"]

BAND_ROWS = 2 * TILE
PNG_OUTPUTS = ("mask", "color", "overlay")
OUTPUTS = PNG_OUTPUTS + ("tif", "probs")
NODATA_INDEX = 255  # in the parts: "the input has no data here"
_FILE = {"mask": "_mask.png", "color": "_color.png", "overlay": "_overlay.png",
         "tif": "_mask.tif", "probs": "_probs.tif"}


@dataclass
class Settings:
    """What the command decided for every image."""

    palette: Sequence[Sequence[int]]
    mask_encoding: str = "index"  # the dataset's (zoo.data.folder.MASK_ENCODINGS)
    outputs: Sequence[str] | None = None  # None: auto (see resolve_outputs)
    tta: bool = False
    rank: int = 0
    world: int = 1
    signature: str = ""  # checkpoint and settings: parts made otherwise are discarded
    # a wait for another process fails after this long without a new band from it (or 3x
    # the longest this process took for one band, when that is longer)
    wait_timeout_s: float = 600.0
    progress: Callable[[int, str], Any] | None = None  # (pixels done, message)
    # once per image before any work: (pixels of this process's share already on disk,
    # pixels of its share, resumed: some were on disk)
    start: Callable[[int, int, bool], Any] | None = None


def resolve_outputs(outputs: Sequence[str] | None, src: ImageSource) -> tuple[str, ...]:
    """None (auto): the GeoTIFF mask for a georeferenced input, the three PNGs otherwise."""
    if outputs is None:
        return ("tif",) if src.georeferenced else PNG_OUTPUTS
    return tuple(outputs)


def output_paths(out_dir: str, name: str, outputs: Sequence[str]) -> dict[str, str]:
    return {k: os.path.join(out_dir, name + _FILE[k]) for k in outputs}


def outputs_done(out_dir: str, path: str, outputs: Sequence[str] | None) -> bool:
    """Every requested output of ``path`` exists (and no band is pending)."""
    name = _name(path)
    if os.path.isdir(_parts_dir(out_dir, name)):
        return False
    if outputs is None:
        try:
            with open_image(path) as src:
                outputs = resolve_outputs(None, src)
        except OSError:
            return False
    return all(os.path.exists(p) for p in output_paths(out_dir, name, outputs).values())


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _parts_dir(out_dir: str, name: str) -> str:
    return os.path.join(out_dir, f".{name}.parts")


def mask_values(num_classes: int, encoding: str) -> tuple[np.ndarray, int]:
    """(LUT class index -> value in the mask GeoTIFF, nodata value there)."""
    lut = np.arange(256, dtype=np.uint8)
    if encoding == "binary" and num_classes == 2:
        lut[1] = 255  # Inria's gt: 0 / 255
    used = set(lut[:num_classes].tolist())
    nodata = next(v for v in (255, 254, 127, *range(253, num_classes - 1, -1))
                  if v not in used)
    lut[NODATA_INDEX] = nodata
    return lut, nodata


# ---- the bands on disk -----------------------------------------------------------------


class _Parts:
    """Band files of one image: ``<y0>.part`` = zlib(indices (h, W) uint8 [+ probs])."""

    def __init__(self, folder: str, H: int, W: int, classes: int, probs: bool) -> None:
        self.folder, self.H, self.W, self.classes, self.probs = folder, H, W, classes, probs
        self.bands = [(y, min(y + BAND_ROWS, H)) for y in range(0, H, BAND_ROWS)]

    def path(self, y0: int) -> str:
        return os.path.join(self.folder, f"{y0}.part")

    def done(self, y0: int) -> bool:
        return os.path.exists(self.path(y0))

    def intact(self, y0: int, y1: int) -> bool:
        """The part of band y0:y1 is on disk and whole: it decompresses (zlib's checksum) to
        exactly the band's size. A damaged one (a disk error, a copy cut short) is removed,
        so that it is recomputed instead of failing every later run."""
        if not self.done(y0):
            return False
        try:
            with open(self.path(y0), "rb") as f:
                ok = len(zlib.decompress(f.read())) == self._size(y1 - y0)
        except (OSError, zlib.error):
            ok = False
        if not ok:
            try:
                os.unlink(self.path(y0))
            except OSError:
                pass
        return ok

    def _size(self, h: int) -> int:
        return h * self.W * (1 + (self.classes if self.probs else 0))

    def write(self, y0: int, idx: np.ndarray, probs: np.ndarray | None) -> None:
        data = idx.tobytes() + (probs.tobytes() if probs is not None else b"")
        atomic_write_bytes(self.path(y0), zlib.compress(data, 1))

    def read(self, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        h = y1 - y0
        try:
            with open(self.path(y0), "rb") as f:
                raw = zlib.decompress(f.read())
            if len(raw) != self._size(h):
                raise ValueError(f"{len(raw)} bytes instead of {self._size(h)}")
        except (zlib.error, ValueError) as exc:
            raise DataFileError(f"zoo.infer: the band file {self.path(y0)} is damaged "
                                f"({exc}). Fix: run the same command again (a damaged band "
                                f"is recomputed).") from exc
        idx = np.frombuffer(raw, np.uint8, h * self.W).reshape(h, self.W)
        probs = None
        if self.probs:
            probs = np.frombuffer(raw, np.uint8, self.classes * h * self.W,
                                  h * self.W).reshape(self.classes, h, self.W)
        return idx, probs


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _prepare_parts(folder: str, plan: dict[str, Any], rank: int, timeout_s: float) -> None:
    """Keep the parts of the same plan (a resumed run), discard those of another. Only rank
    0 discards and writes the plan; the other ranks wait for it (so that none removes bands
    another has just written)."""
    meta = os.path.join(folder, "plan.json")
    text = json.dumps(plan, sort_keys=True)
    if rank == 0:
        if os.path.isdir(folder) and _read_text(meta) != text:
            shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
        if _read_text(meta) != text:
            atomic_write_text(meta, text)
    else:
        t0 = last = time.monotonic()
        while _read_text(meta) != text:
            now = time.monotonic()
            if now - t0 > timeout_s:
                raise TimeoutError(f"zoo.infer: rank 0 did not prepare {folder} within "
                                   f"{timeout_s:.0f} s (train.dist_timeout; it writes "
                                   f"plan.json there). Fix: start every process with the same "
                                   f"arguments, or raise --set train.dist_timeout=SECONDS.")
            if now - last >= min(WAIT_NOTICE_S, timeout_s / 4):
                _notice(f"zoo.infer: rank {rank}: waiting for rank 0 to prepare {folder} "
                        f"({now - t0:.0f}/{timeout_s:.0f} s) ...")
                last = now
            time.sleep(0.1)


WAIT_NOTICE_S = 30.0  # a waiting process says so this often


def _notice(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


def _remove_temporaries(folder: str, rows: Sequence[int]) -> None:
    """Temporaries of part writes a kill interrupted, for the bands starting at ``rows`` only:
    a rank removes its own bands' leftovers, never a file another rank is writing now."""
    prefixes = tuple(f".{y0}.part." for y0 in rows)
    for name in os.listdir(folder):
        if name.endswith(".tmp") and name.startswith(prefixes):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


class _BandSink:
    """``sink(y0, logits)`` for sliding_window / the whole-image path: gathers rows into the
    current band and writes each band's part when its last row has arrived."""

    def __init__(self, parts: _Parts, src: ImageSource, want: Sequence[tuple[int, int]],
                 probs_are_logits: bool, on_band: Callable[[int, int], Any]) -> None:
        self.parts, self.src, self.on_band = parts, src, on_band
        self.want = {y0: y1 for y0, y1 in want}
        self.soft = probs_are_logits
        self.cur: tuple[int, int] | None = None
        self.idx: np.ndarray | None = None
        self.prob: np.ndarray | None = None
        self.filled = 0

    def __call__(self, y0: int, logits: Tensor) -> None:
        if not logits.is_floating_point():  # (1, h, W) labels from a labels-only merge
            top = int(logits.max()) if logits.numel() else 0
            if top >= self.parts.classes:
                raise ValueError(f"zoo.infer: the model gives class {top} but "
                                 f"model.num_classes is {self.parts.classes}. Fix: --set "
                                 f"model.num_classes=<the model's class count> (or use the "
                                 f"checkpoint's config).")
        else:
            logits = logits[0] if logits.dim() == 4 else logits  # (n, h, W)
            if logits.shape[0] != self.parts.classes:
                raise ValueError(f"zoo.infer: the model gives {logits.shape[0]} class maps "
                                 f"but model.num_classes is {self.parts.classes}. Fix: --set "
                                 f"model.num_classes={logits.shape[0]} (or use the "
                                 f"checkpoint's config).")
        h = logits.shape[-2]
        r = 0
        while r < h:
            y = y0 + r
            b0 = y // BAND_ROWS * BAND_ROWS
            b1 = self.want.get(b0)
            if b1 is None:  # a band done before or by another process
                r = min(h, b0 + BAND_ROWS - y0)
                continue
            if self.cur is None or self.cur[0] != b0:
                self.cur = (b0, b1)
                self.idx = np.empty((b1 - b0, self.parts.W), np.uint8)
                self.prob = (np.empty((self.parts.classes, b1 - b0, self.parts.W), np.uint8)
                             if self.parts.probs else None)
                self.filled = 0
            take = min(h - r, b1 - y)
            self._convert(logits[:, r:r + take], y - b0)
            self.filled += take
            r += take
            if self.filled == b1 - b0:
                self._finish()

    def _convert(self, logits: Tensor, at: int) -> None:
        """Argmax (and probabilities) a few rows at a time: an int64 argmax of a whole band
        would be 8 bytes a pixel. Labels (an integer (1, h, W) band) are copied."""
        assert self.idx is not None
        if not logits.is_floating_point():
            self.idx[at:at + logits.shape[1]] = logits[0].numpy()
            return
        step = max(1, (1 << 22) // max(1, logits.shape[-1]))
        for a in range(0, logits.shape[1], step):
            part = logits[:, a:a + step]
            self.idx[at + a:at + a + part.shape[1]] = _argmax0(part).numpy()
            if self.prob is not None:
                p = torch.softmax(part.float(), 0) if self.soft else part.float()
                self.prob[:, at + a:at + a + part.shape[1]] = \
                    (p * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()

    def _finish(self) -> None:
        assert self.cur is not None and self.idx is not None
        b0, b1 = self.cur
        valid = self.src.valid(b0, b1)
        if valid is not None:  # the input has no data there: neither has the mask
            self.idx[~valid] = NODATA_INDEX
            if self.prob is not None:
                self.prob[:, ~valid] = 0
        self.parts.write(b0, self.idx, self.prob)
        self.cur, self.idx, self.prob = None, None, None
        self.on_band(b0, b1)


def _argmax0(logits: Tensor) -> Tensor:
    """argmax over dim 0 as uint8 (the first maximum, as torch.argmax), class by class: a
    reduction over the outer dimension of a (n, h, W) tensor is several times slower."""
    best = logits[0].clone()
    idx = torch.zeros(best.shape, dtype=torch.uint8)
    for c in range(1, logits.shape[0]):
        gt = logits[c] > best
        idx.masked_fill_(gt, c)
        torch.maximum(best, logits[c], out=best)
    return idx


class _SkipEmpty(torch.nn.Module):
    """The model on the windows that hold data: a window whose every pixel is the input's
    nodata value is not run (its logits are zeros). Only pixels inside such a window receive
    its logits, and all of them are written as nodata, so no valid pixel changes."""

    def __init__(self, model: torch.nn.Module, value: float) -> None:
        super().__init__()
        self.model, self.value = model, value

    def forward(self, x: Tensor) -> Tensor:
        empty = (x == self.value).flatten(1).all(1)
        if not bool(empty.any()):
            return self.model(x)
        keep = (~empty).nonzero().flatten()
        if keep.numel() == 0:
            self.skipped += x.shape[0]
            n = getattr(self, "classes")
            return x.new_zeros((x.shape[0], n, *x.shape[-2:]))
        out = self.model(x[keep])
        full = out.new_zeros((x.shape[0], *out.shape[1:]))
        full[keep] = out
        self.skipped += int(empty.sum())
        return full


def _runs(bands: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Consecutive bands merged into row ranges (one stream, one warm-up each)."""
    out: list[list[int]] = []
    for y0, y1 in bands:
        if out and out[-1][1] == y0:
            out[-1][1] = y1
        else:
            out.append([y0, y1])
    return [(a, b) for a, b in out]


# ---- the whole thing -------------------------------------------------------------------


def _plan(task: Task, path: str, src: ImageSource, outputs: Sequence[str], st: Settings,
          whole: bool) -> dict[str, Any]:
    stat = os.stat(path)
    # max_merge_memory: it may cut the labels merge into column bands, whose batches differ
    ev = {k: task.cfg["eval"][k] for k in ("window", "window_overlap", "batch_size",
                                           "max_merge_memory")}
    return {"image": os.path.abspath(path), "size": list(src.image_size),
            "mtime": stat.st_mtime_ns, "bytes": stat.st_size, "band_rows": BAND_ROWS,
            "probs": "probs" in outputs, "whole": whole, "tta": bool(st.tta),
            "eval": ev, "signature": st.signature, "family": task.family}


def segment_file(task: Task, model: torch.nn.Module, path: str, out_dir: str, st: Settings,
                 device: torch.device) -> list[str]:
    """Segment ``path`` into its outputs in ``out_dir`` (see the module docstring). Returns
    the files written (none on a rank other than 0 sharing the image's bands)."""
    name = _name(path)
    os.makedirs(out_dir, exist_ok=True)
    with open_image(path) as src:
        outputs = resolve_outputs(st.outputs, src)
        H, W = src.image_size
        n = task.num_classes
        if n > 255 and any(k != "probs" for k in outputs):
            raise ValueError(f"zoo.infer: {n} classes do not fit the uint8 masks (255 at "
                             f"most). Fix: --outputs probs.")
        whole = task.fits_in_memory(H, W) or st.tta
        if st.tta and not task.fits_in_memory(H, W):
            print(f"zoo.infer: {path}: TTA needs the whole image in memory "
                  f"({task.whole_image_bytes(H, W) / 2**30:.1f} GiB estimated, over "
                  f"eval.max_memory); reading it whole anyway.")
        folder = _parts_dir(out_dir, name)
        _prepare_parts(folder, _plan(task, path, src, outputs, st, whole), st.rank,
                       st.wait_timeout_s)
        parts = _Parts(folder, H, W, n, "probs" in outputs)
        bands = parts.bands
        lo, hi = (len(bands) * st.rank) // st.world, (len(bands) * (st.rank + 1)) // st.world
        _remove_temporaries(folder, [y0 for y0, _ in bands[lo:hi]])
        mine = [b for b in bands[lo:hi] if not parts.intact(*b)]
        if st.start is not None:
            share_px = sum(b1 - b0 for b0, b1 in bands[lo:hi]) * W
            left_px = sum(b1 - b0 for b0, b1 in mine) * W
            st.start(share_px - left_px, share_px, left_px < share_px)
        # the longest this process went without finishing a band: the others, started at
        # the same time on the same kind of work, may take as long between theirs
        slowest, last = 0.0, time.monotonic()
        if mine:
            def on_band(b0: int, b1: int) -> None:
                nonlocal slowest, last
                now = time.monotonic()
                slowest, last = max(slowest, now - last), now
                if st.progress is not None:
                    st.progress((b1 - b0) * W, f"{name}: rows {b0}:{b1} of {H}")

            sink = _BandSink(parts, src, mine, probs_are_logits=not st.tta, on_band=on_band)
            model.eval()
            if src.empty_value is not None and task.skips_empty_windows:
                # the nodata value as the reader converts it (float32 division)
                value = float(torch.tensor([float(src.empty_value)]).div_(src.scale))
                model = _SkipEmpty(model, value)
                model.classes, model.skipped = n, 0
            with torch.no_grad():
                if whole:
                    x = src.read(0, 0, H, W)[None].to(device)
                    logits = predict_logits(task, model, x, st.tta)
                    del x
                    for y0, y1 in mine:
                        sink(y0, logits[:, :, y0:y1].cpu())
                    del logits
                else:
                    for r0, r1 in _runs(mine):
                        # masks only: the merge hands over labels, no logits band leaves it
                        task.stream_predict(model, src, sink, rows=(r0, r1), device=device,
                                            labels=not parts.probs,
                                            max_accumulator_bytes=task.label_merge_bytes())
        if st.world > 1:
            def owner(y0: int) -> int:
                i = [b[0] for b in bands].index(y0)
                return next(r for r in range(st.world)
                            if (len(bands) * r) // st.world <= i < (len(bands) * (r + 1)) // st.world)

            if st.rank != 0:  # rank 0 assembles (and then removes the parts)
                _wait_for(parts, max(st.wait_timeout_s, 3 * slowest), owner, st.rank,
                          lambda: not os.path.isdir(folder))
                return []
            _wait_for(parts, max(st.wait_timeout_s, 3 * slowest), owner, st.rank)
        written = _assemble(parts, src, out_dir, name, outputs, st, n)
    shutil.rmtree(folder, ignore_errors=True)
    return written


def _wait_for(parts: _Parts, timeout_s: float, owner: Callable[[int], int], rank: int,
              finished: Callable[[], bool] = lambda: False) -> None:
    """Until every band's part is on disk (or ``finished()``: assembled and cleaned up).
    Bounded: fails after ``timeout_s`` without a new band (the others' bands legitimately
    take as long as ours, so the clock restarts at each band they finish), and says every
    :data:`WAIT_NOTICE_S` which ranks it waits for."""
    t0 = last = time.monotonic()
    count = -1
    while True:
        missing = [y0 for y0, _ in parts.bands if not parts.done(y0)]
        if not missing or finished():
            return
        now = time.monotonic()
        if len(missing) != count:
            count, t0 = len(missing), now
        ranks = ", ".join(str(r) for r in sorted({owner(y0) for y0 in missing}))
        if now - t0 > timeout_s:
            raise TimeoutError(f"zoo.infer: rank {rank}: rank(s) {ranks} wrote no band of "
                               f"{parts.folder} for {timeout_s:.0f} s (train.dist_timeout; "
                               f"missing rows {missing[:8]}). Fix: check that process, then "
                               f"run again (finished bands are kept), or raise --set "
                               f"train.dist_timeout=SECONDS.")
        if now - last >= min(WAIT_NOTICE_S, timeout_s / 4):
            _notice(f"zoo.infer: rank {rank}: waiting for rank(s) {ranks} "
                    f"({len(missing)} band(s) of {parts.folder} left) ...")
            last = now
        time.sleep(0.2)


def _assemble(parts: _Parts, src: ImageSource, out_dir: str, name: str,
              outputs: Sequence[str], st: Settings, n: int) -> list[str]:
    H, W = parts.H, parts.W
    paths = output_paths(out_dir, name, outputs)
    lut, nodata = mask_values(n, st.mask_encoding)
    pngs = {k: PngWriter(paths[k], W, H, 1 if k == "mask" else 3)
            for k in PNG_OUTPUTS if k in outputs}
    try:
        for y0, y1 in parts.bands:  # the PNGs first, in one pass over the parts
            if not pngs:
                break
            idx, _ = parts.read(y0, y1)
            if "mask" in pngs:  # the dataset's values, as in the GeoTIFF (0/255 for Inria)
                pngs["mask"].write(lut[idx])
            if "color" in pngs or "overlay" in pngs:
                color = colorize(idx, st.palette)
                if "color" in pngs:
                    pngs["color"].write(color)
                if "overlay" in pngs:
                    rgb = src.read_uint8(y0, y1)
                    mix = 0.5 * rgb.astype(np.float32) + 0.5 * color.astype(np.float32)
                    pngs["overlay"].write(mix.round().astype(np.uint8))
        for w in pngs.values():
            w.close()
    except BaseException:
        for w in pngs.values():
            w.abort()
        raise
    geo = dict(crs=src.crs, transform=src.transform, gcps=src.gcps)
    has_nodata = src.has_mask
    if "tif" in outputs:
        colormap = {int(lut[k]): tuple(int(c) for c in st.palette[k])
                    for k in range(min(n, len(st.palette)))}

        def mask_bands():
            for y0, y1 in parts.bands:
                idx, _ = parts.read(y0, y1)
                yield y0, lut[idx][None]

        write_geotiff(paths["tif"], H, W, 1, mask_bands, colormap=colormap,
                      nodata=nodata if has_nodata else None, **geo)
    if "probs" in outputs:
        def prob_bands():
            for y0, y1 in parts.bands:
                yield y0, parts.read(y0, y1)[1]

        # Every value 0..255 is a probability (0: a class the model rules out), so no nodata
        # value: the pixels without data are marked by an internal mask band, as GDAL does
        # for the input (GIS readers then see every valid pixel, and none of the others).
        write_geotiff(paths["probs"], H, W, n, prob_bands,
                      valid=src.valid if has_nodata else None, **geo)
    return [paths[k] for k in outputs]


def settings_signature(checkpoint: str, cfg: Any) -> str:
    """Checkpoint file (size, mtime) and config: the parts of another model are not reused."""
    st = os.stat(checkpoint)
    text = json.dumps({"ckpt": [os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns],
                       "model": cfg["model"], "fctl": cfg.get("fctl"), "eval": cfg["eval"]},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

