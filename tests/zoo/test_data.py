"""Datasets, mask conversion, file errors and `python -m zoo.data.check`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.data import (URUR, DataFileError, DeepGlobe, ImageFolderSegmentation, InriaAerial,
                      index_to_rgb, read_image, rgb_to_index)
from zoo.data import check
from zoo.data.deepglobe import split_ids as dg_split_ids
from zoo.data.inria import split_ids as inria_split_ids

DG_PALETTE = {(0, 0, 0): 0, (0, 255, 255): 1, (255, 255, 0): 2, (255, 0, 255): 3,
              (0, 255, 0): 4, (0, 0, 255): 5, (255, 255, 255): 6}


def naive_rgb_to_index(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel loop: binarise each channel at 128, look the colour up (else 0)."""
    out = np.zeros(rgb.shape[:2], dtype=np.int64)
    for i in range(rgb.shape[0]):
        for j in range(rgb.shape[1]):
            key = tuple(255 if v >= 128 else 0 for v in rgb[i, j].tolist())
            out[i, j] = DG_PALETTE.get(key, 0)
    return out


def write_rgb(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_mask(path, arr):
    Image.fromarray(np.asarray(arr).astype(np.uint8)).save(path)


# --- split lists -------------------------------------------------------------------------

def test_split_lists_shipped():
    tr, va, te = dg_split_ids("train"), dg_split_ids("val"), dg_split_ids("test")
    assert (len(tr), len(va), len(te)) == (454, 207, 142)
    assert len(set(tr) | set(va) | set(te)) == 803
    tr, va, te = inria_split_ids("train"), inria_split_ids("val"), inria_split_ids("test")
    assert (len(tr), len(va), len(te)) == (126, 27, 27)
    assert len(set(tr) | set(va) | set(te)) == 180
    cities = {x.rstrip("0123456789") for x in tr + va + te}
    assert cities == {"austin", "chicago", "kitsap", "tyrol-w", "vienna"}
    with pytest.raises(ValueError, match="split"):
        dg_split_ids("crossval")


# --- DeepGlobe colour masks ---------------------------------------------------------------

class TestDeepGlobeMasks:
    @settings(max_examples=20, deadline=None)
    @given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2 ** 32 - 1))
    def test_rgb_to_index_vs_loop(self, h, w, seed):
        rng = np.random.default_rng(seed)
        # colours near the thresholds and palette colours
        rgb = rng.choice(np.array([0, 60, 127, 128, 129, 200, 255], dtype=np.uint8),
                         size=(h, w, 3))
        np.testing.assert_array_equal(rgb_to_index(rgb), naive_rgb_to_index(rgb))
        t = rgb_to_index(torch.from_numpy(rgb))
        assert t.dtype == torch.int64
        np.testing.assert_array_equal(t.numpy(), naive_rgb_to_index(rgb))

    def test_round_trip(self):
        idx = np.arange(7).reshape(1, 7)
        rgb = index_to_rgb(idx)
        assert [tuple(c) for c in rgb[0].tolist()] == list(DG_PALETTE)
        np.testing.assert_array_equal(rgb_to_index(rgb), idx)
        assert index_to_rgb(np.array([255])).tolist() == [[0, 0, 0]]
        with pytest.raises(ValueError, match="channels-last"):
            rgb_to_index(np.zeros((3, 4, 4), np.uint8))

    def test_real_masks_documented_fractions(self, shared_data):
        # shared/data/README.md: 855 mostly water (82%) and forest (13%); 10901 barren (61%)
        # and urban (39%)
        root = os.path.join(shared_data, "deepglobe")
        ds = DeepGlobe(root, ids=["855", "10901"])
        assert ds.ids == ["855", "10901"]
        expect = {"855": {5: 0.82, 4: 0.13}, "10901": {6: 0.61, 1: 0.39}}
        for i in range(2):
            s = ds[i]
            assert s["image"].shape == (3, 2448, 2448) and s["mask"].shape == (2448, 2448)
            frac = torch.bincount(s["mask"].flatten(), minlength=7).double() / s["mask"].numel()
            for k, f in expect[s["id"]].items():
                assert abs(float(frac[k]) - f) < 0.01, (s["id"], k, float(frac[k]))
            # a random subset of pixels against the per-pixel loop oracle
            raw = np.asarray(Image.open(os.path.join(root, f"{s['id']}_mask.png")))
            rng = np.random.default_rng(0)
            ys, xs = rng.integers(0, 2448, 300), rng.integers(0, 2448, 300)
            np.testing.assert_array_equal(s["mask"].numpy()[ys, xs],
                                          naive_rgb_to_index(raw[ys, xs][None])[0])

    def test_real_image_decoding(self, shared_data):
        import cv2
        path = os.path.join(shared_data, "deepglobe", "855_sat.jpg")
        img = read_image(path)
        ref = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
        diff = np.abs(img.permute(1, 2, 0).numpy() - ref)
        assert diff.mean() < 1.5 / 255  # JPEG decoders may differ by an LSB


# --- Inria --------------------------------------------------------------------------------

class TestInria:
    def test_real_geotiff_crop(self, shared_data):
        import cv2
        root = os.path.join(shared_data, "inria")
        ds = InriaAerial(root, ids=["austin_crop"])
        s = ds[0]
        assert s["image"].shape == (3, 1000, 1000) and s["mask"].shape == (1000, 1000)
        assert set(s["mask"].unique().tolist()) == {0, 1}
        # Pillow reads the uncompressed GeoTIFFs exactly (OpenCV as the oracle)
        ref = cv2.imread(os.path.join(root, "austin_crop_sat.tif"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal((s["image"] * 255).round().byte().permute(1, 2, 0).numpy(),
                                      ref[:, :, ::-1])
        gt = cv2.imread(os.path.join(root, "austin_crop_gt.tif"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(s["mask"].numpy(), (gt == 255).astype(np.int64))
        assert ds.exclude_from_mean == (0,) and ds.num_classes == 2

    def test_official_layout_and_split(self, tmp_path):
        ids = inria_split_ids("val")
        (tmp_path / "train" / "images").mkdir(parents=True)
        (tmp_path / "train" / "gt").mkdir()
        for i, sid in enumerate(ids):
            write_rgb(tmp_path / "train" / "images" / f"{sid}.tif", 6, 5, i)
            write_mask(tmp_path / "train" / "gt" / f"{sid}.tif", np.full((6, 5), 255 * (i % 2)))
        ds = InriaAerial(str(tmp_path), split="val")
        assert len(ds) == 27
        assert set(ds[1]["mask"].unique().tolist()) == {1}
        assert set(ds[0]["mask"].unique().tolist()) == {0}
        with pytest.raises(FileNotFoundError, match="126 ids"):
            InriaAerial(str(tmp_path), split="train")

    def test_fctl_layout(self, tmp_path):
        d = tmp_path / "crossvali"
        (d / "Sat").mkdir(parents=True)
        (d / "Label").mkdir()
        write_rgb(d / "Sat" / "chicago24_sat.tif", 4, 4)
        m = np.array([[0, 1, 1, 255]] * 4)
        write_mask(d / "Label" / "chicago24_mask.png", m)
        s = InriaAerial(str(tmp_path), ids=["chicago24_sat.tif"])[0]
        assert s["mask"].tolist() == m.tolist()  # 0/1 with 255 kept as ignore

    def test_bad_mask_values(self, tmp_path):
        write_rgb(tmp_path / "a_sat.tif", 4, 4)
        write_mask(tmp_path / "a_mask.png", np.full((4, 4), 7))
        ds = InriaAerial(str(tmp_path), ids=["a"])
        with pytest.raises(DataFileError, match="a_mask.png"):
            ds[0]


# --- DeepGlobe layouts and errors --------------------------------------------------------

class TestDeepGlobeFiles:
    def test_flat_and_glnet_layouts(self, tmp_path):
        ids = dg_split_ids("test")
        flat = tmp_path / "flat"
        flat.mkdir()
        for i, sid in enumerate(ids):
            write_rgb(flat / f"{sid}_sat.jpg", 4, 6, i)
            write_mask(flat / f"{sid}_mask.png", np.zeros((4, 6, 3)))
        ds = DeepGlobe(str(flat), split="test")
        assert len(ds) == 142 and ds.ids == ids
        s = ds[0]
        assert s["image"].dtype == torch.float32 and s["mask"].dtype == torch.int64
        glnet = tmp_path / "glnet" / "offical_crossvali"
        (glnet / "Sat").mkdir(parents=True)
        (glnet / "Label").mkdir()
        write_rgb(glnet / "Sat" / f"{ids[0]}_sat.jpg", 4, 6)
        write_mask(glnet / "Label" / f"{ids[0]}_mask.png", np.full((4, 6), 3))  # index mask
        with pytest.raises(FileNotFoundError, match="141 of the 142"):
            DeepGlobe(str(tmp_path / "glnet"), split="test")
        ds = DeepGlobe(str(tmp_path / "glnet"), split="test", missing="skip")
        assert len(ds) == 1 and (ds[0]["mask"] == 3).all()
        # the same id under two layouts is ambiguous
        with pytest.raises(DataFileError, match="2 image files"):
            DeepGlobe(str(tmp_path), ids=[ids[0]])

    def test_transform_applied(self, tmp_path):
        write_rgb(tmp_path / "1_sat.jpg", 4, 6)
        write_mask(tmp_path / "1_mask.png", np.zeros((4, 6, 3)))
        ds = DeepGlobe(str(tmp_path), ids=["1"], transform=lambda s: {**s, "id": "seen"})
        assert ds[0]["id"] == "seen"

    def test_errors_name_the_path(self, tmp_path):
        missing = tmp_path / "nope"
        with pytest.raises(FileNotFoundError, match="nope"):
            DeepGlobe(str(missing))
        (tmp_path / "empty").mkdir()
        with pytest.raises(FileNotFoundError, match="no image/mask pairs"):
            DeepGlobe(str(tmp_path / "empty"), split="val")
        with pytest.raises(ValueError, match="missing"):
            DeepGlobe(str(tmp_path / "empty"), missing="maybe")
        # size mismatch
        write_rgb(tmp_path / "1_sat.jpg", 4, 6)
        write_mask(tmp_path / "1_mask.png", np.zeros((5, 6, 3)))
        with pytest.raises(DataFileError, match=r"1_sat\.jpg.*1_mask\.png"):
            DeepGlobe(str(tmp_path), ids=["1"])[0]
        # undecodable files
        write_mask(tmp_path / "2_mask.png", np.zeros((4, 6, 3)))
        (tmp_path / "2_sat.jpg").write_bytes(b"not a jpeg at all")
        with pytest.raises(DataFileError, match="2_sat.jpg"):
            DeepGlobe(str(tmp_path), ids=["2"])[0]
        write_rgb(tmp_path / "3_sat.jpg", 40, 60)
        data = (tmp_path / "3_sat.jpg").read_bytes()
        (tmp_path / "3_sat.jpg").write_bytes(data[: len(data) // 2])  # truncated
        write_mask(tmp_path / "3_mask.png", np.zeros((40, 60, 3)))
        with pytest.raises(DataFileError, match="3_sat.jpg"):
            DeepGlobe(str(tmp_path), ids=["3"])[0]


# --- URUR and folders --------------------------------------------------------------------

class TestURUR:
    def make(self, root, split="val", n=3, label=None):
        (root / split / "image").mkdir(parents=True)
        (root / split / "label").mkdir(parents=True)
        for i in range(n):
            write_rgb(root / split / "image" / f"img{i}.png", 5, 7, i)
            lab = np.full((5, 7), i) if label is None else label
            Image.fromarray(np.asarray(lab).astype(np.uint8)).save(
                root / split / "label" / f"img{i}.png")

    def test_layout(self, tmp_path):
        self.make(tmp_path)
        ds = URUR(str(tmp_path), split="val")
        assert len(ds) == 3 and ds.num_classes == 8 and ds.exclude_from_mean == ()
        assert ds.CLASSES[0] == "others" and ds.CLASSES[7] == "road"
        assert (ds[2]["mask"] == 2).all()
        with pytest.raises(FileNotFoundError, match="'train'"):
            URUR(str(tmp_path), split="train")
        with pytest.raises(ValueError, match="split"):
            URUR(str(tmp_path), split="dev")

    def test_colour_labels_and_bad_values(self, tmp_path):
        from zoo.data.urur import PALETTE
        lab = np.array([[PALETTE[7], PALETTE[1]]], dtype=np.uint8)
        self.make(tmp_path, n=1, label=lab)
        (tmp_path / "val" / "image" / "img0.png").unlink()
        write_rgb(tmp_path / "val" / "image" / "img0.png", 1, 2)
        assert URUR(str(tmp_path), "val")[0]["mask"].tolist() == [[7, 1]]
        bad = tmp_path / "b"
        self.make(bad, n=1, label=np.full((5, 7), 9))
        with pytest.raises(DataFileError, match="img0.png"):
            URUR(str(bad), "val")[0]
        off = tmp_path / "c"
        self.make(off, n=1, label=np.full((5, 7, 3), 17))
        with pytest.raises(DataFileError, match="outside the palette"):
            URUR(str(off), "val")[0]


class TestImageFolder:
    def test_pairs_and_palette(self, tmp_path):
        (tmp_path / "im").mkdir()
        (tmp_path / "ma").mkdir()
        write_rgb(tmp_path / "im" / "a_sat.jpg", 4, 4)
        write_rgb(tmp_path / "im" / "b.png", 4, 4)
        pal = [(0, 0, 0), (10, 20, 30), (200, 100, 0)]
        m = np.array([[pal[2]] * 4] * 4, dtype=np.uint8)
        m[0, 0] = (9, 9, 9)
        Image.fromarray(m).save(tmp_path / "ma" / "a_mask.png")
        Image.fromarray(np.full((4, 4, 3), 10, np.uint8)).save(tmp_path / "ma" / "b_label.png")
        ds = ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 3, palette=pal,
                                     ignore_color=(9, 9, 9), exclude_from_mean=(0,))
        assert ds.ids == ["a", "b"] and ds.exclude_from_mean == (0,)
        mask = ds[0]["mask"]
        assert int(mask[0, 0]) == 255 and int(mask[1, 1]) == 2
        with pytest.raises(DataFileError, match="b_label.png"):
            ds[1]  # (10, 10, 10) is not in the palette

    def test_index_masks_and_errors(self, tmp_path):
        (tmp_path / "im").mkdir()
        (tmp_path / "ma").mkdir()
        write_rgb(tmp_path / "im" / "a.png", 4, 4)
        write_mask(tmp_path / "ma" / "a.png", np.full((4, 4), 2))
        ds = ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 3)
        assert (ds[0]["mask"] == 2).all() and len(ds.PALETTE) == 3
        with pytest.raises(DataFileError, match="outside the classes"):
            ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 2)[0]
        write_rgb(tmp_path / "im" / "c.png", 4, 4)
        with pytest.raises(FileNotFoundError, match="no mask"):
            ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 3)
        assert len(ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 3,
                                           missing="skip")) == 1
        with pytest.raises(ValueError, match="palette"):
            ImageFolderSegmentation(str(tmp_path / "im"), str(tmp_path / "ma"), 3,
                                    palette=[(0, 0, 0)])
        with pytest.raises(FileNotFoundError, match="zzz"):
            ImageFolderSegmentation(str(tmp_path / "zzz"), str(tmp_path / "ma"), 3)


# --- python -m zoo.data.check --------------------------------------------------------------

def test_check_cli(tmp_path, capsys):
    ids = inria_split_ids("test")
    for i, sid in enumerate(ids):
        write_rgb(tmp_path / f"{sid}_sat.tif", 6, 6, i)
        write_mask(tmp_path / f"{sid}_mask.png", np.eye(6))
    assert check.main([str(tmp_path), "--dataset", "inria", "--splits", "test", "--full"]) == 0
    out = capsys.readouterr().out
    assert "27 pairs found / 27 expected" in out and "building" in out and "OK" in out
    write_mask(tmp_path / f"{ids[3]}_mask.png", np.eye(5))
    assert check.main([str(tmp_path), "--dataset", "inria", "--splits", "test"]) == 1
    out = capsys.readouterr().out
    assert f"{ids[3]}_mask.png" in out and "FAILED" in out
    assert check.main([str(tmp_path), "--dataset", "inria", "--splits", "val"]) == 1
    assert "no image/mask pairs" in capsys.readouterr().out


def test_check_cli_real_deepglobe(shared_data, capsys):
    code = check.main([os.path.join(shared_data, "deepglobe"), "--dataset", "deepglobe",
                       "--splits", "train"])
    out = capsys.readouterr().out
    assert code == 1  # only 2 of the 454 training images are present
    assert "2 pairs found / 454 expected" in out and "2448x2448 (2)" in out
