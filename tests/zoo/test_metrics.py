"""zoo.metrics against a naive per-pixel loop oracle and hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoo.metrics import SegmentationMetrics, confusion_matrix, metrics_from_confusion


def naive_metrics(pairs, K, exclude=(), ignore=255):
    """Per-pixel Python loop: count TP/FP/FN per class, then the papers' formulas."""
    tp, fp, fn = [0] * K, [0] * K, [0] * K
    conf = [[0] * K for _ in range(K)]
    total = correct = 0
    for pred, target in pairs:
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t == ignore:
                continue
            conf[t][p] += 1
            total += 1
            if p == t:
                tp[t] += 1
                correct += 1
            else:
                fp[p] += 1
                fn[t] += 1
    iou, f1 = [], []
    for k in range(K):
        den = tp[k] + fp[k] + fn[k]
        iou.append(tp[k] / den if den else 0.0)          # NaN -> 0
        den2 = 2 * tp[k] + fp[k] + fn[k]
        f1.append(2 * tp[k] / den2 if den2 else 0.0)
    keep = [k for k in range(K) if k not in exclude]
    return {"miou": sum(iou[k] for k in keep) / len(keep),
            "f1": sum(f1[k] for k in keep) / len(keep),
            "accuracy": correct / total if total else 0.0,
            "iou": iou, "f1_per_class": f1, "confusion": conf}


def assert_same(got, want):
    for key in ("miou", "f1", "accuracy"):
        assert math.isclose(got[key], want[key], rel_tol=1e-12, abs_tol=1e-12), key
    for key in ("iou", "f1_per_class"):
        assert len(got[key]) == len(want[key])
        for a, b in zip(got[key], want[key]):
            assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12), key
    assert got["confusion"] == want["confusion"]


@st.composite
def batches(draw):
    K = draw(st.integers(2, 8))
    n = draw(st.integers(1, 3))
    pairs = []
    for _ in range(n):
        b, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
        seed = draw(st.integers(0, 2 ** 31 - 1))
        g = torch.Generator().manual_seed(seed)
        # few distinct labels so that absent classes are common
        hi = draw(st.integers(1, K))
        pred = torch.randint(0, hi, (b, h, w), generator=g)
        target = torch.randint(0, hi, (b, h, w), generator=g)
        ign = torch.rand(b, h, w, generator=g) < draw(st.sampled_from([0.0, 0.2]))
        target[ign] = 255
        pairs.append((pred, target))
    exclude = tuple(sorted(draw(st.sets(st.integers(0, K - 1), max_size=K - 1))))
    return K, pairs, exclude


class TestSegmentationMetrics:
    @settings(max_examples=25, deadline=None)
    @given(batches())
    def test_against_naive_loop(self, data):
        K, pairs, exclude = data
        m = SegmentationMetrics(K, exclude_from_mean=exclude)
        for p, t in pairs:
            m.update(p, t)
        assert_same(m.compute(), naive_metrics(pairs, K, exclude))

    def test_device(self, device):
        g = torch.Generator().manual_seed(0)
        p = torch.randint(0, 4, (2, 7, 9), generator=g)
        t = torch.randint(0, 4, (2, 7, 9), generator=g)
        m = SegmentationMetrics(4, exclude_from_mean=(0,))
        m.update(p.to(device), t.to(device))
        assert m.confusion.device.type == device.type
        assert_same(m.compute(), naive_metrics([(p, t)], 4, (0,)))

    def test_hand_computed_deepglobe_rule(self):
        # 3 classes, class 0 = unknown excluded from the mean but kept in the matrix
        target = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
        pred = torch.tensor([1, 0, 1, 1, 2, 2, 2, 0])
        # conf rows=gt: [[1,1,0],[0,2,1],[1,0,2]]
        # IoU1 = 2/(2+1(fp from unknown)+1) = 0.5 ; IoU2 = 2/(2+1+1) = 0.5 ; IoU0 = 1/(1+1+1)
        out = SegmentationMetrics(3, exclude_from_mean=(0,))
        out.update(pred, target)
        r = out.compute()
        assert r["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 2]]
        assert r["iou"] == pytest.approx([1 / 3, 0.5, 0.5])
        assert r["miou"] == pytest.approx(0.5)
        assert r["f1_per_class"] == pytest.approx([0.5, 4 / 6, 4 / 6])
        assert r["f1"] == pytest.approx(4 / 6)
        assert r["accuracy"] == pytest.approx(5 / 8)

    def test_absent_class_counts_zero(self):
        # class 2 never appears in prediction or ground truth: IoU 0 lowers the mean
        t = torch.tensor([0, 1, 1])
        r = metrics_from_confusion(confusion_matrix(t, t, 3))
        assert r["iou"] == [1.0, 1.0, 0.0]
        assert r["miou"] == pytest.approx(2 / 3)
        assert r["f1"] == pytest.approx(2 / 3)
        assert r["accuracy"] == 1.0

    def test_inria_miou_is_building_iou(self):
        t = torch.tensor([[0, 0, 1, 1, 1]])
        p = torch.tensor([[0, 1, 1, 1, 0]])
        m = SegmentationMetrics.for_dataset("inria")
        m.update(p, t)
        r = m.compute()
        assert r["miou"] == pytest.approx(2 / 4) == pytest.approx(r["iou"][1])
        assert r["iou"][0] == pytest.approx(1 / 3)

    def test_for_dataset(self):
        assert SegmentationMetrics.for_dataset("deepglobe").exclude_from_mean == (0,)
        assert SegmentationMetrics.for_dataset("deepglobe").num_classes == 7
        assert SegmentationMetrics.for_dataset("urur").exclude_from_mean == ()
        assert SegmentationMetrics.for_dataset("urur").num_classes == 8
        with pytest.raises(ValueError, match="unknown dataset"):
            SegmentationMetrics.for_dataset("cityscapes")

    def test_for_dataset_reads_the_registry(self, monkeypatch):
        # One table of dataset rules: a dataset declared in the registry is known to the
        # metrics with its class count, excluded classes and ignore value.
        from zoo.data import registry

        rules = registry.DatasetRules(("a", "b", "c"), ((0, 0, 0), (1, 1, 1), (2, 2, 2)), 9,
                                      (2,), "index")
        monkeypatch.setitem(registry.DATASETS, "toy",
                            registry.DatasetSpec("toy", rules, lambda *a: None))
        m = SegmentationMetrics.for_dataset("toy")
        assert (m.num_classes, m.exclude_from_mean, m.ignore_index) == (3, (2,), 9)
        assert SegmentationMetrics.for_dataset("synthetic", 2).exclude_from_mean == (0,)
        with pytest.raises(ValueError, match="unknown dataset 'folder'"):
            SegmentationMetrics.for_dataset("folder")

    def test_logits_and_ignore(self):
        logits = torch.zeros(1, 3, 2, 2)
        logits[0, 2] = 1.0
        t = torch.tensor([[[2, 255], [1, 2]]])
        m = SegmentationMetrics(3)
        m.update(logits, t)
        assert m.confusion.sum() == 3
        assert m.compute()["accuracy"] == pytest.approx(2 / 3)

    def test_accumulates_and_resets(self):
        g = torch.Generator().manual_seed(1)
        p = torch.randint(0, 5, (3, 4, 4), generator=g)
        t = torch.randint(0, 5, (3, 4, 4), generator=g)
        a, b = SegmentationMetrics(5), SegmentationMetrics(5)
        for i in range(3):
            a.update(p[i], t[i])
        b.update(p, t)
        assert torch.equal(a.confusion, b.confusion)
        a.reset()
        assert a.confusion.sum() == 0
        assert a.compute()["accuracy"] == 0.0 and a.compute()["miou"] == 0.0

    def test_errors(self):
        m = SegmentationMetrics(3)
        with pytest.raises(ValueError, match="shape"):
            m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
        with pytest.raises(TypeError, match="integer"):
            m.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
        with pytest.raises(ValueError, match="outside 0..2"):
            m.update(torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 3, 255]))
        with pytest.raises(ValueError, match="`pred` holds"):
            m.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
        with pytest.raises(TypeError, match="tensors"):
            m.update([0, 1], torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="num_classes"):
            SegmentationMetrics(0)
        with pytest.raises(ValueError, match="exclude_from_mean"):
            SegmentationMetrics(3, exclude_from_mean=(3,))
        with pytest.raises(ValueError, match="leaves no class"):
            SegmentationMetrics(2, exclude_from_mean=(0, 1))


# ------------------------------------------------------------------------------------------
# Pixel accuracy over the pixels the mean IoU speaks of (issue 32)
# ------------------------------------------------------------------------------------------


def _numpy_oracle(pred: np.ndarray, gt: np.ndarray, num_classes: int, left_out: tuple,
                  no_data: tuple) -> dict:
    """From the raw label arrays: per-class IoU by set counts, mean over the classes not in
    ``left_out``, accuracy = share of correct pixels among those whose ground truth is
    labelled and not a ``no_data`` class (float64 throughout)."""
    labelled = gt != 255
    p, t = pred[labelled], gt[labelled]
    iou = []
    for k in range(num_classes):
        union = np.count_nonzero((p == k) | (t == k))
        iou.append(np.count_nonzero((p == k) & (t == k)) / union if union else 0.0)
    mean = [iou[k] for k in range(num_classes) if k not in left_out]
    counted = ~np.isin(t, no_data)
    return {"miou": float(np.mean(mean)),
            "accuracy": float(np.mean(p[counted] == t[counted])) if counted.any() else 0.0}


def _labels(seed: int, num_classes: int, shape=(3, 17, 23)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, num_classes, shape)
    gt[rng.random(shape) < 0.1] = 255
    # predictions right about 60% of the time, else any class (the left-out one included)
    pred = np.where(rng.random(shape) < 0.6, np.where(gt == 255, 0, gt),
                    rng.integers(0, num_classes, shape))
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("left_out", [0, 6])
def test_deepglobe_like_accuracy_leaves_out_the_no_data_class(seed, left_out):
    """7 classes, one of them out of the mean and of the accuracy: its ground-truth pixels
    count nowhere in the accuracy, and a counted pixel predicted as it is wrong."""
    pred, gt = _labels(seed, 7)
    assert np.count_nonzero((gt != left_out) & (gt != 255) & (pred == left_out)) > 0
    m = SegmentationMetrics(7, exclude_from_mean=(left_out,), exclude_from_accuracy=(left_out,))
    for b in range(pred.shape[0]):
        m.update(torch.from_numpy(pred[b]), torch.from_numpy(gt[b]))
    got = m.compute()
    want = _numpy_oracle(pred, gt, 7, (left_out,), (left_out,))
    everywhere = _numpy_oracle(pred, gt, 7, (left_out,), ())
    assert got["accuracy"] != pytest.approx(everywhere["accuracy"])  # the rule matters here
    # a few thousand integer counts divided once: float64 exact to the last bits
    assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-12)
    assert got["miou"] == pytest.approx(want["miou"], rel=1e-12)
    assert got["accuracy_classes"] == [k for k in range(7) if k != left_out]
    assert got["mean_classes"] == got["accuracy_classes"]


@pytest.mark.parametrize("seed", [3, 4])
def test_declared_datasets_accuracy_rules(seed):
    """DeepGlobe leaves its unknown pixels (class 0) out of the accuracy; Inria keeps every
    labelled pixel (its background is a real class even though its "mIoU" is the building
    IoU); URUR leaves out nothing."""
    for name, k, no_data in (("deepglobe", 7, (0,)), ("inria", 2, ()), ("urur", 8, ())):
        pred, gt = _labels(seed, k)
        m = SegmentationMetrics.for_dataset(name)
        assert m.exclude_from_accuracy == no_data
        m.update(torch.from_numpy(pred), torch.from_numpy(gt))
        got = m.compute()
        want = _numpy_oracle(pred, gt, k, m.exclude_from_mean, no_data)
        assert got["accuracy"] == pytest.approx(want["accuracy"], rel=1e-12), name
        assert got["miou"] == pytest.approx(want["miou"], rel=1e-12), name
        assert got["accuracy_classes"] == [c for c in range(k) if c not in no_data], name


def test_dataset_objects_and_folders_carry_the_accuracy_rule():
    from zoo.data import registry
    from zoo.data.synthetic import SyntheticUHR

    assert SegmentationMetrics.for_dataset(SyntheticUHR(1, (32, 32))).exclude_from_accuracy \
        == (0,)
    assert SegmentationMetrics.for_dataset(
        SyntheticUHR(1, (32, 32), num_classes=2)).exclude_from_accuracy == ()
    assert SegmentationMetrics.for_dataset("synthetic", 2).exclude_from_accuracy == ()

    def folder(n, **data):
        return registry.dataset_rules({"data": {"dataset": "folder", **data},
                                       "model": {"num_classes": n}})

    assert folder(7, like="deepglobe").exclude_from_accuracy == (0,)
    assert folder(2, like="inria").exclude_from_accuracy == ()
    # a class put back into the mean takes its pixels back into the accuracy
    assert folder(7, like="deepglobe", exclude_from_mean=[]).exclude_from_accuracy == ()
    assert folder(3, exclude_from_mean=[0]).exclude_from_accuracy == ()


def test_accuracy_may_leave_out_only_classes_left_out_of_the_mean():
    with pytest.raises(ValueError, match="exclude_from_accuracy.*exclude_from_mean"):
        SegmentationMetrics(3, exclude_from_mean=(0,), exclude_from_accuracy=(1,))


def test_summary_lines_mark_what_each_metric_leaves_out():
    from zoo.cli.train import closing_summary
    from zoo.metrics import metrics_line

    m = SegmentationMetrics.for_dataset("deepglobe")
    m.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))
    r = {**m.compute(), "class_names": ["unknown", "urban", "agriculture", "rangeland",
                                        "forest", "water", "barren"],
         "exclude_from_mean": [0], "exclude_from_accuracy": [0]}
    line = metrics_line(r)
    assert "(unknown not in the mean)" in line and "(unknown pixels left out)" in line
    assert f"accuracy {2 / 3:.4f}" in line  # 2 of the 3 pixels that are not unknown
    text = closing_summary("run", {**r, "split": "test", "images": 1}, "out")
    assert "(unknown pixels left out)" in text.splitlines()[0]
    assert any("unknown" in s and "(not in the mean)" in s and "accuracy" in s
               for s in text.splitlines()[1:])
    inria = SegmentationMetrics.for_dataset("inria")
    inria.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    line = metrics_line({**inria.compute(), "class_names": ["background", "building"]})
    assert "(background not in the mean)" in line and "left out" not in line
    assert f"accuracy {2 / 3:.4f}" in line
