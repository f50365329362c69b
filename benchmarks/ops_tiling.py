"""Tiling section of ``python -m benchmarks.ops``: extract / merge / contexts / streaming.

Cases (issue 5; anchors.md §5.3 has the reference CPU numbers):
  - ``extract+merge`` on 1x3x2448x2448 with FCtL's 6x6 grid (508 px, stride 388) and on
    1x3x5000x5000 with the 11x11 grid (stride 449.2, rounded): patches out, mean merge back;
    forward, and forward+backward (gradient of the image through both).
    Anchors: kornia ``extract_tensor_patches`` + ``combine_tensor_patches`` (unfold/fold;
    regular grids only, so not on 5000), and the naive loop (slices out, in-place ``+=`` into
    an output and a count map, as FCtL/mmseg/MONAI stitch).
  - ``merge`` alone on the 2448 grid, forward+backward (the patches require grad).
  - ``sliding_window`` on 1x3x2448x2448, 508 px windows at stride 381 (49 windows, MONAI's
    overlap 0.25), batch 8, identity predictor; constant and Gaussian weights; against MONAI
    ``sliding_window_inference`` (Gaussian with a cloning predictor: the pure identity is
    wrong there, anchors.md §4.2). Forward+backward with the image requiring grad too.
  - ``contexts x3`` on 2448: FCtL's x3 context of every patch resized to 508 (antialiased),
    against the naive FCtL recipe (pad the whole image, crop, ``F.interpolate``).
  - ``stream 10240`` (full run only): a 1x3x10240x10240 image through a 1-channel ``fn`` with
    the FCtL grid (23x23 patches), in a subprocess; ``peak_mb`` is the growth of the peak RSS
    beyond the input (the output alone is 400 MiB).
pytorch-toolbelt is listed as an anchor but is not installed here (a note row says so).

Peak memory (``peak_mb``): on CUDA the allocator peak above the inputs; on the CPU the peak of
the running sum of the CPU allocations the profiler records during one call, or None.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any, Callable

import torch
import torch.nn.functional as F

from benchmarks.common import peak_memory_mb, time_fn
from uhrops import triton_unavailable_reason, use_backend
from uhrops.tiling import PatchGrid, extract_contexts, extract_patches, merge_patches, \
    sliding_window


_MIN_RUN_TIME = 1.0  # seconds per measurement; lowered by run(quick=True)


def _row(case: str, pas: str, impl: str, fn: Callable[[], Any], device: str,
         nbytes: int | None = None, memory: bool = True) -> dict[str, Any]:
    try:
        t = time_fn(fn, device, min_run_time=_MIN_RUN_TIME)
    except Exception as exc:  # an anchor that cannot run this case
        return {"case": case, "pass": pas, "impl": impl, "median_ms": None, "iqr_ms": None,
                "peak_mb": None, "bytes": None, "note": f"{type(exc).__name__}: {exc}"[:200]}
    return {"case": case, "pass": pas, "impl": impl, "median_ms": t["median_ms"],
            "iqr_ms": t["iqr_ms"], "peak_mb": peak_memory_mb(fn, device) if memory else None,
            "bytes": nbytes}


def _note(case: str, pas: str, impl: str, note: str) -> dict[str, Any]:
    return {"case": case, "pass": pas, "impl": impl, "median_ms": None, "iqr_ms": None,
            "peak_mb": None, "bytes": None, "note": note}


def _ours(device: str) -> list[tuple[str, str]]:
    impls = [("uhrops-torch", "torch")]
    if device.startswith("cuda") and triton_unavailable_reason(device) is None:
        impls.append(("uhrops-triton", "triton"))
    return impls


# ---- anchors -------------------------------------------------------------------------------


def naive_extract_merge(x: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """Slices out, in-place += into an output and a count map (autograd: CopySlices)."""
    ph, pw = grid.patch_size
    tiles = [x[:, :, y:y + ph, q:q + pw] for y in grid.ys for q in grid.xs]
    out = torch.zeros_like(x)
    cnt = torch.zeros(x.shape[-2:], dtype=x.dtype, device=x.device)
    k = 0
    for y in grid.ys:
        for q in grid.xs:
            out[:, :, y:y + ph, q:q + pw] += tiles[k]
            cnt[y:y + ph, q:q + pw] += 1
            k += 1
    return out / cnt


def naive_contexts(x: torch.Tensor, grid: PatchGrid, scale: int) -> torch.Tensor:
    """FCtL's global2bigpatch in torch: pad the whole image, crop, resize each window."""
    ph, pw = grid.patch_size
    pad = (scale - 1) * ph // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    out = [F.interpolate(xp[:, :, y:y + scale * ph, q:q + scale * pw], size=(ph, pw),
                         mode="bilinear", align_corners=False, antialias=True)
           for y in grid.ys for q in grid.xs]
    return torch.cat(out, 0)


# ---- cases ---------------------------------------------------------------------------------


def _extract_merge_rows(x: torch.Tensor, grid: PatchGrid, case: str, device: str,
                        kornia_ok: bool) -> list[dict[str, Any]]:
    rows = []
    n = len(grid)
    B, C, H, W = x.shape
    ph, pw = grid.patch_size
    esz = x.element_size()
    fwd_bytes = 2 * (B * C * H * W + B * n * C * ph * pw) * esz
    xr = x.clone().requires_grad_()

    def fb(f):
        def run():
            xr.grad = None
            f(xr).sum().backward()
        return run

    for impl, be in _ours(device):
        def ours(t, be=be):
            with use_backend(be):
                return merge_patches(extract_patches(t, grid), grid)
        rows.append(_row(case, "fwd", impl, lambda: ours(x), device, fwd_bytes))
        rows.append(_row(case, "fwd+bwd", impl, fb(ours), device, 2 * fwd_bytes))
    if kornia_ok:
        try:
            from kornia.contrib import combine_tensor_patches, extract_tensor_patches

            stride = grid.ys[1] - grid.ys[0] if len(grid.ys) > 1 else ph

            def kor(t):
                p = extract_tensor_patches(t, window_size=(ph, pw), stride=stride)
                return combine_tensor_patches(p, original_size=(H, W), window_size=(ph, pw),
                                              stride=stride)

            rows.append(_row(case, "fwd", "kornia", lambda: kor(x), device))
            rows.append(_row(case, "fwd+bwd", "kornia", fb(kor), device))
        except ImportError as exc:
            rows.append(_note(case, "fwd", "kornia", f"not importable: {exc}"))
    else:
        rows.append(_note(case, "fwd", "kornia", "irregular grid: unfold/fold cannot express "
                                                 "rounded strides"))
    rows.append(_row(case, "fwd", "naive-loop", lambda: naive_extract_merge(x, grid), device))
    rows.append(_row(case, "fwd+bwd", "naive-loop", fb(lambda t: naive_extract_merge(t, grid)),
                     device, memory=False))
    rows.append(_note(case, "fwd", "pytorch-toolbelt", "not installed in this environment"))
    return rows


def _merge_rows(x: torch.Tensor, grid: PatchGrid, case: str, device: str) -> list[dict]:
    rows = []
    p = extract_patches(x, grid).requires_grad_()
    B, C, H, W = x.shape
    nbytes = 2 * (p.numel() + x.numel()) * x.element_size()
    for impl, be in _ours(device):
        for weight in (None, "gaussian"):
            def run(be=be, weight=weight):
                p.grad = None
                with use_backend(be):
                    merge_patches(p, grid, "mean", weight).sum().backward()
            rows.append(_row(f"{case} w={weight or 'const'}", "fwd+bwd", impl, run, device,
                             nbytes))
    return rows


def _sliding_rows(x: torch.Tensor, patch: int, stride: int, overlap: float, batch: int,
                  case: str, device: str, full: bool) -> list[dict]:
    rows = []
    grid = PatchGrid.from_stride(x.shape[-2:], patch, stride)
    try:
        from monai.inferers import sliding_window_inference
    except ImportError as exc:
        sliding_window_inference = None
        rows.append(_note(case, "fwd", "monai", f"not importable: {exc}"))
    for mode in ("constant", "gaussian"):
        c = f"{case} {mode}"
        weight = None if mode == "constant" else "gaussian"
        for impl, be in _ours(device):
            def ours(t, be=be, weight=weight):
                with use_backend(be):
                    return sliding_window(lambda b: b, t, grid, batch, weight=weight)
            rows.append(_row(c, "fwd", impl, lambda: ours(x), device))
        if sliding_window_inference is not None:
            pred = (lambda b: b) if mode == "constant" else (lambda b: b.clone())

            def monai(t, pred=pred, mode=mode):
                return sliding_window_inference(t, (patch, patch), batch, pred,
                                                overlap=overlap, mode=mode)
            rows.append(_row(c, "fwd", "monai", lambda: monai(x), device))
    if full:  # forward+backward through the image (MONAI: 5 s in anchors.md §5.3)
        xr = x.clone().requires_grad_()
        c = f"{case} constant"
        for impl, be in _ours(device):
            def ours_fb(be=be):
                xr.grad = None
                with use_backend(be):
                    sliding_window(lambda b: b * 1.0, xr, grid, batch).sum().backward()
            rows.append(_row(c, "fwd+bwd", impl, ours_fb, device, memory=False))
        if sliding_window_inference is not None:
            def monai_fb():
                xr.grad = None
                sliding_window_inference(xr, (patch, patch), batch, lambda b: b.clone(),
                                         overlap=overlap).sum().backward()
            rows.append(_row(c, "fwd+bwd", "monai", monai_fb, device, memory=False))
    return rows


def _context_rows(x: torch.Tensor, grid: PatchGrid, scale: int, case: str,
                  device: str) -> list[dict]:
    rows = [_row(case, "fwd", "uhrops-torch", lambda: extract_contexts(x, grid, scale), device)]
    rows.append(_row(case, "fwd", "naive-pad-crop-resize", lambda: naive_contexts(x, grid, scale),
                     device))
    return rows


_STREAM = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    from uhrops.tiling import PatchGrid, sliding_window

    def status(key):  # kB from /proc/self/status (Linux)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])

    torch.set_num_threads({threads})
    side, patch = {side}, {patch}
    x = torch.empty(1, 3, side, side).uniform_()
    grid = PatchGrid.from_min_overlap(side, patch)
    w = torch.rand(1, 3, 1, 1)
    # Reset the high-water mark to the current RSS, so temporaries made while building the
    # input (filling it may use a buffer as large as it) do not hide the call's own peak.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    t = time.perf_counter()
    out = sliding_window(lambda b: (b * w).sum(1, keepdim=True), x, grid, 8)
    dt = time.perf_counter() - t
    peak = status("VmHWM")
    print(len(grid), dt * 1e3, (peak - base) / 1024, out.numel() * 4 / 2**20)
""")


def stream_row(side: int, patch: int) -> dict[str, Any]:
    """One streamed sliding_window row: a side x side image in ``patch`` windows, run in a
    fresh process so that its peak RSS is its own."""
    import os

    case = f"stream 1x3x{side}x{side} -> 1ch ({side // patch}+ grid)"
    code = _STREAM.format(root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          threads=torch.get_num_threads(), side=side, patch=patch)
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=900, check=True)
        n, ms, grow, out_mb = res.stdout.split()
    except Exception as exc:
        return _note(case, "fwd", "uhrops-torch", f"stream run failed: {exc}"[:200])
    return {"case": f"stream 1x3x{side}x{side} -> 1ch ({n} patches)", "pass": "fwd",
            "impl": "uhrops-torch", "median_ms": float(ms), "iqr_ms": None,
            "peak_mb": float(grow), "bytes": None,
            "note": f"single run; peak RSS growth beyond the input; output alone "
                    f"{float(out_mb):.0f} MiB"}


def run(device: str, quick: bool) -> list[dict]:
    global _MIN_RUN_TIME
    _MIN_RUN_TIME = 0.05 if quick else 1.0
    rows: list[dict] = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    if quick:
        side, patch, stride = 128, 32, 24
        x = torch.rand(1, 3, side, side, generator=gen).to(device)
        g = PatchGrid.from_min_overlap(side, patch, 8)
        case = f"1x3x{side}x{side} {g.grid_shape[0]}x{g.grid_shape[1]}"
        rows += _extract_merge_rows(x, g, case + " extract+merge", device,
                                    len(set(b - a for a, b in zip(g.ys, g.ys[1:]))) <= 1)
        rows += _merge_rows(x, g, case + " merge", device)
        rows += _sliding_rows(x, patch, stride, 0.25, 8, f"1x3x{side}x{side} sw", device, False)
        rows += _context_rows(x, g, 3, case + " contexts x3", device)
        return rows

    x = torch.rand(1, 3, 2448, 2448, generator=gen).to(device)
    g = PatchGrid.from_min_overlap(2448, 508)
    rows += _extract_merge_rows(x, g, "1x3x2448x2448 FCtL 6x6 extract+merge", device, True)
    rows += _merge_rows(x, g, "1x3x2448x2448 FCtL 6x6 merge", device)
    rows += _sliding_rows(x, 508, 381, 0.25, 8, "1x3x2448x2448 sw 49x508 b8", device, True)
    rows += _context_rows(x, g, 3, "1x3x2448x2448 FCtL 6x6 contexts x3", device)
    del x
    x = torch.rand(1, 3, 5000, 5000, generator=gen).to(device)
    g = PatchGrid.from_min_overlap(5000, 508)
    rows += _extract_merge_rows(x, g, "1x3x5000x5000 FCtL 11x11 extract+merge", device, False)
    del x
    if device == "cpu":
        rows.append(stream_row(10240, 508))
    return rows
