"""Labels-only merging: peak memory and time of ``sliding_window(argmax=True)`` (whole width,
and within ``max_accumulator_bytes`` = 256 MiB) against the full merge followed by an argmax,
and against MONAI's ``sliding_window_inference`` + argmax.

    python -m benchmarks.merge_labels [--sizes 2448 10240] [--classes 7 100] [--rounds 1]
                                      [--json PATH] [--quick]

Every case runs in a fresh subprocess (``--one METHOD SIZE CLASSES``), so its peak resident
memory (``VmHWM``, i.e. ``ru_maxrss``) is its own. The image is ``torch.rand(1, 3, S, S)``; the
predictor is a fixed seeded 1x1 convolution 3 -> C (cheap, so the merge is what is measured);
the grid is 512² windows at stride 384 (MONAI's ``overlap=0.25``, the last window shifted
back), constant blending weights, batches of 4 windows, 2 threads. Reported per case: the wall
time of the call (merge and argmax included), the peak RSS of the process, and the peak above
the RSS just before the call (image and predictor already built: the merge's own memory), and
that peak less the peak of the predictor alone (``predictor``: the same batches of windows
through it, outputs dropped; what every method pays whatever it merges into): with the bound,
that rest does not grow with the class count. A case whose full-size output (C x S x S float32
plus MONAI's count map) would not fit in the machine's available memory is not run: its row
gives the bytes it would need.
Results: ``benchmarks/results/merge-labels.json`` (README block ``bench:merge-labels``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, metadata, proc_status_kb, reset_peak_rss, write_json
from benchmarks.markdown import fnum, load_json, md_table, not_measured

__all__ = ["main", "run_one", "full_bytes"]

METHODS = ("predictor", "labels", "bounded", "full", "monai")
PATCH, STRIDE, BATCH, THREADS = 512, 384, 4, 2
BOUND = 256 * 2**20  # max_accumulator_bytes of the "bounded" method
RESULTS_FILE = "merge-labels.json"
BLOCKS = ("merge-labels",)  # the README/documentation block rendered from RESULTS_FILE


def full_bytes(method: str, size: int, classes: int) -> int:
    """Bytes of the full-size buffers a method holds beyond the input: the (C, S, S) float32
    output (and MONAI's (1, S, S) count map and its int64 argmax)."""
    n = size * size
    if method in ("predictor", "labels", "bounded"):
        return 0
    extra = n * 4 + n * 8 if method == "monai" else n * 8  # count map; int64 argmax
    return classes * n * 4 + extra


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _predictor(classes: int) -> Any:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(classes, 3, 1, 1, generator=g)
    bias = torch.randn(classes, generator=g)
    return lambda x: torch.nn.functional.conv2d(x, weight, bias)


def run_one(method: str, size: int, classes: int) -> dict[str, Any]:
    """One case in this process: time and memory of one call."""
    torch.set_num_threads(THREADS)
    from uhrops.tiling import PatchGrid, sliding_window

    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    predictor = _predictor(classes)
    patches_run = 0

    def fn(x: torch.Tensor) -> torch.Tensor:
        nonlocal patches_run
        patches_run += x.shape[0]
        return predictor(x)

    grid = PatchGrid.from_stride((size, size), PATCH, STRIDE)
    if method == "monai":
        from monai.inferers import sliding_window_inference
    reset_peak_rss()  # the high-water mark from here on (imports and setup left out)
    before = proc_status_kb("VmRSS") or 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        if method == "predictor":  # the windows of each batch through fn, nothing merged
            boxes = grid.boxes.tolist()
            for k in range(0, len(boxes), BATCH):
                batch = torch.stack([image[0, :, y0:y1, x0:x1]
                                     for y0, x0, y1, x1 in boxes[k:k + BATCH]])
                out = fn(batch)
                del batch, out
            labels = torch.zeros(0, dtype=torch.uint8)
        elif method == "labels":
            labels = sliding_window(fn, image, grid, BATCH, argmax=True)
        elif method == "bounded":
            labels = sliding_window(fn, image, grid, BATCH, argmax=True,
                                    max_accumulator_bytes=BOUND)
        elif method == "full":
            labels = sliding_window(fn, image, grid, BATCH).argmax(1)
        else:
            out = sliding_window_inference(image, (PATCH, PATCH), BATCH, fn, overlap=0.25,
                                           mode="constant")
            labels = out.argmax(1)
            del out
    wall = time.perf_counter() - t0
    peak = proc_status_kb("VmHWM") or 0
    return {"method": method, "size": size, "classes": classes, "time_s": wall,
            "peak_rss_mb": peak / 1024, "peak_above_start_mb": (peak - before) / 1024,
            "labels_dtype": str(labels.dtype).replace("torch.", ""),
            "windows": len(grid), "patches_run": patches_run}


def _subprocess(method: str, size: int, classes: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.merge_labels", "--one", method, str(size),
           str(classes)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"method": method, "size": size, "classes": classes,
                "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: list[int], classes: list[int], rounds: int) -> list[dict[str, Any]]:
    avail = _available_bytes()
    rows = []
    for s in sizes:
        for c in classes:
            for m in METHODS:
                need = full_bytes(m, s, c) + 3 * s * s * 4
                if need > 0.8 * avail:
                    row = {"method": m, "size": s, "classes": c, "skipped": True,
                           "needs_bytes": need, "available_bytes": avail}
                    print(f"{m:7s} {s}² C={c}: not run, needs ≥ {need / 2**30:.1f} GiB "
                          f"(available {avail / 2**30:.1f} GiB)", flush=True)
                    rows.append(row)
                    continue
                runs = [_subprocess(m, s, c) for _ in range(rounds)]
                ok = [r for r in runs if "error" not in r]
                if not ok:
                    rows.append(runs[0])
                    print(f"{m:7s} {s}² C={c}: failed {runs[0].get('error')}", flush=True)
                    continue
                best = min(ok, key=lambda r: r["time_s"])
                best["times_s"] = [r["time_s"] for r in ok]
                best["load"] = os.getloadavg()[0]
                rows.append(best)
                print(f"{m:7s} {s}² C={c}: {best['time_s']:.2f} s, peak RSS "
                      f"{best['peak_rss_mb']:.0f} MB (+{best['peak_above_start_mb']:.0f} MB "
                      f"during the call), load {best['load']:.1f}", flush=True)
    return rows


def merge_labels_block(doc: dict[str, Any] | None) -> str:
    """``bench:merge-labels``: per image size and class count, the time and peak memory of
    labels-only merging, the full merge + argmax and MONAI + argmax (or the bytes a case that
    was not run would need), from ``merge-labels.json``."""
    if not doc:
        return not_measured("python -m benchmarks.merge_labels", RESULTS_FILE)
    bound = doc["setup"].get("bound_mib")
    names = {"labels": "`sliding_window(argmax=True)`",
             "bounded": f"`sliding_window(argmax=True, max_accumulator_bytes={bound} MiB)`",
             "full": "`sliding_window` + argmax",
             "monai": "MONAI `sliding_window_inference` + argmax"}
    alone = {(r["size"], r["classes"]): r["peak_above_start_mb"] for r in doc["results"]
             if r["method"] == "predictor" and "peak_above_start_mb" in r}
    body = []
    for r in doc["results"]:
        if r["method"] == "predictor":
            continue
        case = [f"{r['size']}²", str(r["classes"]), names.get(r["method"], r["method"])]
        if r.get("skipped"):
            need = (f"not run: needs ≥ {r['needs_bytes'] / 2**30:.1f} GiB "
                    f"(available {r['available_bytes'] / 2**30:.1f} GiB)")
            body.append(case + [need, "—", "—", "—", "—"])
        elif "error" in r:
            body.append(case + ["failed: " + " ".join(r["error"]), "—", "—", "—", "—"])
        else:
            run = r.get("patches_run")
            extra = f"{run / r['windows'] - 1:+.0%}" if run else "—"
            base = alone.get((r["size"], r["classes"]))
            rest = fnum(r["peak_above_start_mb"] - base) if base is not None else "—"
            body.append(case + [fnum(r["time_s"]), extra, fnum(r["peak_above_start_mb"]), rest,
                                fnum(r["peak_rss_mb"])])
    st = doc["setup"]
    head = (f"`{doc['command']}`, torch {doc['metadata']['torch']}, {st['threads']} threads, "
            f"{doc['metadata']['time']}: image 1x3xS², predictor {st['predictor']}, windows "
            f"{st['patch']}² at stride {st['stride']}, {st['weights']} weights, batches of "
            f"{st['batch']}; each case in its own process (peak = VmHWM). The machine was "
            f"shared (load average per row in the JSON), so times are indicative; memory is not "
            f"affected by load. Patches run beyond the grid's: the bounded merge's patch "
            f"columns across band cuts (plus the one patch that learns C). Peak less the "
            f"predictor's: the peak during the call less that of the same batches through the "
            f"predictor alone, outputs dropped (its (batch, C, 512, 512) output and its own "
            f"buffers).")
    return head + "\n\n" + md_table(["image", "classes", "method", "time (s)",
                                     "patches beyond the grid's", "peak during the call (MB)",
                                     "peak less the predictor's (MB)", "peak RSS (MB)"], body)


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:merge-labels`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"merge-labels": merge_labels_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "SIZE", "CLASSES"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[2448, 10240])
    ap.add_argument("--classes", type=int, nargs="+", default=[7, 100])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="600² only, 7 classes, no JSON")
    ap.add_argument("--json", default=os.path.join(RESULTS_DIR, RESULTS_FILE))
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), int(args.one[2]))))
        return 0
    if args.quick:
        run([600], [7], 1)
        return 0
    rows = run(args.sizes, args.classes, args.rounds)
    doc = {"metadata": metadata("cpu"), "command": "python -m benchmarks.merge_labels " +
           " ".join(argv if argv is not None else sys.argv[1:]),
           "setup": {"patch": PATCH, "stride": STRIDE, "batch": BATCH, "threads": THREADS,
                     "weights": "constant", "predictor": "1x1 conv 3 -> C",
                     "bound_mib": BOUND // 2**20},
           "results": rows}
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
