"""Timing, memory, metadata and results-file helpers shared by the benchmark commands.

Timing: CPU uses torch.utils.benchmark's blocked_autorange (warm-up, then blocks; we report
the median and the inter-quartile range); CUDA uses triton.testing.do_bench when Triton is
present (it flushes L2 between runs) and CUDA events otherwise. Memory of one op call
(``peak_memory_mb``): on CUDA the peak of torch.cuda.max_memory_allocated above what was
allocated before the call; on the CPU the peak of the running sum of the allocations the
profiler records during the call (process RSS is too coarse for one call). Whole-model runs
use the process's RSS high-water mark (``reset_peak_rss`` / ``peak_rss_mb``).

Results files: one JSON file per machine, ``benchmarks/results/<device-tag>.json`` (tags from
:func:`device_tag`: ``cpu-2t``, ``cuda-nvidia-h100-80gb-hbm3``)::

    {"schema": "uhrops-bench/2", "device_tag": "cpu-2t",
     "machine": {...},                         # the machine (latest writer's view)
     "sections": {"ops.wavelet": {"metadata": {...}, "rows": [...]},
                  "ops.pyramid": ..., "ops.attention": ..., "ops.tiling": ...,
                  "models.wsdnet": ..., "models.fctl": ...}}

Every benchmark command merges only its own section(s) into the file with
:func:`merge_section` (under a lock, written to a temporary file and renamed), so ``ops`` and
``models`` runs done separately fill one file, and a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch


SCHEMA = "uhrops-bench/2"
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SECTION_NAMES = ("ops.wavelet", "ops.pyramid", "ops.attention", "ops.tiling",
                 "models.wsdnet", "models.fctl")


def sync(device: str) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], Any], device: str, min_run_time: float = 1.0) -> dict[str, float]:
    """Median and spread (IQR) of one call of ``fn``, in milliseconds, and the run count."""
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


def cpu_peak_mb(fn: Callable[[], Any]) -> float | None:
    """Peak extra CPU memory of one call of ``fn`` (MiB): the running sum of the tensor
    allocations and frees the profiler records during the call (ATen kernels' buffers
    included, NumPy's not), or None when the profiler gives no memory events."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except Exception:  # private profiler API moved: no number rather than a wrong one
        return None
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak / 2**20 if events else None


def peak_memory_mb(fn: Callable[[], Any], device: str) -> float | None:
    """Peak extra memory of one call (MiB): on CUDA the allocator peak above what was
    allocated before; on the CPU :func:`cpu_peak_mb` (profiler allocation events)."""
    if not device.startswith("cuda"):
        return cpu_peak_mb(fn)
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
    """Run metadata: commit, time, versions, machine, threads, device (and GPU name)."""
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
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, renamed)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; results are shared files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---- results files -----------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_tag(device: str, threads: int | None = None) -> str:
    """File tag of a machine: ``cpu-<threads>t`` or ``cuda-<gpu name>`` (lower-case, dashes)."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return "cuda-" + _slug(torch.cuda.get_device_name(index))
    if device != "cpu":
        raise ValueError(f"device_tag(): unsupported device {device!r}; use 'cpu' or 'cuda[:i]'.")
    return f"cpu-{threads or torch.get_num_threads()}t"


def results_path(device: str, json_path: str | None = None, quick: bool = False) -> str:
    """Where a run writes: ``json_path`` if given; else ``benchmarks/results/<tag>.json``, or
    for ``quick`` smoke runs ``<tmp>/uhrops-bench/<tag>.json`` (kept out of the committed
    results, which ``benchmarks.report`` reads)."""
    if json_path:
        return json_path
    folder = os.path.join(tempfile.gettempdir(), "uhrops-bench") if quick else RESULTS_DIR
    return os.path.join(folder, device_tag(device) + ".json")


def machine_info(device: str) -> dict[str, Any]:
    """The machine part of :func:`metadata` (what stays the same between runs)."""
    meta = metadata(device)
    keys = ("machine", "processor", "cpu_count", "device", "gpu", "threads", "torch", "triton")
    return {k: meta[k] for k in keys if k in meta}


def empty_results(tag: str) -> dict[str, Any]:
    """A results document with no sections."""
    return {"schema": SCHEMA, "device_tag": tag, "machine": {}, "sections": {}}


def load_results(path: str) -> dict[str, Any]:
    """Read a results file (schema ``uhrops-bench/2``); a missing file gives an empty one.

    Raises:
        ValueError: the file is not a results file of this schema (with the fix).
    """
    tag = os.path.splitext(os.path.basename(path))[0]
    if not os.path.exists(path):
        return empty_results(tag)
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or \
            not isinstance(doc.get("sections"), dict):
        raise ValueError(f"{path}: not a uhrops benchmark results file (expected a JSON object "
                         f"with schema {SCHEMA!r} and 'sections'). Fix: pass another --json "
                         f"path, or move the file out of the results folder.")
    return doc


def load_device_results(results_dir: str, warn: bool = False,
                        claimed: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Every results file of ``results_dir`` (schema ``uhrops-bench/2``) keyed by device tag,
    CPU first. Other JSON files are skipped; with ``warn`` each skip is printed to stderr,
    except for the files named in ``claimed`` and the compile check's ``kernels-*.json``
    (other benchmarks' own files, read by their own renderers)."""
    docs: dict[str, dict[str, Any]] = {}
    quiet = set(claimed)
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        name = os.path.basename(path)
        if name.startswith("kernels-") or name in quiet:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            if warn:
                print(f"report: skipped {path}: {exc}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            if warn:
                print(f"report: skipped {path}: not a {SCHEMA} results file", file=sys.stderr)
            continue
        tag = doc.get("device_tag") or os.path.splitext(name)[0]
        docs[tag] = doc
    return dict(sorted(docs.items(), key=lambda kv: (not kv[0].startswith("cpu"), kv[0])))


def is_gpu(tag: str) -> bool:
    """Whether a device tag (:func:`device_tag`) names a CUDA machine."""
    return tag.startswith("cuda")


def _lock_path(path: str) -> str:
    """A lock file for ``path`` outside the repository (the temporary folder)."""
    import hashlib

    digest = hashlib.sha1(os.path.abspath(path).encode("utf-8")).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "uhrops-bench-locks")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{os.path.basename(path)}.{digest}.lock")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Exclusive lock for ``path`` (fcntl on a lock file in the temporary folder; no locking
    where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still protects readers
        yield
        return
    with open(_lock_path(path), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def merge_section(path: str, section: str, rows: list[dict[str, Any]],
                  meta: dict[str, Any], key: Sequence[str] | None = None,
                  machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge one section into the results file at ``path`` and return the new document.

    Convention:
        - Only ``sections[section]`` changes; every other section is kept as it is.
        - ``key=None``: the section is replaced by ``rows`` (a full section run).
          ``key=("model", "size", ...)``: rows of the file whose key values equal those of a
          new row are replaced, the others are kept (new rows appended in order).
        - The file is read and written under an exclusive lock and written atomically, so
          two commands writing different sections of one file at once both land.

    Args:
        path: the results file (created if missing).
        section: a name such as "ops.wavelet" or "models.fctl".
        rows: the section's rows.
        meta: the run's metadata (commit, versions, time, quick ...), stored with the section.
        key: row fields identifying a measurement, or None to replace the whole section.
        machine: machine description to store at the top (default: unchanged).
    """
    if not isinstance(section, str) or "." not in section:
        raise ValueError(f"merge_section(): `section` must look like 'ops.wavelet' or "
                         f"'models.fctl'; got {section!r}.")
    with _locked(path):
        doc = load_results(path)
        if machine:
            doc["machine"] = machine
        old = doc["sections"].get(section, {}).get("rows", [])
        if key is None:
            new_rows = list(rows)
        else:
            fresh = {tuple(r.get(k) for k in key) for r in rows}
            new_rows = [r for r in old if tuple(r.get(k) for k in key) not in fresh] + list(rows)
        doc["sections"][section] = {"metadata": meta, "rows": new_rows}
        write_json(path, doc)
    return doc


# ---- process memory (whole-model runs) -----------------------------------------------------


def proc_status_kb(key: str) -> int | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM, ...), or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark to the current RSS (Linux ``clear_refs`` 5).

    Returns False where that is not possible; :func:`peak_rss_mb` then reports the
    process-lifetime peak (``ru_maxrss``), which callers must label as such.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float | None:
    """Current resident set size of this process (MiB), or None off Linux."""
    kb = proc_status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MiB) since the last :func:`reset_peak_rss`."""
    kb = proc_status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- op tables -----------------------------------------------------------------------------


def is_ours(impl: str) -> bool:
    """Implementations whose name starts with "uhrops" are this library's; others anchors."""
    return impl.startswith("uhrops")


def pivot_family(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Group one op family's rows by (case, pass) for side-by-side tables.

    Returns:
        ``{"groups": [...], "anchors": [...], "not_run": {impl: note}}``. Each group is
        ``{"case", "pass", "ours": row | None (our fastest timed row), "ours_all": {impl:
        row}, "anchors": {impl: row}}``; ``anchors`` lists the anchor names timed at least
        once, in first-seen order; ``not_run`` the anchors never timed, with a reason.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    anchors: list[str] = []
    not_run: dict[str, str] = {}
    for r in rows:
        impl = str(r.get("impl", ""))
        if r.get("case") in (None, "-"):
            not_run[impl] = str(r.get("note") or "")
            continue
        g = groups.setdefault((r["case"], r["pass"]), {"case": r["case"], "pass": r["pass"],
                                                     "ours": None, "ours_all": {},
                                                     "anchors": {}})
        timed = r.get("median_ms") is not None
        if is_ours(impl):
            g["ours_all"][impl] = r
            if timed and (g["ours"] is None or r["median_ms"] < g["ours"]["median_ms"]):
                g["ours"] = r
        else:
            g["anchors"][impl] = r
            if timed and impl not in anchors:
                anchors.append(impl)
            elif not timed and impl not in not_run:
                not_run[impl] = str(r.get("note") or "not run")
    for impl in anchors:
        not_run.pop(impl, None)
    out_groups = [g for g in groups.values() if g["ours"] is not None or g["anchors"]]
    return {"groups": out_groups, "anchors": anchors, "not_run": not_run}


def ratio(anchor: float | None, ours: float | None) -> float | None:
    """anchor / ours (> 1: ours is smaller, i.e. faster or leaner), None when undefined."""
    if anchor is None or ours is None or ours <= 0:
        return None
    return anchor / ours


def attention_flops(case: str, pass_: str) -> float | None:
    """FLOPs of one attention call from an ``N=... C=...`` case name (FlashAttention's count:
    forward 4 N^2 C, backward 2.5x the forward), or None when the case does not say."""
    n = re.search(r"N=(\d+)", case)
    c = re.search(r"C=(\d+)", case)
    if not (n and c):
        return None
    fwd = 4.0 * int(n.group(1)) ** 2 * int(c.group(1))
    return fwd * (3.5 if "bwd" in pass_ else 1.0)


def fmt_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain-text table of ``rows`` (dicts) with the given columns, for the console."""
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
