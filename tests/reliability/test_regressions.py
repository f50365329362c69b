"""One fixed input per bug the reliability suite found (see the README's Reliability section).

Each case failed before its fix (a crash with an obscure error, a wrong value, or an input
accepted that the contract refuses) and states the behaviour now promised.
"""

from __future__ import annotations

import math
import os
import re

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
    from zoo.engine.trainer import Interrupted, train

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
    from zoo.cli.infer import main as infer_main
    from zoo.core.checkpoint import save_checkpoint
    from zoo.engine.families import make_task

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


# ---- issue 24: the cases a hostile tester found beyond the property suite -------------------


class _Changing:
    """A stand-in network whose output changes from its second call on (channels, dtype or
    device): a model with a data-dependent head, or one that casts only some batches."""

    def __init__(self, change: str) -> None:
        self.change, self.calls = change, 0

    def __call__(self, p):
        self.calls += 1
        later = self.calls > 1
        if self.change == "3->1":
            return p[:, :1] if later else p[:, :3]
        if self.change == "1->3":
            return p[:, :3] if later else p[:, :1]
        if self.change == "dtype":
            return p.double() if later else p.half()
        return p.to("meta") if later else p  # "device"


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("change, said", [("3->1", "channels 3 -> 1"),
                                          ("1->3", "channels 1 -> 3"),
                                          ("dtype", "dtype torch.float16 -> torch.float64"),
                                          ("device", "device cpu -> meta")])
def test_sliding_window_refuses_an_fn_whose_output_changes(change, said, grad):
    """3 -> 1 channels returned leftover memory (up to 1e31), 1 -> 3 a bare broadcast error,
    fp16 then fp64 a silent fp16 result; the device change failed inside a copy."""
    g = PatchGrid.from_stride(8, 4, 2)  # 9 patches: 3 batches of 4, 4, 1
    x = torch.rand(1, 3, 8, 8, requires_grad=grad)
    with pytest.raises(ValueError, match=rf"sliding_window\(\): `fn`'s output for batch 1 "
                                         rf"\(patches 4\.\.7 of 9\) differs from batch 0's: "
                                         rf"{re.escape(said)}\."):
        uhrops.sliding_window(_Changing(change), x, g, 4)


def test_sliding_window_fn_may_modify_its_batch_in_place():
    """With gradients on, an in-place fn raised "Output 0 of Slice is a view ... created inside
    a custom Function" although the docstring lets fn modify its batch freely; both modes must
    give the same result."""
    g = PatchGrid.from_stride((9, 10), 4, 3)
    x = torch.rand(2, 3, 9, 10, dtype=torch.float64)

    def fn(p, c):
        p.mul_(2)
        c.add_(1)  # the contexts are fn's to modify too
        return p[:, :2] + c.mean(1, keepdim=True)

    def oracle_fn(p, c):
        return 2 * p[:, :2] + 1 + c.mean(1, keepdim=True)

    want = O.sliding(oracle_fn, x, g, (2.0,))
    for grad in (False, True):
        xg = x.clone().requires_grad_(grad)
        got = uhrops.sliding_window(fn, xg, g, 4, contexts=(2.0,))
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)
        assert torch.equal(xg.detach(), x)  # the image itself is never written
    got.sum().backward()
    xo = x.clone().requires_grad_()  # the oracle's gradient: autograd through _oracles' loops
    O.sliding(oracle_fn, xo, g, (2.0,)).sum().backward()
    torch.testing.assert_close(xg.grad, xo.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.triton
@pytest.mark.parametrize("dtype, contexts", [(torch.float64, ()), (torch.float32, (2.0,))])
def test_sliding_window_under_triton_accepts_with_gradients_what_it_accepts_without(dtype,
                                                                                     contexts):
    """Found by the property suite once it drew images that require grad: under
    use_backend("triton") the differentiable path raised BackendUnavailableError for float64
    and for contexts (no kernel), while the no-grad path (plain PyTorch) computed them."""
    if triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    g = PatchGrid.from_stride((7, 9), 4, 3)
    x = torch.rand(2, 2, 7, 9, dtype=dtype)

    def fn(p, *c):
        return 2 * p + sum(t.mean(1, keepdim=True) for t in c) if c else 2 * p

    want = O.sliding(fn, x.double(), g, contexts)
    xg = x.clone().requires_grad_()
    with uhrops.use_backend("triton"):
        with torch.no_grad():
            plain = uhrops.sliding_window(fn, x, g, 3, contexts=contexts)
        got = uhrops.sliding_window(fn, xg, g, 3, contexts=contexts)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(plain.double(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(got.detach().double(), want, rtol=tol, atol=tol)
    got.sum().backward()
    xo = x.double().requires_grad_()
    O.sliding(fn, xo, g, contexts).sum().backward()
    torch.testing.assert_close(xg.grad.double(), xo.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("weight", ["gauss", "wrong shape"])
def test_sliding_window_checks_its_weight_before_running_fn(weight, grad):
    """Found by the property suite once it drew images that require grad: a bad weight was
    reported by merge_patches after fn had run on every batch (and at the first batch
    without gradients)."""
    g = PatchGrid.from_stride(8, 4, 2)
    calls = []

    def fn(p):
        calls.append(p.shape[0])
        return p

    w = torch.ones(3, 4) if weight == "wrong shape" else weight
    with pytest.raises(ValueError, match=r"sliding_window\(\): `weight`"):
        uhrops.sliding_window(fn, torch.rand(1, 1, 8, 8, requires_grad=grad), g, 4, weight=w)
    assert calls == []


@pytest.mark.parametrize("image, patch, min_overlap", [
    ((10, 10), (3, 3), 2.999),  # was a 49-million-patch grid of repeated starts
    ((10, 10), (3, 3), 2.999999),  # asked for 7e15 bytes
    ((100, 40), (20, 8), 7.5),  # 8 - 7.5: a half-pixel stride along x
])
def test_min_overlap_grids_with_a_stride_below_one_pixel_are_refused(image, patch, min_overlap):
    from tests.uhrops.test_tiling import glnet_starts

    with pytest.raises(ValueError, match=r"PatchGrid\.from_min_overlap\(\): `min_overlap` .*"
                                         r"below one pixel.*Fix: use min_overlap <= "):
        PatchGrid.from_min_overlap(image, patch, min_overlap)
    edge = min(patch) - 1  # the fix the message gives: a stride of one pixel, still legal
    g = PatchGrid.from_min_overlap(image, patch, edge)
    assert list(g.ys) == glnet_starts(image[0], patch[0], edge)
    assert list(g.xs) == glnet_starts(image[1], patch[1], edge)
    assert all(b - a >= 1 for starts in (g.ys, g.xs) for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("stride", [0, (2, 0), -1])
def test_stride_below_one_pixel_is_refused_with_the_fix(stride):
    with pytest.raises(ValueError, match=r"PatchGrid\.from_stride\(\): `stride` .* below one "
                                         r"pixel.*Fix: use 1 <= stride <= patch_size"):
        PatchGrid.from_stride(10, 3, stride)  # was "`stride[0]` must be >= 1" without a fix


def test_explicit_grid_with_a_repeated_start_is_refused():
    with pytest.raises(ValueError, match=r"PatchGrid\(\): `xs` repeats the start 2"):
        PatchGrid((10, 10), (3, 3), (0, 7), (0, 2, 2, 7))  # was accepted: patch run twice


WEIGHT_SCALES = [("constant", 1e38), ("constant", 1e-39), ("constant", 1e-45),
                 ("pattern", 3e38), ("float64 pattern", 1e-300), ("float64 pattern", 1e300)]


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("kind, scale", WEIGHT_SCALES)
def test_weighted_mean_merge_is_independent_of_the_weight_scale(kind, scale, backend):
    """A constant weight of 1e38 gave 0 (Σw overflowed float32) and 1e-39 NaN (1/Σw did);
    float64 weights of 1e-300 became 0 in float32, of 1e300 inf."""
    if backend == "triton" and triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    g = PatchGrid.from_stride((9, 10), 4, 2)  # up to 4 patches over a pixel
    patches = torch.rand(2 * len(g), 3, 4, 4)
    pattern = torch.rand(4, 4, dtype=torch.float64) * 0.75 + 0.25  # in [0.25, 1)
    if kind == "constant":
        w = torch.full((4, 4), scale)
    elif kind == "pattern":
        w = (pattern * scale).float()
    else:
        w = pattern * scale
    x = torch.rand(2, 3, 9, 10)
    with uhrops.use_backend(backend):
        got = uhrops.merge_patches(patches, g, "mean", w)
        streamed = uhrops.sliding_window(lambda p: 2 * p, x, g, 5, weight=w)
    want = O.merge(patches.double(), g, "mean", w.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    want = O.sliding(lambda p: 2 * p, x.double(), g, (), "mean", w.double())
    torch.testing.assert_close(streamed.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", pytest.param(
    "triton", marks=[pytest.mark.triton])])
@pytest.mark.parametrize("op", ["dwt", "idwt"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_haar_near_the_dtype_max_has_no_intermediate_overflow(dtype, op, backend):
    """A constant 3e38 in bf16 gave NaN bands (a + b overflowed the float32 intermediate)
    where 0 is exact; the inverse gave inf where 3e38 is exact. Every sample is ±2**127 or
    a constant 3e38, so each exact band is 0, ±2**127 or ±2**128 (which does overflow: inf)."""
    if backend == "triton" and triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    gen = torch.Generator().manual_seed(24)
    signs = torch.randint(0, 2, (2, 3, 8, 8), generator=gen, dtype=torch.float64) * 2 - 1
    x = torch.cat([signs * 2.0 ** 127, torch.full((2, 3, 2, 8), 3e38, dtype=torch.float64)], 2)
    if op == "dwt":
        want = O.dwt(x.to(dtype).double()).to(dtype)
        with uhrops.use_backend(backend):
            got = uhrops.haar_dwt2d(x.to(dtype))
    else:
        y = x.to(dtype).reshape(2, 3, 4, 5, 4)  # bands A, H, V, D of a 10x8 image
        want = O.idwt(y.double()).to(dtype)
        with uhrops.use_backend(backend):
            got = uhrops.haar_idwt2d(y)
    assert not torch.isnan(want).any()
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # every band is exact


def _attention_module():
    import importlib

    return importlib.import_module("uhrops.attention")


@pytest.mark.parametrize("path", ["chunked", "fused"])
@pytest.mark.parametrize("center", [False, True])
def test_context_attention_double_backward(path, center, monkeypatch):
    """backward(create_graph=True) failed with "no autograd formula was registered" (the
    backward op had no derivative); extract_contexts and merge_patches had one."""
    A = _attention_module()
    if path == "fused":
        monkeypatch.setattr(A, "_CPU_FUSED_MIN_LOGITS", 0)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(q, k, v):
        return uhrops.context_attention(q, k, v, scale=0.8, center=center)

    assert torch.autograd.gradgradcheck(f, (q, k, v))  # the oracle: finite differences


@pytest.mark.triton
def test_triton_context_attention_double_backward_matches_float64_autograd():
    if triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    gen = torch.Generator().manual_seed(2)
    ts = [torch.randn(2, c, h, w, generator=gen) for c, h, w in ((4, 3, 3), (4, 2, 5), (3, 2, 5))]

    def second_order(fn, inputs):
        out = fn(*inputs)
        g = torch.autograd.grad(out.square().sum(), inputs, create_graph=True)
        return torch.autograd.grad(sum(t.square().sum() for t in g), inputs)

    want = second_order(lambda q, k, v: O.attention(q, k, v, 0.5),
                        [t.double().requires_grad_() for t in ts])
    with uhrops.use_backend("triton"):
        got = second_order(lambda q, k, v: uhrops.context_attention(q, k, v, scale=0.5),
                           [t.clone().requires_grad_() for t in ts])
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("center", [False, True])
def test_context_attention_output_keeps_the_query_layout(backend, center, monkeypatch):
    """The README says channels_last maps come out channels_last; the chunked CPU path and the
    Triton path returned NCHW (only the fused CPU kernel kept the layout)."""
    if backend == "triton" and triton_ready("cpu"):
        pytest.skip(triton_ready("cpu"))
    A = _attention_module()
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, h, w, generator=gen) for h, w in ((3, 5), (4, 4), (4, 4)))
    want = O.attention(q.double(), k.double(), v.double(), 1.0, center).float()
    cl = torch.channels_last
    for fused_min in ((1 << 62, 0) if backend == "torch" else (None,)):  # chunked, fused
        if fused_min is not None:
            monkeypatch.setattr(A, "_CPU_FUSED_MIN_LOGITS", fused_min)
        with uhrops.use_backend(backend):
            out_cl = uhrops.context_attention(q.contiguous(memory_format=cl), k, v, center=center)
            out_nchw = uhrops.context_attention(q, k.contiguous(memory_format=cl), v,
                                                center=center)
        assert out_cl.is_contiguous(memory_format=cl) and not out_cl.is_contiguous(), fused_min
        assert out_nchw.is_contiguous(), fused_min
        torch.testing.assert_close(out_cl, want, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(out_nchw, want, rtol=2e-5, atol=2e-5)
