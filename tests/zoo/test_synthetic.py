"""The built-in synthetic UHR dataset: determinism, classes, context, speed."""

from __future__ import annotations

import time

import pytest
import torch

from zoo.data import SyntheticUHR, generate_scene
from zoo.metrics import SegmentationMetrics


class TestSyntheticUHR:
    def test_sample_format(self):
        ds = SyntheticUHR(3, size=(96, 130), seed=0)
        s = ds[1]
        assert s["image"].shape == (3, 96, 130) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (96, 130) and s["mask"].dtype == torch.int64
        assert s["id"] == "synthetic-0-1"
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
        # quantised like a decoded 8-bit file
        q = s["image"] * 255
        assert torch.equal(q, q.round())
        assert int(s["mask"].max()) < ds.num_classes
        assert len(ds) == 3 and ds.num_classes == 7 and ds.exclude_from_mean == (0,)
        assert len(ds.PALETTE) == 7
        with pytest.raises(IndexError):
            ds[3]
        assert torch.equal(ds[-1]["mask"], ds[2]["mask"])

    def test_deterministic_bytes(self):
        a = SyntheticUHR(4, size=(200, 260), seed=7)[2]
        b = SyntheticUHR(4, size=(200, 260), seed=7)[2]
        assert a["image"].numpy().tobytes() == b["image"].numpy().tobytes()
        assert a["mask"].numpy().tobytes() == b["mask"].numpy().tobytes()
        # global RNG untouched and irrelevant
        torch.manual_seed(123)
        c = SyntheticUHR(4, size=(200, 260), seed=7)[2]
        assert torch.equal(a["image"], c["image"])

    def test_seeds_and_indices_differ(self):
        a = SyntheticUHR(2, size=(128, 128), seed=0)
        b = SyntheticUHR(2, size=(128, 128), seed=1)
        assert not torch.equal(a[0]["image"], b[0]["image"])
        assert not torch.equal(a[0]["image"], a[1]["image"])

    def test_class_coverage(self):
        ds = SyntheticUHR(8, size=(512, 512), seed=3)
        seen = torch.zeros(7, dtype=torch.long)
        for i in range(len(ds)):
            m = ds[i]["mask"]
            counts = torch.bincount(m.flatten(), minlength=7)
            assert int((counts > 0).sum()) >= 4, "each scene holds several land-cover classes"
            seen += counts
        assert bool((seen > 0).all()), f"every class appears: {seen.tolist()}"
        # unknown stays rare
        assert float(seen[0]) / float(seen.sum()) < 0.05

    @pytest.mark.parametrize("k", [2, 3, 5, 6])
    def test_num_classes(self, k):
        ds = SyntheticUHR(2, size=(256, 256), num_classes=k, seed=5)
        m = ds[0]["mask"]
        assert int(m.max()) < k and ds.num_classes == k and len(ds.CLASSES) == k

    def test_building_mode_and_context(self):
        # num_classes=2 marks building footprints on the same scenes as num_classes=7:
        # a building pixel is labelled urban in towns and rural classes elsewhere, so its
        # 7-class label depends on context, not on its own appearance.
        labels_under_buildings = set()
        for i in range(6):
            img7, m7 = generate_scene((512, 512), 7, seed=2, index=i)
            img2, m2 = generate_scene((512, 512), 2, seed=2, index=i)
            assert torch.equal(img7, img2)
            assert set(m2.unique().tolist()) <= {0, 1}
            labels_under_buildings |= set(m7[m2 == 1].unique().tolist())
        assert 1 in labels_under_buildings
        assert labels_under_buildings & {2, 3, 6}, labels_under_buildings

    def test_class_statistics_distinct(self):
        img, m = generate_scene((768, 768), 7, seed=0, index=0)
        means = {}
        for k in range(1, 7):
            sel = m == k
            if sel.sum() > 1000:
                means[k] = img[:, sel].mean(1)
        if 5 in means:  # water: dark and blue
            assert means[5][2] > means[5][0] and means[5].mean() < 0.35
        if 4 in means:  # forest: green and dark
            assert means[4][1] > means[4][0] and means[4].mean() < 0.35
        if 6 in means:  # barren: the brightest land cover
            assert means[6].mean() == max(v.mean() for v in means.values())

    def test_dataloader_collate(self):
        ds = SyntheticUHR(4, size=(64, 64), seed=0)
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
        assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 64, 64)
        m = SegmentationMetrics.for_dataset(ds)
        m.update(batch["mask"], batch["mask"])
        assert m.compute()["accuracy"] == 1.0

    def test_speed(self):
        generate_scene((512, 512), seed=0, index=0)  # warm the per-seed texture cache
        best512 = min(_timed(lambda: generate_scene((512, 512), seed=0, index=i)) for i in range(3))
        best2048 = min(_timed(lambda: generate_scene((2048, 2048), seed=0, index=i))
                       for i in range(2))
        assert best512 < 0.1, f"512^2 scene took {best512 * 1e3:.0f} ms"
        assert best2048 < 1.0, f"2048^2 scene took {best2048:.2f} s"

    @pytest.mark.parametrize("kwargs, match", [
        (dict(num_images=0), "num_images"),
        (dict(num_images=2, size=(8, 8)), "size"),
        (dict(num_images=2, size=(64, 64.0)), "size"),
        (dict(num_images=2, num_classes=9), "num_classes"),
        (dict(num_images=2, seed=-1), "seed"),
        (dict(num_images=2, region_size=4), "region_size"),
    ])
    def test_errors(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            SyntheticUHR(**kwargs)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
