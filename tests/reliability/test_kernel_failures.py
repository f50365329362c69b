"""Property: whatever kernel fails, whatever the op, "auto" returns the op's own result.

A Triton kernel that fails to compile or launch on a user's GPU must not change what an op
returns under "auto" (it falls back to PyTorch, forward and backward), and must raise
``uhrops.KernelLaunchError`` under an explicit "triton". Hypothesis draws the op family, the
shapes and the dtype; every kernel launch of the call fails on purpose (the launcher is made
to raise as Triton's compiler does). The oracle is the same op under ``use_backend("torch")``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uhrops
from uhrops import _backend
from uhrops.kernels import _launch

pytest.importorskip("triton")


def _calls(op: str, shape: tuple[int, int], dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    x = torch.randn(1, 2, 2 * h, 2 * w, generator=g).to(dtype)
    if op == "haar_wavedec2":
        return x, lambda t: torch.cat([c.flatten() for c in (
            [uhrops.haar_wavedec2(t, 1)[0]] + uhrops.haar_wavedec2(t, 1)[1])])
    if op == "pyr_down":
        return x, lambda t: uhrops.pyr_down(t).flatten()
    if op == "merge_patches":
        grid = uhrops.PatchGrid.from_stride((2 * h, 2 * w), (2, 2), (1, 1))
        return (torch.randn(len(grid), 2, 2, 2, generator=g).to(dtype),
                lambda t: uhrops.merge_patches(t, grid).flatten())
    q = torch.randn(1, 16, h, w, generator=g).to(dtype)
    return q, lambda t: uhrops.context_attention(t, t, t).flatten()


@pytest.fixture
def failing_kernels(monkeypatch):
    """Every launch fails the way Triton's compiler fails; 'auto' picks Triton as on a GPU."""
    from triton.compiler.errors import CompilationError

    def broken(kernel, grid, *args, **meta):
        name = _launch.kernel_name(kernel)
        raise _backend.KernelLaunchError(name, _launch.specialisation_key(args, meta),
                                         str(CompilationError(None, None, "out of resources")))

    real = _backend._resolve_for

    def as_on_gpu(op, device_type, has_triton, what=""):
        if _backend.get_backend() == "auto" and has_triton:
            return _backend.AUTO_TRITON
        return real(op, device_type, has_triton, what)

    for mod in ("wavelet", "pyramid", "tiling", "attention"):
        monkeypatch.setattr(f"uhrops.kernels.{mod}.launch", broken)
    monkeypatch.setattr(_backend, "_resolve_for", as_on_gpu)
    monkeypatch.setattr(_backend, "_failed", {})
    monkeypatch.delenv(_backend.STRICT_ENV, raising=False)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(["haar_wavedec2", "pyr_down", "merge_patches", "context_attention"]),
       shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_auto_result_is_the_op_whatever_kernel_fails(failing_kernels, op, shape, dtype, seed):
    x, fn = _calls(op, shape, dtype, seed)
    with uhrops.use_backend("torch"):
        xr = x.clone().float().requires_grad_(True)
        ref = fn(xr.to(dtype))
        (ref.float() * torch.arange(ref.numel())).sum().backward()
    xa = x.clone().float().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the once-per-kernel notice
        got = fn(xa.to(dtype))
        (got.float() * torch.arange(got.numel())).sum().backward()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    torch.testing.assert_close(xa.grad, xr.grad, rtol=0, atol=0)
    with uhrops.use_backend("triton"), pytest.raises(uhrops.KernelLaunchError):
        fn(x)
