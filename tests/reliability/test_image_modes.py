"""Images are decoded by mode and orientation, masks by their encoding (issue 24).

Each case writes a file with Pillow in a given mode and compares ``read_image`` /
``read_mask_array`` with the pixels computed here from the array written (palette lookup,
grey repetition, 16-bit scaling, a numpy rotation for the EXIF orientation) — never with the
reader's own output. Hypothesis draws the contents, the sizes and the modes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.core.errors import DataFileError
from zoo.data.base import image_size, read_image, read_mask_array

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _rgb(img: torch.Tensor) -> np.ndarray:
    return (img.permute(1, 2, 0).numpy() * 255.0).round().astype(np.int64)


sizes = st.tuples(st.integers(1, 9), st.integers(1, 9))


@SETTINGS
@given(size=sizes, seed=st.integers(0, 2**31 - 1), alpha=st.booleans())
def test_palette_images_read_as_their_colours(tmp_path, size, seed, alpha):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 8, size=size, dtype=np.uint8)
    palette = rng.integers(0, 256, size=(8, 3), dtype=np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(palette.reshape(-1).tolist())
    if alpha:  # a palette with a transparent entry (tRNS): still mode P, alpha dropped
        im.info["transparency"] = 0
    path = str(tmp_path / f"p{seed}.png")
    im.save(path)
    np.testing.assert_array_equal(_rgb(read_image(path)), palette[idx].astype(np.int64))
    arr, mode = read_mask_array(path)  # as a mask, a palette PNG keeps its indices
    assert mode == "P"
    np.testing.assert_array_equal(arr, idx)


def test_pure_red_palette_pixel_is_red(tmp_path):
    im = Image.fromarray(np.zeros((2, 2), np.uint8), mode="P")
    im.putpalette([255, 0, 0] + [0, 0, 0] * 255)
    im.save(tmp_path / "red.png")
    assert _rgb(read_image(str(tmp_path / "red.png")))[0, 0].tolist() == [255, 0, 0]


@SETTINGS
@given(size=sizes, seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["L", "LA", "1"]))
def test_grey_modes_repeat_the_grey_value(tmp_path, size, seed, mode):
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, size=size, dtype=np.uint8)
    if mode == "1":
        grey = np.where(grey > 127, 255, 0).astype(np.uint8)
    im = Image.fromarray(grey, mode="L")
    if mode == "LA":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("1")
    path = str(tmp_path / f"g{seed}.png")
    im.save(path)
    np.testing.assert_array_equal(_rgb(read_image(path)),
                                  np.repeat(grey[:, :, None], 3, axis=2).astype(np.int64))


@SETTINGS
@given(size=sizes, seed=st.integers(0, 2**31 - 1), big_endian=st.booleans())
def test_16_bit_tiffs_in_either_byte_order(tmp_path, size, seed, big_endian):
    rng = np.random.default_rng(seed)
    vals = rng.integers(0, 65536, size=size, dtype=np.uint16)
    mode = "I;16B" if big_endian else "I;16"
    data = vals.astype(">u2" if big_endian else "<u2").tobytes()
    im = Image.frombytes(mode, (size[1], size[0]), data)
    path = str(tmp_path / f"i{seed}.tif")
    im.save(path)
    img = read_image(path)
    expected = np.repeat((vals.astype(np.float64) / 65535.0)[None], 3, axis=0)
    np.testing.assert_allclose(img.numpy(), expected, rtol=0, atol=1e-7)
    arr, _ = read_mask_array(path)
    np.testing.assert_array_equal(arr.astype(np.int64), vals.astype(np.int64))


def test_cmyk_is_converted(tmp_path):
    cmyk = np.zeros((2, 3, 4), np.uint8)
    cmyk[..., 0] = 255  # pure cyan
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    assert _rgb(read_image(str(tmp_path / "c.tif")))[0, 0].tolist() == [0, 255, 255]


# EXIF orientation -> the numpy operation that turns the stored pixels into the displayed ones
# (TIFF/EXIF 2.3 orientation tag: 3 = 180 degrees, 6 = 90 clockwise, 8 = 90 anticlockwise,
# 2/4 = mirrored, 5/7 = transposes).
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


@SETTINGS
@given(size=st.tuples(st.integers(1, 7), st.integers(1, 7)), seed=st.integers(0, 2**31 - 1),
       orientation=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8]))
def test_exif_orientation_applies_to_images_and_masks_alike(tmp_path, size, seed,
                                                           orientation):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, size=size, dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img_path, mask_path = str(tmp_path / f"im{seed}.png"), str(tmp_path / f"m{seed}.png")
    Image.fromarray(rgb).save(img_path, exif=exif.tobytes())
    Image.fromarray(mask, mode="L").save(mask_path, exif=exif.tobytes())
    shown = ORIENT[orientation](rgb)
    np.testing.assert_array_equal(_rgb(read_image(img_path)), shown.astype(np.int64))
    arr, _ = read_mask_array(mask_path)
    np.testing.assert_array_equal(arr, ORIENT[orientation](mask))
    assert image_size(img_path) == shown.shape[:2]


def test_32_bit_float_image_is_refused_naming_the_file(tmp_path):
    path = str(tmp_path / "f.tif")
    Image.fromarray(np.zeros((3, 3), np.float32), mode="F").save(path)
    with pytest.raises(DataFileError, match="f.tif"):
        read_image(path)
