"""Timing, memory and metadata helpers shared by the benchmark sections.

Timing: CPU uses torch.utils.benchmark's blocked_autorange (warm-up, then blocks; we report
the median and the inter-quartile range); CUDA uses triton.testing.do_bench when Triton is
present (it flushes L2 between runs) and CUDA events otherwise. Memory: on CUDA the peak of
torch.cuda.max_memory_allocated above what was allocated before the call; on the CPU
``peak_memory_mb`` returns None (process RSS is too coarse for one call), and sections that
need a CPU figure measure it themselves (the profiler's allocation events, or a subprocess's
high-water mark) and say how in their rows.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: str, min_run_time: float = 1.0) -> dict[str, float]:
    """Median and spread (IQR) of one call of ``fn``, in milliseconds."""
    if device.startswith("cuda"):
        try:
            import triton.testing

            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="all")
            ms = sorted(float(v) for v in ms)
        except ImportError:
            ms = _cuda_event_times(fn)
        q = statistics.quantiles(ms, n=4) if len(ms) >= 4 else [ms[0], ms[len(ms) // 2], ms[-1]]
        return {"median_ms": statistics.median(ms), "iqr_ms": q[2] - q[0], "runs": len(ms)}
    from torch.utils import benchmark

    fn()  # warm-up outside the timer (first-call allocations, lazy imports)
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    res = m.blocked_autorange(min_run_time=min_run_time)
    return {"median_ms": res.median * 1e3, "iqr_ms": res.iqr * 1e3, "runs": len(res.times)}


def _cuda_event_times(fn: Callable[[], Any], reps: int = 50) -> list[float]:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return sorted(out)


def peak_memory_mb(fn: Callable[[], Any], device: str) -> float | None:
    """Peak extra memory of one call (MiB): CUDA allocator peak, or None on the CPU."""
    if not device.startswith("cuda"):
        return None
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    del out
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_bandwidth_gbs(device: str, nbytes: int = 1 << 30) -> float | None:
    """Measured device-to-device copy bandwidth (bytes read + written per second), CUDA only."""
    if not device.startswith("cuda"):
        return None
    n = nbytes // 4
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    t = time_fn(lambda: b.copy_(a), device)["median_ms"]
    return 2 * nbytes / (t * 1e-3) / 1e9


def metadata(device: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except Exception:  # not a checkout
        commit = ""
    meta: dict[str, Any] = {
        "commit": commit,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        meta["triton"] = None
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name(0)
    return meta


def write_json(path: str, payload: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def fmt_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[str(c) for c in columns]]
    for r in rows:
        cells.append([_fmt(r.get(c)) for c in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)
