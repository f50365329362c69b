"""Issue 32's small messages: grey and 4-band images fed to RGB models are converted with a
one-time warning that says what was done and the fix; loader workers are clamped to the
cores (PyTorch's own rule is the oracle)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import zoo.data.base as base
from zoo.data.base import read_image
from zoo.engine.trainer import loader_workers


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(base, "_WARNED", set())


def test_grey_image_is_repeated_with_one_warning(tmp_path, fresh_warnings):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (9, 7), np.uint8)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"g{i}.png"))
        Image.fromarray(grey).save(paths[-1])
    with pytest.warns(UserWarning) as record:
        first = read_image(paths[0])
        second = read_image(paths[1])
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1, msgs  # once, not per file
    assert paths[0] in msgs[0] and "grey" in msgs[0] and "repeated into R, G and B" in msgs[0]
    assert "Fix:" in msgs[0] and "RGB" in msgs[0]
    expected = torch.from_numpy(grey.astype(np.float32) / 255.0).expand(3, -1, -1)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_rgba_and_four_band_images_warn_naming_the_band_dropped(tmp_path, fresh_warnings):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 5, 4), np.uint8)
    path = str(tmp_path / "a.png")
    Image.fromarray(rgba, "RGBA").save(path)
    with pytest.warns(UserWarning, match="4-band RGBA image: its alpha band is left out") \
            as record:
        out = read_image(path)
    assert "Fix:" in str(record[0].message) and "gdal_translate -b 1 -b 2 -b 3" in \
        str(record[0].message)
    assert torch.equal(out, torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0)
                       .permute(2, 0, 1))
    # an RGB image says nothing
    rgb = str(tmp_path / "c.png")
    Image.fromarray(rgba[..., :3]).save(rgb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(rgb)


@pytest.mark.parametrize("cores,requested,expected", [(2, 4, 2), (2, 0, 0), (8, 4, 4),
                                                      (1, 2, 1)])
def test_loader_workers_clamp_to_the_cores(monkeypatch, cores, requested, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    n = loader_workers(requested)
    assert n == expected
    # PyTorch's own rule (the warning issue 32 saw on 2 cores) is silent for the clamped count
    loader = torch.utils.data.DataLoader(list(range(4)), num_workers=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.check_worker_number_rationality()
    if requested > cores:
        with pytest.warns(UserWarning, match="worker"):
            torch.utils.data.DataLoader(list(range(4)), num_workers=requested) \
                .check_worker_number_rationality()


def _resampled_inria_mask(rng) -> np.ndarray:
    """A 0/255 building mask shrunk with bilinear interpolation (PIL), as a user resampling
    Inria tiles would: grey values appear along the building edges."""
    big = np.zeros((64, 64), np.uint8)
    big[10:40, 13:50] = 255
    big[45:60, 5:20] = 255
    small = np.asarray(Image.fromarray(big).resize((27, 23), Image.BILINEAR))
    assert len(set(np.unique(small).tolist()) - {0, 255}) > 3  # the premise
    return small


@pytest.mark.parametrize("like", [None, "inria"])
def test_resampled_binary_mask_names_the_repair(tmp_path, like):
    from zoo.config import load_config
    from zoo.core.errors import DataFileError
    from zoo.data.registry import build_dataset

    rng = np.random.default_rng(2)
    for kind in ("images", "masks"):
        (tmp_path / "train" / kind).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (23, 27, 3), np.uint8)).save(
        tmp_path / "train" / "images" / "t1.png")
    Image.fromarray(_resampled_inria_mask(rng)).save(tmp_path / "train" / "masks" / "t1.png")
    sets = ["data.dataset=folder", f"data.root={tmp_path}", "model.num_classes=2"]
    if like:
        sets.append(f"data.like={like}")
    ds = build_dataset(load_config("quickstart", sets), "train")
    with pytest.raises(DataFileError) as info:
        ds[0]
    msg = str(info.value)
    assert "resampled with interpolation" in msg and "t1.png" in msg
    assert "nearest-neighbour" in msg and "threshold this one at 128" in msg
    # not the misleading advice issue 32 saw
    assert "class 0 and 'ignore'" not in msg and "mask_encoding=binary" not in msg


def _partial_deepglobe(root) -> list[str]:
    """Two DeepGlobe pairs whose ids are in the shipped train list (a partial download)."""
    from zoo.data.deepglobe import PALETTE, split_ids

    ids = split_ids("train")[:2]
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(root / f"{i}_sat.jpg")
        mask = np.asarray(PALETTE, np.uint8)[rng.integers(0, len(PALETTE), (12, 10))]
        Image.fromarray(mask).save(root / f"{i}_mask.png")
    return ids


def test_split_with_only_other_splits_present_names_split_files(tmp_path):
    from zoo.core.errors import DataNotFoundError
    from zoo.data.deepglobe import DeepGlobe

    ids = _partial_deepglobe(tmp_path / "dg")
    with pytest.raises(DataNotFoundError) as info:
        DeepGlobe(str(tmp_path / "dg"), split="val")
    msg = str(info.value)
    assert "--set data.split_files.val=FILE" in msg and "data.split_files.train" in msg
    assert "2 image/mask pair(s) of other splits" in msg and ids[0] in msg
    # the ids it suggests listing are read
    assert len(DeepGlobe(str(tmp_path / "dg"), split="val", ids=[ids[1]])) == 1


def test_data_check_takes_the_split_options_of_training(tmp_path, capsys):
    from zoo.data.check import main as check_main

    ids = _partial_deepglobe(tmp_path / "dg")
    (tmp_path / "val.txt").write_text(ids[1] + "\n")
    root = str(tmp_path / "dg")
    assert check_main([root, "--dataset", "deepglobe", "--splits", "val"]) == 1
    assert "data.split_files.val" in capsys.readouterr().out
    assert check_main([root, "--dataset", "deepglobe", "--splits", "val", "--set",
                       f"data.split_files.val={tmp_path / 'val.txt'}"]) == 0
    out = capsys.readouterr().out
    assert "val: 1 pairs found / 1 expected" in out and out.rstrip().endswith("OK")
    assert check_main([root, "--dataset", "deepglobe", "--set", "train.iters=3"]) == 2
    err = capsys.readouterr().err
    assert "train.iters=3" in err and "Fix: e.g. --set data.split_files.val=" in err


def test_fctl_step_reports_progress_inside_the_step(capsys, monkeypatch):
    """A long FCtL step (minutes per image on a CPU) prints patches done and an ETA while it
    runs; the counts are checked against the released grid rule worked out by hand."""
    from tests.zoo.test_fctl_pipeline import Probe
    from zoo.config import load_config
    from zoo.engine.families import make_task
    from zoo.engine.fctl_task import FCtLTask

    monkeypatch.setattr(FCtLTask, "progress_every_s", 0.0)  # a line after every sub-batch
    cfg = load_config("fctl_deepglobe_medium", [
        "fctl.patch_size=16", "fctl.min_overlap=4", "fctl.sub_batch=4",
        "model.pretrained=none"])
    task = make_task(cfg)
    model = Probe(7, "deepglobe", "single_context")
    images, masks = torch.rand(2, 3, 40, 40), torch.randint(0, 7, (2, 40, 40))
    # the released get_patch_info on 40 px, patch 16, overlap >= 4: n = 3 per side
    n = 3 * 3 * 2
    task.step(model, task.build_loss(), images, masks, lambda: torch.autocast("cpu",
                                                                              enabled=False))
    lines = [s for s in capsys.readouterr().err.splitlines() if "step:" in s]
    done = [int(s.split("step: ")[1].split("/")[0]) for s in lines]
    assert done == [4, 8, 9, 13, 17], lines  # sub-batches of 4 per image of 9 patches
    assert all(f"/{n} patches" in s and "s/patch" in s and "ETA" in s for s in lines)


def _step_lines(capsys) -> list[str]:
    return [s for s in capsys.readouterr().err.splitlines() if "zoo.train: step:" in s]


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_fctl_global_stage_reports_images_inside_the_step(capsys, monkeypatch):
    """DeepGlobe's global stage runs one whole (shrunk) image at a time: its lines count
    images, one after each image but the last (the step's own log line follows it)."""
    from tests.zoo.test_fctl_pipeline import Probe
    from zoo.config import load_config
    from zoo.engine.families import make_task
    from zoo.engine.fctl_task import FCtLTask

    monkeypatch.setattr(FCtLTask, "progress_every_s", 0.0)
    cfg = load_config("fctl_deepglobe_global", ["fctl.patch_size=16", "model.pretrained=none"])
    task = make_task(cfg)
    images, masks = torch.rand(3, 3, 40, 36), torch.randint(0, 7, (3, 40, 36))
    task.step(Probe(7, "deepglobe", "global"), task.build_loss(), images, masks, _no_autocast)
    lines = _step_lines(capsys)
    assert [int(s.split("step: ")[1].split("/")[0]) for s in lines] == [1, 2], lines
    assert all("/3 images" in s and "s/image" in s and "ETA" in s for s in lines)


def test_fctl_refine_stage_reports_patches_inside_the_step(capsys, monkeypatch):
    """The refine stage (CSRN on crude masks) reports like the local stages: patches done of
    the step's total after every sub-batch; the counts come from the released grid rule
    (tests.zoo.test_fctl_pipeline.starts), not from the task."""
    from tests.zoo.test_fctl_pipeline import starts
    from zoo.config import load_config
    from zoo.engine.families import make_task
    from zoo.engine.fctl_task import FCtLTask

    monkeypatch.setattr(FCtLTask, "progress_every_s", 0.0)
    cfg = load_config("fctl_deepglobe_refine", [
        "data.dataset=synthetic", "fctl.patch_size=16", "fctl.min_overlap=4",
        "fctl.sub_batch=3", "model.kwargs={context_scale: 1.5, width: 4, depth: 2}",
        "model.num_classes=3", "train.device=cpu", "data.num_workers=0"])
    task = make_task(cfg)
    torch.manual_seed(0)
    crude = torch.log_softmax(torch.randn(2, 3, 24, 40), 1)
    masks = torch.randint(0, 3, (2, 24, 40))
    task.step(task.build_model(), task.build_loss(), crude, masks, _no_autocast)
    per_image = len(starts(24, 16, 4)) * len(starts(40, 16, 4))
    expected, done = [], 0
    for _ in range(2):
        for part in range(0, per_image, 3):
            done += min(3, per_image - part)
            expected.append(done)
    lines = _step_lines(capsys)
    assert [int(s.split("step: ")[1].split("/")[0]) for s in lines] == expected[:-1], lines
    assert all(f"/{2 * per_image} patches" in s and "ETA" in s for s in lines)


def test_step_progress_is_silent_on_other_ranks(capsys, monkeypatch):
    """Only rank 0 prints (every rank runs the same step)."""
    from zoo.core import distributed as dist_utils
    from zoo.engine.fctl_task import StepProgress

    monkeypatch.setattr(dist_utils, "world", lambda: (1, 2))
    quiet = StepProgress(10, "patches", every_s=0.0)
    quiet.add(3)
    monkeypatch.setattr(dist_utils, "world", lambda: (0, 2))
    loud = StepProgress(10, "patches", every_s=0.0)
    loud.add(3)
    lines = _step_lines(capsys)
    assert len(lines) == 1 and "3/10 patches" in lines[0]


def _geotiff(path, bands: np.ndarray, colorinterp=None) -> str:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=bands.shape[2], height=bands.shape[1],
                       count=bands.shape[0], dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(500000, 4000000, 1, 1)) as dst:
        dst.write(bands)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return str(path)


def test_geotiff_grey_and_extra_bands_warn_once_as_the_pillow_reader(tmp_path, fresh_warnings):
    """zoo.infer's GDAL reader says what the Pillow reader says: a grey GeoTIFF is repeated
    into R, G, B and a 4-band one loses band 4, each with one warning naming it and the fix;
    the pixels the model gets are the file's (numpy oracle); declared RGB + alpha is quiet."""
    pytest.importorskip("rasterio")
    from rasterio.enums import ColorInterp

    from zoo.engine.rasters import open_image

    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (1, 9, 7), np.uint8)
    paths = [_geotiff(tmp_path / f"g{i}.tif", grey) for i in range(2)]
    with pytest.warns(UserWarning) as record:
        for p in paths:
            with open_image(p) as src:
                got = src.read(0, 0, 9, 7)
    msgs = [str(r.message) for r in record if "grey" in str(r.message)]
    assert len(msgs) == 1 and paths[0] in msgs[0] and "repeated into R, G and B" in msgs[0]
    assert "Fix:" in msgs[0]
    assert torch.equal(got, torch.from_numpy(np.repeat(grey, 3, 0).astype(np.float32) / 255))

    four = rng.integers(0, 256, (4, 6, 5), np.uint8)
    path = _geotiff(tmp_path / "nir.tif", four, [ColorInterp.undefined] * 4)
    with pytest.warns(UserWarning, match="4-band image: band 4 is left out, and bands 1-3 "
                                         "are read as R, G, B") as record:
        with open_image(path) as src:
            got = src.read(0, 0, 6, 5)
    assert "gdal_translate -b 1 -b 2 -b 3" in str(record[0].message)
    assert torch.equal(got, torch.from_numpy(four[:3].astype(np.float32) / 255))

    rgba = _geotiff(tmp_path / "rgba.tif", four, [ColorInterp.red, ColorInterp.green,
                                                  ColorInterp.blue, ColorInterp.alpha])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(rgba) as src:
            src.read(0, 0, 6, 5)
