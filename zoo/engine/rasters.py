"""Image files opened window by window, as readers for ``uhrops.sliding_window``.

:func:`open_image` gives an object with ``image_size`` (H, W) and ``read(y0, x0, y1, x1)``
-> float32 (3, h, w) in [0, 1], the values :func:`zoo.data.base.read_image` gives for the
same pixels (uint8 / 255, uint16 / 65535; grey repeated to three channels; extra bands such
as alpha dropped). GeoTIFF / COG / BigTIFF (and anything else GDAL reads) go through rasterio,
which reads only the tiles a window needs; JPEG, PNG, BMP (and TIFFs when rasterio is not
installed) are decoded once by Pillow and kept as 8/16-bit pixels, converted a window at a
time. A rasterio image also carries its georeferencing (CRS, transform, nodata) and a
``valid(y0, y1)`` map of the pixels that hold data (GDAL's dataset mask: nodata value,
alpha band or internal mask), which the writers copy to the outputs.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo.core.errors import DataFileError
from zoo.data.base import warn_extra_bands, warn_grey_image

__all__ = ["GEO_EXTRA", "ImageSource", "PIL_SUFFIXES", "open_image", "require_rasterio"]

GEO_EXTRA = 'pip install "uhrops[geo]"'
# Decoded whole by Pillow (no windowed access in these formats); everything else is tried
# with rasterio/GDAL first.
PIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_GEO_TAGS = (33550, 33922, 34264, 34735)  # pixel scale, tie points, transform, GeoKeys


def require_rasterio(what: str) -> Any:
    """The rasterio module, or an error naming the extra to install."""
    try:
        import rasterio
    except ImportError as exc:
        raise DataFileError(f"{what} needs rasterio (GDAL), which is not installed. Fix: "
                            f"{GEO_EXTRA} (or pip install rasterio).") from exc
    return rasterio


class ImageSource:
    """A readable image: size, windows, georeferencing (None when the file has none)."""

    image_size: tuple[int, int]
    crs: Any = None
    transform: Any = None
    nodata: float | None = None
    gcps: Any = None  # (ground control points, their CRS) of a GCP-georeferenced file
    # a window whose model bands all hold this value has no valid pixel (None: unknown)
    empty_value: float | None = None
    has_mask = False  # some pixels are nodata (valid() says which)
    georeferenced = False

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def read_uint8(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0:y1 as (h, W, 3) uint8, as the overlays draw them."""
        t = self.read(y0, 0, y1, self.image_size[1])
        return (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    def valid(self, y0: int, y1: int) -> np.ndarray | None:
        """(y1 - y0, W) bool, True where the image holds data; None: everywhere."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _PilImage(ImageSource):
    def __init__(self, path: str) -> None:
        from zoo.data.base import read_image_array

        self.pixels, self.scale = read_image_array(path)
        self.image_size = (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:
        win = np.array(self.pixels[y0:y1, x0:x1].transpose(2, 0, 1), order="C")
        return torch.from_numpy(win).to(torch.float32).div_(self.scale)


class _RasterioImage(ImageSource):
    def __init__(self, path: str) -> None:
        rasterio = require_rasterio(f"reading {path}")
        from rasterio.enums import MaskFlags

        try:
            with warnings.catch_warnings():  # a plain TIFF is fine: no CRS, identity transform
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.ds = rasterio.open(path)
        except Exception as exc:  # RasterioIOError and GDAL's other complaints
            raise DataFileError(f"cannot decode {path}: {type(exc).__name__}: {exc}. Fix: "
                                f"re-download or re-export this file (it is truncated, corrupt "
                                f"or not an image).") from exc
        ds = self.ds
        self._window = rasterio.windows.Window
        dtype = ds.dtypes[0]
        if dtype not in ("uint8", "uint16"):
            ds.close()
            raise DataFileError(f"cannot use {path} as an image: pixel type {dtype} is not 8- "
                                f"or 16-bit. Fix: convert it to 8-bit RGB (e.g. gdal_translate "
                                f"-ot Byte -scale).")
        self.scale = 255.0 if dtype == "uint8" else 65535.0
        names = [c.name for c in ds.colorinterp]
        self.lut: np.ndarray | None = None
        if names and names[0] == "palette" and ds.count >= 1:
            # a palette image is read as its colours, as read_image (Pillow) reads it
            cmap = ds.colormap(1)
            self.lut = np.zeros((max(max(cmap) + 1, 256), 3), ds.dtypes[0])
            for k, rgba in cmap.items():
                self.lut[k] = rgba[:3]
            if dtype == "uint16":  # colour tables hold 8-bit values
                self.scale = 255.0
            self.bands = [1]
        elif all(c in names for c in ("red", "green", "blue")):
            # in the declared colour order, whatever the file order (B, G, R files exist)
            self.bands = [names.index(c) + 1 for c in ("red", "green", "blue")]
        else:
            self.bands = [1, 2, 3] if ds.count >= 3 else [1]
        if self.lut is None:
            # what the RGB model is given instead of the file's bands, said once (the same
            # words as read_image's): a grey band repeated, bands other than alpha (which
            # marks the valid pixels) left out
            alpha = {i + 1 for i, n in enumerate(names) if n == "alpha"}
            left = [b for b in range(1, ds.count + 1) if b not in self.bands and b not in alpha]
            if len(self.bands) == 1 and not left:
                warn_grey_image(path, stacklevel=4)
            elif left:
                warn_extra_bands(path, ds.count, self.bands, stacklevel=4)
        self.image_size = (int(ds.height), int(ds.width))
        self.crs, self.transform, self.nodata = ds.crs, ds.transform, ds.nodata
        gcps, gcp_crs = ds.gcps
        self.gcps = (gcps, gcp_crs) if gcps else None
        self.georeferenced = ds.crs is not None or not ds.transform.is_identity \
            or self.gcps is not None
        self.has_mask = not all(MaskFlags.all_valid in f for f in ds.mask_flag_enums)
        # GDAL's mask from a nodata value: a pixel is invalid when every band holds it. The
        # model's bands holding it says so only when they are all the bands (no 4th band
        # with data, no alpha or mask band deciding instead).
        only_nodata = all(f == [MaskFlags.nodata] for f in ds.mask_flag_enums)
        if ds.nodata is not None and only_nodata and self.lut is None \
                and len(set(self.bands)) == ds.count:
            self.empty_value = ds.nodata
        # GDAL keeps decoded tiles in a process-wide cache of 5% of the RAM by default, so a
        # streamed run's memory would grow with the height read so far, up to gigabytes on a
        # large server. The strips below already keep what is read again; GDAL needs only the
        # tile rows a strip boundary cuts (two full-width tile rows). A GDAL_CACHEMAX the
        # user set in the environment is left alone.
        self._env = None
        if "GDAL_CACHEMAX" not in os.environ:
            tile_rows = max(int(ds.block_shapes[0][0]), 1)
            row_bytes = ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
            self._env = rasterio.Env(GDAL_CACHEMAX=max(4 * 2**20, 2 * tile_rows * row_bytes))
            self._env.__enter__()

    # Windows of one row of windows share their rows: the full-width strip is read once (GDAL
    # decodes each tile once, in order) and kept while it is asked for; a few strips (the
    # patches' and their contexts') up to this many bytes each.
    STRIP_BYTES = 256 * 2**20
    STRIPS = 3

    def _strip(self, y0: int, y1: int) -> np.ndarray | None:
        W = self.image_size[1]
        if (y1 - y0) * W * len(self.bands) * np.dtype(self.ds.dtypes[0]).itemsize > self.STRIP_BYTES:
            return None
        strips = self.__dict__.setdefault("_strips", {})
        if (y0, y1) not in strips:
            while len(strips) >= self.STRIPS:
                strips.pop(next(iter(strips)))
            strips[(y0, y1)] = self.ds.read(self.bands, window=self._window(0, y0, W, y1 - y0))
        return strips[(y0, y1)]

    def read(self, y0: int, x0: int, y1: int, x1: int) -> Tensor:
        strip = self._strip(y0, y1)
        if strip is not None:
            arr = strip[:, :, x0:x1]
        else:
            arr = self.ds.read(self.bands, window=self._window(x0, y0, x1 - x0, y1 - y0))
        if self.lut is not None:
            arr = np.ascontiguousarray(self.lut[arr[0]].transpose(2, 0, 1))
        elif arr.shape[0] == 1:
            arr = np.repeat(arr, 3, axis=0)
        else:
            arr = np.ascontiguousarray(arr)
        return torch.from_numpy(arr).to(torch.float32).div_(self.scale)

    def valid(self, y0: int, y1: int) -> np.ndarray | None:
        if not self.has_mask:
            return None
        W = self.image_size[1]
        return self.ds.dataset_mask(window=self._window(0, y0, W, y1 - y0)) > 0

    def close(self) -> None:
        self.ds.close()
        if self._env is not None:
            env, self._env = self._env, None
            env.__exit__(None, None, None)


def _pil_geotags(path: str) -> bool:
    try:
        from PIL import Image

        with Image.open(path) as im:
            tags = getattr(im, "tag_v2", {})
            return any(t in tags for t in _GEO_TAGS)
    except Exception:
        return False


def open_image(path: str) -> ImageSource:
    """The image at ``path`` as a reader (see the module docstring); DataFileError names a
    file that cannot be read and the fix (for a GeoTIFF without rasterio: the extra)."""
    if not os.path.isfile(path):
        raise DataFileError(f"image file not found: {path}.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in PIL_SUFFIXES:
        return _PilImage(path)
    try:
        import rasterio  # noqa: F401
    except ImportError:
        if suffix in (".tif", ".tiff") and not _pil_geotags(path):
            return _PilImage(path)  # a plain TIFF: Pillow reads it whole
        require_rasterio(f"reading {path} (a GeoTIFF or a format only GDAL reads)")
    return _RasterioImage(path)
