"""The paths of a user with real files (``../shared/data``) or files the test writes: a
partial download, split lists from files, ``folder`` with rules from the config or inherited,
masks that do not fit their encoding, progress lines off a terminal, ``data.val_limit``,
flags that override the config only when given, and a run that fails on its data writing
nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from zoo.config import ConfigError, load_config
from zoo.core.errors import DataFileError, DataNotFoundError, ZooError
from zoo.data.registry import build_dataset
from zoo.cli.train import main as train_main
from zoo.engine.trainer import train

TINY = [
    "train.iters=2", "train.batch_size=2", "train.val_every=0", "train.ckpt_every=2",
    "train.log_every=1", "train.predictions=0", "data.synthetic_train=2", "data.synthetic_val=3",
    "data.synthetic_size=[32, 32]", "data.crop_size=[32, 32]",
    "model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2]}",
]


def _dg(shared_data: str) -> str:
    return os.path.join(shared_data, "deepglobe")


# --- a partial download and split lists -----------------------------------------------------

def test_partial_download_from_the_command_line(shared_data, tmp_path, capsys):
    # 2 of DeepGlobe's 454 training pairs: refused, with the command-line fix
    out = tmp_path / "run"
    args = ["--config", "wsdnet_deepglobe", "--data-root", _dg(shared_data), "--out", str(out),
            "--set", "train.iters=1"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "452 of the 454" in err and "--set data.missing=skip" in err
    assert not out.exists()  # nothing written before the data is known good
    cfg = load_config("wsdnet_deepglobe", [f"data.root={_dg(shared_data)}",
                                           "data.missing=skip"])
    train_set = build_dataset(cfg, "train")
    assert sorted(train_set.ids) == ["10901", "855"]
    with pytest.raises(ConfigError, match="data.missing"):
        load_config("wsdnet_deepglobe", ["data.missing=sometimes"])


def test_split_list_from_a_file(shared_data, tmp_path):
    lst = tmp_path / "my_val.txt"
    lst.write_text("# my validation image\n855_sat.jpg\n")
    cfg = load_config("wsdnet_deepglobe", [f"data.root={_dg(shared_data)}",
                                           f"data.split_files.val={lst}"])
    val = build_dataset(cfg, "val")
    assert val.ids == ["855"] and tuple(val[0]["mask"].shape) == (2448, 2448)
    missing = load_config("wsdnet_deepglobe", [f"data.root={_dg(shared_data)}",
                                               f"data.split_files.val={tmp_path / 'nope.txt'}"])
    with pytest.raises(DataNotFoundError, match="data.split_files.val.*nope.txt"):
        build_dataset(missing, "val")
    with pytest.raises(ConfigError, match="unknown split"):
        build_dataset(load_config("wsdnet_deepglobe", [f"data.root={_dg(shared_data)}",
                                                       f"data.split_files.vall={lst}"]), "val")


# --- folder with rules ----------------------------------------------------------------------

def _inria_folder(shared_data: str, root) -> str:
    """The real Inria crop as a user's folder: images/ + masks/ (gt values 0/255)."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    os.symlink(os.path.join(shared_data, "inria", "austin_crop_sat.tif"),
               root / "images" / "austin_crop_sat.tif")
    os.symlink(os.path.join(shared_data, "inria", "austin_crop_gt.tif"),
               root / "masks" / "austin_crop_gt.tif")
    lst = root / "all.txt"
    lst.write_text("austin_crop\n")
    return str(lst)


def _folder_cfg(root, *extra: str) -> dict:
    return load_config("quickstart", ["data.dataset=folder", f"data.root={root}",
                                      "model.num_classes=2", *extra])


def test_binary_0_255_masks_are_never_read_as_ignore(shared_data, tmp_path):
    lst = _inria_folder(shared_data, tmp_path / "inria")
    splits = f"data.split_files.train={lst}"
    plain = build_dataset(_folder_cfg(tmp_path / "inria", splits), "train")
    with pytest.raises(DataFileError) as info:
        plain[0]
    text = str(info.value)
    assert "austin_crop_gt.tif" in text and "[0, 255]" in text
    assert "--set data.mask_encoding=binary" in text and "data.like=inria" in text
    for rule in ("data.mask_encoding=binary", "data.like=inria"):
        ds = build_dataset(_folder_cfg(tmp_path / "inria", splits, rule), "train")
        mask = ds[0]["mask"]
        assert set(mask.unique().tolist()) == {0, 1}
        assert 0.05 < float(mask.float().mean()) < 0.95  # buildings are class 1, not ignored
    like = build_dataset(_folder_cfg(tmp_path / "inria", splits, "data.like=inria"), "train")
    assert like.CLASSES == ("background", "building") and like.exclude_from_mean == (0,)
    # declared on purpose, 255 is the ignore value
    declared = build_dataset(_folder_cfg(tmp_path / "inria", splits, "data.ignore_index=255"),
                             "train")
    assert set(declared[0]["mask"].unique().tolist()) == {0, 255}


def test_a_failed_data_check_writes_no_run_folder(shared_data, tmp_path, capsys):
    lst = _inria_folder(shared_data, tmp_path / "inria")
    out = tmp_path / "run"
    code = train_main(["--config", "quickstart", "--out", str(out), "--set",
                       "data.dataset=folder", "--set", f"data.root={tmp_path / 'inria'}",
                       "--set", "model.num_classes=2", "--set", f"data.split_files.train={lst}",
                       "--set", f"data.split_files.val={lst}", "--set", "train.iters=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "zoo.train: error:" in err and "austin_crop_gt.tif" in err and "Traceback" not in err
    assert not out.exists()


def _write_dg_folder(root, palette) -> None:
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / split / "images" / "a.png")
        mask = np.zeros((8, 8, 3), np.uint8)
        mask[:4] = palette[1]
        mask[4:] = palette[2]
        Image.fromarray(mask).save(root / split / "masks" / "a.png")


def test_folder_inherits_deepglobe_rules(tmp_path):
    from zoo.data.deepglobe import CLASSES, PALETTE

    _write_dg_folder(tmp_path, PALETTE)
    cfg = load_config("quickstart", ["data.dataset=folder", f"data.root={tmp_path}",
                                     "data.like=deepglobe"])
    ds = build_dataset(cfg, "val")
    assert ds.CLASSES == CLASSES and ds.exclude_from_mean == (0,) and ds.PALETTE == PALETTE
    assert ds[0]["mask"][0, 0] == 1 and ds[0]["mask"][7, 0] == 2
    # a key next to `like` wins
    named = build_dataset(load_config("quickstart", [
        "data.dataset=folder", f"data.root={tmp_path}", "data.like=deepglobe",
        "data.exclude_from_mean=[]"]), "val")
    assert named.exclude_from_mean == ()


def test_folder_with_its_own_palette_and_names(tmp_path):
    palette = [[0, 0, 0], [10, 200, 30], [250, 5, 5]]
    _write_dg_folder(tmp_path, palette)
    cfg = load_config("quickstart", [
        "data.dataset=folder", f"data.root={tmp_path}", "model.num_classes=3",
        f"data.palette={palette}", "data.classes=[void, grass, roof]",
        "data.exclude_from_mean=[0]"])
    ds = build_dataset(cfg, "train")
    assert ds.CLASSES == ("void", "grass", "roof") and ds.exclude_from_mean == (0,)
    assert ds[0]["mask"][0, 0] == 1 and ds[0]["mask"][7, 0] == 2
    with pytest.raises(ConfigError, match="data.classes names 2 classes"):
        build_dataset(load_config("quickstart", [
            "data.dataset=folder", f"data.root={tmp_path}", "model.num_classes=3",
            "data.classes=[a, b]"]), "train")
    with pytest.raises(ConfigError, match="applies to data.dataset=folder"):
        build_dataset(load_config("quickstart", ["data.like=deepglobe"]), "train")
    with pytest.raises(ConfigError, match="data.palette"):
        build_dataset(load_config("quickstart", [
            "data.dataset=folder", f"data.root={tmp_path}", "data.palette=[[1, 2]]"]), "train")


# --- the run: progress, val_limit, flags ----------------------------------------------------

def test_progress_lines_and_val_limit(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    metrics = train(load_config("quickstart", TINY + ["train.val_every=2",
                                                      "data.val_limit=1"]), str(out))
    err = capsys.readouterr().err
    lines = [s for s in err.splitlines() if ": iter " in s]
    assert any("iter 1/2" in s and "loss " in s and " lr " in s and "it/s" in s and "ETA" in s
               for s in lines), err
    assert any("iter 2/2" in s and "val mIoU" in s and "(1 images)" in s for s in lines), err
    assert metrics["images"] == 1  # the final evaluation honours data.val_limit too
    assert json.loads((out / "metrics.json").read_text())["images"] == 1


def test_flags_override_the_config_only_when_given(tmp_path, monkeypatch, one_thread):
    import zoo.engine.evaluator as evaluator
    from tests.zoo.fixtures.make_checkpoint_fixture import HERE, write_masks
    from zoo.cli.evaluate import main as eval_main

    masks = str(tmp_path / "masks")
    write_masks(masks)
    calls = {"tta": 0}
    real = evaluator.tta_logits

    def counted(*args, **kwargs):
        calls["tta"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluator, "tta_logits", counted)
    base = ["--config", os.path.join(HERE, "config.yaml"), "--checkpoint",
            os.path.join(HERE, "last.safetensors"), "--set", f"refine.masks={masks}"]
    assert eval_main(base) == 0 and calls["tta"] == 0
    assert eval_main(base + ["--set", "eval.tta=true"]) == 0 and calls["tta"] == 1  # no flag
    assert eval_main(base + ["--tta"]) == 0 and calls["tta"] == 2


def test_every_command_error_is_a_zoo_error_with_an_exit_code():
    from zoo.core.errors import CheckpointError, WeightsError

    for cls in (ConfigError, CheckpointError, DataFileError, DataNotFoundError, WeightsError):
        assert issubclass(cls, ZooError) and cls.exit_code == 2
    assert issubclass(DataFileError, OSError) and issubclass(ConfigError, ValueError)
    from zoo.data.base import DataFileError as Old
    from zoo.core.errors import CheckpointError as OldCheckpoint

    assert Old is DataFileError and OldCheckpoint is CheckpointError
