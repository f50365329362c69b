"""Attention section of ``python -m benchmarks.ops``: FCtL's local-context correlation.

Cases (issue 4): one map attending to itself-sized context, B = 1, (N, C) in
{(529, 512) FCtL's pool5 23x23, (4096, 512) 64x64, (7921, 256) 89x89, (16384, 256) 128x128},
scale 1 (FCtL's unscaled logits), forward and forward+backward (a fixed random cotangent into
the output, gradients for q, k and v). float32 everywhere; on CUDA also bfloat16.

Implementations:
  - ``uhrops-torch`` / ``uhrops-triton``: ``context_attention`` on (B, C, H, W) maps (the
    Triton path only on CUDA).
  - ``sdpa-<backend>``: ``torch.nn.functional.scaled_dot_product_attention(scale=1.0)`` pinned to
    one backend with ``sdpa_kernel([backend])`` for each of flash, efficient, cudnn, math;
    a backend that refuses the case gets a row with ``median_ms`` None and the reason in
    ``note``. SDPA gets its native contiguous [B, 1, N, C] layout prepared outside the timer
    (our op is timed from NCHW maps, so the layout change counts against us only).
  - ``sdpa-<backend> from maps``: the same call timed from the NCHW maps, with the layout
    changes a caller holding feature maps writes around it (tokens in, map out), i.e. the
    like-for-like comparison with ``uhrops-torch``.
  - ``uhrops-torch channels_last``: our op on channels_last maps (what channels_last 1x1
    convolutions produce), where no layout change is needed at all (CPU only).
  - ``naive``: ``softmax(q k^T) v`` with dense bmm on the same layout (O(N^2) memory).

Peak memory (``peak_mb``): on CUDA the allocator peak above the inputs; on the CPU the peak of
the running sum of every CPU allocation/free the profiler records during one call (this sees
the buffers inside ATen kernels too), or None if the profiler gives no memory events.
"""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.common import peak_memory_mb, time_fn
from uhrops import triton_unavailable_reason, use_backend
from uhrops.attention import context_attention

CASES = [(23, 512), (64, 512), (89, 256), (128, 256)]  # (side, C): N = side ** 2
QUICK_CASES = [(8, 32), (16, 64)]


def _sdpa_backends() -> dict[str, Any]:
    try:
        from torch.nn.attention import SDPBackend
    except ImportError:
        return {}
    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
             "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


def _impls(device: str, maps: tuple[torch.Tensor, ...], tokens: tuple[torch.Tensor, ...]
           ) -> tuple[dict[str, tuple[Callable[..., torch.Tensor], tuple]], list[tuple[str, str]]]:
    """name -> (fn, its inputs); plus (name, reason) for implementations that cannot run."""
    impls: dict[str, tuple[Callable[..., torch.Tensor], tuple]] = {}
    skipped: list[tuple[str, str]] = []

    def ours(backend: str) -> Callable[..., torch.Tensor]:
        def f(q, k, v):
            with use_backend(backend):
                return context_attention(q, k, v, scale=1.0)
        return f

    impls["uhrops-torch"] = (ours("torch"), maps)
    if not device.startswith("cuda"):  # maps from channels_last convs: no layout change
        maps_cl = tuple(t.contiguous(memory_format=torch.channels_last) for t in maps)
        impls["uhrops-torch channels_last"] = (ours("torch"), maps_cl)
    reason = triton_unavailable_reason(device)
    if device.startswith("cuda") and reason is None:
        impls["uhrops-triton"] = (ours("triton"), maps)
    elif device.startswith("cuda"):
        skipped.append(("uhrops-triton", reason or ""))

    try:
        from torch.nn.attention import sdpa_kernel
    except ImportError as exc:
        skipped.append(("sdpa", f"torch.nn.attention not importable: {exc}"))
        sdpa_kernel = None
    if sdpa_kernel is not None:
        for name, backend in _sdpa_backends().items():
            def f(q, k, v, backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(q, k, v, scale=1.0)
            try:  # does this backend accept the case (dtype, head dim, device)?
                small = tuple(t[:, :, :8].detach().clone().requires_grad_() for t in tokens)
                f(*small).sum().backward()
            except Exception as exc:
                skipped.append((f"sdpa-{name}", str(exc).strip().splitlines()[0][:160]))
                continue
            impls[f"sdpa-{name}"] = (f, tokens)

            def f_maps(q, k, v, f=f):  # what a caller holding NCHW maps writes around SDPA
                b, c, h, w = v.shape  # (fused SDPA kernels need the channels contiguous)
                o = f(*(t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
                        for t in (q, k, v)))
                return o[:, 0].transpose(1, 2).reshape(b, c, h, w)
            impls[f"sdpa-{name} from maps"] = (f_maps, maps)

    def naive(q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    impls["naive"] = (naive, tokens)
    return impls, skipped


def _bench_case(rows: list[dict[str, Any]], side: int, c: int, dtype: torch.dtype,
                device: str, quick: bool) -> None:
    torch.manual_seed(0)
    n = side * side
    q = torch.randn(1, c, side, side, device=device, dtype=dtype) * c ** -0.25
    k = torch.randn(1, c, side, side, device=device, dtype=dtype) * c ** -0.25
    v = torch.randn(1, c, side, side, device=device, dtype=dtype)
    cot_map = torch.randn(1, c, side, side, device=device, dtype=dtype)
    maps = (q, k, v)
    tokens = tuple(t.flatten(2).transpose(1, 2).unsqueeze(1).contiguous() for t in maps)
    cot_tok = cot_map.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
    dt = str(dtype).replace("torch.", "")
    case = f"N={n} ({side}x{side}) C={c} {dt}"
    esize = q.element_size()
    fwd_bytes = 4 * n * c * esize  # read q, k, v; write out
    bwd_bytes = fwd_bytes + 8 * n * c * esize  # + read q, k, v, out, dout; write dq, dk, dv
    t_min = 0.2 if quick else 1.0

    impls, skipped = _impls(device, maps, tokens)
    for name, reason in skipped:
        for pass_ in ("fwd", "fwd+bwd"):
            rows.append({"case": case, "pass": pass_, "impl": name, "median_ms": None,
                         "iqr_ms": None, "peak_mb": None, "bytes": None,
                         "note": f"not run: {reason}"})
    for name, (fn, inputs) in impls.items():
        cot = cot_map if inputs[0].shape == maps[0].shape else cot_tok
        with torch.no_grad():
            t = time_fn(lambda: fn(*inputs), device, min_run_time=t_min)
            mem = peak_memory_mb(lambda: fn(*inputs), device)
        rows.append({"case": case, "pass": "fwd", "impl": name, **t, "peak_mb": mem,
                     "bytes": fwd_bytes})
        leaves = tuple(x.detach().clone().requires_grad_() for x in inputs)

        def fwd_bwd():
            return torch.autograd.grad(fn(*leaves), leaves, cot)

        t = time_fn(fwd_bwd, device, min_run_time=t_min)
        mem = peak_memory_mb(fwd_bwd, device)
        rows.append({"case": case, "pass": "fwd+bwd", "impl": name, **t, "peak_mb": mem,
                     "bytes": bwd_bytes})
        gc.collect()


def run(device: str, quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    dtypes = [torch.float32] + ([torch.bfloat16] if device.startswith("cuda") else [])
    for side, c in (QUICK_CASES if quick else CASES):
        for dtype in dtypes:
            _bench_case(rows, side, c, dtype, device, quick)
    return rows
