"""context_attention and LocalContextCorrelation against the naive float64 formula.

The oracle is written here: out = V softmax_keys(scale * Q^T K)^T computed with dense
float64 matrices (and float64 autograd for the three gradients).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import triton_ready
from uhrops import attention as A
from uhrops._backend import BackendUnavailableError, use_backend
from uhrops.attention import LocalContextCorrelation, context_attention

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------------------
# oracle and helpers
# --------------------------------------------------------------------------------------------
def naive(q, k, v, scale=1.0, center=False):
    """Dense float64 softmax(scale * q^T k) v on (B, C, H, W) maps (the test oracle)."""
    q, k, v = q.double(), k.double(), v.double()
    if center:
        q = q - q.mean(dim=(2, 3), keepdim=True)
        k = k - k.mean(dim=(2, 3), keepdim=True)
    b, _, hq, wq = q.shape
    logits = torch.einsum("bci,bcj->bij", q.flatten(2), k.flatten(2)) * scale
    p = torch.softmax(logits, dim=-1)
    out = torch.einsum("bij,bcj->bci", p, v.flatten(2))
    return out.reshape(b, v.shape[1], hq, wq)


def oracle_with_grads(q, k, v, grad, scale=1.0, center=False):
    qs, ks, vs = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = naive(qs, ks, vs, scale, center)
    grads = torch.autograd.grad(out, (qs, ks, vs), grad.double())
    return out.detach(), grads


def run_with_grads(q, k, v, grad, scale=1.0, center=False):
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = context_attention(qs, ks, vs, scale=scale, center=center)
    grads = torch.autograd.grad(out, (qs, ks, vs), grad)
    return out.detach(), grads


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-12) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).abs().max() / b.abs().max().clamp_min(floor)).item()


def assert_rel(a, b, tol, what="", floor: float = 1e-12):
    err = rel_err(a, b, floor)
    assert err <= tol, f"{what}: max error {err:.3g} of max |ref| > {tol}"


def grad_floor(ref_grads) -> float:
    """1 % of the largest reference gradient: a gradient that is zero in exact arithmetic
    (dq and dk with a single key, where the softmax is identically 1) comes out as rounding
    of the order of eps * |dO| * |V|, which is judged against the op's gradient scale."""
    return 0.01 * max(float(r.abs().max()) for r in ref_grads)


def make(b, cq, cv, hq, wq, hk, wk, dtype=torch.float32, device="cpu", amp=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(b, cq, hq, wq, generator=g, dtype=torch.float64) * amp)
    k = (torch.randn(b, cq, hk, wk, generator=g, dtype=torch.float64) * amp)
    v = torch.randn(b, cv, hk, wk, generator=g, dtype=torch.float64)
    grad = torch.randn(b, cv, hq, wq, generator=g, dtype=torch.float64)
    return [t.to(dtype=dtype, device=device) for t in (q, k, v, grad)]


# Logits ~3e4 carry an absolute fp32 rounding error of ~1e-3, so the softmax weights do too.
LARGE_TOL = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 6e-2}
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
GRAD_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 8e-2}


@pytest.fixture(params=["fused", "chunked"])
def torch_path(request, monkeypatch):
    """The two PyTorch forwards: ATen's fused CPU flash kernel and the chunked math."""
    if request.param == "chunked":
        monkeypatch.setattr(A, "_CPU_FUSED", False)
        monkeypatch.setattr(A, "_CHUNK_ELEMENTS", 200)  # many chunks and batch groups
    else:
        monkeypatch.setattr(A, "_CPU_FUSED_MIN_LOGITS", 0)  # fused even for tiny maps
    return request.param


def needs_triton(device):
    reason = triton_ready(device)
    if reason is not None:
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# PyTorch path against the oracle
# --------------------------------------------------------------------------------------------
class TestContextAttentionValues:
    @settings(max_examples=20, **HYP)
    @given(data=st.data())
    def test_random_shapes_match_naive(self, device, data):
        b = data.draw(st.integers(1, 3))
        cq, cv = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
        hq, wq, hk, wk = (data.draw(st.integers(1, 9)) for _ in range(4))
        center = data.draw(st.booleans())
        scale = data.draw(st.sampled_from([1.0, 1.0 / math.sqrt(cq)]))
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
        fused = data.draw(st.booleans())
        chunk = data.draw(st.sampled_from([1, 37, 1 << 23]))
        seed = data.draw(st.integers(0, 99))
        q, k, v, g = make(b, cq, cv, hq, wq, hk, wk, dtype, device, seed=seed)
        with pytest.MonkeyPatch.context() as mp, use_backend("torch"):
            mp.setattr(A, "_CPU_FUSED", fused)
            mp.setattr(A, "_CPU_FUSED_MIN_LOGITS", 0)
            mp.setattr(A, "_CHUNK_ELEMENTS", chunk)
            out, grads = run_with_grads(q, k, v, g, scale, center)
        ref, ref_grads = oracle_with_grads(q, k, v, g, scale, center)
        assert out.shape == (b, cv, hq, wq) and out.dtype == dtype and out.is_contiguous()
        assert_rel(out, ref, TOL[dtype], "out")
        for name, a, r in zip("qkv", grads, ref_grads):
            assert a.shape == r.shape and a.dtype == dtype
            assert_rel(a, r, GRAD_TOL[dtype], f"d{name}")

    @pytest.mark.parametrize("c", [1, 3, 64, 512])
    def test_channel_counts(self, device, torch_path, c):
        q, k, v, g = make(2, c, c, 5, 6, 4, 7, device=device, amp=c ** -0.25)
        with use_backend("torch"):
            out, grads = run_with_grads(q, k, v, g)
        ref, ref_grads = oracle_with_grads(q, k, v, g)
        assert_rel(out, ref, TOL[torch.float32], "out")
        for a, r in zip(grads, ref_grads):
            assert_rel(a, r, GRAD_TOL[torch.float32], "grad")

    @pytest.mark.parametrize("center", [False, True])
    def test_gradcheck_float64(self, torch_path, center):
        cv = 2 if torch_path == "chunked" else 3  # the fused CPU kernel needs Cq == Cv
        q, k, v, _ = make(1, 3, cv, 2, 3, 3, 2, torch.float64)
        args = [t.requires_grad_() for t in (q, k, v)]
        with use_backend("torch"):
            assert torch.autograd.gradcheck(
                lambda a, b_, c: context_attention(a, b_, c, scale=0.7, center=center), args)

    def test_center_subtracts_position_mean(self):
        q, k, v, g = make(1, 5, 3, 4, 4, 6, 3, torch.float64)
        shifted = context_attention(q + torch.randn(1, 5, 1, 1, dtype=torch.float64),
                                    k + torch.randn(1, 5, 1, 1, dtype=torch.float64), v,
                                    center=True)
        torch.testing.assert_close(shifted, naive(q, k, v, center=True))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_dtypes(self, torch_path, dtype):
        q, k, v, g = make(2, 16, 16, 5, 7, 6, 6, dtype)
        with use_backend("torch"):
            out, grads = run_with_grads(q, k, v, g)
        ref, ref_grads = oracle_with_grads(q, k, v, g)
        assert out.dtype == dtype
        assert_rel(out, ref, TOL[dtype], "out")
        for a, r in zip(grads, ref_grads):
            assert a.dtype == dtype
            assert_rel(a, r, GRAD_TOL[dtype], "grad")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_large_logits_do_not_overflow(self, torch_path, dtype):
        q, k, v, g = make(1, 32, 8, 4, 5, 5, 4, torch.float64)
        q, k = 30 + q, 30 + k  # logits around 30 * 30 * 32 = 28800
        q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
        with use_backend("torch"):
            out, grads = run_with_grads(q, k, v, g)
        for t in (out, *grads):
            assert torch.isfinite(t).all()
        assert_rel(out, naive(q, k, v), LARGE_TOL[dtype], "out")

    def test_nan_propagates_to_its_row(self, device, torch_path):
        q, k, v, _ = make(1, 4, 4, 3, 3, 4, 4, device=device)
        q[0, 1, 0, 0] = float("nan")
        with use_backend("torch"):
            out = context_attention(q, k, v).flatten(2)
        assert torch.isnan(out[:, :, 0]).all() and torch.isfinite(out[:, :, 1:]).all()

    def test_noncontiguous_and_channels_last(self, device, torch_path):
        q, k, v, g = make(2, 6, 5, 7, 5, 4, 6, device=device)
        ref = context_attention(q, k, v, center=True)
        cl = context_attention(q.to(memory_format=torch.channels_last),
                               k.to(memory_format=torch.channels_last),
                               v.to(memory_format=torch.channels_last), center=True)
        big = torch.randn(2, 12, 7, 10, device=device)
        big[:, ::2, :, ::2] = q
        nc = context_attention(big[:, ::2, :, ::2], k.transpose(2, 3).contiguous().transpose(2, 3),
                               v, center=True)
        torch.testing.assert_close(cl, ref)
        torch.testing.assert_close(nc, ref)
        # the output takes the query's layout (README): channels_last in, channels_last out
        assert cl.is_contiguous(memory_format=torch.channels_last) and nc.is_contiguous()

    def test_empty_query_batch(self):
        q, k, v = torch.randn(0, 3, 4, 4), torch.randn(0, 3, 2, 2), torch.randn(0, 5, 2, 2)
        assert context_attention(q, k, v).shape == (0, 5, 4, 4)
        q = torch.randn(2, 3, 0, 4)
        assert context_attention(q, torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2)).shape == \
            (2, 5, 0, 4)


class TestMemory:
    """The PyTorch path never holds an Nq x Nk matrix (the peak of every CPU allocation)."""

    @staticmethod
    def _peak_mib(fn):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        try:
            events = prof.profiler.kineto_results.events()
            mem = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
            sizes = [e.nbytes() for e in mem]
        except AttributeError as exc:  # private profiler API moved
            pytest.skip(f"profiler memory events unavailable: {exc}")
        if not sizes:
            pytest.skip("the profiler recorded no CPU allocations")
        cur = peak = 0
        for n in sizes:
            cur += n
            peak = max(peak, cur)
        return peak / 2**20

    def test_probe_sees_an_nxn_matrix(self):
        """Sanity check of the probe itself: the dense formula at N=1024 shows its 4 MiB matrix."""
        q = torch.randn(1, 8, 32, 32)
        x = q.flatten(2)
        peak = self._peak_mib(lambda: torch.softmax(x.transpose(1, 2) @ x, -1))
        assert peak >= 8  # two 1024 x 1024 fp32 matrices (logits and softmax)

    @pytest.mark.slow
    def test_n16384_forward_backward(self):
        """N = 16384 (128 x 128), C = 64: fused CPU forward + chunked backward."""
        torch.manual_seed(0)
        n_side, c, cv = 128, 64, 64
        q = (torch.randn(1, c, n_side, n_side) * 0.1).requires_grad_()
        k = torch.randn(1, c, n_side, n_side).requires_grad_()
        v = torch.randn(1, cv, n_side, n_side).requires_grad_()
        g = torch.randn(1, cv, n_side, n_side)
        nxn_mib = (n_side * n_side) ** 2 * 4 / 2**20  # 1024 MiB

        def step():
            with use_backend("torch"):
                out = context_attention(q, k, v)
                torch.autograd.grad(out, (q, k, v), g)

        peak = self._peak_mib(step)
        assert peak < 256, f"peak {peak:.0f} MiB; the N x N matrix alone is {nxn_mib:.0f} MiB"

    def test_chunked_math_respects_budget(self, monkeypatch):
        """Every tensor the chunked path creates stays within the chunk budget (dispatch probe)."""
        from torch.utils._python_dispatch import TorchDispatchMode

        biggest = []

        class Probe(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else [out]:
                    if isinstance(t, torch.Tensor):
                        biggest.append(t.numel())
                return out

        monkeypatch.setattr(A, "_CHUNK_ELEMENTS", 1 << 16)
        n, c = 1024, 4
        q, k, v, g = make(2, c, c, 32, 32, 32, 32)
        with Probe():
            out, lse = A._chunked_forward(q, k, v, 1.0)
            A._torch_backward(g, None, q, k, v, out, lse, 1.0)
        assert max(biggest) <= max(1 << 16, 2 * c * n)
        assert max(biggest) < n * n


# --------------------------------------------------------------------------------------------
# Triton path (CUDA, or the CPU interpreter)
# --------------------------------------------------------------------------------------------
SMALL_BLOCKS = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_CR=16, BLOCK_DV=16, BLOCK_CO=16,
                    BLOCK_M_BWD=16, BLOCK_N_BWD=16, BLOCK_CR_BWD=16)


@pytest.mark.triton
class TestContextAttentionTriton:
    @pytest.mark.parametrize(
        "cq,cv,hq,wq,hk,wk",
        [(1, 1, 5, 8, 7, 11), (3, 5, 5, 8, 7, 11), (64, 64, 8, 10, 6, 9),
         (512, 512, 2, 3, 2, 5), (40, 24, 3, 13, 9, 1)],
    )
    def test_fp32_matches_naive(self, device, cq, cv, hq, wq, hk, wk):
        needs_triton(device)
        q, k, v, g = make(2, cq, cv, hq, wq, hk, wk, device=device, amp=cq ** -0.25)
        with use_backend("triton"):
            out, grads = run_with_grads(q, k, v, g, scale=1.0, center=cq > 1)
        ref, ref_grads = oracle_with_grads(q, k, v, g, 1.0, cq > 1)
        assert out.is_contiguous() and out.shape == ref.shape
        assert_rel(out, ref, TOL[torch.float32], "out")
        for name, a, r in zip("qkv", grads, ref_grads):
            assert_rel(a, r, GRAD_TOL[torch.float32], f"d{name}")

    def test_small_blocks_tile_every_axis(self, device, monkeypatch):
        """16-wide blocks: several query/key blocks and channel tiles, each with a tail."""
        needs_triton(device)
        from uhrops.kernels import attention as K

        monkeypatch.setattr(K, "CONFIG_OVERRIDE", lambda *a: SMALL_BLOCKS)
        q, k, v, g = make(1, 37, 21, 4, 5, 5, 7, device=device, amp=0.4)
        with use_backend("triton"):
            out, grads = run_with_grads(q, k, v, g, scale=0.5)
        ref, ref_grads = oracle_with_grads(q, k, v, g, 0.5)
        assert_rel(out, ref, TOL[torch.float32], "out")
        for a, r in zip(grads, ref_grads):
            assert_rel(a, r, GRAD_TOL[torch.float32], "grad")

    @pytest.mark.parametrize("dtype,precision,shape", [
        # wide: separate dK/dV passes and key splits
        (torch.bfloat16, "highest", (192, 160, 10, 11, 9, 9)),
        (torch.float32, "highest", (160, 144, 6, 7, 9, 9)),
        (torch.float32, "high", (80, 72, 6, 7, 9, 9)),
        # FCtL's width: one 512-wide value accumulator per program
        (torch.float16, "highest", (512, 512, 3, 5, 9, 8)),
        # narrow: one dK/dV pass
        (torch.bfloat16, "highest", (24, 40, 9, 8, 13, 5))])
    def test_gpu_block_plans_match_naive(self, device, monkeypatch, dtype, precision, shape):
        """The block plans a GPU gets (key splits with the combine kernel, full-width value
        accumulators, separate dK/dV passes), run here by the interpreter."""
        needs_triton(device)
        from uhrops.kernels import attention as K

        cq, cv, hq, wq, hk, wk = shape
        gpu = torch.device("cuda")
        cfg = K.block_config(hq * wq, hk * wk, cq, cv, gpu, dtype)
        monkeypatch.setattr(K, "INTERPRETER_SMS", 132)  # split as an H100 would
        splits, _ = K.key_splits(hq * wq, hk * wk, 2, 1, cfg, K.sm_count(torch.empty(0)))
        assert splits > 1  # these maps are far too small to fill 132 SMs with query blocks
        monkeypatch.setattr(K, "CONFIG_OVERRIDE",
                            lambda nq, nk, cq, cv, dev: K.block_config(nq, nk, cq, cv, gpu, dtype))
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(precision)
        try:
            q, k, v, g = make(2, cq, cv, hq, wq, hk, wk, torch.float64, device,
                              amp=cq ** -0.25)
            q, k, v, g = (t.to(dtype) for t in (q, k, v, g))
            with use_backend("triton"):
                out, grads = run_with_grads(q, k, v, g, scale=cq ** -0.5)
        finally:
            torch.set_float32_matmul_precision(old)
        ref, ref_grads = oracle_with_grads(q, k, v, g, cq ** -0.5, False)
        tf32 = dtype == torch.float32 and precision != "highest"
        tol, gtol = (3e-3, 1e-2) if tf32 else (2 * TOL[dtype], 2 * GRAD_TOL[dtype])
        assert_rel(out, ref, tol, "out")
        for name, a, r in zip("qkv", grads, ref_grads):
            assert_rel(a, r, gtol, f"d{name}")

    @settings(max_examples=10, **HYP)
    @given(data=st.data())
    def test_random_shapes_match_naive(self, device, data):
        needs_triton(device)
        cq, cv = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
        hq, wq, hk, wk = (data.draw(st.integers(1, 8)) for _ in range(4))
        center = data.draw(st.booleans())
        scale = data.draw(st.sampled_from([1.0, 1.0 / math.sqrt(cq)]))
        q, k, v, g = make(data.draw(st.integers(1, 2)), cq, cv, hq, wq, hk, wk, device=device,
                          seed=data.draw(st.integers(0, 99)))
        with use_backend("triton"):
            out, grads = run_with_grads(q, k, v, g, scale, center)
        ref, ref_grads = oracle_with_grads(q, k, v, g, scale, center)
        assert_rel(out, ref, TOL[torch.float32], "out")
        for a, r in zip(grads, ref_grads):
            assert_rel(a, r, GRAD_TOL[torch.float32], "grad", grad_floor(ref_grads))

    def test_single_key_gradients_are_rounding_only(self, device):
        # the example hypothesis found: one key position, so dq = dk = 0 exactly
        needs_triton(device)
        q, k, v, g = make(1, 2, 1, 2, 1, 1, 1, device=device, seed=0)
        with use_backend("triton"):
            _, grads = run_with_grads(q, k, v, g, 1.0, False)
        _, ref_grads = oracle_with_grads(q, k, v, g, 1.0, False)
        assert float(ref_grads[0].abs().max()) == 0.0 and float(ref_grads[1].abs().max()) == 0
        for a, r in zip(grads, ref_grads):
            assert_rel(a, r, GRAD_TOL[torch.float32], "grad", grad_floor(ref_grads))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_triton_equals_torch(self, device, dtype):
        needs_triton(device)
        q, k, v, g = make(2, 24, 20, 6, 7, 5, 9, dtype, device)
        with use_backend("triton"):
            out_t, grads_t = run_with_grads(q, k, v, g, center=True)
        with use_backend("torch"):
            out_p, grads_p = run_with_grads(q, k, v, g, center=True)
        assert out_t.dtype == dtype and all(t.dtype == dtype for t in grads_t)
        tol = 2 * TOL[dtype] if dtype != torch.float32 else 1e-5
        assert_rel(out_t, out_p, tol, "out")
        for a, r in zip(grads_t, grads_p):
            assert_rel(a, r, 2 * GRAD_TOL[dtype], "grad")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_large_logits_do_not_overflow(self, device, dtype):
        needs_triton(device)
        q, k, v, g = make(1, 32, 8, 4, 5, 5, 4, torch.float64)
        q, k = 30 + q, 30 + k
        q, k, v, g = (t.to(dtype=dtype, device=device) for t in (q, k, v, g))
        with use_backend("triton"):
            out, grads = run_with_grads(q, k, v, g)
        for t in (out, *grads):
            assert torch.isfinite(t).all()
        assert_rel(out, naive(q, k, v), LARGE_TOL[dtype], "out")

    @pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy, interpreter
    def test_nan_propagates_to_its_row(self, device):
        needs_triton(device)
        q, k, v, _ = make(1, 4, 4, 3, 3, 4, 4, device=device)
        q[0, 1, 0, 0] = float("nan")
        with use_backend("triton"):
            out = context_attention(q, k, v).flatten(2)
        assert torch.isnan(out[:, :, 0]).all() and torch.isfinite(out[:, :, 1:]).all()

    def test_channels_last_and_strided(self, device):
        needs_triton(device)
        q, k, v, g = make(1, 20, 18, 5, 6, 4, 7, device=device)
        ref = naive(q, k, v)
        with use_backend("triton"):
            cl = context_attention(q.to(memory_format=torch.channels_last),
                                   k.to(memory_format=torch.channels_last), v)
            nc = context_attention(q.transpose(2, 3).contiguous().transpose(2, 3), k,
                                   v.to(memory_format=torch.channels_last))
        assert_rel(cl, ref, TOL[torch.float32], "channels_last")
        assert_rel(nc, ref, TOL[torch.float32], "strided")

    def test_float64_has_no_kernel(self, device):
        needs_triton(device)
        q = torch.randn(1, 2, 3, 3, dtype=torch.float64, device=device)
        with use_backend("triton"), pytest.raises(BackendUnavailableError, match="no kernel"):
            context_attention(q, q, q)


# --------------------------------------------------------------------------------------------
# FCtL block
# --------------------------------------------------------------------------------------------
class TestLocalContextCorrelation:
    def test_layers_match_official_fctl(self):
        block = LocalContextCorrelation(32)
        assert block.key_channels == 32
        assert block.conv_query.weight.shape == (32, 32, 1, 1) and block.conv_query.bias is not None
        assert block.conv_key.weight.shape == (32, 32, 1, 1) and block.conv_key.bias is not None
        assert block.conv_value.weight.shape == (32, 32, 1, 1) and block.conv_value.bias is None
        assert block.gamma.shape == (1,) and block.gamma.item() == 0.0
        small = LocalContextCorrelation(32, key_channels=8)
        assert small.conv_query.out_channels == 8 and small.conv_value.out_channels == 32

    def test_official_initialisation(self):
        torch.manual_seed(0)
        block = LocalContextCorrelation(256)
        for conv in (block.conv_query, block.conv_key, block.conv_value):
            assert abs(conv.weight.std().item() - 0.01) < 1e-3
            assert abs(conv.weight.mean().item()) < 1e-3
        assert block.conv_query.bias.abs().max() == 0 and block.conv_key.bias.abs().max() == 0

    def test_identity_residual_at_init(self):
        block = LocalContextCorrelation(8)
        x, y = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 5, 5)
        out = x + block(x, y)
        assert torch.equal(out, x)
        out.sum().backward()
        assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0

    @pytest.mark.parametrize("center", [False, True])
    def test_matches_formula(self, center):
        torch.manual_seed(1)
        block = LocalContextCorrelation(12, key_channels=6, center=center).double()
        with torch.no_grad():
            block.gamma.fill_(0.75)
            for conv in (block.conv_query, block.conv_key, block.conv_value):
                conv.weight.normal_(0, 0.4)
            block.conv_query.bias.normal_()
            block.conv_key.bias.normal_()
        x, y = torch.randn(2, 12, 5, 6, dtype=torch.float64), torch.randn(2, 12, 4, 4,
                                                                            dtype=torch.float64)
        q = F.conv2d(x, block.conv_query.weight, block.conv_query.bias)
        k = F.conv2d(y, block.conv_key.weight, block.conv_key.bias)
        v = F.conv2d(y, block.conv_value.weight)
        expected = 0.75 * naive(q, k, v, 1.0, center)
        torch.testing.assert_close(block(x, y), expected)
        if center:  # DeepGlobe: q/k biases cancel out
            with torch.no_grad():
                block.conv_query.bias.add_(3.0)
                block.conv_key.bias.sub_(2.0)
            torch.testing.assert_close(block(x, y), expected)

    def test_bad_channels(self):
        block = LocalContextCorrelation(8)
        with pytest.raises(ValueError, match="8 channels"):
            block(torch.randn(1, 4, 3, 3), torch.randn(1, 8, 3, 3))
        with pytest.raises(ValueError, match="channels"):
            LocalContextCorrelation(0)
        with pytest.raises(TypeError, match="center"):
            LocalContextCorrelation(4, center="yes")


# --------------------------------------------------------------------------------------------
# Bad input, torch.library and compile
# --------------------------------------------------------------------------------------------
class TestBadInputs:
    def test_errors(self):
        q, k, v = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 3, 3), torch.randn(2, 6, 3, 3)
        cases = [
            (ValueError, "4-D", (q[0], k, v), {}),
            (ValueError, "4-D", (q, k, v[None]), {}),
            (ValueError, "as many channels", (q, k[:, :3], v), {}),
            (ValueError, "batch sizes differ", (q, k[:1], v[:1]), {}),
            (ValueError, "batch sizes differ", (q, k, v[:1]), {}),
            (ValueError, "same positions", (q, k, v[:, :, :2]), {}),
            (TypeError, "dtype", (q, k.double(), v), {}),
            (TypeError, "floating", (q.long(), k.long(), v.long()), {}),
            (TypeError, "torch.Tensor", (q.numpy(), k, v), {}),
            (ValueError, "is on meta", (q, k.to("meta"), v), {}),
            (ValueError, "at least one channel", (q[:, :0], k[:, :0], v), {}),
            (ValueError, "at least one position", (q, k[:, :, :0], v[:, :, :0]), {}),
            (TypeError, "scale", (q, k, v), {"scale": "1"}),
            (ValueError, "finite", (q, k, v), {"scale": float("inf")}),
            (TypeError, "center", (q, k, v), {"center": 1}),
        ]
        for exc, match, args, kwargs in cases:
            with pytest.raises(exc, match=match):
                context_attention(*args, **kwargs)

    def test_triton_unavailable_message(self, monkeypatch):
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        q = torch.randn(1, 2, 3, 3)
        with use_backend("triton"), \
                pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
            context_attention(q, q, q)


class TestLibrary:
    def test_opcheck(self):
        q, k, v, g = make(2, 3, 4, 3, 4, 2, 5, torch.float64)
        args = [t.requires_grad_() for t in (q, k, v)]
        op = torch.ops.uhrops.context_attention.default
        torch.library.opcheck(op, (*args, 0.5, "torch"))
        torch.library.opcheck(op, (args[0], args[1], args[2][:, :3], 1.0, "torch"))
        out, lse = op(q.detach(), k.detach(), v.detach(), 0.5, "torch")
        bwd = torch.ops.uhrops.context_attention_backward.default
        torch.library.opcheck(bwd, (g, None, q.detach(), k.detach(), v.detach(), out, lse, 0.5,
                                    "torch"))
        torch.library.opcheck(bwd, (g, torch.randn_like(lse), q.detach(), k.detach(), v.detach(),
                                    out, lse, 0.5, "torch"))

    @pytest.mark.parametrize("channels_last", [False, True])
    def test_opcheck_fused_cpu_path(self, channels_last):
        # 32x32 maps: Nq * Nk = 2**20 takes ATen's fused CPU kernel, whose output follows the
        # query's memory format; the fake implementation must predict the same strides.
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        q, k, v = (torch.randn(1, 3, 32, 32).contiguous(memory_format=fmt) for _ in range(3))
        args = [t.requires_grad_() for t in (q, k, v)]
        op = torch.ops.uhrops.context_attention.default
        torch.library.opcheck(op, (*args, 1.0, "torch"))
        out, _ = op(q.detach(), k.detach(), v.detach(), 1.0, "torch")
        assert out.is_contiguous(memory_format=fmt)
        ref = naive(q.detach().double(), k.detach().double(), v.detach().double(), 1.0)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)

    @pytest.mark.triton
    def test_opcheck_triton(self):
        needs_triton("cpu")
        q, k, v, _ = make(1, 5, 3, 3, 4, 2, 3)
        args = [t.requires_grad_() for t in (q, k, v)]
        torch.library.opcheck(torch.ops.uhrops.context_attention.default, (*args, 1.0, "triton"))

    def test_lse_output_and_its_gradient(self):
        """The op's second output is the row log-sum-exp; its gradient is handled too."""
        q, k, v, _ = make(1, 3, 2, 2, 3, 3, 2, torch.float64)
        args = [t.requires_grad_() for t in (q, k, v)]
        _, lse = torch.ops.uhrops.context_attention(*args, 0.5, "torch")
        logits = torch.einsum("bci,bcj->bij", q.flatten(2), k.flatten(2)) * 0.5
        torch.testing.assert_close(lse, torch.logsumexp(logits, -1))
        assert torch.autograd.gradcheck(
            lambda a, b_, c: torch.ops.uhrops.context_attention(a, b_, c, 0.5, "torch")[1], args)

    @pytest.mark.compile
    def test_torch_compile_fullgraph(self):
        torch._dynamo.reset()
        block = LocalContextCorrelation(6, center=True)
        with torch.no_grad():
            block.gamma.fill_(0.5)

        def f(x, y):
            return x + block(x, y)

        x = torch.randn(1, 6, 5, 4, requires_grad=True)
        y = torch.randn(1, 6, 3, 3)
        compiled = torch.compile(f, fullgraph=True)
        out = compiled(x, y)
        torch.testing.assert_close(out, f(x, y))
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
