"""Benchmark section ``pyramid``: 4-level Laplacian pyramid build and reconstruction.

Cases (float32): 1x3x2048x2048 and 1x3x2448x2448 (plus 1x3x4096x4096 on a GPU), with
``laplacian_pyramid(x, 3)`` (4 entries, the same depth as kornia's
``build_laplacian_pyramid(x, 4)``) and ``laplacian_reconstruct``; forward, and forward +
backward of the sum of all outputs.

Implementations:
- ``uhrops-torch`` / ``uhrops-triton``: this library (Triton only on CUDA).
- ``kornia``: ``kornia.geometry.transform.build_laplacian_pyramid(x, 4)``. Not the same
  operator (bilinear-based pyrup, floor sizes) and it pads to a power of two (2448 -> 4096);
  the reconstruction row is a hand-written collapse ``G_i = L_i + pyrup(G_{i+1})`` with
  kornia's ``pyrup`` (kornia ships none).
- ``naive-conv``: the textbook formulation written here with the same semantics as uhrops:
  reflect pad + dense 5x5 depthwise conv2d at every pixel, then ``[::2, ::2]``; expand = zero
  insertion + reflect pad + dense 5x5 conv with 4x the kernel, cropped.

``bytes`` is what our kernels move when each reads its inputs once and writes its output once:
per level, pyr_down reads g_i and writes g_{i+1}; the fused expand-subtract reads g_i and
g_{i+1} and writes h_i (reconstruction: reads h_i and g_{i+1}, writes g_i).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.common import peak_memory_mb, time_fn

LEVELS = 3  # laplacian_pyramid(x, 3) -> 4 entries == kornia build_laplacian_pyramid(x, 4)


# ----------------------------------------------------------------------------------------------
# Naive dense-conv formulation (same semantics as uhrops / OpenCV)
# ----------------------------------------------------------------------------------------------


def _kernel(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    return (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)


def naive_down(x: torch.Tensor) -> torch.Tensor:
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _kernel(x), groups=x.shape[1])
    return blurred[..., ::2, ::2]


def naive_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    B, C, h, w = x.shape
    u = x.new_zeros(B, C, 2 * h, 2 * w)
    u[..., ::2, ::2] = x
    up = F.conv2d(F.pad(u, (2, 2, 2, 2), mode="reflect"), 4 * _kernel(x), groups=C)
    return up[..., : size[0], : size[1]]


def naive_laplacian(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    gs = [x]
    for _ in range(levels):
        gs.append(naive_down(gs[-1]))
    return [gs[i] - naive_up(gs[i + 1], gs[i].shape[-2:]) for i in range(levels)] + [gs[-1]]


def naive_reconstruct(pyr: list[torch.Tensor]) -> torch.Tensor:
    g = pyr[-1]
    for h in reversed(pyr[:-1]):
        g = h + naive_up(g, h.shape[-2:])
    return g


# ----------------------------------------------------------------------------------------------


def _ideal_bytes(shape: tuple[int, ...], levels: int, itemsize: int) -> tuple[int, int]:
    """(build, reconstruct) bytes for our kernel structure (see the module docstring)."""
    B, C, H, W = shape
    sizes = [(H, W)]
    for _ in range(levels):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    n = [B * C * h * w for h, w in sizes]
    build = sum(n[i] + n[i + 1] for i in range(levels)) + sum(2 * n[i] + n[i + 1]
                                                              for i in range(levels))
    recon = sum(2 * n[i] + n[i + 1] for i in range(levels))
    return build * itemsize, recon * itemsize


def _sum_all(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.sum()
    return sum(o.sum() for o in out)


def _fwd_bwd(fn: Callable[[], Any], inputs: list[torch.Tensor]) -> Callable[[], None]:
    def step() -> None:
        for t in inputs:
            t.grad = None
        _sum_all(fn()).backward()

    return step


def _row(case: str, pas: str, impl: str, fn: Callable[[], Any], device: str,
         nbytes: int | None, quick: bool) -> dict[str, Any]:
    t = time_fn(fn, device, min_run_time=0.05 if quick else 1.0)
    return {"case": case, "pass": pas, "impl": impl, "median_ms": t["median_ms"],
            "iqr_ms": t["iqr_ms"], "peak_mb": peak_memory_mb(fn, device), "bytes": nbytes}


def _sanity(device: str) -> None:
    """The naive formulation and uhrops agree (else the comparison would be meaningless)."""
    from uhrops.pyramid import laplacian_pyramid

    x = torch.rand(1, 2, 37, 30, device=device, dtype=torch.float64)
    for a, b in zip(laplacian_pyramid(x, 3), naive_laplacian(x, 3)):
        torch.testing.assert_close(a, b)


def run(device: str, quick: bool) -> list[dict[str, Any]]:
    from uhrops import use_backend
    from uhrops.pyramid import laplacian_pyramid, laplacian_reconstruct

    _sanity(device)
    rows: list[dict[str, Any]] = []
    try:
        from kornia.geometry.transform import build_laplacian_pyramid, pyrup
    except Exception as exc:  # kornia missing or broken: note it and go on
        build_laplacian_pyramid = pyrup = None
        rows.append({"case": "-", "pass": "-", "impl": f"kornia (skipped: {exc})",
                     "median_ms": None, "iqr_ms": None, "peak_mb": None, "bytes": None})

    sides = [256, 306] if quick else [2048, 2448]
    if device.startswith("cuda") and not quick:
        sides.append(4096)
    backends = ["torch"] + (["triton"] if device.startswith("cuda") else [])

    for side in sides:
        shape = (1, 3, side, side)
        x = torch.rand(shape, device=device)
        build_bytes, recon_bytes = _ideal_bytes(shape, LEVELS, x.element_size())
        case = f"1x3x{side}x{side} L=4"
        rcase = f"1x3x{side}x{side} L=4 reconstruct"
        xg = x.clone().requires_grad_()

        impls: list[tuple[str, Callable[[torch.Tensor], Any], Callable[[list], Any],
                          int | None]] = []
        for be in backends:
            def build(t, be=be):
                with use_backend(be):
                    return laplacian_pyramid(t, LEVELS)

            def recon(p, be=be):
                with use_backend(be):
                    return laplacian_reconstruct(p)

            impls.append((f"uhrops-{be}", build, recon, build_bytes))
        if build_laplacian_pyramid is not None:
            def k_recon(p):
                g = p[-1]
                for h in reversed(p[:-1]):
                    g = h + pyrup(g)
                return g

            impls.append(("kornia", lambda t: build_laplacian_pyramid(t, LEVELS + 1), k_recon,
                          None))
        impls.append(("naive-conv", lambda t: naive_laplacian(t, LEVELS), naive_reconstruct,
                      None))

        for name, build, recon, nbytes in impls:
            rows.append(_row(case, "fwd", name, lambda: build(x), device, nbytes, quick))
            rows.append(_row(case, "fwd+bwd", name, _fwd_bwd(lambda: build(xg), [xg]), device,
                             None, quick))
            pyr = [p.detach() for p in build(x)]
            pyr_g = [p.clone().requires_grad_() for p in pyr]
            rbytes = recon_bytes if nbytes is not None else None
            rows.append(_row(rcase, "fwd", name, lambda: recon(pyr), device, rbytes, quick))
            rows.append(_row(rcase, "fwd+bwd", name, _fwd_bwd(lambda: recon(pyr_g), pyr_g),
                             device, None, quick))
    return rows
