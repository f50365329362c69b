"""Wavelet section of ``python -m benchmarks.ops``: Haar decomposition and reconstruction.

Cases (DESIGN.md §6 / issue 2): 1x3x2048x2048 and 1x64x1024x1024 float32, 1 and 3 levels,
forward and forward+backward, plus the 1-level inverse. Anchors: ptwt, pytorch_wavelets,
PyWavelets (NumPy, forward only) and the naive reshape formulation. fwd+bwd back-propagates
a fixed random cotangent into every output (not ``sum()``, whose expanded ones would favour
implementations that special-case them).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import uhrops
from benchmarks.common import peak_memory_mb, time_fn


def _naive_dwt(x: torch.Tensor) -> list[torch.Tensor]:
    B, C, H, W = x.shape
    v = x.view(B, C, H // 2, 2, W // 2, 2)
    a, b, c, d = v[:, :, :, 0, :, 0], v[:, :, :, 0, :, 1], v[:, :, :, 1, :, 0], v[:, :, :, 1, :, 1]
    return [(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]


def _naive_wavedec(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = []
    for _ in range(levels):
        a, h, v, d = _naive_dwt(x)
        out += [h, v, d]
        x = a
    return [x] + out


def _impls(levels: int, device: str) -> dict[str, Callable[[torch.Tensor], list[torch.Tensor]]]:
    impls: dict[str, Callable[[torch.Tensor], list[torch.Tensor]]] = {}

    def ours(x):
        low, highs = uhrops.haar_wavedec2(x, levels)
        return [low, *highs]

    def ours_with(backend):
        def f(x):
            with uhrops.use_backend(backend):
                return ours(x)
        return f

    impls["uhrops-torch"] = ours_with("torch")
    if uhrops.triton_unavailable_reason(device) is None and device.startswith("cuda"):
        impls["uhrops-triton"] = ours_with("triton")
    impls["naive-reshape"] = lambda x: _naive_wavedec(x, levels)
    try:
        import ptwt

        impls["ptwt"] = lambda x: [c if isinstance(c, torch.Tensor) else torch.stack(tuple(c), 2)
                                   for c in ptwt.wavedec2(x, "haar", mode="zero", level=levels)]
    except ImportError:
        pass
    try:
        import pytorch_wavelets as pw

        mod = pw.DWTForward(J=levels, wave="haar", mode="zero").to(device)
        impls["pytorch_wavelets"] = lambda x: (lambda r: [r[0], *r[1]])(mod(x))
    except ImportError:
        pass
    return impls


def _bench_case(rows: list[dict[str, Any]], shape: tuple[int, ...], levels: int, device: str,
                quick: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    nbytes = 2 * x.numel() * x.element_size()  # ideal: read the input once, write it once
    case = f"{'x'.join(map(str, shape))} L={levels}"
    t_min = 0.2 if quick else 1.0
    for name, fn in _impls(levels, device).items():
        with torch.no_grad():
            t = time_fn(lambda: fn(x), device, min_run_time=t_min)
            mem = peak_memory_mb(lambda: fn(x), device)
        rows.append({"case": case, "pass": "fwd", "impl": name, **t, "peak_mb": mem,
                     "bytes": nbytes})
        xg = x.clone().requires_grad_()
        outs = fn(xg)
        cot = [torch.randn_like(o) for o in outs]
        del outs

        def fwd_bwd():
            xg.grad = None
            torch.autograd.backward(fn(xg), cot)
            return xg.grad

        t = time_fn(fwd_bwd, device, min_run_time=t_min)
        mem = peak_memory_mb(fwd_bwd, device)
        rows.append({"case": case, "pass": "fwd+bwd", "impl": name, **t, "peak_mb": mem,
                     "bytes": 2 * nbytes})
    if levels == 1 and device == "cpu":
        try:
            import pywt

            xn = x.cpu().numpy()
            t = time_fn(lambda: pywt.wavedec2(xn, "haar", mode="zero", level=levels), device,
                        min_run_time=t_min)
            rows.append({"case": case, "pass": "fwd", "impl": "pywt (numpy)", **t,
                         "peak_mb": None, "bytes": nbytes})
        except ImportError:
            pass


def _bench_inverse(rows: list[dict[str, Any]], shape: tuple[int, ...], device: str,
                   quick: bool) -> None:
    torch.manual_seed(0)
    B, C, H, W = shape
    y = torch.randn(B, C, 4, H // 2, W // 2, device=device)
    case = f"{'x'.join(map(str, shape))} inverse L=1"
    nbytes = 2 * y.numel() * y.element_size()
    impls: dict[str, Callable[[], Any]] = {}
    for backend in ("torch", "triton"):
        if backend == "triton" and (not device.startswith("cuda")
                                    or uhrops.triton_unavailable_reason(device)):
            continue

        def f(backend=backend):
            with uhrops.use_backend(backend):
                return uhrops.haar_idwt2d(y)
        impls[f"uhrops-{backend}"] = f
    try:
        import ptwt

        coeffs = (y[:, :, 0], (y[:, :, 1], y[:, :, 2], y[:, :, 3]))
        impls["ptwt"] = lambda: ptwt.waverec2(coeffs, "haar")
    except ImportError:
        pass
    try:
        import pytorch_wavelets as pw

        inv = pw.DWTInverse(wave="haar", mode="zero").to(device)
        impls["pytorch_wavelets"] = lambda: inv((y[:, :, 0], [y[:, :, 1:]]))
    except ImportError:
        pass
    for name, fn in impls.items():
        with torch.no_grad():
            t = time_fn(fn, device, min_run_time=0.2 if quick else 1.0)
            mem = peak_memory_mb(fn, device)
        rows.append({"case": case, "pass": "fwd", "impl": name, **t, "peak_mb": mem,
                     "bytes": nbytes})


def run(device: str, quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    shapes = [(1, 3, 128, 128)] if quick else [(1, 3, 2048, 2048), (1, 64, 1024, 1024)]
    if device.startswith("cuda") and not quick:
        shapes.append((1, 64, 2048, 2048))
    for shape in shapes:
        for levels in (1, 3):
            _bench_case(rows, shape, levels, device, quick)
        _bench_inverse(rows, shape, device, quick)
    if device.startswith("cuda") and not quick:
        _bench_bf16(rows, device)
    return rows


def _bench_bf16(rows: list[dict[str, Any]], device: str) -> None:
    """Triton kernels at 1x64x2048x2048 bf16 (the bandwidth target of issue 2)."""
    x = torch.randn(1, 64, 2048, 2048, device=device, dtype=torch.bfloat16)
    y = torch.randn(1, 64, 4, 1024, 1024, device=device, dtype=torch.bfloat16)
    nbytes = 2 * x.numel() * x.element_size()
    for backend in ("torch", "triton"):
        if backend == "triton" and uhrops.triton_unavailable_reason(device):
            continue
        with uhrops.use_backend(backend), torch.no_grad():
            t = time_fn(lambda: uhrops.haar_dwt2d(x), device)
            rows.append({"case": "1x64x2048x2048 bf16 L=1", "pass": "fwd",
                         "impl": f"uhrops-{backend}", **t, "peak_mb": None, "bytes": nbytes})
            t = time_fn(lambda: uhrops.haar_idwt2d(y), device)
            rows.append({"case": "1x64x2048x2048 bf16 L=1", "pass": "bwd (= inverse)",
                         "impl": f"uhrops-{backend}", **t, "peak_mb": None, "bytes": nbytes})
