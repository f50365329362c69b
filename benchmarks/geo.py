"""Streaming GeoTIFF inference: a 40 000 x 40 000 mosaic segmented by WSDNet on the CPU, in
bounded memory, at the pixel rate of the in-memory path.

``python -m benchmarks.geo [--size 40000] [--rows N] [--ref-size 10240] [--ref-rows N]
[--config wsdnet_inria] [--threads T] [--cache DIR] [--json PATH]``

1. Writes the mosaic once: an RGB tiled (512) DEFLATE GeoTIFF of ``size``² (a textured
   pattern, ~4.8 GB of pixels at 40 000²) under ``--cache`` (default
   ``$UHROPS_CACHE`` or ``~/.cache/uhrops/geo``), reused by later runs; and a
   ``ref-size``² one for the reference.
2. Streamed: a fresh process segments the mosaic with the config's WSDNet (random weights:
   speed and memory do not depend on them) through :func:`zoo.engine.segment_file` (windows
   read from the file, one row of windows and one band in memory, the mask written as a
   tiled GeoTIFF). ``--rows N`` segments only rows 0:N instead (``sliding_window(rows=...)``,
   band parts written, no final GeoTIFF): the pixel rate and the peak memory of the full run
   are those of any band (every row of windows costs the same; memory does not depend on the
   height), so the full run's time is extrapolated from it, and labelled so.
3. In memory (the reference): a fresh process reads the ``ref-size``² image whole into a
   tensor and runs the same windows through ``uhrops.sliding_window`` on it (the in-memory
   path ``zoo.infer`` took before), then argmax; ``--ref-rows N`` takes the first N rows of
   it as the image (labelled).
4. Peak RSS = the child process's VmHWM (its whole life: Python, torch, the model, GDAL).
   Pixel rate = output pixels / wall seconds of the inference (model built beforehand).
   Results go to ``benchmarks/results/geo-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from benchmarks.markdown import load_json, md_table, not_measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_FILE = "geo-cpu.json"
BLOCKS = ("geo",)  # the documentation block rendered from RESULTS_FILE


def cache_dir(given: str | None) -> str:
    d = given or os.environ.get("UHROPS_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "uhrops", "geo")
    os.makedirs(d, exist_ok=True)
    return d


def write_mosaic(path: str, size: int) -> float:
    """An RGB tiled DEFLATE GeoTIFF of size x size (textured, not flat: a model sees edges),
    written 512 rows at a time; returns the seconds taken (0 when cached)."""
    if os.path.exists(path):
        return 0.0
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (3, 512, 1024), dtype=np.uint8)
    yy, xx = np.mgrid[0:512, 0:1024]
    block[0] = (block[0] // 4 + 96 * (np.sin(xx / 37.0) > 0)).astype(np.uint8)
    block[1] = (block[1] // 4 + 96 * (np.cos(yy / 23.0) > 0)).astype(np.uint8)
    tmp = path + ".tmp.tif"
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3,
                       dtype="uint8", crs="EPSG:32631",
                       transform=Affine(0.1, 0, 440000.0, 0, -0.1, 5320000.0), tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", ZLEVEL=1,
                       BIGTIFF="YES") as dst:
        reps = -(-size // 1024)
        for y in range(0, size, 512):
            h = min(512, size - y)
            row = np.tile(np.roll(block, y // 512 * 97, axis=2), (1, 1, reps))[:, :h, :size]
            dst.write(row, window=Window(0, y, size, h))
    os.replace(tmp, path)
    return time.perf_counter() - t0


def _child(mode: str, image: str, rows: int, config: str, threads: int, out: str) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    import torch

    from benchmarks.common import proc_status_kb
    from zoo.config import load_config
    from zoo.engine import segment_file as sf
    from zoo.engine.families import make_task
    from zoo.engine.rasters import open_image

    torch.set_num_threads(threads)
    sets = ["train.device=cpu", "model.pretrained=none"]
    sets += ["eval.max_memory=0.5"] if mode == "stream" else ["eval.sliding=true"]
    cfg = load_config(config, sets)
    task = make_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    rss_model = proc_status_kb("VmRSS")
    with open_image(image) as src:
        H, W = src.image_size
        rows = min(rows or H, H)
    t0 = time.perf_counter()
    with torch.no_grad():
        if mode == "stream" and rows == H:
            st = sf.Settings(palette=((0, 0, 0), (255, 255, 255)), mask_encoding="binary",
                             outputs=("tif",))
            sf.segment_file(task, model, image, out, st, torch.device("cpu"))
        elif mode == "stream":
            with open_image(image) as src:
                parts = sf._Parts(os.path.join(out, ".parts"), H, W, task.num_classes, False)
                os.makedirs(parts.folder, exist_ok=True)
                want = [b for b in parts.bands if b[0] < rows]
                want[-1] = (want[-1][0], rows)
                sink = sf._BandSink(parts, src, want, True, lambda a, b: None)
                task.stream_predict(model, src, sink, rows=(0, rows))
                if sink.cur is not None:  # the last band was cut at `rows`
                    sink._finish()
        else:
            with open_image(image) as src:
                x = src.read(0, 0, rows, W)[None]
            logits = task.predict(model, x)
            step = max(1, (1 << 22) // W)
            mask = np.empty((rows, W), np.uint8)
            for a in range(0, rows, step):
                mask[a:a + step] = sf._argmax0(logits[0, :, a:a + step]).numpy()
            del logits, x
    seconds = time.perf_counter() - t0
    grid = task._window_grid(H, W) if mode == "stream" else task._window_grid(rows, W)
    # the windows run: every window row that reaches into rows 0:rows (batches of 1 here)
    ke = sum(1 for y in grid.ys if y < rows) * len(grid.xs)
    kb = 0
    print(json.dumps({"mode": mode, "image": [H, W], "rows": rows, "pixels": rows * W,
                      "windows_run": ke - kb, "windows_full_image": len(grid),
                      "seconds_per_window": seconds / (ke - kb),
                      "seconds": seconds, "pixels_per_s": rows * W / seconds,
                      "peak_rss_mib": proc_status_kb("VmHWM") / 1024,
                      "rss_after_model_mib": rss_model / 1024, "threads": threads,
                      "window": cfg["eval"]["window"],
                      "window_overlap": cfg["eval"]["window_overlap"],
                      "batch_size": cfg["eval"]["batch_size"]}), flush=True)


def run_child(mode: str, image: str, rows: int, config: str, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="uhrops-geo-") as out:
        p = subprocess.run([sys.executable, "-m", "benchmarks.geo", "--child", mode, image,
                            str(rows), config, str(threads), out], cwd=ROOT,
                           capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"benchmarks.geo child {mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _windows(size: int, row: dict[str, Any]) -> int:
    """Windows of the zoo's grid on a size x size image (the window settings of ``row``)."""
    from uhrops.tiling import PatchGrid

    wh, ww = row["window"]
    ov = row["window_overlap"]
    return len(PatchGrid.from_stride((size, size), (wh, ww), (wh - ov, ww - ov)))


def _side(n: int) -> str:
    """A pixel count with a space every three digits from 10 000 on (40 000)."""
    return f"{n:,}".replace(",", " ") if n >= 10000 else str(n)


def geo_block(doc: dict[str, Any] | None) -> str:
    """``bench:geo``: the streamed GeoTIFF pass against the in-memory path, per window and
    extrapolated to each full image, with the peak memory, from ``geo-cpu.json``."""
    if not doc:
        return not_measured("python -m benchmarks.geo", RESULTS_FILE)
    st, mem, meta = doc["stream"], doc["memory"], doc.get("meta", {})
    wh, ww = st["window"]
    win = f"{wh}²" if wh == ww else f"{wh}x{ww}"

    def rows_cell(r: dict[str, Any], what: str) -> str:
        part = "all rows" if r["rows"] >= r["image"][0] else f"rows 0:{r['rows']}"
        return f"{what}, {part} ({r['windows_run']} windows of {win})"

    (sh, sw), (mh, mw) = st["image"], mem["image"]
    # The memory child counts the windows of the rows it ran; the full image's count is the
    # one its full-image rate was computed with.
    mem_full = _windows(mh, mem)
    stream_img = f"{_side(sh)}²" if sh == sw else f"{_side(sh)}x{_side(sw)}"
    mem_img = f"{_side(mh)}²" if mh == mw else f"{_side(mh)}x{_side(mw)}"
    mem_rss = f"{mem['peak_rss_mib']:,.0f} MiB"
    if doc.get("memory_is_subset"):
        mem_rss += f" ({mem['rows']} rows only)"
    body = [
        ["image, rows measured", rows_cell(st, stream_img), rows_cell(mem, f"{_side(mw)} wide")],
        [f"seconds per {win} window", f"{st['seconds_per_window']:.2f}",
         f"{mem['seconds_per_window']:.2f}"],
        ["output pixels/s, full image (from its window count)",
         f"{doc['full_image_rate_stream']:,.0f} ({st['windows_full_image']} windows for "
         f"{stream_img})",
         f"{doc['full_image_rate_memory']:,.0f} ({mem_full} windows for {mem_img})"],
        ["peak RSS of the process (model, GDAL, everything)",
         f"**{st['peak_rss_mib']:,.0f} MiB**", mem_rss]]
    head = (f"`{meta.get('command', 'python -m benchmarks.geo')}`, torch "
            f"{meta.get('torch', '?')}, {st['threads']} threads, commit "
            f"{(meta.get('commit') or '?')[:8]}, {(meta.get('time') or '?')[:10]}; mosaic "
            f"{doc['mosaic']['file_bytes'] / 1e9:.1f} GB on disk.")
    slower = 100 * (st["seconds_per_window"] / mem["seconds_per_window"] - 1)
    goals = doc.get("goals", {})
    yes = {True: "met", False: "**not met**"}
    tail = (f"Per window the streamed path is {abs(slower):.1f} % "
            f"{'slower' if slower >= 0 else 'faster'} than the in-memory one; goals: peak RSS "
            f"≤ 2 GB {yes.get(goals.get('peak_rss_le_2gb'), '—')}, full-image output rate "
            f"within 10 % of the in-memory path's "
            f"{yes.get(goals.get('rate_within_10pct'), '—')}. ")
    hours = doc["full_mosaic_seconds_extrapolated"] / 3600
    if doc.get("stream_is_subset"):
        tail += (f"The whole {stream_img} pass is extrapolated from the band "
                 f"({st['windows_full_image']} windows at the measured time per window): "
                 f"{hours:.1f} h on these {st['threads']} threads.")
    else:
        tail += f"The whole {stream_img} pass took {hours:.1f} h on {st['threads']} threads."
    return head + "\n\n" + md_table(["", "streamed from the GeoTIFF",
                                      "in memory (whole image in a tensor)"], body) \
        + "\n\n" + tail


def render_blocks(results_dir: str, plots_rel: str | None = None) -> dict[str, str]:
    """``bench:geo`` from ``results_dir``'s :data:`RESULTS_FILE`."""
    return {"geo": geo_block(load_json(results_dir, RESULTS_FILE))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]), argv[6])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.geo", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--size", type=int, default=40000)
    p.add_argument("--rows", type=int, default=0, help="segment only rows 0:N (0: all)")
    p.add_argument("--ref-size", type=int, default=10240)
    p.add_argument("--ref-rows", type=int, default=0, help="reference on rows 0:N (0: all)")
    p.add_argument("--config", default="wsdnet_inria")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None)
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", RESULTS_FILE))
    args = p.parse_args(argv)
    from benchmarks.common import metadata

    cache = cache_dir(args.cache)
    mosaic = os.path.join(cache, f"mosaic_{args.size}.tif")
    ref = os.path.join(cache, f"mosaic_{args.ref_size}.tif")
    wrote = {"mosaic_s": write_mosaic(mosaic, args.size), "ref_s": write_mosaic(ref, args.ref_size)}
    print(f"mosaics in {cache} (written in {wrote})", flush=True)
    stream = run_child("stream", mosaic, args.rows, args.config, args.threads)
    print("stream", stream, flush=True)
    memory = run_child("memory", ref, args.ref_rows, args.config, args.threads)
    print("memory", memory, flush=True)
    full = args.size * args.size
    result = {
        "meta": {**metadata("cpu"), "command": "python -m benchmarks.geo " + " ".join(argv)},
        "mosaic": {"size": args.size, "file_bytes": os.path.getsize(mosaic),
                   "write_s": wrote["mosaic_s"] or None},
        "stream": stream, "memory": memory,
        # the same 1024² windows in both: time per window is the like-for-like comparison;
        # a full image's output rate follows from its window count
        "window_time_ratio_memory_over_stream":
            memory["seconds_per_window"] / stream["seconds_per_window"],
        "full_image_rate_stream": full / (stream["windows_full_image"] *
                                          stream["seconds_per_window"]),
        "full_image_rate_memory": args.ref_size ** 2 / (
            _windows(args.ref_size, memory) * memory["seconds_per_window"]),
        "measured_rate_ratio_stream_over_memory":
            stream["pixels_per_s"] / memory["pixels_per_s"],
        "stream_is_subset": stream["rows"] < args.size,
        "memory_is_subset": memory["rows"] < args.ref_size,
        "full_mosaic_seconds_extrapolated": stream["windows_full_image"] *
        stream["seconds_per_window"] if stream["rows"] < args.size else stream["seconds"],
    }
    result["goals"] = {
        "peak_rss_le_2gb": stream["peak_rss_mib"] <= 2048,
        "rate_within_10pct": result["full_image_rate_stream"] >=
        0.9 * result["full_image_rate_memory"]}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    print(json.dumps({k: result[k] for k in (
        "window_time_ratio_memory_over_stream", "full_image_rate_stream",
        "full_image_rate_memory", "goals", "full_mosaic_seconds_extrapolated")}))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
