"""A kernel that fails to compile or launch never takes a user's program down under "auto".

There is no GPU here, so "auto" choosing Triton is simulated (``_resolve_for`` answers as it
does for CUDA tensors) and a kernel is made to fail on purpose: its launch raises the error
Triton's compiler raises. The PyTorch path is the oracle for the values; PyWavelets checks
that the fallen-back result is the transform itself.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

import uhrops
from uhrops import _backend
from tests.oracles import oracle
from uhrops.kernels import _launch

pytest.importorskip("triton")
pywt = oracle("pywt")  # imported inside the tests that use it


class _BrokenKernel:
    """Stands in for a @triton.jit kernel whose compilation fails."""

    def __init__(self, name: str):
        self.fn = types.SimpleNamespace(__name__=name)
        self.calls = 0

    def __getitem__(self, grid):
        def run(*args, **meta):
            self.calls += 1
            from triton.compiler.errors import CompilationError

            raise CompilationError(None, None, f"ptxas: out of resources in {self.fn.__name__}")
        return run


@pytest.fixture
def auto_picks_triton(monkeypatch):
    """'auto' behaves as on a CUDA device: it picks Triton (and falls back on failure)."""
    real = _backend._resolve_for

    def as_on_gpu(op, device_type, has_triton, what=""):
        if _backend.get_backend() == "auto" and has_triton:
            return _backend.AUTO_TRITON
        return real(op, device_type, has_triton, what)

    monkeypatch.setattr(_backend, "_resolve_for", as_on_gpu)
    monkeypatch.delenv(_backend.STRICT_ENV, raising=False)
    monkeypatch.setattr(_backend, "_failed", {})
    yield


@pytest.fixture
def broken_wavedec(monkeypatch):
    from uhrops.kernels import wavelet as kw

    broken = _BrokenKernel("_wavedec_kernel")
    monkeypatch.setattr(kw, "_wavedec_kernel", broken)
    return broken


def _pywt_wavedec(x: torch.Tensor, levels: int):
    coeffs = pywt.wavedec2(x.double().numpy(), "haar", level=levels, axes=(-2, -1))
    return coeffs[0], [np.stack(c, axis=-3) for c in coeffs[1:][::-1]]


def test_auto_warns_once_and_runs_pytorch(auto_picks_triton, broken_wavedec):
    x = torch.randn(2, 3, 32, 48, dtype=torch.float32)
    with pytest.warns(RuntimeWarning) as caught:
        low, highs = uhrops.haar_wavedec2(x, 2)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    msg = messages[0]
    for part in ("_wavedec_kernel", "(2, 3, 32, 48)", "torch.float32", "out of resources",
                 "PyTorch path", "UHROPS_STRICT_KERNELS"):
        assert part in msg, (part, msg)
    ref_low, ref_highs = _pywt_wavedec(x, 2)
    np.testing.assert_allclose(low.double().numpy(), ref_low, rtol=1e-5, atol=1e-5)
    for got, ref in zip(highs, ref_highs):
        np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    calls = broken_wavedec.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same specialisation is not announced again
        uhrops.haar_wavedec2(x, 2)
    assert broken_wavedec.calls == calls, "a failed specialisation went back to the compiler"


def test_auto_fallback_covers_the_backward(auto_picks_triton, broken_wavedec):
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    xf = x.float().requires_grad_(True)
    with pytest.warns(RuntimeWarning):
        low, highs = uhrops.haar_wavedec2(xf, 2)
        (low.sum() + sum((h * h).sum() for h in highs)).backward()
    # Orthonormal transform: d/dx (sum(low) + |highs|^2) = adjoint(ones, 2 * highs).
    with uhrops.use_backend("torch"):
        xr = x.clone().requires_grad_(True)
        lo_r, hi_r = uhrops.haar_wavedec2(xr, 2)
        (lo_r.sum() + sum((h * h).sum() for h in hi_r)).backward()
    torch.testing.assert_close(xf.grad.double(), xr.grad, rtol=1e-5, atol=1e-5)


def test_explicit_triton_raises(auto_picks_triton, broken_wavedec):
    # CPU tensors need the interpreter for "triton" (tests/conftest.py turns it on).
    x = torch.randn(1, 1, 8, 8)
    with uhrops.use_backend("triton"), pytest.raises(_backend.KernelLaunchError,
                                                     match="_wavedec_kernel"):
        uhrops.haar_wavedec2(x, 2)


def test_strict_switch_makes_auto_raise(auto_picks_triton, broken_wavedec, monkeypatch):
    monkeypatch.setenv(_backend.STRICT_ENV, "1")
    with pytest.raises(_backend.KernelLaunchError, match="out of resources"):
        uhrops.haar_wavedec2(torch.randn(1, 1, 8, 8), 2)


def test_unavailable_reason_names_the_failed_kernel(auto_picks_triton, broken_wavedec):
    assert uhrops.triton_unavailable_reason("cuda") is None
    with pytest.warns(RuntimeWarning):
        uhrops.haar_wavedec2(torch.randn(1, 1, 8, 8), 2)
    reason = uhrops.triton_unavailable_reason("cuda")
    assert reason is not None and "_wavedec_kernel" in reason and "out of resources" in reason


def test_other_ops_keep_their_kernels(auto_picks_triton, broken_wavedec):
    # Only the failing kernel falls back: pyr_down still launches its own.
    from uhrops.kernels import pyramid as kp

    seen = []
    real_launch = _launch.launch

    def spy(kernel, grid, *args, **meta):
        seen.append(_launch.kernel_name(kernel))
        return real_launch(kernel, grid, *args, **meta)

    mp = pytest.MonkeyPatch()
    mp.setattr(kp, "launch", spy)
    try:
        uhrops.pyr_down(torch.randn(1, 1, 9, 9))
    finally:
        mp.undo()
    # A 9 x 9 image has no interior column tile: only the edge kernel runs.
    assert seen == ["_down_edge_kernel"]


def test_launch_refuses_grids_past_cuda_limits():
    kernel = _BrokenKernel("_any_kernel")
    with pytest.raises(_backend.KernelLaunchError, match="over CUDA's limit of 65535"):
        _launch.launch(kernel, (4, 70000), torch.zeros(1))
    assert kernel.calls == 0


def test_tiling_grids_fit_cuda_limits_for_huge_channel_counts_and_patches():
    """B * C over 65535 planes, and one patch over 11600^2 (more than 65535 tiles), were grid
    axes 1 before; now every launch the host makes fits CUDA's limits."""
    from uhrops.kernels._launch import Launch, recording

    launches: list[Launch] = []
    tiny = uhrops.PatchGrid.from_stride((4, 4), (2, 2), (2, 2))
    big = uhrops.PatchGrid.from_stride((12000, 12000), (12000, 12000), (12000, 12000))
    with recording(launches, "limits"):
        uhrops.merge_patches(torch.empty(4, 70000, 2, 2), tiny)
        uhrops.extract_patches(torch.empty(1, 70000, 4, 4), tiny)
        uhrops.extract_patches(torch.empty(1, 1, 12000, 12000), big)
        uhrops.merge_patches(torch.empty(1, 1, 12000, 12000), big)
    assert len(launches) == 4
    for launch in launches:
        assert all(n <= lim for n, lim in zip(launch.grid, (2**31 - 1, 65535, 65535))), \
            (_launch.kernel_name(launch.kernel), launch.grid)


def test_attention_batch_over_grid_axis_limit_is_split():
    from uhrops.kernels._launch import Launch, recording

    launches: list[Launch] = []
    q = torch.empty(70000, 16, 2, 2)
    with recording(launches, "batch"):
        uhrops.context_attention(q, q, q)
    assert [launch.grid[1] for launch in launches] == [65535, 70000 - 65535]
