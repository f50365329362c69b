"""zoo.infer on GeoTIFFs the tests write: streaming equals in-memory, georeferencing kept,
kill-and-resume and two processes give the same files, memory independent of the height.

Oracles: rasterio reading the files back (CRS, transform, nodata, colour table, pixels),
numpy on the whole image for the model's values, PIL decoding the PNGs, and a run without
interruption / on one process for the files' bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from affine import Affine  # noqa: E402

from zoo.config import dump_config, load_config  # noqa: E402
from zoo.engine import segment_file as sf  # noqa: E402
from zoo.engine.families import make_task  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRS = "EPSG:32631"
TRANSFORM = Affine(0.25, 0.0, 440000.0, 0.0, -0.25, 5320000.0)
SMALL_WSDNET = ["model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2], "
                "aspp_channels: 16, fuse_channels: 16, head_channels: 8}"]


def write_geotiff(path, H, W, seed=0, nodata_box=None):
    """A tiled RGB GeoTIFF of smooth random fields (0 = nodata inside ``nodata_box``)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 255, (3, H // 16 + 2, W // 16 + 2)).astype(np.float32)
    img = np.repeat(np.repeat(small, 16, 1), 16, 2)[:, :H, :W]
    img = (img + rng.integers(0, 20, (3, H, W))).clip(1, 255).astype(np.uint8)
    if nodata_box is not None:
        y0, x0, y1, x1 = nodata_box
        img[:, y0:y1, x0:x1] = 0
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate",
                       nodata=0 if nodata_box is not None else None) as dst:
        dst.write(img)
    return img


def cheap_task(*sets):
    """WSDNet's task (windows, merging, memory rule) around a cheap 1x1-conv model."""
    cfg = load_config("quickstart", ["train.device=cpu", "model.num_classes=2",
                                     "eval.window=[512, 512]",
                                     "eval.window_overlap=64", "eval.batch_size=3", *sets])
    task = make_task(cfg)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1).eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[[[1.0]], [[-2.0]], [[0.5]]],
                                         [[[-1.0]], [[1.5]], [[0.25]]]]))
        model.bias.copy_(torch.tensor([0.1, -0.05]))
    return task, model


def settings(**kw):
    kw.setdefault("palette", ((0, 0, 0), (255, 255, 255)))
    kw.setdefault("mask_encoding", "binary")
    return sf.Settings(**kw)


def read(path, band=None):
    with rasterio.open(path) as ds:
        return ds.read() if band is None else ds.read(band)


def test_streamed_geotiff_equals_in_memory_and_keeps_georeferencing(tmp_path):
    H, W = 3000, 1700
    img = write_geotiff(tmp_path / "scene.tif", H, W, nodata_box=(100, 1300, 700, 1700))
    written = {}
    for mode, sets in (("memory", ["eval.sliding=true", "eval.max_memory=1000.0"]),
                       ("stream", ["eval.max_memory=0.001"])):
        task, model = cheap_task(*sets)
        assert task.fits_in_memory(H, W) == (mode == "memory")
        out = tmp_path / mode
        outs = ("tif", "probs") + (("mask", "color") if mode == "stream" else ())
        files = sf.segment_file(task, model, str(tmp_path / "scene.tif"), str(out),
                                settings(outputs=outs), torch.device("cpu"))
        assert [os.path.basename(f) for f in files] == [
            "scene_mask.tif", "scene_probs.tif", "scene_mask.png", "scene_color.png"
        ][:len(outs)]
        assert not os.path.exists(out / ".scene.parts")  # the bands are gone once assembled
        written[mode] = out
    for name in ("scene_mask.tif", "scene_probs.tif"):
        a, b = read(written["memory"] / name), read(written["stream"] / name)
        assert a.shape == b.shape and np.array_equal(a, b), name
    with rasterio.open(written["stream"] / "scene_mask.tif") as ds:
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert ds.nodata is not None and ds.profile["tiled"] and ds.block_shapes[0] == (512, 512)
        assert ds.compression is not None and ds.compression.value == "DEFLATE"
        assert ds.overviews(1), "COG layout: overviews expected"
        cmap = ds.colormap(1)
        mask = ds.read(1)
        nodata = ds.nodata
    assert cmap[255][:3] == (255, 255, 255) and cmap[0][:3] == (0, 0, 0)
    # values: the dataset's (0/255 for Inria's binary masks); the oracle is numpy on the
    # whole image (a 1x1 conv: every window gives the pixel's own logits)
    x = img.astype(np.float32) / 255
    l0 = x[0] - 2 * x[1] + 0.5 * x[2] + 0.1
    l1 = -x[0] + 1.5 * x[1] + 0.25 * x[2] - 0.05
    expect = np.where(l1 > l0, 255, 0)
    valid = img.any(0)
    sure = np.abs(l1 - l0) > 1e-4
    assert np.array_equal(mask[valid & sure], expect[valid & sure])
    assert (mask[~valid] == nodata).all() and nodata not in (0, 255)
    assert set(np.unique(mask[valid]).tolist()) <= {0, 255}
    # PNGs (decoded by PIL): class indices, palette colours
    from PIL import Image

    png = np.asarray(Image.open(written["stream"] / "scene_mask.png"))
    # one value convention per dataset for every mask output (issue 32): 0/255 for Inria
    assert np.array_equal(png, mask)
    color = np.asarray(Image.open(written["stream"] / "scene_color.png"))
    assert np.array_equal(color[valid], np.repeat(np.where(png[valid, None] == 255, 255, 0), 3, 1))
    probs = read(written["stream"] / "scene_probs.tif")
    p1 = 1 / (1 + np.exp(l0 - l1))
    assert np.abs(probs[1][valid].astype(np.float32) - 255 * p1[valid]).max() <= 0.51 + 1e-3


class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_same_file(tmp_path, monkeypatch):
    H, W = 2600, 700
    write_geotiff(tmp_path / "a.tif", H, W, seed=3)
    task, model = cheap_task("eval.max_memory=0.001")
    st = settings(outputs=("tif", "probs"))
    ref = sf.segment_file(task, model, str(tmp_path / "a.tif"), str(tmp_path / "ref"), st,
                          torch.device("cpu"))
    real_write = sf._Parts.write
    for kill_after in (2,):
        out = tmp_path / f"killed{kill_after}"
        count = {"n": 0}

        def dying_write(self, *args, _count=count, _k=kill_after):
            if _count["n"] == _k:
                raise Killed()  # the process dies before this band reaches the disk
            real_write(self, *args)
            _count["n"] += 1

        monkeypatch.setattr(sf._Parts, "write", dying_write)
        with pytest.raises(Killed):
            sf.segment_file(task, model, str(tmp_path / "a.tif"), str(out), st,
                            torch.device("cpu"))
        monkeypatch.setattr(sf._Parts, "write", real_write)
        assert len([f for f in os.listdir(out / ".a.parts") if f.endswith(".part")]) \
            == kill_after
        calls = []
        counted = torch.nn.Module.__call__

        def counting(self, *a, **k):
            if self is model:
                calls.append(a[0].shape[0])
            return counted(self, *a, **k)

        monkeypatch.setattr(torch.nn.Module, "__call__", counting)
        files = sf.segment_file(task, model, str(tmp_path / "a.tif"), str(out), st,
                                torch.device("cpu"))
        monkeypatch.setattr(torch.nn.Module, "__call__", counted)
        for a, b in zip(ref, files):
            with open(a, "rb") as fa, open(b, "rb") as fb:
                assert fa.read() == fb.read(), os.path.basename(b)
        # recomputed: the missing bands' windows plus at most one row of windows above them
        grid = task._window_grid(H, W)
        nx = len(grid.xs)
        first_missing = kill_after * sf.BAND_ROWS
        rows_needed = [y for y in grid.ys if y + 512 > first_missing]
        assert sum(calls) <= (len(rows_needed) + 1) * nx + 2 * 3


def _tiny_run(tmp_path, H, W):
    cfg = load_config("quickstart", ["train.device=cpu", "model.num_classes=2",
                                     "eval.window=[128, 128]",
                                     "eval.window_overlap=16", "eval.batch_size=2",
                                     "eval.max_memory=0.001", *SMALL_WSDNET])
    dump_config(cfg, str(tmp_path / "config.yaml"))
    from zoo.core.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(str(tmp_path / "m.safetensors"), make_task(cfg).build_model(), {})
    write_geotiff(tmp_path / "big.tif", H, W, seed=5, nodata_box=(0, 0, 40, 60))
    return ["--config", str(tmp_path / "config.yaml"), "--checkpoint",
            str(tmp_path / "m.safetensors"), "--outputs", "tif,probs"]


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "zoo.infer", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_give_the_files_of_one(tmp_path):
    """A real (small) WSDNet through the command: one process, then two processes sharing
    the bands of one image (RANK / WORLD_SIZE as torchrun sets them)."""
    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 1200, 96)
    port = str(free_port())  # torchrun's rendezvous address, as torchrun sets it
    procs = [_cli(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "two")],
                  {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in (0, 1)]
    # meanwhile the reference: the same command in one process (this one), with the same
    # thread count (a convolution's last bits may depend on how its work is split)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    for name in ("big_mask.tif", "big_probs.tif"):
        with open(tmp_path / "one" / name, "rb") as a, open(tmp_path / "two" / name, "rb") as b:
            assert a.read() == b.read(), name
    with rasterio.open(tmp_path / "two" / "big_mask.tif") as ds:
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert (ds.read(1)[:40, :60] == ds.nodata).all()


_RSS_SCRIPT = r"""
import ctypes, gc, json, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from benchmarks.common import proc_status_kb, reset_peak_rss
from tests.zoo.test_infer_geo import cheap_task, settings
from zoo.engine import segment_file as sf
task, model = cheap_task("eval.max_memory=0.001")
out, warm, images = sys.argv[1], sys.argv[2], sys.argv[3:]
sf.segment_file(task, model, warm, out + "/warm", settings(outputs=("tif",)),
                torch.device("cpu"))  # libraries and caches in place first
peaks = []
for k, image in enumerate(images):
    # glibc keeps some freed heap or not depending on timing: with it given back first, the
    # base is the same for every image and the peak above it measures the run alone
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    reset_peak_rss()
    base = proc_status_kb("VmRSS")
    sf.segment_file(task, model, image, out + f"/{{k}}", settings(outputs=("tif",)),
                    torch.device("cpu"))
    peaks.append((proc_status_kb("VmHWM") - base) / 1024)
print(json.dumps(peaks))
"""


LONG = os.environ.get("UHROPS_LONG") == "1"


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
@pytest.mark.parametrize("W,heights,limit", [
    (1024, (1024, 5120), 12.0),  # +4096 rows: image as float32 +48 MiB, logits +32 MiB
    pytest.param(1500, (1500, 9000), 20.0, marks=[pytest.mark.long, pytest.mark.skipif(
        not LONG, reason="long: -m long or UHROPS_LONG=1")]),  # +162 / +108 MiB
])
def test_peak_rss_does_not_grow_with_the_height(tmp_path, W, heights, limit):
    """The streamed run's peak RSS (above the RSS before it, in a fresh process after a warm
    run) is the same for two heights; the in-memory path's would grow by the MiB noted."""
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT.format(root=ROOT))
    write_geotiff(tmp_path / "warm.tif", 600, W, seed=1)
    for H in heights:
        write_geotiff(tmp_path / f"h{H}.tif", H, W, seed=H)
    p = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "warm.tif"),
                        *(str(tmp_path / f"h{H}.tif") for H in heights)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr
    peaks = json.loads(p.stdout.strip().splitlines()[-1])
    assert peaks[1] - peaks[0] < limit, dict(zip(heights, peaks))


def test_windows_holding_only_nodata_are_not_run(tmp_path, monkeypatch):
    H, W = 1100, 1100
    img = write_geotiff(tmp_path / "half.tif", H, W, seed=9, nodata_box=(0, 0, 1100, 600))
    task, model = cheap_task("eval.max_memory=0.001", "eval.window=[256, 256]",
                             "eval.window_overlap=32")
    seen, conv = [], torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward",
                        lambda self, x: (seen.append(x.shape[0]), conv(self, x))[1])
    sf.segment_file(task, model, str(tmp_path / "half.tif"), str(tmp_path / "out"),
                    settings(outputs=("tif",)), torch.device("cpu"))
    grid = task._window_grid(H, W)
    empty = sum(1 for y in grid.ys for x in grid.xs if x + 256 <= 600)
    assert sum(seen) == len(grid) - empty and empty > 0
    mask = read(tmp_path / "out" / "half_mask.tif", 1)
    x = img.astype(np.float32) / 255
    l0 = x[0] - 2 * x[1] + 0.5 * x[2] + 0.1
    l1 = -x[0] + 1.5 * x[1] + 0.25 * x[2] - 0.05
    valid, sure = img.any(0), np.abs(l1 - l0) > 1e-4
    assert np.array_equal(mask[valid & sure], np.where(l1 > l0, 255, 0)[valid & sure])
    assert (mask[~valid] != 0).all() and (mask[~valid] != 255).all()


def test_a_rank_removes_only_its_own_bands_temporaries(tmp_path):
    """Another rank may be writing its band's temporary right now (the two-process race CI
    once hit: a rank starting late removed the temporary rank 0 was about to rename)."""
    for name in (".0.part.abc.tmp", ".1024.part.def.tmp", "0.part", ".10.part.x.tmp"):
        (tmp_path / name).write_bytes(b"x")
    sf._remove_temporaries(str(tmp_path), [0, 10])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".1024.part.def.tmp", "0.part"]


def test_gdal_tile_cache_is_bounded_by_the_width_while_a_geotiff_is_open(tmp_path, monkeypatch):
    """GDAL's default cache (5% of the RAM) would let a streamed run's memory grow with the
    rows read; while a source is open it holds two full-width tile rows (at least 4 MiB), and
    the user's own GDAL_CACHEMAX wins."""
    from rasterio.env import get_gdal_config

    from zoo.engine.rasters import open_image

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    write_geotiff(tmp_path / "wide.tif", 300, 4000, seed=3)  # 256-row tiles, 3 uint8 bands
    before = get_gdal_config("GDAL_CACHEMAX")
    with open_image(str(tmp_path / "wide.tif")):
        assert int(get_gdal_config("GDAL_CACHEMAX")) == 2 * 256 * 4000 * 3
    assert get_gdal_config("GDAL_CACHEMAX") == before
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    with open_image(str(tmp_path / "wide.tif")):
        assert get_gdal_config("GDAL_CACHEMAX") == before
