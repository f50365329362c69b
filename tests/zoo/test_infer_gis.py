"""zoo.infer on ordinary GIS inputs: nothing lost, nothing silently wrong, no silent hang
(issue 29), and honest progress on resume / one mask convention per dataset (issue 32).

Each test reproduces one case of the issue and fails on the code before the fix (9fba0da).
Oracles: rasterio and Pillow reading the files back, numpy on the whole image for the
model's values (a 1x1 convolution: every window gives the pixel's own logits), a run
without interruption for the files' bytes, a hand-made partition of the input list.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp  # noqa: E402

from tests.zoo.test_infer_geo import (CRS, ROOT, TRANSFORM, _tiny_run, cheap_task,  # noqa: E402
                                      free_port, read, settings, write_geotiff)
from zoo.engine import segment_file as sf  # noqa: E402
from zoo.engine.rasters import open_image  # noqa: E402

CPU = torch.device("cpu")


def logits_of(x: np.ndarray, model: torch.nn.Module) -> np.ndarray:
    """The 1x1 conv's logits on a (3, H, W) float image, in float64 (the oracle)."""
    w = model.weight.detach().double().numpy()[:, :, 0, 0]
    b = model.bias.detach().double().numpy()
    return np.einsum("oc,chw->ohw", w, x.astype(np.float64)) + b[:, None, None]


def _cli(args, env_extra=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "zoo.infer", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---- data loss --------------------------------------------------------------------------


def test_same_name_in_two_folders_is_refused_naming_both(tmp_path, capsys):
    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 64, 64)
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        write_geotiff(tmp_path / folder / "tile.tif", 64, 64, seed=len(folder))
    code = main(args + [str(tmp_path / "A"), str(tmp_path / "B"), "--out",
                        str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "A" / "tile.tif") in err and str(tmp_path / "B" / "tile.tif") in err
    assert "--out" in err  # the fix
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_same_stem_with_two_suffixes_is_refused(tmp_path, capsys):
    from PIL import Image

    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 64, 64)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    write_geotiff(tmp_path / "x.tif", 64, 64, seed=2)
    code = main(args + [str(tmp_path / "x.png"), str(tmp_path / "x.tif"), "--out",
                        str(tmp_path / "out")])
    assert code == 2 and "x.png" in capsys.readouterr().err


def test_sharding_is_a_fixed_partition_of_the_inputs(tmp_path, monkeypatch):
    """Rank 0 runs first and finishes its images; rank 1 starts later, when those are done:
    it must still take its own share (every image segmented), not a share of what is left."""
    import zoo.core.distributed as distributed
    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 64, 64)
    names = [f"t{i}" for i in range(5)]
    for i, n in enumerate(names):
        write_geotiff(tmp_path / f"{n}.tif", 64, 64, seed=10 + i)
    inputs = [str(tmp_path / f"{n}.tif") for n in names]
    # the processes' check-in is tested on its own (below); here the ranks run one by one
    monkeypatch.setattr(distributed, "wait_for_ranks", lambda *a, **k: None, raising=False)
    out = tmp_path / "out"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(args + inputs + ["--out", str(out)]) == 0
        # oracle: image i belongs to rank i % 2
        want = {f"{n}_mask.tif" for i, n in enumerate(names) if i % 2 <= rank}
        assert {f for f in os.listdir(out) if f.endswith("_mask.tif")} == want


# ---- silently wrong ---------------------------------------------------------------------


def _write_bands(path, bands, interp, nodata=None, colormap=None, gcps=None):
    count = bands.shape[0]
    profile = dict(driver="GTiff", width=bands.shape[2], height=bands.shape[1], count=count,
                   dtype=str(bands.dtype), nodata=nodata)
    if gcps is None:
        profile.update(crs=CRS, transform=TRANSFORM)
    if colormap is not None:
        profile["photometric"] = "palette"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        if colormap is not None:
            dst.write_colormap(1, colormap)
        elif interp is not None:
            dst.colorinterp = interp
        if gcps is not None:
            dst.gcps = gcps


def test_bands_are_read_in_their_declared_colour_order(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (3, 20, 30), dtype=np.uint8)
    _write_bands(tmp_path / "bgr.tif", rgb[::-1].copy(),
                 [ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    with open_image(str(tmp_path / "bgr.tif")) as src:
        got = src.read(0, 0, 20, 30)
    assert torch.equal(got, torch.from_numpy(rgb).float() / 255)


def test_palette_geotiff_is_read_as_colours_as_read_image(tmp_path):
    from zoo.data.base import read_image

    rng = np.random.default_rng(4)
    idx = rng.integers(0, 4, (1, 24, 16), dtype=np.uint8)
    cmap = {0: (10, 20, 30, 255), 1: (200, 0, 0, 255), 2: (0, 250, 5, 255), 3: (1, 2, 255, 255)}
    _write_bands(tmp_path / "pal.tif", idx, None, colormap=cmap)
    with open_image(str(tmp_path / "pal.tif")) as src:
        got = src.read(0, 0, 24, 16)
    expect = np.stack([np.vectorize(lambda k, c=c: cmap[int(k)][c])(idx[0]) for c in range(3)])
    assert torch.equal(got, torch.from_numpy(expect.astype(np.float32)) / 255)
    assert torch.equal(got, read_image(str(tmp_path / "pal.tif")))  # training's reader


def _confident(model, scale=60.0):
    with torch.no_grad():
        model.weight.mul_(scale)
        model.bias.mul_(scale)
    return model


def test_probabilities_declare_no_nodata_and_gis_readers_see_every_valid_pixel(tmp_path):
    H, W = 300, 260
    img = write_geotiff(tmp_path / "s.tif", H, W, seed=6, nodata_box=(0, 0, 100, 90))
    task, model = cheap_task("eval.max_memory=0.001")
    _confident(model)
    sf.segment_file(task, model, str(tmp_path / "s.tif"), str(tmp_path / "out"),
                    settings(outputs=("probs",)), CPU)
    valid = img.any(0)
    with rasterio.open(tmp_path / "out" / "s_probs.tif") as ds:
        assert ds.nodata is None
        probs = ds.read(masked=True)
    assert (probs == 0).sum() > 0  # the case: 0 is a real probability here
    for band in probs:
        assert np.array_equal(~np.ma.getmaskarray(band), valid)
    l = logits_of(img.astype(np.float32) / 255, model)
    p1 = 1 / (1 + np.exp(l[0] - l[1]))
    assert np.abs(probs.data[1][valid] - 255 * p1[valid]).max() <= 0.5 + 1e-3


def test_valid_mask_comes_from_every_band_not_the_model_bands(tmp_path):
    """A 4-band file, nodata 0, whose R, G, B are 0 where band 4 holds data: those pixels
    are valid (GDAL's mask) and must get the model's class, not be skipped as empty."""
    H, W = 300, 300
    rng = np.random.default_rng(7)
    bands = rng.integers(1, 255, (4, H, W), dtype=np.uint8)
    bands[:3, :, :150] = 0  # left half: only band 4 has data
    _write_bands(tmp_path / "b4.tif", bands, None, nodata=0)
    task, model = cheap_task("eval.max_memory=0.001", "eval.window=[128, 128]",
                             "eval.window_overlap=16")
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.1, 0.3]))  # at RGB = 0 the model says class 1
    sf.segment_file(task, model, str(tmp_path / "b4.tif"), str(tmp_path / "out"),
                    settings(outputs=("tif",)), CPU)
    mask = read(tmp_path / "out" / "b4_mask.tif", 1)
    l = logits_of(bands[:3].astype(np.float32) / 255, model)
    sure = np.abs(l[1] - l[0]) > 1e-4
    expect = np.where(l[1] > l[0], 255, 0)
    assert np.array_equal(mask[sure], expect[sure])
    assert (mask[:, :150] == 255).all()


def test_gcp_georeferencing_is_carried_to_the_mask(tmp_path):
    from rasterio.control import GroundControlPoint

    rng = np.random.default_rng(8)
    gcps = [GroundControlPoint(row=r, col=c, x=440000.0 + c, y=5320000.0 - r)
            for r, c in ((0, 0), (0, 63), (47, 0), (47, 63))]
    _write_bands(tmp_path / "g.tif", rng.integers(0, 255, (3, 48, 64), dtype=np.uint8),
                 None, gcps=(gcps, rasterio.crs.CRS.from_string(CRS)))
    task, model = cheap_task()
    files = sf.segment_file(task, model, str(tmp_path / "g.tif"), str(tmp_path / "out"),
                            settings(), CPU)  # outputs auto: a georeferenced input -> tif
    assert [os.path.basename(f) for f in files] == ["g_mask.tif"]
    with rasterio.open(files[0]) as ds:
        got, crs = ds.gcps
    assert crs.to_string() == CRS
    assert [(p.row, p.col, p.x, p.y) for p in got] == [(p.row, p.col, p.x, p.y) for p in gcps]


# ---- the streaming API ------------------------------------------------------------------


class _Changing:
    """A reader whose windows after the first have another channel count or dtype."""

    def __init__(self, arr, later_channels=None, later_dtype=None):
        self.arr, self.image_size = arr, tuple(arr.shape[-2:])
        self.later_channels, self.later_dtype, self.calls = later_channels, later_dtype, 0

    def read(self, y0, x0, y1, x1):
        t = self.arr[:, y0:y1, x0:x1]
        self.calls += 1
        if self.calls > 1 and self.later_channels is not None:
            t = t[:1] if self.later_channels == 1 else torch.cat([t, t[:1]])
        if self.calls > 1 and self.later_dtype is not None:
            t = t.to(self.later_dtype)
        return t


@pytest.mark.parametrize("change", [dict(later_channels=1), dict(later_channels=4),
                                    dict(later_dtype=torch.float64)])
def test_a_reader_changing_channels_or_dtype_is_an_error(change):
    from uhrops import PatchGrid, sliding_window

    arr = torch.rand(3, 40, 40)
    grid = PatchGrid.from_stride((40, 40), 16, 12)
    with pytest.raises(ValueError, match="same channels and dtype"):
        sliding_window(lambda x: x.float()[:, :1].expand(-1, 1, -1, -1).clone(),
                       _Changing(arr, **change), grid, 2)


def test_rows_without_sink_returns_only_those_rows():
    from uhrops import PatchGrid, sliding_window
    from uhrops.tiling import TensorReader

    arr = torch.rand(2, 50, 30)
    grid = PatchGrid.from_stride((50, 30), 16, 10)
    fn = lambda x: torch.cat([x, x.square()], 1)  # noqa: E731
    full = sliding_window(fn, arr[None], grid, 3)  # the in-memory call: the oracle
    got = sliding_window(fn, TensorReader(arr), grid, 3, rows=(17, 41))
    assert got.shape == (1, 4, 24, 30)
    assert torch.equal(got, full[:, :, 17:41])


# ---- hangs and dead ends ----------------------------------------------------------------


def test_world_size_without_torchrun_is_an_immediate_error(tmp_path):
    args = _tiny_run(tmp_path, 64, 64)
    env = {"WORLD_SIZE": "2", "RANK": "0"}
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        env[k] = ""
    p = _cli(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "out")], env,
             timeout=120)
    assert p.returncode == 2 and "torchrun" in p.stderr and "WORLD_SIZE" in p.stderr


def test_a_missing_rank_is_announced_and_bounded_by_dist_timeout(tmp_path):
    args = _tiny_run(tmp_path, 64, 64) + ["--set", "train.dist_timeout=4"]
    t0 = time.monotonic()
    p = _cli(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "out")],
             {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": str(free_port())}, timeout=120)
    assert p.returncode != 0 and time.monotonic() - t0 < 100
    assert "waiting for rank(s) 1" in p.stderr and "dist_timeout" in p.stderr


def test_ranks_with_different_world_sizes_are_an_error(tmp_path):
    args = _tiny_run(tmp_path, 64, 64) + ["--set", "train.dist_timeout=60"]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.infer", *args,
                               str(tmp_path / "big.tif"), "--out", str(tmp_path / "out")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, **env,
                                       RANK=str(r), WORLD_SIZE=str(w)))
             for r, w in ((0, 2), (1, 3))]
    errs = []
    for p in procs:
        try:
            errs.append(p.communicate(timeout=120)[1])
        finally:
            p.kill()
    assert all(p.returncode == 2 for p in procs), errs
    assert any("WORLD_SIZE=2" in e and "has 3" in e for e in errs), errs


def test_a_damaged_band_file_is_recomputed(tmp_path, monkeypatch):
    H, W = 2100, 300
    write_geotiff(tmp_path / "a.tif", H, W, seed=11)
    task, model = cheap_task("eval.max_memory=0.001")
    st = settings(outputs=("tif", "probs"))
    ref = sf.segment_file(task, model, str(tmp_path / "a.tif"), str(tmp_path / "ref"), st, CPU)
    real_write = sf._Parts.write

    def dying_write(self, y0, *a):
        if y0 > 0:
            raise KeyboardInterrupt  # killed after the first band
        real_write(self, y0, *a)

    monkeypatch.setattr(sf._Parts, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        sf.segment_file(task, model, str(tmp_path / "a.tif"), str(tmp_path / "out"), st, CPU)
    monkeypatch.setattr(sf._Parts, "write", real_write)
    part = tmp_path / "out" / ".a.parts" / "0.part"
    part.write_bytes(part.read_bytes()[:-50])  # a copy cut short
    files = sf.segment_file(task, model, str(tmp_path / "a.tif"), str(tmp_path / "out"), st,
                            CPU)
    for a, b in zip(ref, files):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), os.path.basename(b)


def test_an_error_in_one_image_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    import zoo.cli.infer as cli

    args = _tiny_run(tmp_path, 64, 64)
    for n in ("a", "b", "c"):
        write_geotiff(tmp_path / f"{n}.tif", 64, 64, seed=ord(n))
    real = cli.infer_file

    def flaky(task, model, path, *a, **k):
        if os.path.basename(path) in ("a.tif", "c.tif"):
            raise RuntimeError("boom in " + path)  # not an OSError / ValueError
        return real(task, model, path, *a, **k)

    monkeypatch.setattr(cli, "infer_file", flaky)
    code = cli.main(args + [str(tmp_path / f"{n}.tif") for n in "abc"]
                    + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2  # two images failed
    assert os.path.exists(tmp_path / "out" / "b_mask.tif")
    assert "a.tif" in err and "c.tif" in err and "2 of 3" in err


def test_out_under_a_file_names_the_flag(tmp_path, capsys):
    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 64, 64)
    (tmp_path / "file").write_text("x")
    code = main(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "file" / "out")])
    assert code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.parametrize("sets,key", [
    (["eval.window_overlap=256", "eval.window=[256, 256]"], "eval.window_overlap"),
    (["eval.window_overlap=300", "eval.window=[256, 512]"], "eval.window_overlap"),
    (["eval.window=[256]"], "eval.window"),
    (["eval.window=[256, 256.5]"], "eval.window"),
    (["eval.max_merge_memory=0"], "eval.max_merge_memory"),
    (["eval.max_merge_memory=-1.5"], "eval.max_merge_memory"),
    (["train.iters=0"], "train.iters"),
    (["train.iters=-1"], "train.iters"),
])
def test_unusable_values_are_refused_naming_the_key(sets, key):
    from zoo.config import load_config
    from zoo.core.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config("quickstart", sets)
    assert "Fix" in str(info.value)


def test_train_iters_zero_creates_no_run_folder(tmp_path):
    p = subprocess.run([sys.executable, "-m", "zoo.train", "--config", "quickstart", "--set",
                        "train.iters=0", "--out", str(tmp_path / "runs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode != 0 and "train.iters" in p.stderr
    assert not (tmp_path / "runs").exists()


# ---- issue 32: resume progress, one mask convention -----------------------------------


def test_resumed_run_starts_its_progress_from_the_work_on_disk(tmp_path, monkeypatch):
    H, W = 2600, 200
    write_geotiff(tmp_path / "r.tif", H, W, seed=12)
    task, model = cheap_task("eval.max_memory=0.001")
    real_write = sf._Parts.write

    def dying_write(self, y0, *a):
        if y0 >= 2 * sf.BAND_ROWS:
            raise KeyboardInterrupt
        real_write(self, y0, *a)

    monkeypatch.setattr(sf._Parts, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        sf.segment_file(task, model, str(tmp_path / "r.tif"), str(tmp_path / "out"),
                        settings(outputs=("tif",)), CPU)
    monkeypatch.setattr(sf._Parts, "write", real_write)
    starts, steps = [], []
    st = settings(outputs=("tif",))
    st.start = lambda done, total, resumed: starts.append((done, total, resumed))
    st.progress = lambda px, msg: steps.append(px)
    sf.segment_file(task, model, str(tmp_path / "r.tif"), str(tmp_path / "out"), st, CPU)
    assert starts == [(2 * sf.BAND_ROWS * W, H * W, True)]
    assert sum(steps) == (H - 2 * sf.BAND_ROWS) * W  # only the new work is counted


def test_cli_says_it_is_resuming(tmp_path, monkeypatch, capsys):
    from zoo.cli.infer import main

    args = _tiny_run(tmp_path, 1200, 64)
    real_write = sf._Parts.write

    def dying_write(self, y0, *a):
        if y0 > 0:
            raise KeyboardInterrupt
        real_write(self, y0, *a)

    monkeypatch.setattr(sf._Parts, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        main(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "out")])
    monkeypatch.setattr(sf._Parts, "write", real_write)
    capsys.readouterr()
    assert main(args + [str(tmp_path / "big.tif"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and f"{sf.BAND_ROWS * 64 / 1e6:.1f} of {1200 * 64 / 1e6:.1f} Mpx" in err


def test_run_predictions_use_the_datasets_mask_values(tmp_path):
    """A run's predictions/ ``_mask.png`` for Inria holds 0/255, as the dataset's masks and
    zoo.infer's outputs (one value convention per dataset for every mask output)."""
    from PIL import Image

    from zoo.engine.predictions import write_mask_files

    pred = torch.tensor([[0, 1, 1], [1, 0, 0]])
    image = torch.rand(3, 2, 3)
    write_mask_files(str(tmp_path), "a", pred, image, ((0, 0, 0), (255, 255, 255)),
                     encoding="binary")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a_mask.png")), pred.numpy() * 255)
    write_mask_files(str(tmp_path), "b", pred, image, ((0, 0, 0), (255, 255, 255)))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b_mask.png")), pred.numpy())


def test_mask_only_outputs_stream_labels_not_logits(tmp_path, monkeypatch):
    """Writing masks only, zoo.infer asks the merge for labels (``sliding_window(argmax=True)``,
    issue 33): no logits band reaches the band writer, and the mask is byte-identical to the
    in-memory run's (logits merged whole, then argmax) and to the numpy oracle's argmax."""
    H, W = 700, 530
    img = write_geotiff(tmp_path / "s.tif", H, W, seed=11)
    seen: list[torch.dtype] = []
    real = sf._BandSink.__call__

    def spy(self, y0, band):
        seen.append(band.dtype)
        return real(self, y0, band)

    monkeypatch.setattr(sf._BandSink, "__call__", spy)
    masks = {}
    for mode, sets in (("memory", ["eval.sliding=true", "eval.max_memory=1000.0"]),
                       ("stream", ["eval.max_memory=0.001"])):
        task, model = cheap_task(*sets, "eval.window=[256, 256]")
        seen.clear()
        sf.segment_file(task, model, str(tmp_path / "s.tif"), str(tmp_path / mode),
                        settings(outputs=("tif",)), CPU)
        assert seen and all(d.is_floating_point for d in seen) == (mode == "memory"), mode
        masks[mode] = read(tmp_path / mode / "s_mask.tif", 1)
    assert not any(d.is_floating_point for d in seen)  # the streamed run: labels only
    assert np.array_equal(masks["memory"], masks["stream"])
    l = logits_of(img.astype(np.float32) / 255, cheap_task()[1])
    sure = np.abs(l[1] - l[0]) > 1e-4
    assert sure.mean() > 0.99
    assert np.array_equal(masks["stream"][sure], np.where(l[1] > l[0], 255, 0)[sure])


def test_wide_image_labels_merge_in_column_bands_within_max_merge_memory(tmp_path, monkeypatch):
    """The streamed labels merge's class accumulator is bounded by eval.max_merge_memory,
    widened to the narrowest band the window grid allows (never refused): a wide image is
    merged in column bands, and its mask is the in-memory run's and the numpy oracle's."""
    from uhrops.tiling import argmax as tiling_argmax

    H, W = 300, 1400
    img = write_geotiff(tmp_path / "w.tif", H, W, seed=12)
    cols: list[tuple[int, int] | None] = []
    real = tiling_argmax.run_streamed

    def spy(*args, **kw):
        cols.append(args[-1])  # run_streamed(..., rows, cols)
        return real(*args, **kw)

    monkeypatch.setattr(tiling_argmax, "run_streamed", spy)
    masks = {}
    for mode, sets in (("memory", ["eval.sliding=true", "eval.max_memory=1000.0"]),
                       ("stream", ["eval.max_memory=0.001", "eval.max_merge_memory=0.0002"])):
        task, model = cheap_task(*sets, "eval.window=[256, 256]")
        cols.clear()
        sf.segment_file(task, model, str(tmp_path / "w.tif"), str(tmp_path / mode),
                        settings(outputs=("tif",)), CPU)
        masks[mode] = read(tmp_path / mode / "w_mask.tif", 1)
    # 2 classes x 256 rows x 4 bytes a column: the whole width would take 2.9 MB
    assert len(set(cols)) > 2 and None not in cols
    assert max(b - a for a, b in cols) < W
    assert np.array_equal(masks["memory"], masks["stream"])
    l = logits_of(img.astype(np.float32) / 255, cheap_task()[1])
    sure = np.abs(l[1] - l[0]) > 1e-4
    assert np.array_equal(masks["stream"][sure], np.where(l[1] > l[0], 255, 0)[sure])
