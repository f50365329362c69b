"""Tests for uhrops.pyramid: OpenCV (cv2.pyrDown / cv2.pyrUp) is the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import triton_ready
from tests.oracles import oracle
from uhrops._backend import use_backend
from uhrops.pyramid import (
    GaussianPyramid,
    LaplacianPyramid,
    _pyr_down_adj_op,
    _pyr_down_op,
    _pyr_up_add_op,
    _pyr_up_adj_op,
    _pyr_up_op,
    gaussian_pyramid,
    laplacian_pyramid,
    laplacian_reconstruct,
    pyr_down,
    pyr_up,
)

cv2 = oracle("cv2")  # imported inside the tests that use it

SETTINGS = settings(max_examples=20, deadline=None)
side = st.integers(1, 40)
tall = st.tuples(st.integers(30, 90), st.integers(1, 5))  # (H, W) tall and thin


# ----------------------------------------------------------------------------------------------
# Oracles: cv2 per (batch, channel) plane, and a Python-loop Laplacian pyramid built on them
# ----------------------------------------------------------------------------------------------


def cv_down(x: torch.Tensor) -> torch.Tensor:
    a = x.detach().cpu().double().numpy()
    B, C, H, W = a.shape
    out = np.empty((B, C, (H + 1) // 2, (W + 1) // 2))
    for b in range(B):
        for c in range(C):
            out[b, c] = np.asarray(cv2.pyrDown(np.ascontiguousarray(a[b, c]))).reshape(out.shape[2:])
    return torch.from_numpy(out)


def cv_up(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    a = x.detach().cpu().double().numpy()
    B, C, h, w = a.shape
    H, W = size if size is not None else (2 * h, 2 * w)
    out = np.empty((B, C, H, W))
    for b in range(B):
        for c in range(C):
            r = cv2.pyrUp(np.ascontiguousarray(a[b, c]), dstsize=(W, H))
            out[b, c] = np.asarray(r).reshape(H, W)
    return torch.from_numpy(out)


def cv_laplacian(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    gs = [x.detach().cpu().double()]
    for _ in range(levels):
        gs.append(cv_down(gs[-1]))
    return [gs[i] - cv_up(gs[i + 1], tuple(gs[i].shape[-2:])) for i in range(levels)] + [gs[-1]]


def rand(shape, dtype=torch.float64, device="cpu", seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def tol(dtype: torch.dtype) -> dict:
    return {torch.float64: dict(atol=1e-12, rtol=0), torch.float32: dict(atol=1e-5, rtol=0),
            torch.float16: dict(atol=4e-3, rtol=0), torch.bfloat16: dict(atol=3e-2, rtol=0)}[dtype]


# ----------------------------------------------------------------------------------------------
# pyr_down
# ----------------------------------------------------------------------------------------------


class TestPyrDown:
    @SETTINGS
    @given(H=side, W=side, dtype=st.sampled_from([torch.float32, torch.float64]))
    def test_matches_cv2(self, H, W, dtype):
        x = rand((2, 2, H, W), dtype)
        y = pyr_down(x)
        assert y.shape == (2, 2, (H + 1) // 2, (W + 1) // 2) and y.dtype == dtype
        torch.testing.assert_close(y.double(), cv_down(x), **tol(dtype))

    @SETTINGS
    @given(hw=tall, transpose=st.booleans())
    def test_matches_cv2_tall(self, hw, transpose):
        H, W = hw[::-1] if transpose else hw
        x = rand((1, 1, H, W))
        torch.testing.assert_close(pyr_down(x), cv_down(x), **tol(torch.float64))

    @pytest.mark.parametrize("H", [1, 2, 3, 4, 5])
    @pytest.mark.parametrize("W", [1, 2, 3, 4, 5])
    def test_tiny_sides(self, H, W):
        x = rand((1, 2, H, W))
        torch.testing.assert_close(pyr_down(x), cv_down(x), **tol(torch.float64))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half(self, device, dtype):
        x = rand((1, 3, 17, 22), dtype, device)
        y = pyr_down(x)
        assert y.dtype == dtype
        torch.testing.assert_close(y.double().cpu(), cv_down(x.double()), **tol(dtype))

    def test_layouts(self, device):
        x = rand((2, 3, 15, 18), device=device)
        ref = pyr_down(x)
        torch.testing.assert_close(pyr_down(x.to(memory_format=torch.channels_last)), ref)
        big = rand((2, 3, 30, 36), device=device, seed=1)
        big[:, :, ::2, ::2] = x
        torch.testing.assert_close(pyr_down(big[:, :, ::2, ::2]), ref)
        assert pyr_down(x.transpose(-1, -2)).is_contiguous()

    def test_gradcheck(self, device):
        for shape in [(1, 2, 7, 6), (1, 1, 1, 3), (2, 1, 2, 5)]:
            x = rand(shape, device=device).requires_grad_()
            assert torch.autograd.gradcheck(pyr_down, (x,))
            assert torch.autograd.gradgradcheck(pyr_down, (x,))

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match="4-D"):
            pyr_down(torch.rand(3, 8, 8))
        with pytest.raises(TypeError, match="floating"):
            pyr_down(torch.ones(1, 1, 8, 8, dtype=torch.uint8))
        with pytest.raises(TypeError, match="torch.Tensor"):
            pyr_down(np.ones((1, 1, 8, 8)))
        with pytest.raises(ValueError, match="H >= 1"):
            pyr_down(torch.rand(1, 1, 0, 8))

    def test_nan_propagates_locally(self):
        x = torch.zeros(1, 1, 20, 20)
        x[0, 0, 0, 0] = float("nan")
        y = pyr_down(x)
        assert y[0, 0, :2, :2].isnan().all() and not y[0, 0, 3:, :].isnan().any()


# ----------------------------------------------------------------------------------------------
# pyr_up
# ----------------------------------------------------------------------------------------------


class TestPyrUp:
    @SETTINGS
    @given(h=side, w=side, crop_h=st.booleans(), crop_w=st.booleans(),
           dtype=st.sampled_from([torch.float32, torch.float64]))
    def test_matches_cv2(self, h, w, crop_h, crop_w, dtype):
        size = (2 * h - crop_h, 2 * w - crop_w)
        x = rand((2, 2, h, w), dtype)
        y = pyr_up(x, size)
        assert y.shape == (2, 2, *size) and y.dtype == dtype
        torch.testing.assert_close(y.double(), cv_up(x, size), **tol(dtype))

    @SETTINGS
    @given(hw=tall, transpose=st.booleans(), crop=st.booleans())
    def test_matches_cv2_tall(self, hw, transpose, crop):
        h, w = hw[::-1] if transpose else hw
        size = (2 * h - crop, 2 * w - crop)
        x = rand((1, 1, h, w))
        torch.testing.assert_close(pyr_up(x, size), cv_up(x, size), **tol(torch.float64))

    @pytest.mark.parametrize("h", [1, 2, 3])
    @pytest.mark.parametrize("w", [1, 2, 3])
    def test_tiny_sides(self, h, w):
        x = rand((1, 2, h, w))
        for size in [None, (2 * h - 1, 2 * w), (2 * h, 2 * w - 1), (2 * h - 1, 2 * w - 1)]:
            torch.testing.assert_close(pyr_up(x, size), cv_up(x, size), **tol(torch.float64))

    def test_default_size_and_layouts(self, device):
        x = rand((2, 3, 9, 7), device=device)
        y = pyr_up(x)
        assert y.shape == (2, 3, 18, 14)
        torch.testing.assert_close(pyr_up(x.to(memory_format=torch.channels_last)), y)
        torch.testing.assert_close(pyr_up(x, torch.Size([17, 13])), y[..., :17, :13])

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half(self, device, dtype):
        x = rand((1, 3, 9, 11), dtype, device)
        y = pyr_up(x, (17, 22))
        assert y.dtype == dtype
        torch.testing.assert_close(y.double().cpu(), cv_up(x.double(), (17, 22)), **tol(dtype))

    def test_gradcheck(self, device):
        for shape, size in [((1, 2, 4, 3), (7, 6)), ((1, 1, 1, 2), (1, 4)), ((2, 1, 3, 3), None)]:
            x = rand(shape, device=device).requires_grad_()
            assert torch.autograd.gradcheck(lambda t: pyr_up(t, size), (x,))
            assert torch.autograd.gradgradcheck(lambda t: pyr_up(t, size), (x,))

    def test_bad_size(self):
        x = torch.rand(1, 1, 5, 6)
        with pytest.raises(ValueError, match="2n or 2n - 1"):
            pyr_up(x, (11, 12))
        with pytest.raises(ValueError, match="2n or 2n - 1"):
            pyr_up(x, (10, 10))
        with pytest.raises(TypeError, match="pair"):
            pyr_up(x, 10)
        with pytest.raises(TypeError, match="int"):
            pyr_up(x, (10.0, 12))
        with pytest.raises(ValueError, match="4-D"):
            pyr_up(torch.rand(5, 6))


# ----------------------------------------------------------------------------------------------
# Pyramids
# ----------------------------------------------------------------------------------------------


class TestPyramids:
    @SETTINGS
    @given(H=st.integers(2, 70), W=st.integers(2, 70), data=st.data())
    def test_reconstruct_exact(self, H, W, data):
        levels = data.draw(st.integers(1, max(1, min(4, int(np.ceil(np.log2(min(H, W))))))))
        x = rand((1, 2, H, W), seed=H * 100 + W) * 10 - 5
        pyr = laplacian_pyramid(x, levels)
        torch.testing.assert_close(laplacian_reconstruct(pyr), x, atol=1e-10, rtol=0)

    @SETTINGS
    @given(H=st.integers(2, 40), W=st.integers(2, 40))
    def test_laplacian_matches_cv2_loop(self, H, W):
        levels = min(3, int(np.ceil(np.log2(min(H, W)))))
        x = rand((1, 2, H, W), torch.float32)
        pyr = laplacian_pyramid(x, levels)
        ref = cv_laplacian(x, levels)
        assert len(pyr) == levels + 1
        for p, r in zip(pyr, ref):
            assert p.shape == r.shape and p.dtype == torch.float32
            torch.testing.assert_close(p.double(), r, atol=1e-5, rtol=0)

    def test_gaussian_shapes_and_values(self, device):
        x = rand((2, 3, 37, 20), device=device)
        gs = gaussian_pyramid(x, 4)
        assert [tuple(g.shape[-2:]) for g in gs] == [(37, 20), (19, 10), (10, 5), (5, 3), (3, 2)]
        assert gs[0] is x
        ref = x.cpu()
        for g in gs[1:]:
            ref = cv_down(ref)
            torch.testing.assert_close(g.cpu(), ref, atol=1e-12, rtol=0)

    def test_constant_image_has_zero_residuals(self, device):
        x = torch.full((1, 3, 45, 31), 0.7, dtype=torch.float64, device=device)
        pyr = laplacian_pyramid(x, 4)
        for h in pyr[:-1]:
            assert h.abs().max().item() < 1e-14
        torch.testing.assert_close(pyr[-1], torch.full_like(pyr[-1], 0.7))

    def test_reconstruct_any_size_float32(self, device):
        for H, W in [(1, 2), (2, 3), (3, 3), (33, 17), (64, 64)]:
            x = rand((1, 2, H, W), torch.float32, device)
            levels = max(1, int(np.ceil(np.log2(min(H, W)))))
            if min(H, W) == 1:
                continue
            y = laplacian_reconstruct(laplacian_pyramid(x, levels))
            torch.testing.assert_close(y, x, atol=1e-6, rtol=0)

    def test_modules(self):
        x = rand((1, 2, 20, 24))
        assert all(torch.equal(a, b) for a, b in zip(GaussianPyramid(2)(x), gaussian_pyramid(x, 2)))
        lap = LaplacianPyramid(3)
        assert "levels=3" in repr(lap)
        assert all(torch.equal(a, b) for a, b in zip(lap(x), laplacian_pyramid(x, 3)))
        with pytest.raises(ValueError, match=">= 1"):
            LaplacianPyramid(0)

    def test_gradcheck(self, device):
        x = rand((1, 2, 9, 6), device=device).requires_grad_()
        assert torch.autograd.gradcheck(lambda t: laplacian_pyramid(t, 2), (x,))
        assert torch.autograd.gradcheck(lambda t: gaussian_pyramid(t, 2)[1:], (x,))
        pyr = [p.detach().requires_grad_() for p in laplacian_pyramid(x, 2)]
        assert torch.autograd.gradcheck(lambda *p: laplacian_reconstruct(list(p)), tuple(pyr))
        assert torch.autograd.gradgradcheck(lambda t: laplacian_pyramid(t, 1), (x,))

    def test_bad_levels(self):
        x = torch.rand(1, 1, 12, 20)
        with pytest.raises(ValueError, match="too many"):
            laplacian_pyramid(x, 5)
        with pytest.raises(ValueError, match="at most 4"):
            gaussian_pyramid(x, 5)
        with pytest.raises(ValueError, match=">= 1"):
            laplacian_pyramid(x, 0)
        with pytest.raises(ValueError, match=">= 1"):
            gaussian_pyramid(x, -1)
        with pytest.raises(TypeError, match="int"):
            laplacian_pyramid(x, 2.0)
        with pytest.raises(ValueError, match="too many"):
            laplacian_pyramid(torch.rand(1, 1, 1, 50), 1)
        with pytest.raises(ValueError, match="4-D"):
            laplacian_pyramid(torch.rand(12, 20), 2)

    def test_bad_reconstruct_inputs(self):
        pyr = laplacian_pyramid(torch.rand(1, 2, 12, 20), 2)
        with pytest.raises(ValueError, match="at least 2"):
            laplacian_reconstruct(pyr[:1])
        with pytest.raises(TypeError, match="list or tuple"):
            laplacian_reconstruct(pyr[0])
        with pytest.raises(ValueError, match=r"pyramid\[1\]"):
            laplacian_reconstruct([pyr[0], pyr[2]])
        with pytest.raises(ValueError, match=r"must be \(1, 2, 3, 5\)"):
            laplacian_reconstruct([pyr[0], pyr[1], pyr[2][..., :4]])
        with pytest.raises(TypeError, match="dtype"):
            laplacian_reconstruct([pyr[0], pyr[1].double(), pyr[2]])
        with pytest.raises(ValueError, match="4-D"):
            laplacian_reconstruct([pyr[0], pyr[1][0], pyr[2]])


# ----------------------------------------------------------------------------------------------
# Triton path (interpreter on the CPU) against the PyTorch path
# ----------------------------------------------------------------------------------------------


def _skip_no_triton(device):
    reason = triton_ready(device)
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.triton
class TestTriton:
    # (H, W) with tails: 19 rows (not a multiple of 8), 70 columns (not a multiple of 64),
    # odd sides, and 1-3 sample sides where reflect-101 folds more than once.
    SHAPES = [(1, 2, 19, 70), (2, 1, 6, 5), (1, 1, 3, 1), (1, 1, 2, 3)]

    def _both(self, fn, *args):
        with use_backend("torch"):
            ref = fn(*args)
        with use_backend("triton"):
            out = fn(*args)
        return out, ref

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_forward_backward(self, device, dtype):
        _skip_no_triton(device)
        for i, shape in enumerate(self.SHAPES):
            x0 = rand(shape, torch.float32, device, seed=i).to(dtype)
            crop = (shape[2] * 2 - 1, shape[3] * 2)
            outs = []
            for be in ("torch", "triton"):
                x = x0.clone().requires_grad_()
                with use_backend(be):
                    d = pyr_down(x)
                    u = pyr_up(x, crop)
                    loss = (d.float() * torch.linspace(0, 1, d.numel(), device=device).view_as(d)).sum()
                    loss = loss + (u.float() * torch.cos(torch.arange(u.numel(), device=device)).view_as(u)).sum()
                    loss.backward()
                outs.append((d, u, x.grad))
            for a, b in zip(*outs):
                assert a.dtype == dtype
                torch.testing.assert_close(a.float(), b.float(), **tol(dtype))

    def test_float64_adjoints_exact(self, device):
        _skip_no_triton(device)
        for H, W in [(5, 7), (2, 1), (4, 4)]:
            h, w = (H + 1) // 2, (W + 1) // 2
            x = rand((1, 1, H, W), device=device)
            g = rand((1, 1, h, w), device=device, seed=1)
            for be in ("torch", "triton"):
                lhs = (_pyr_down_op(x, be) * g).sum()
                rhs = (x * _pyr_down_adj_op(g, H, W, be)).sum()
                torch.testing.assert_close(lhs, rhs, atol=1e-13, rtol=0)
                for size in [(2 * h, 2 * w), (2 * h - 1, 2 * w - 1)]:
                    gu = rand((1, 1, *size), device=device, seed=2)
                    lhs = (_pyr_up_op(g, *size, be) * gu).sum()
                    rhs = (g * _pyr_up_adj_op(gu, h, w, 1.0, be)).sum()
                    torch.testing.assert_close(lhs, rhs, atol=1e-13, rtol=0)
            torch.testing.assert_close(_pyr_down_op(x, "triton"), cv_down(x).to(device))
            torch.testing.assert_close(_pyr_up_op(g, H, W, "triton"), cv_up(g, (H, W)).to(device))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_laplacian_and_reconstruct(self, device, dtype):
        _skip_no_triton(device)
        x = rand((1, 2, 21, 67), torch.float32, device).to(dtype)
        out, ref = self._both(lambda t: laplacian_pyramid(t, 3), x)
        for a, b in zip(out, ref):
            torch.testing.assert_close(a.float(), b.float(), **tol(dtype))
        with use_backend("triton"):
            y = laplacian_reconstruct(out)
        if dtype == torch.float32:
            torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
        # fused expand+add backward against the PyTorch path
        base = rand((1, 2, 9, 11), device=device, seed=3).requires_grad_()
        coarse = rand((1, 2, 5, 6), device=device, seed=4).requires_grad_()
        grads = []
        for be in ("torch", "triton"):
            r = _pyr_up_add_op(base, coarse, -1.0, be)
            grads.append(torch.autograd.grad((r * r).sum(), (base, coarse)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)

    def test_layouts(self, device):
        _skip_no_triton(device)
        x = rand((2, 3, 11, 13), torch.float32, device)
        with use_backend("triton"):
            ref_d, ref_u = pyr_down(x), pyr_up(x, (21, 26))
            cl = x.to(memory_format=torch.channels_last)
            torch.testing.assert_close(pyr_down(cl), ref_d)
            torch.testing.assert_close(pyr_up(cl, (21, 26)), ref_u)
            nc = x.transpose(-1, -2).contiguous().transpose(-1, -2)
            torch.testing.assert_close(pyr_down(nc), ref_d)
        with use_backend("torch"):
            torch.testing.assert_close(pyr_down(x), ref_d)

    def test_gradcheck_tiny(self, device):
        _skip_no_triton(device)
        x = rand((1, 1, 5, 3), device=device).requires_grad_()
        with use_backend("triton"):
            assert torch.autograd.gradcheck(lambda t: laplacian_pyramid(t, 1), (x,))


# ----------------------------------------------------------------------------------------------
# torch.library registration and torch.compile
# ----------------------------------------------------------------------------------------------


class TestRegistration:
    def test_opcheck(self):
        x = rand((1, 2, 7, 6)).requires_grad_()
        g = rand((1, 2, 4, 3)).requires_grad_()
        gu = rand((1, 2, 7, 6)).requires_grad_()
        cases = [
            (_pyr_down_op, (x, "torch")),
            (_pyr_down_adj_op, (g, 7, 6, "torch")),
            (_pyr_up_op, (g, 7, 6, "torch")),
            (_pyr_up_adj_op, (gu, 4, 3, -1.0, "torch")),
            (_pyr_up_add_op, (gu, g, -1.0, "torch")),
        ]
        for op, args in cases:
            torch.library.opcheck(op, args)

    @pytest.mark.triton
    def test_opcheck_triton(self):
        _skip_no_triton("cpu")
        x = rand((1, 1, 5, 6)).requires_grad_()
        torch.library.opcheck(_pyr_down_op, (x, "triton"))
        torch.library.opcheck(_pyr_up_add_op, (rand((1, 1, 9, 12)).requires_grad_(), x, 1.0,
                                               "triton"))

    @pytest.mark.compile
    def test_compile(self):
        torch._dynamo.reset()

        def fn(t):
            pyr = laplacian_pyramid(t, 2)
            return laplacian_reconstruct(pyr), pyr[0]

        x = rand((1, 2, 13, 10), torch.float32).requires_grad_()
        y, h0 = torch.compile(fn, fullgraph=True)(x)
        y_ref, h0_ref = fn(x)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(h0, h0_ref)
        (y.sum() + h0.sum()).backward()
        assert x.grad is not None and x.grad.shape == x.shape
