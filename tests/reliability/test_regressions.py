"""One fixed input per bug the reliability suite found (see the README's Reliability section).

Each case failed before its fix (a crash with an obscure error, a wrong value, or an input
accepted that the contract refuses) and states the behaviour now promised.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import uhrops
from tests.conftest import triton_ready
from tests.reliability import _oracles as O
from uhrops import PatchGrid


def test_sliding_window_on_an_empty_batch_names_the_image():
    g = PatchGrid.from_stride(8, 4, 2)
    with pytest.raises(ValueError, match=r"sliding_window\(\): `image` has batch size 0"):
        uhrops.sliding_window(lambda p: p, torch.rand(0, 1, 8, 8), g, 4)  # was AssertionError


@pytest.mark.parametrize("arg", ["out_device", "device"])
@pytest.mark.parametrize("value", ["bogus", "cpu:x"])
def test_sliding_window_device_arguments_are_checked(arg, value):
    g = PatchGrid.from_stride(8, 4, 2)
    with pytest.raises(ValueError, match=rf"`{arg}`"):  # was RuntimeError from torch.device
        uhrops.sliding_window(lambda p: p, torch.rand(1, 1, 8, 8), g, 4, **{arg: value})


def test_sliding_window_context_scale_message_names_the_entry():
    g = PatchGrid.from_stride(8, 4, 2)
    with pytest.raises(ValueError, match=r"sliding_window\(\): `contexts\[0\]` \(a context "
                                         r"scale\)"):
        uhrops.sliding_window(lambda p, c: p, torch.rand(1, 1, 8, 8), g, 4, contexts=(0,))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_merge_weights_must_be_finite_and_non_negative(bad):
    g = PatchGrid.from_stride(8, 4, 2)
    w = torch.ones(4, 4)
    w[1, 2] = bad
    with pytest.raises(ValueError, match="`weight` must hold finite, non-negative"):
        uhrops.merge_patches(torch.rand(9, 1, 4, 4), g, weight=w)  # was accepted


@pytest.mark.parametrize("kwargs, etype, name", [
    (dict(sigma_scale=0), ValueError, "sigma_scale"),  # was an all-NaN map
    (dict(sigma_scale=-0.125), ValueError, "sigma_scale"),
    (dict(sigma_scale="0.1"), TypeError, "sigma_scale"),  # was a TypeError from **
    (dict(dtype=torch.int64), TypeError, "dtype"),  # was a map of zeros and a one
    (dict(device="bogus"), ValueError, "device"),
])
def test_gaussian_weight_arguments(kwargs, etype, name):
    with pytest.raises(etype, match=f"gaussian_weight\\(\\): `{name}`"):
        uhrops.gaussian_weight(5, **kwargs)


@pytest.mark.parametrize("size", [3, (3, 1), (4, 1), (5, 2)])
def test_contexts_of_a_one_pixel_wide_image_are_pil_bilinear(size):
    """torch's antialiased resize ignores the H filter when the output is one column wide;
    the contexts of a 1-pixel-wide image were copies of their first row."""
    x = torch.tensor([[[[0.9], [0.1]]]], dtype=torch.float64)  # (1, 1, 2, 1)
    g = PatchGrid.from_stride((2, 1), (2, 1), 1)
    got = uhrops.extract_contexts(x, g, 1.0, size)
    want = O.contexts(x, g, 1.0, size)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.triton
def test_triton_inverse_haar_of_a_strided_one_column_input():
    if triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    wide = torch.rand(1, 1, 4, 1, 3)
    y = wide[..., ::2][..., :1]  # width 1, stride 2 on the last dim: .contiguous() is a no-op
    with uhrops.use_backend("triton"):
        got = uhrops.haar_waverec2(y[:, :, 0], [y[:, :, 1:]])  # was an internal AssertionError
        got2 = uhrops.haar_idwt2d(y)
    torch.testing.assert_close(got, O.idwt(y.double()).float())
    torch.testing.assert_close(got2, O.idwt(y.double()).float())


def test_float64_wavelets_keep_float64_precision_under_every_backend():
    """The Haar kernels compute in float32: float64 took them under "triton" (and would under
    "auto" on CUDA) and came back with float32 rounding (~1e-7)."""
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    with uhrops.use_backend("auto"):
        y = uhrops.haar_dwt2d(x)
    torch.testing.assert_close(y, O.dwt(x), rtol=1e-15, atol=1e-15)
    with uhrops.use_backend("triton"):
        with pytest.raises(uhrops.BackendUnavailableError, match=r"torch\.float64 tensors"):
            uhrops.haar_dwt2d(x)


@pytest.mark.parametrize("output_size, etype", [(5, TypeError), ((7.5, 8), TypeError),
                                                ((9, 8), ValueError), ((8, 8, 1), TypeError)])
def test_waverec_output_size_is_checked(output_size, etype):
    low, highs = uhrops.haar_wavedec2(torch.rand(1, 1, 8, 8), 1)
    with pytest.raises(etype, match="output_size"):  # 5: "'int' object is not iterable"
        uhrops.haar_waverec2(low, highs, output_size)  # (7.5, 8): silently 7


def test_idwt_module_output_size_is_checked():
    with pytest.raises(ValueError, match="HaarIDWT2d\\(\\): `output_size`"):
        uhrops.HaarIDWT2d()(torch.rand(1, 1, 4, 4, 4), output_size=(100, -3))  # was sliced
    out = uhrops.HaarIDWT2d()(torch.rand(1, 1, 4, 4, 4), output_size=(7, 8))
    assert tuple(out.shape) == (1, 1, 7, 8)


@pytest.mark.parametrize("device", ["bogus", None, 3.5])
def test_triton_unavailable_reason_checks_its_device(device):
    with pytest.raises((ValueError, TypeError), match="`device`"):
        uhrops.triton_unavailable_reason(device)


@pytest.mark.parametrize("item", ["train.iters=null", "data.hflip=~", "eval.window=null"])
def test_null_is_refused_where_the_schema_has_a_value(item):
    from zoo.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="cannot be null"):  # crashed later, in the trainer
        load_config("quickstart", [item])
    assert load_config("quickstart", ["data.crop_size=null"])["data"]["crop_size"] is None


def test_train_seeds_python_and_numpy_too(tmp_path):
    """train.seed now seeds `random` and numpy as well as torch (a resumed run's RNG state
    equals an uninterrupted run's, and user transforms drawing from them are reproducible)."""
    import random

    from zoo.config import load_config
    from zoo.train import Interrupted, train

    cfg = load_config("quickstart", [
        "train.iters=1", "train.batch_size=2", "train.val_every=0", "train.ckpt_every=1",
        "train.predictions=0", "train.device=cpu", "data.synthetic_train=2",
        "data.synthetic_val=1", "data.synthetic_size=[32, 32]", "data.crop_size=[32, 32]",
        "model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2], aspp_channels: 16, "
        "fuse_channels: 16, head_channels: 8}"])
    states = []
    for k in range(2):
        random.seed(1000 + k)
        np.random.seed(1000 + k)
        with pytest.raises(Interrupted):
            train(cfg, str(tmp_path / f"r{k}"), stop_after=1)
        states.append((random.random(), np.random.random()))
    assert states[0] == states[1]


def test_infer_redoes_a_geotiff_whose_tif_mask_is_missing(tmp_path, capsys):
    """Killed between the PNGs and the GeoTIFF mask, an image counted as done."""
    from PIL import TiffImagePlugin

    from zoo.config import dump_config, load_config
    from zoo.infer import main as infer_main
    from zoo.io import save_checkpoint
    from zoo.tasks import make_task

    cfg = load_config("quickstart", ["train.device=cpu", "model.kwargs={sr_channels: [8, 8, 16], "
                                     "aspp_dilations: [1, 2], aspp_channels: 16, "
                                     "fuse_channels: 16, head_channels: 8}"])
    dump_config(cfg, str(tmp_path / "config.yaml"))
    save_checkpoint(str(tmp_path / "m.safetensors"), make_task(cfg).build_model(), {})
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[33550] = (0.5, 0.5, 0.0)  # ModelPixelScale
    tif = str(tmp_path / "geo.tif")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tif, tiffinfo=info)
    args = ["--config", str(tmp_path / "config.yaml"), "--checkpoint",
            str(tmp_path / "m.safetensors"), tif, "--out", str(tmp_path / "out")]
    assert infer_main(args) == 0
    os.unlink(tmp_path / "out" / "geo_mask.tif")
    capsys.readouterr()
    assert infer_main(args) == 0
    assert "skipping" not in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "geo_mask.tif").tag_v2[33550] == (0.5, 0.5, 0.0)
