"""Haar DWT/IWT, multi-level and packet transforms against PyWavelets (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import uhrops
from tests.conftest import triton_ready
from tests.oracles import oracle
from uhrops import wavelet as W

pywt = oracle("pywt")  # imported inside the tests that use it

MODES = ["zero", "symmetric", "reflect", "periodic"]
# pywt modes that pad exactly like one of ours at odd sizes (anchors.md §2.1).
PYWT_ALIASES = {"constant": "constant", "periodization": "periodization"}
HALF_TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _pywt_dwt(x: torch.Tensor, mode: str) -> np.ndarray:
    cA, (cH, cV, cD) = pywt.dwt2(x.detach().double().cpu().numpy(), "haar", mode=mode)
    return np.stack([cA, cH, cV, cD], axis=2)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _draw_size(draw, lo=1, hi=33):
    return draw(st.integers(lo, hi)), draw(st.integers(lo, hi))


# --------------------------------------------------------------------------------------------
# Values against pywt
# --------------------------------------------------------------------------------------------


class TestDWTValues:
    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_dwt_matches_pywt_every_mode(self, data):
        h, w = _draw_size(data.draw, 2, 33)
        b, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
        mode = data.draw(st.sampled_from(MODES))
        x = torch.randn(b, c, h, w, dtype=torch.float64)
        y = uhrops.haar_dwt2d(x, mode)
        assert y.shape == (b, c, 4, (h + 1) // 2, (w + 1) // 2)
        np.testing.assert_allclose(_np(y), _pywt_dwt(x, mode), rtol=0, atol=1e-12)

    @pytest.mark.parametrize("mode", ["constant", "periodization"])
    def test_pywt_alias_modes(self, mode):
        x = torch.randn(1, 2, 7, 9, dtype=torch.float64)
        np.testing.assert_allclose(_np(uhrops.haar_dwt2d(x, mode)), _pywt_dwt(x, mode), atol=1e-12)

    def test_single_pixel_sides(self):
        x = torch.randn(1, 1, 1, 5, dtype=torch.float64)
        for mode in ("zero", "symmetric", "periodic"):
            np.testing.assert_allclose(_np(uhrops.haar_dwt2d(x, mode)), _pywt_dwt(x, mode),
                                       atol=1e-12)

    def test_block_formula(self, device):
        # [[a, b], [c, d]] -> A, H, V, D written out by hand (DESIGN.md §3).
        a, b, c, d = 1.0, 2.0, 4.0, 8.0
        x = torch.tensor([[[[a, b], [c, d]]]], device=device)
        y = uhrops.haar_dwt2d(x)[0, 0, :, 0, 0].cpu()
        expect = torch.tensor([a + b + c + d, a + b - c - d, a - b + c - d, a - b - c + d]) / 2
        torch.testing.assert_close(y, expect)

    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_idwt_matches_pywt(self, data):
        h, w = _draw_size(data.draw, 1, 17)
        y = torch.randn(2, 2, 4, h, w, dtype=torch.float64)
        ref = pywt.idwt2((_np(y[:, :, 0]), tuple(_np(y[:, :, i]) for i in (1, 2, 3))), "haar")
        np.testing.assert_allclose(_np(uhrops.haar_idwt2d(y)), ref, atol=1e-12)

    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_wavedec_waverec_match_pywt(self, data):
        h, w = _draw_size(data.draw, 4, 70)
        mode = data.draw(st.sampled_from(MODES))
        levels = data.draw(st.integers(1, 4))
        # reflect needs two samples at every odd level
        sizes = W._level_sizes(h, w, levels)
        if mode == "reflect" and any(min(s) < 2 for s in sizes):
            return
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        low, highs = uhrops.haar_wavedec2(x, levels, mode)
        ref = pywt.wavedec2(_np(x), "haar", mode=mode, level=levels)
        assert len(highs) == levels
        np.testing.assert_allclose(_np(low), ref[0], atol=1e-12)
        for i, hi in enumerate(highs):  # finest first here, coarsest first in pywt
            np.testing.assert_allclose(_np(hi), np.stack(ref[levels - i], axis=2), atol=1e-12)
        rec = uhrops.haar_waverec2(low, highs)
        np.testing.assert_allclose(_np(rec), pywt.waverec2(ref, "haar", mode=mode), atol=1e-12)
        np.testing.assert_allclose(_np(uhrops.haar_waverec2(low, highs, output_size=(h, w))),
                                   _np(x), atol=1e-12)

    @pytest.mark.parametrize("levels", [1, 3])
    def test_matches_ptwt_and_pytorch_wavelets(self, levels):
        ptwt = pytest.importorskip("ptwt")
        pw = pytest.importorskip("pytorch_wavelets")
        x = torch.randn(2, 3, 24, 40, dtype=torch.float64)
        low, highs = uhrops.haar_wavedec2(x, levels)
        c = ptwt.wavedec2(x, "haar", mode="zero", level=levels)
        torch.testing.assert_close(low, c[0], rtol=0, atol=1e-12)
        for i in range(levels):
            torch.testing.assert_close(highs[i], torch.stack(tuple(c[levels - i]), 2), rtol=0,
                                       atol=1e-12)
        # pytorch_wavelets builds its filters in float32, so agreement is to ~1e-7 there.
        yl, yh = pw.DWTForward(J=levels, wave="haar", mode="zero").double()(x)
        torch.testing.assert_close(low, yl, rtol=0, atol=1e-6)
        for i in range(levels):
            torch.testing.assert_close(highs[i], yh[i], rtol=0, atol=1e-6)


class TestPacket:
    @pytest.mark.parametrize("levels", [1, 2, 3])
    def test_matches_pywt_wavelet_packet(self, levels):
        x = torch.randn(1, 2, 16, 24, dtype=torch.float64)
        y = uhrops.haar_packet2d(x, levels)
        assert y.shape == (1, 2, 4**levels, 16 >> levels, 24 >> levels)
        letters = "ahvd"  # pywt node names of bands A, H, V, D
        for ch in range(2):
            wp = pywt.WaveletPacket2D(_np(x[0, ch]), "haar", mode="zero", maxlevel=levels)
            for band in range(4**levels):
                digits = [(band // 4 ** (levels - 1 - k)) % 4 for k in range(levels)]
                path = "".join(letters[d] for d in digits)
                np.testing.assert_allclose(_np(y[0, ch, band]), wp[path].data, atol=1e-12)

    def test_level2_ll_is_4x_block_mean(self):
        x = torch.randn(2, 3, 16, 12, dtype=torch.float64)
        ll = uhrops.haar_packet2d(x, 2)[:, :, 0]
        block_mean = x.view(2, 3, 4, 4, 3, 4).mean(dim=(3, 5))
        torch.testing.assert_close(ll, 4 * block_mean, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("levels", [1, 2, 5])
    def test_round_trip(self, levels):
        x = torch.randn(1, 2, 64, 32, dtype=torch.float64)
        torch.testing.assert_close(uhrops.haar_ipacket2d(uhrops.haar_packet2d(x, levels)), x,
                                   rtol=0, atol=1e-12)

    def test_level1_equals_dwt(self):
        x = torch.randn(2, 2, 10, 6)
        torch.testing.assert_close(uhrops.haar_packet2d(x, 1), uhrops.haar_dwt2d(x))


class TestProperties:
    @settings(max_examples=25, deadline=None)
    @given(data=st.data())
    def test_round_trip_any_size(self, data):
        h, w = _draw_size(data.draw, 2, 40)
        mode = data.draw(st.sampled_from(MODES))
        x = torch.randn(1, 2, h, w, dtype=torch.float64)
        rec = uhrops.haar_idwt2d(uhrops.haar_dwt2d(x, mode))[..., :h, :w]
        torch.testing.assert_close(rec, x, rtol=0, atol=1e-12)

    def test_parseval(self):
        x = torch.randn(3, 2, 32, 48, dtype=torch.float64)
        low, highs = uhrops.haar_wavedec2(x, 3)
        energy = low.pow(2).sum() + sum(h.pow(2).sum() for h in highs)
        torch.testing.assert_close(energy, x.pow(2).sum(), rtol=1e-12, atol=0)
        p = uhrops.haar_packet2d(x, 3)
        torch.testing.assert_close(p.pow(2).sum(), x.pow(2).sum(), rtol=1e-12, atol=0)

    @pytest.mark.parametrize("layout", ["transposed", "channels_last", "expanded"])
    def test_non_contiguous_inputs(self, layout):
        base = torch.randn(2, 3, 12, 20, dtype=torch.float64)
        if layout == "transposed":
            x = base.transpose(-1, -2).contiguous().transpose(-1, -2)
        elif layout == "channels_last":
            x = base.to(memory_format=torch.channels_last)
        else:
            base = base[:1].clone()
            x = base.expand(2, 3, 12, 20)
        assert not x.is_contiguous()
        np.testing.assert_allclose(_np(uhrops.haar_dwt2d(x)), _pywt_dwt(base.expand_as(x), "zero"),
                                   atol=1e-12)
        low, highs = uhrops.haar_wavedec2(x, 2)
        ref = pywt.wavedec2(_np(x), "haar", mode="zero", level=2)
        np.testing.assert_allclose(_np(low), ref[0], atol=1e-12)
        y = uhrops.haar_dwt2d(base.expand_as(x).contiguous()).transpose(-1, -2).contiguous()
        y = y.transpose(-1, -2)
        torch.testing.assert_close(uhrops.haar_idwt2d(y), base.expand_as(x))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
    def test_dtypes_keep_dtype(self, device, dtype):
        x = torch.randn(1, 2, 8, 10, device=device, dtype=dtype)
        y = uhrops.haar_dwt2d(x)
        assert y.dtype == dtype and y.device == x.device
        ref = _pywt_dwt(x.float(), "zero")
        np.testing.assert_allclose(_np(y), ref, atol=HALF_TOL[dtype] * 10, rtol=HALF_TOL[dtype])

    def test_nan_inf_propagate(self):
        x = torch.zeros(1, 1, 4, 4)
        x[0, 0, 0, 0] = float("nan")
        x[0, 0, 3, 3] = float("inf")
        y = uhrops.haar_dwt2d(x)
        assert torch.isnan(y[0, 0, :, 0, 0]).all()
        assert torch.isinf(y[0, 0, :, 1, 1]).all()
        assert torch.isfinite(y[0, 0, :, 0, 1]).all()

    def test_zero_batch(self):
        x = torch.randn(0, 3, 8, 8)
        assert uhrops.haar_dwt2d(x).shape == (0, 3, 4, 4, 4)
        low, highs = uhrops.haar_wavedec2(x, 2)
        assert low.shape == (0, 3, 2, 2) and highs[1].shape == (0, 3, 3, 2, 2)

    def test_modules(self):
        x = torch.randn(1, 2, 9, 12, dtype=torch.float64)
        dwt, idwt = uhrops.HaarDWT2d(pad_mode="symmetric"), uhrops.HaarIDWT2d()
        torch.testing.assert_close(idwt(dwt(x), output_size=(9, 12)), x)
        dec = uhrops.HaarDWT2d(levels=2, pad_mode="periodic")
        torch.testing.assert_close(idwt(dec(x), output_size=(9, 12)), x)
        pk, ipk = uhrops.HaarPacket2d(2), uhrops.HaarIPacket2d()
        x4 = torch.randn(1, 2, 8, 12, dtype=torch.float64)
        torch.testing.assert_close(ipk(pk(x4)), x4)
        assert "levels=2" in repr(dec)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


class TestGradients:
    @pytest.mark.parametrize("mode", MODES)
    def test_gradcheck_dwt_odd(self, mode):
        x = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: uhrops.haar_dwt2d(t, mode), (x,))

    def test_gradcheck_idwt(self):
        y = torch.randn(2, 1, 4, 3, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(uhrops.haar_idwt2d, (y,))

    @pytest.mark.parametrize("mode", MODES)
    def test_gradcheck_wavedec_and_gradgrad(self, mode):
        x = torch.randn(1, 1, 7, 10, dtype=torch.float64, requires_grad=True)

        def f(t):
            low, highs = uhrops.haar_wavedec2(t, 2, mode)
            return low, highs[0], highs[1]

        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))

    def test_gradcheck_waverec_with_crop(self):
        low, highs = uhrops.haar_wavedec2(torch.randn(1, 2, 7, 9, dtype=torch.float64), 2, "zero")
        args = [low.requires_grad_(), *(h.requires_grad_() for h in highs)]
        assert torch.autograd.gradcheck(
            lambda a, b, c: uhrops.haar_waverec2(a, [b, c], output_size=(7, 9)), args)

    @pytest.mark.parametrize("levels", [1, 2])
    def test_gradcheck_packet(self, levels):
        x = torch.randn(1, 2, 8, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: uhrops.haar_packet2d(t, levels), (x,))
        y = torch.randn(1, 1, 4**levels, 2, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(uhrops.haar_ipacket2d, (y,))

    def test_backward_is_inverse_transform(self):
        # Orthonormal: d<dwt(x), g>/dx = idwt(g); an independent check of the adjoint.
        x = torch.randn(1, 2, 8, 6, dtype=torch.float64, requires_grad=True)
        g = torch.randn(1, 2, 4, 4, 3, dtype=torch.float64)
        (uhrops.haar_dwt2d(x) * g).sum().backward()
        ref = pywt.idwt2((_np(g[:, :, 0]), tuple(_np(g[:, :, i]) for i in (1, 2, 3))), "haar")
        np.testing.assert_allclose(_np(x.grad), ref, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Triton path (interpreter on the CPU) against the PyTorch path
# --------------------------------------------------------------------------------------------


def _both(fn, *args):
    with uhrops.use_backend("torch"):
        ref = fn(*args)
    with uhrops.use_backend("triton"):
        out = fn(*args)
    return ref, out


def _flat(out):
    if isinstance(out, tuple):
        return [out[0], *out[1]]
    return [out]


@pytest.mark.triton
class TestTriton:
    @pytest.fixture(autouse=True)
    def _need_triton(self, device):
        reason = triton_ready(device)
        if reason:
            pytest.skip(reason)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("shape", [(2, 3, 40, 56), (1, 2, 37, 53), (1, 1, 130, 6)])
    def test_forward_ops(self, device, dtype, shape):
        x = torch.randn(shape, device=device).to(dtype)
        mode = "reflect" if shape[2] % 2 else None
        tol = HALF_TOL[dtype]
        for fn, args in [
            (uhrops.haar_dwt2d, (x, mode)),
            (uhrops.haar_wavedec2, (x, 3, mode or "zero")),
        ]:
            ref, out = _both(fn, *args)
            for r, o in zip(_flat(ref), _flat(out)):
                assert o.dtype == dtype
                torch.testing.assert_close(o.float(), r.float(), rtol=tol, atol=tol * 4)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_inverse_and_packet(self, device, dtype):
        tol = HALF_TOL[dtype]
        y = torch.randn(2, 2, 4, 21, 30, device=device).to(dtype)
        ref, out = _both(uhrops.haar_idwt2d, y)
        torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * 4)
        x = torch.randn(1, 3, 48, 40, device=device).to(dtype)
        low, highs = uhrops.haar_wavedec2(x, 3)
        ref, out = _both(uhrops.haar_waverec2, low, highs)
        torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * 4)
        for levels in (1, 2, 3):
            ref, out = _both(uhrops.haar_packet2d, x, levels)
            torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * 4)
            ref, out = _both(uhrops.haar_ipacket2d, ref)
            torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * 4)

    def test_deep_packet_chains_launches(self, device):
        x = torch.randn(1, 1, 64, 32, device=device)
        ref, out = _both(uhrops.haar_packet2d, x, 5)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    @pytest.mark.parametrize("mode", MODES)
    def test_gradients_match(self, device, mode):
        x = torch.randn(1, 2, 19, 26, device=device)

        def grads(fn):
            t = x.clone().requires_grad_()
            out = _flat(fn(t))
            sum((o * torch.linspace(-1, 1, o.numel(), device=device).view_as(o)).sum()
                for o in out).backward()
            return t.grad

        for fn in (lambda t: uhrops.haar_dwt2d(t, mode), lambda t: uhrops.haar_wavedec2(t, 3, mode)):
            with uhrops.use_backend("torch"):
                ref = grads(fn)
            with uhrops.use_backend("triton"):
                out = grads(fn)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    def test_non_contiguous(self, device):
        x = torch.randn(2, 16, 24, 3, device=device).permute(0, 3, 1, 2)  # channels_last
        ref, out = _both(uhrops.haar_wavedec2, x, 2)
        for r, o in zip(_flat(ref), _flat(out)):
            torch.testing.assert_close(o, r)


# --------------------------------------------------------------------------------------------
# Bad input, torch.library and compile
# --------------------------------------------------------------------------------------------


class TestErrors:
    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"haar_dwt2d\(\): `x` must be a 4-D tensor.*unsqueeze"):
            uhrops.haar_dwt2d(torch.randn(3, 8, 8))
        with pytest.raises(ValueError, match=r"haar_idwt2d\(\): `y` must be a 5-D"):
            uhrops.haar_idwt2d(torch.randn(1, 4, 8, 8))

    def test_integer_dtype(self):
        with pytest.raises(TypeError, match=r"`x` must have a floating dtype.*got torch.uint8"):
            uhrops.haar_dwt2d(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
        with pytest.raises(TypeError, match="floating dtype"):
            uhrops.haar_packet2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1)

    def test_not_a_tensor(self):
        with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor; got ndarray"):
            uhrops.haar_dwt2d(np.zeros((1, 1, 4, 4)))

    def test_odd_size_without_pad_mode(self):
        with pytest.raises(ValueError, match=r"odd spatial size \(7, 8\).*pad_mode='symmetric'"):
            uhrops.haar_dwt2d(torch.randn(1, 1, 7, 8))
        with pytest.raises(ValueError, match=r"level 2 gets \(3, 4\)"):
            uhrops.haar_wavedec2(torch.randn(1, 1, 6, 8), 2)

    def test_unknown_pad_mode(self):
        with pytest.raises(ValueError, match=r"`pad_mode` must be None or one of.*got 'mirror'"):
            uhrops.haar_dwt2d(torch.randn(1, 1, 8, 8), "mirror")

    def test_levels(self):
        with pytest.raises(ValueError, match="`levels` must be >= 1"):
            uhrops.haar_wavedec2(torch.randn(1, 1, 8, 8), 0)
        with pytest.raises(TypeError, match="`levels` must be an int"):
            uhrops.haar_packet2d(torch.randn(1, 1, 8, 8), 2.0)
        with pytest.raises(ValueError, match=r"divisible by 2\*\*levels = 8"):
            uhrops.haar_packet2d(torch.randn(1, 1, 12, 8), 3)

    def test_bad_bands(self):
        with pytest.raises(ValueError, match="must hold 4 bands"):
            uhrops.haar_idwt2d(torch.randn(1, 1, 3, 4, 4))
        with pytest.raises(ValueError, match=r"4\*\*levels bands"):
            uhrops.haar_ipacket2d(torch.randn(1, 1, 8, 4, 4))
        low, highs = uhrops.haar_wavedec2(torch.randn(1, 1, 16, 16), 2)
        with pytest.raises(ValueError, match="finest first"):
            uhrops.haar_waverec2(low, highs[::-1])
        with pytest.raises(ValueError, match="output_size"):
            uhrops.haar_waverec2(low, highs, output_size=(13, 16))
        with pytest.raises(TypeError, match="dtype"):
            uhrops.haar_waverec2(low.double(), highs)


class TestLibrary:
    def test_opcheck(self):
        x = torch.randn(1, 2, 6, 10, dtype=torch.float64, requires_grad=True)
        xo = torch.randn(1, 2, 5, 7, dtype=torch.float64, requires_grad=True)
        y = torch.randn(1, 2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
        low, highs = uhrops.haar_wavedec2(torch.randn(1, 2, 5, 7, dtype=torch.float64), 2, "zero")
        low.requires_grad_()
        highs = [h.requires_grad_() for h in highs]
        cases = [
            (torch.ops.uhrops.haar_dwt2d.default, (x, -1, "torch")),
            (torch.ops.uhrops.haar_dwt2d.default, (xo, 2, "torch")),
            (torch.ops.uhrops.haar_idwt2d.default, (y, "torch")),
            (torch.ops.uhrops.haar_wavedec2.default, (xo, 2, 1, "torch")),
            (torch.ops.uhrops.haar_waverec2.default, (low, highs, 5, 7, -1, "torch")),
            (torch.ops.uhrops.haar_packet2d.default, (x[..., :4, :8], 2, "torch")),
            (torch.ops.uhrops.haar_ipacket2d.default, (torch.randn(1, 1, 16, 2, 3, requires_grad=True),
                                                       2, "torch")),
        ]
        for op, args in cases:
            torch.library.opcheck(op, args)

    @pytest.mark.compile
    def test_torch_compile_fullgraph(self):
        torch._dynamo.reset()

        def f(x):
            low, highs = uhrops.haar_wavedec2(x, 2, "symmetric")
            return uhrops.haar_waverec2(low * 2, highs, output_size=x.shape[-2:])

        x = torch.randn(1, 2, 9, 14, requires_grad=True)
        compiled = torch.compile(f, fullgraph=True)
        out = compiled(x)
        torch.testing.assert_close(out, f(x))
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
