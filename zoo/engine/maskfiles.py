"""Output files written a band of rows at a time: PNG (a small streaming encoder) and tiled,
compressed GeoTIFF / COG (rasterio), each to a temporary name renamed at the end.

PNG: 8-bit grey or RGB, filter "none" and zlib level 1 (the masks are flat areas that
compress well without filtering; Pillow's default adaptive filtering at level 6 took ~3 s
per 2448² image): any decoder reads it, and rows are never all held.

GeoTIFF: 512 x 512 tiles, DEFLATE, with the input's CRS, transform and nodata, a colour
table for the mask; then, when GDAL has the COG driver, rewritten as a Cloud-Optimized
GeoTIFF with nearest-neighbour overviews (GIS tools and web viewers open it at any zoom
without reading the whole file).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Callable, Iterable, Mapping

import numpy as np

__all__ = ["PngWriter", "TILE", "write_geotiff"]

TILE = 512


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class PngWriter:
    """``PngWriter(path, width, height, channels)``; ``write(rows)`` with (h, W) or (h, W, 3)
    uint8 arrays top to bottom; ``close()`` checks the row count and renames the file in."""

    def __init__(self, path: str, width: int, height: int, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"PngWriter(): `channels` must be 1 (grey) or 3 (RGB); got "
                             f"{channels}.")
        self.path, self.tmp = path, path + ".tmp.png"
        self.width, self.height, self.channels = int(width), int(height), channels
        self.rows = 0
        self.z = zlib.compressobj(1)
        self.f = open(self.tmp, "wb")
        self.f.write(b"\x89PNG\r\n\x1a\n")
        self.f.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8,
                                                  0 if channels == 1 else 2, 0, 0, 0)))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.uint8).reshape(rows.shape[0], -1)
        if rows.shape[1] != self.width * self.channels:
            raise ValueError(f"PngWriter.write(): rows of {rows.shape[1]} bytes; expected "
                             f"{self.width * self.channels}.")
        lines = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        lines[:, 0] = 0  # filter type "none" for every row
        lines[:, 1:] = rows
        data = self.z.compress(lines.tobytes())
        if data:
            self.f.write(_chunk(b"IDAT", data))
        self.rows += rows.shape[0]

    def close(self) -> None:
        if self.rows != self.height:
            self.abort()
            raise ValueError(f"PngWriter.close(): {self.rows} rows written to {self.path}; "
                             f"expected {self.height}.")
        self.f.write(_chunk(b"IDAT", self.z.flush()))
        self.f.write(_chunk(b"IEND", b""))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_geotiff(path: str, height: int, width: int, count: int,
                  bands: Callable[[], Iterable[tuple[int, np.ndarray]]], *, crs: Any = None,
                  transform: Any = None, nodata: float | None = None,
                  colormap: Mapping[int, tuple[int, int, int]] | None = None,
                  overviews: bool = True,
                  valid: Callable[[int, int], np.ndarray | None] | None = None,
                  gcps: Any = None) -> None:
    """A tiled, DEFLATE-compressed uint8 GeoTIFF of ``count`` bands from ``bands()``, which
    yields (y0, (count, h, W) array) top to bottom with every h a multiple of 512 but the last
    (whole tiles per write: no tile is compressed twice). Written to ``path + ".tmp.tif"``,
    made a COG with overviews when possible, and renamed to ``path``.

    ``valid(y0, y1)`` ((h, W) bool, or None: all valid) writes an internal mask band (GDAL's
    per-dataset mask) instead of a nodata value; ``gcps`` = (ground control points, their
    CRS) georeferences a file that has no transform."""
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    tmp = path + ".tmp.tif"
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype="uint8",
                   tiled=True, blockxsize=TILE, blockysize=TILE, compress="deflate",
                   interleave="band" if count > 1 else "pixel", BIGTIFF="IF_SAFER")
    if crs is not None:
        profile["crs"] = crs
    if transform is not None and not transform.is_identity:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if colormap is not None:
        profile["photometric"] = "palette"
    try:
        with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_TIFF_INTERNAL_MASK=True):
            with rasterio.open(tmp, "w", **profile) as dst:
                if colormap is not None:
                    dst.write_colormap(1, {int(k): (*v, 255) for k, v in colormap.items()})
                if gcps is not None and gcps[0]:
                    dst.gcps = (gcps[0], gcps[1])
                for y0, arr in bands():
                    win = Window(0, y0, width, arr.shape[-2])
                    dst.write(arr, window=win)
                    if valid is not None:
                        ok = valid(y0, y0 + arr.shape[-2])
                        ok = np.ones(arr.shape[-2:], bool) if ok is None else ok
                        dst.write_mask(np.where(ok, 255, 0).astype(np.uint8), window=win)
            final = tmp
            if overviews and "COG" in _drivers() and min(height, width) > TILE:
                final = path + ".cog.tif.tmp.tif"  # the name remove_stale_temporaries knows
                rasterio.shutil.copy(tmp, final, driver="COG", COMPRESS="DEFLATE",
                                     BLOCKSIZE=TILE, OVERVIEW_RESAMPLING="NEAREST",
                                     BIGTIFF="IF_SAFER", NUM_THREADS=1)
                os.unlink(tmp)
        with open(final, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(final, path)
    except BaseException:
        for t in (tmp, path + ".cog.tif.tmp.tif"):
            if os.path.exists(t):
                os.unlink(t)
        raise


def _drivers() -> set[str]:
    import rasterio

    with rasterio.Env() as env:
        return set(env.drivers())
