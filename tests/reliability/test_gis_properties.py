"""zoo.infer and the streaming API under drawn GIS inputs (issue 29): the classes of input the
regression tests list one file of, drawn at random (few examples, tiny rasters: seconds).

Drawn: band orders and colour interpretations, palette images, nodata masks over extra bands,
duplicate stems in folder inputs, readers that change channels or dtype at a random window,
``rows`` with and without a sink, and random kill points in a sharded run followed by a
resume. Oracles, written here from the documented contract: colour lookups and band
selection in numpy, GDAL's nodata rule (a pixel is invalid when every band holds the
nodata value), the 1x1 model's logits in float64, the in-memory sliding_window call, and the
files of one uninterrupted process.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

rasterio = pytest.importorskip("rasterio")
from rasterio.enums import ColorInterp  # noqa: E402

from tests.zoo.test_infer_geo import cheap_task, read, write_geotiff  # noqa: E402
from tests.zoo.test_infer_geo import settings as infer_settings  # noqa: E402
from uhrops import PatchGrid, sliding_window  # noqa: E402
from uhrops.tiling import TensorReader  # noqa: E402
from zoo.engine import segment_file as sf  # noqa: E402
from zoo.engine.rasters import open_image  # noqa: E402

_HYP = dict(deadline=None, database=None, print_blob=True,
            suppress_health_check=list(HealthCheck))
CPU = torch.device("cpu")
NAMES = {"red": ColorInterp.red, "green": ColorInterp.green, "blue": ColorInterp.blue,
         "gray": ColorInterp.gray, "undefined": ColorInterp.undefined}


def _files(tmp_path_factory, tag):
    return tmp_path_factory.mktemp(tag)


@st.composite
def rasters(draw):
    """(bands (n, H, W) uint8, colour interpretations, nodata, palette or None)."""
    H, W = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()) and draw(st.booleans()):  # a palette image (1 band)
        k = draw(st.integers(2, 6))
        cmap = {i: tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,) for i in range(k)}
        return rng.integers(0, k, (1, H, W), dtype=np.uint8), None, None, cmap
    n = draw(st.integers(3, 5))
    bands = rng.integers(1, 256, (n, H, W), dtype=np.uint8)
    rgb_declared = draw(st.booleans())
    order = draw(st.permutations(range(n)))
    interp = ["undefined"] * n
    if rgb_declared:
        for name, pos in zip(("red", "green", "blue"), order[:3]):
            interp[pos] = name
    nodata = None
    if draw(st.booleans()):  # nodata 0 over a box, on the first three bands or on all
        nodata = 0
        y0, x0 = draw(st.integers(0, H - 1)), draw(st.integers(0, W - 1))
        y1, x1 = draw(st.integers(y0 + 1, H)), draw(st.integers(x0 + 1, W))
        upto = n if draw(st.booleans()) else 3
        bands[:upto, y0:y1, x0:x1] = 0
    return bands, interp, nodata, None


def _write(path, bands, interp, nodata, cmap):
    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype="uint8", nodata=nodata,
                       photometric="palette" if cmap else None,
                       crs="EPSG:32631",
                       transform=rasterio.transform.from_origin(440000, 5320000, 1, 1)) as dst:
        dst.write(bands)
        if cmap:
            dst.write_colormap(1, cmap)
        else:
            dst.colorinterp = [NAMES[c] for c in interp]


def _expected_rgb(bands, interp, cmap):
    """The contract: palette -> its colours; declared R, G, B -> those bands in that order;
    otherwise the first three bands."""
    if cmap:
        lut = np.zeros((256, 3), np.uint8)
        for k, v in cmap.items():
            lut[k] = v[:3]
        return lut[bands[0]].transpose(2, 0, 1)
    if all(c in interp for c in ("red", "green", "blue")):
        return bands[[interp.index(c) for c in ("red", "green", "blue")]]
    return bands[:3]


@settings(max_examples=12, **_HYP)
@given(case=rasters())
def test_drawn_rasters_read_as_their_colours_and_mask(tmp_path_factory, case):
    bands, interp, nodata, cmap = case
    path = _files(tmp_path_factory, "r") / "x.tif"
    _write(path, bands, interp, nodata, cmap)
    H, W = bands.shape[1:]
    with open_image(str(path)) as src:
        got = src.read(0, 0, H, W)
        valid = src.valid(0, H)
    assert torch.equal(got, torch.from_numpy(_expected_rgb(bands, interp, cmap)).float() / 255)
    # GDAL's nodata rule over every band
    expect_valid = np.ones((H, W), bool) if nodata is None else (bands != nodata).any(0)
    assert np.array_equal(np.ones((H, W), bool) if valid is None else valid, expect_valid)


@settings(max_examples=6, **_HYP)
@given(case=rasters().filter(lambda c: c[3] is None))
def test_drawn_rasters_segment_every_valid_pixel(tmp_path_factory, case):
    """The mask holds the model's class at every valid pixel (also where the model's bands
    are all nodata but another band has data) and nodata elsewhere."""
    bands, interp, nodata, cmap = case
    folder = _files(tmp_path_factory, "s")
    _write(folder / "x.tif", bands, interp, nodata, cmap)
    task, model = cheap_task("eval.max_memory=0.001", "eval.window=[16, 16]",
                             "eval.window_overlap=4")
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.1, 0.3]))  # class 1 at RGB = 0
    sf.segment_file(task, model, str(folder / "x.tif"), str(folder / "out"),
                    infer_settings(outputs=("tif", "probs")), CPU)
    mask = read(folder / "out" / "x_mask.tif", 1)
    x = _expected_rgb(bands, interp, cmap).astype(np.float64) / 255
    w = model.weight.detach().double().numpy()[:, :, 0, 0]
    b = model.bias.detach().double().numpy()
    logits = np.einsum("oc,chw->ohw", w, x) + b[:, None, None]
    valid = np.ones(mask.shape, bool) if nodata is None else (bands != nodata).any(0)
    sure = np.abs(logits[1] - logits[0]) > 1e-4
    assert np.array_equal(mask[valid & sure], np.where(logits[1] > logits[0], 255, 0)[valid & sure])
    with rasterio.open(folder / "out" / "x_mask.tif") as ds:
        assert (mask[~valid] == ds.nodata).all()
    with rasterio.open(folder / "out" / "x_probs.tif") as ds:
        assert ds.nodata is None
        assert np.array_equal(ds.dataset_mask() > 0, valid)


@settings(max_examples=30, **_HYP)
@given(stems=st.lists(st.tuples(st.sampled_from("AB"), st.sampled_from(["t1", "t2", "x"]),
                                st.sampled_from([".tif", ".png"])), min_size=1, max_size=6,
                      unique=True))
def test_drawn_duplicate_stems_are_all_found(stems):
    from zoo.cli.infer import duplicate_names

    files = [os.path.join(d, s + ext) for d, s, ext in stems]
    pairs = duplicate_names(files)
    seen: dict[str, int] = {}
    for _, s, _ in stems:
        seen[s] = seen.get(s, 0) + 1
    # oracle: every file beyond the first of its stem is named once, with the first
    assert len(pairs) == sum(c - 1 for c in seen.values())
    for a, b in pairs:
        assert os.path.splitext(os.path.basename(a))[0] == os.path.splitext(os.path.basename(b))[0]
        assert files.index(a) < files.index(b)


class _Reader:
    def __init__(self, arr, at, change):
        self.arr, self.image_size, self.at, self.change, self.calls = arr, arr.shape[-2:], at, change, 0

    def read(self, y0, x0, y1, x1):
        t = self.arr[:, y0:y1, x0:x1]
        self.calls += 1
        if self.calls > self.at:
            if self.change == "grey":
                t = t[:1]
            elif self.change == "alpha":
                t = torch.cat([t, torch.ones_like(t[:1])])
            elif self.change == "float64":
                t = t.double()
        return t


@settings(max_examples=20, **_HYP)
@given(H=st.integers(8, 40), W=st.integers(8, 40), patch=st.integers(4, 16),
       at=st.integers(1, 40), change=st.sampled_from(["grey", "alpha", "float64"]),
       seed=st.integers(0, 2**31 - 1))
def test_drawn_readers_changing_channels_or_dtype(H, W, patch, at, change, seed):
    arr = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))
    grid = PatchGrid.from_stride((H, W), min(patch, H, W), max(1, min(patch, H, W) // 2))
    fn = lambda x: x.float().sum(1, keepdim=True)  # noqa: E731
    reader = _Reader(arr, at, change)
    reads = len(grid)  # one read per window (no contexts)
    if at < reads:
        with pytest.raises(ValueError, match="same channels and dtype"):
            sliding_window(fn, reader, grid, 3)
    else:
        got = sliding_window(fn, reader, grid, 3)
        assert torch.equal(got, sliding_window(fn, arr[None], grid, 3))


@settings(max_examples=20, **_HYP)
@given(H=st.integers(4, 60), W=st.integers(4, 30), patch=st.integers(2, 20),
       stride=st.integers(1, 20), data=st.data(), sink=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_drawn_rows_with_and_without_sink(H, W, patch, stride, data, sink, seed):
    p = min(patch, H, W)
    grid = PatchGrid.from_stride((H, W), p, min(stride, p))
    r0 = data.draw(st.integers(0, H - 1))
    r1 = data.draw(st.integers(r0 + 1, H))
    arr = torch.rand(2, H, W, generator=torch.Generator().manual_seed(seed))
    fn = lambda x: torch.cat([x, x * x], 1)  # noqa: E731
    full = sliding_window(fn, arr[None], grid, 4)  # in memory: the oracle
    if sink:
        got = []
        assert sliding_window(fn, TensorReader(arr), grid, 4, rows=(r0, r1),
                              sink=lambda y, b: got.append((y, b.clone()))) is None
        assert [y for y, _ in got][0] == r0
        rows = torch.cat([b for _, b in got], 2)
        assert [y for y, _ in got] == list(np.cumsum([r0] + [b.shape[2] for _, b in got])[:-1])
    else:
        rows = sliding_window(fn, TensorReader(arr), grid, 4, rows=(r0, r1))
    assert rows.shape == (1, 4, r1 - r0, W)
    assert torch.equal(rows, full[:, :, r0:r1])


class Killed(Exception):
    pass


def _run_ranks(task, model, image, out, world, kill):
    """Every rank of a band-sharing run of ``image`` in its own thread; ``kill`` = (rank,
    k): that rank dies before writing its k-th band. Returns the errors by rank."""
    errors: dict[int, BaseException] = {}
    written = {r: 0 for r in range(world)}
    lock = threading.Lock()
    real_write = sf._Parts.write
    who = threading.local()

    def write(self, *a):
        r = getattr(who, "rank", 0)
        with lock:
            if kill is not None and r == kill[0] and written[r] == kill[1]:
                raise Killed()
            written[r] += 1
        real_write(self, *a)

    def body(r):
        who.rank = r
        try:
            st_ = infer_settings(outputs=("tif", "probs"), rank=r, world=world,
                                 wait_timeout_s=1.5)
            sf.segment_file(task, model, image, out, st_, CPU)
        except BaseException as exc:  # noqa: BLE001 - recorded, asserted by the caller
            errors[r] = exc

    sf._Parts.write = write
    try:
        threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sf._Parts.write = real_write
    return errors


@settings(max_examples=3, **_HYP)
@given(world=st.integers(2, 3), kill_rank=st.integers(0, 2), kill_at=st.integers(0, 1))
def test_drawn_kill_in_a_sharded_run_then_resume_gives_the_files_of_one(
        tmp_path_factory, world, kill_rank, kill_at):
    folder = _files(tmp_path_factory, "k")
    H, W = 3 * sf.BAND_ROWS + 70, 40  # 4 bands
    write_geotiff(folder / "a.tif", H, W, seed=world * 7 + kill_at)
    task, model = cheap_task("eval.max_memory=0.001", "eval.window=[256, 256]",
                             "eval.window_overlap=32")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in every thread and in the reference
    try:
        ref = sf.segment_file(task, model, str(folder / "a.tif"), str(folder / "one"),
                              infer_settings(outputs=("tif", "probs")), CPU)
        r = kill_rank % world
        share = (4 * (r + 1)) // world - (4 * r) // world  # the rank's bands (of 4)
        errors = _run_ranks(task, model, str(folder / "a.tif"), str(folder / "out"), world,
                            (r, kill_at % share))
        assert isinstance(errors.get(r), Killed), errors
        assert not os.path.exists(folder / "out" / "a_mask.tif")  # no file from a dead run
        errors = _run_ranks(task, model, str(folder / "a.tif"), str(folder / "out"), world,
                            None)
        assert not errors, errors
    finally:
        torch.set_num_threads(prev)
    for a in ref:
        with open(a, "rb") as fa, open(folder / "out" / os.path.basename(a), "rb") as fb:
            assert fa.read() == fb.read(), os.path.basename(a)
