"""The attention kernels' matmul work and launch sizes (issue 18's static targets).

``launch_flops`` (the work model of tools/kernels/matmul_work.py) is checked against what
the Triton interpreter's ``tl.dot`` really multiplies when the same GPU block plans run; the
targets are then asserted on the launches a CUDA call would make at FCtL's shape.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import triton_ready
from uhrops._backend import use_backend
from tools.kernels import matmul_work as W

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("dtype,shape", [
    (torch.bfloat16, (2, 192, 160, 10, 11, 9, 9)),  # separate dK/dV passes, splits
    (torch.float32, (1, 40, 24, 9, 8, 13, 5)),  # one dK/dV pass, value chunks
])
def test_work_model_equals_interpreted_dots(monkeypatch, dtype, shape):
    reason = triton_ready("cpu")
    if reason:
        pytest.skip(reason)
    from triton.runtime import interpreter

    from uhrops import context_attention
    from uhrops.kernels import attention as K

    b, cq, cv, hq, wq, hk, wk = shape
    gpu = torch.device("cuda")
    monkeypatch.setattr(K, "INTERPRETER_SMS", 132)  # the recorded plans assume an H100
    monkeypatch.setattr(K, "CONFIG_OVERRIDE",
                        lambda nq, nk, cq, cv, dev: K.block_config(nq, nk, cq, cv, gpu, dtype))
    executed = []
    real_dot = interpreter.InterpreterBuilder.create_dot

    def counting_dot(self, a, b_, d, *args):
        m, k = a.data.shape[-2:]
        executed.append(2 * m * k * b_.data.shape[-1])
        return real_dot(self, a, b_, d, *args)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", counting_dot)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(b, cq, h, w, generator=g).to(dtype).requires_grad_()
            for h, w in ((hq, wq), (hk, wk)))
    v = torch.randn(b, cv, hk, wk, generator=g).to(dtype).requires_grad_()
    with use_backend("triton"):
        context_attention(q, k, v, scale=cq ** -0.5).sum().backward()
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_dot", real_dot)

    modelled = sum(W.launch_flops(x) for x in W.record_attention(b, cq, cv, hq, wq, hk, wk,
                                                                   dtype))
    assert sum(executed) == modelled > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("batch", [1, 8])
def test_fctl_shape_meets_the_targets(dtype, batch):
    """C = 512 on FCtL's 23 x 23 pool5 map: forward work within 1.25x of the minimum,
    backward within 1.5x of a FlashAttention-2-style backward, and every matmul kernel
    launching at least one block per SM of an H100 (132)."""
    fig = W.figures(batch, 512, 512, 23, 23, 23, 23, dtype)
    assert fig["forward_work_ratio"] <= 1.25, fig
    assert fig["backward_work_ratio"] <= 1.5, fig
    assert fig["min_blocks_matmul_kernels"] >= W.SMS, fig


def test_minimum_is_the_textbook_count():
    # S = Q^T K and O = P V^T once: 2 * Nq * Nk * (Cq + Cv) flops per batch item
    assert W.minimum_flops(2, 3, 5, 7, 11)["forward"] == 2 * 2 * 3 * 5 * (7 + 11)
    assert W.minimum_flops(1, 3, 5, 7, 11)["backward_fa2"] == 2 * 3 * 5 * (4 * 7 + 3 * 11)
