"""zoo.train's closing evaluation: it scores ``eval.split`` (test in the paper configs),
names the split and the checkpoint, reuses the best checkpoint's validation when the split is
val, and refuses before training when the split cannot be read (tiny synthetic CPU runs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import zoo.engine.trainer as trainer_mod
from zoo.config import load_config
from zoo.core.errors import DataNotFoundError
from zoo.engine.families import make_task
from zoo.core.checkpoint import read_checkpoint
from zoo.cli.train import main as train_main
from zoo.engine.trainer import train

TINY = [
    "train.iters=2", "train.batch_size=2", "train.val_every=2", "train.ckpt_every=2",
    "train.log_every=1", "train.predictions=0", "train.lr=0.003", "train.warmup_iters=0",
    "data.synthetic_train=2", "data.synthetic_val=1", "data.synthetic_size=[64, 64]",
    "data.crop_size=[64, 64]",
    "model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2, 3, 4]}",
]


def _numpy_miou(cfg: dict, ckpt: str, split: str) -> tuple[float, float]:
    """mIoU (classes 1.., NaN as 0) and accuracy of the checkpoint on ``split``, from a
    numpy confusion matrix: the oracle."""
    task = make_task(cfg)
    model = task.build_model()
    tensors, _ = read_checkpoint(ckpt)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    n = cfg["model"]["num_classes"]
    conf = np.zeros((n, n), np.int64)
    dataset = task.build_dataset(split)
    with torch.no_grad():
        for i in range(len(dataset)):
            s = dataset[i]
            pred = task.predict(model, s["image"][None]).argmax(1)[0].numpy().ravel()
            gt = s["mask"].numpy().ravel()
            keep = gt != 255
            conf += np.bincount(n * gt[keep] + pred[keep], minlength=n * n).reshape(n, n)
    tp = np.diag(conf).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.nan_to_num(tp / (conf.sum(0) + conf.sum(1) - tp))
    return float(iou[1:].mean()), float(tp.sum() / conf.sum())


def test_closing_metrics_are_the_test_split_and_say_so(tmp_path, capsys):
    cfg = load_config("quickstart", TINY + ["eval.split=test"])
    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--set", "eval.split=test"]
                      + [a for t in TINY for a in ("--set", t)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "test"
    assert saved["checkpoint"] == os.path.join("checkpoints", "best.safetensors")
    assert saved["checkpoint_iteration"] == 2
    ckpt = str(out / "checkpoints" / "best.safetensors")
    test_miou, test_acc = _numpy_miou(cfg, ckpt, "test")
    val_miou, _ = _numpy_miou(cfg, ckpt, "val")
    assert test_miou != pytest.approx(val_miou, abs=1e-6)  # the two splits tell apart
    # one image: float32 sums of a few thousand pixels, exact to well below 1e-6
    assert saved["miou"] == pytest.approx(test_miou, abs=1e-6)
    assert saved["accuracy"] == pytest.approx(test_acc, abs=1e-6)
    closing = [line for line in printed.splitlines() if "mIoU" in line][-1]
    assert "test split" in closing and "best.safetensors" in closing
    assert "(iteration 2)" in closing
    assert f"{test_miou:.4f}" in closing
    # the class left out of the mean is marked in the per-class table
    assert any("(not in the mean)" in line and "unknown" in line
               for line in printed.splitlines())


def test_val_split_is_not_scored_twice(tmp_path, monkeypatch):
    calls = []
    real = trainer_mod.evaluate_model

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "evaluate_model", counting)
    cfg = load_config("quickstart", TINY + ["eval.split=val"])
    metrics = train(cfg, str(tmp_path / "run"))
    assert len(calls) == 1  # the one validation at iteration 2; the closing one reuses it
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert metrics["miou"] == best["val"]["miou"]
    assert metrics["split"] == "val" and "not re-scored" in metrics["scored"]
    oracle, _ = _numpy_miou(cfg, str(tmp_path / "run" / "checkpoints" / "best.safetensors"),
                            "val")
    assert metrics["miou"] == pytest.approx(oracle, abs=1e-6)


def test_val_split_is_scored_when_validation_never_ran(tmp_path, monkeypatch):
    cfg = load_config("quickstart", TINY + ["eval.split=val", "train.val_every=0"])
    metrics = train(cfg, str(tmp_path / "run"))
    assert metrics["checkpoint"] == os.path.join("checkpoints", "last.safetensors")
    assert metrics["scored"] == "closing evaluation"
    oracle, _ = _numpy_miou(cfg, str(tmp_path / "run" / "checkpoints" / "last.safetensors"),
                            "val")
    assert metrics["miou"] == pytest.approx(oracle, abs=1e-6)


def test_unreadable_eval_split_fails_before_training(tmp_path):
    cfg = load_config("quickstart", TINY + ["eval.split=test", "data.dataset=folder",
                                            f"data.root={tmp_path / 'data'}"])
    # a folder dataset with train and val but no test
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (tmp_path / "data" / split / kind).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(
                tmp_path / "data" / split / "images" / f"a{i}.png")
            Image.fromarray(rng.integers(0, 7, (64, 64), np.uint8)).save(
                tmp_path / "data" / split / "masks" / f"a{i}.png")
    out = tmp_path / "run"
    with pytest.raises(DataNotFoundError) as info:
        train(cfg, str(out))
    msg = str(info.value)
    assert "eval.split=test" in msg and "--set eval.split=val" in msg
    assert "data.split_files.test" in msg
    assert not out.exists()  # nothing written, nothing trained


def test_metrics_json_names_the_pixels_the_accuracy_counts(tmp_path, capsys):
    """The synthetic scenes follow DeepGlobe: metrics.json says the accuracy counts classes
    1..6 (the unknown pixels left out, as from the mean), its value is the numpy oracle's
    over those pixels, and the closing line marks both."""
    cfg = load_config("quickstart", TINY + ["eval.split=val"])
    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--set", "eval.split=val"]
                      + [a for t in TINY for a in ("--set", t)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy_classes"] == [1, 2, 3, 4, 5, 6]
    assert saved["exclude_from_accuracy"] == [0] and saved["mean_classes"] == [1, 2, 3, 4, 5, 6]
    task = make_task(cfg)
    model = task.build_model()
    tensors, _ = read_checkpoint(str(out / "checkpoints" / "best.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    dataset = task.build_dataset("val")
    correct = counted = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            s = dataset[i]
            pred = task.predict(model, s["image"][None]).argmax(1)[0].numpy()
            gt = s["mask"].numpy()
            keep = (gt != 255) & (gt != 0)
            correct += int(np.count_nonzero(pred[keep] == gt[keep]))
            counted += int(np.count_nonzero(keep))
    assert saved["accuracy"] == pytest.approx(correct / counted, rel=1e-12)
    closing = [line for line in capsys.readouterr().out.splitlines() if "mIoU" in line][-1]
    assert "(unknown not in the mean)" in closing and "(unknown pixels left out)" in closing
