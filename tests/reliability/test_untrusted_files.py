"""Files from elsewhere: malicious pickles, broken checkpoints, bad configs, corrupt images,
masks outside the palette, images smaller than a patch (DESIGN.md §4).

Every file here is refused with the documented exception (CheckpointError, WeightsError,
ConfigError, DataFileError) and a message naming it, or handled the documented way (a
smaller image is padded; an undecodable image in a folder inference is reported and the others
are done); the command-line tools exit with status 2 and no traceback; a refused file never
costs anything already written (checkpoints, logs, finished outputs stay byte-identical).

The malicious pickles carry a ``__reduce__`` payload that creates a marker file. A control run
proves each payload live (an unsafe ``pickle.load`` / ``torch.load(weights_only=False)`` in
a subprocess creates its marker); the loaders under test must never create theirs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.reliability._report import REPORT
from zoo.core.errors import WeightsError
from zoo.core.weights import read_state_dict
from zoo.config import DEFAULTS, ConfigError, load_config
from zoo.data.base import DataFileError, read_image, read_mask_array
from zoo.core.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from zoo.core.errors import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_MODEL = ["model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2], "
               "aspp_channels: 32, fuse_channels: 32, head_channels: 16}"]


def refused(kind: str, name: str, exc: BaseException, path: str | None = None) -> None:
    """Check a refusal names the file and record it."""
    msg = str(exc)
    if path is not None:
        assert os.path.basename(path) in msg, f"{kind}: the message does not name {path}: {msg}"
    assert "Traceback" not in msg
    REPORT.add("files_refused", {"class": kind, "file": name, "error": type(exc).__name__,
                                 "message": msg[:200]})


# --------------------------------------------------------------------------------------------
# malicious pickles
# --------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this object runs ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Shell:
    """Unpickling this object runs a shell command that creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _evil_files(folder, marker: str) -> dict[str, str]:
    """name -> path of files whose loading with pickle would create ``marker``."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    state = {"conv1.weight": torch.zeros(2, 3, 1, 1), "evil": _Touch(marker)}
    for name in ("weights.pth", "weights.pt", "ckpt.tar", "disguised.safetensors"):
        path = os.path.join(folder, name)
        torch.save({"state_dict": state}, path)  # zip container, payload in data.pkl
        paths[name] = path
    legacy = os.path.join(folder, "legacy.pth")
    with open(legacy, "wb") as f:
        pickle.dump({"state_dict": {"w": _Shell(marker)}}, f, protocol=2)
    paths["legacy.pth"] = legacy
    raw = os.path.join(folder, "raw-pickle.safetensors")
    with open(raw, "wb") as f:
        pickle.dump(_Shell(marker), f)
    paths["raw-pickle.safetensors"] = raw
    return paths


_UNSAFE_LOAD = """
import os, pickle, shutil, sys, torch
marker, neutral = sys.argv[1], sys.argv[2]
for path in sys.argv[3:]:
    if os.path.exists(marker):
        os.unlink(marker)
    shutil.copy(path, neutral)  # a neutral name: torch.load reads *.safetensors with safetensors
    try:
        torch.load(neutral, weights_only=False)
    except Exception:
        try:
            pickle.load(open(neutral, "rb"))
        except Exception:
            pass
    print(os.path.basename(path), os.path.exists(marker))
"""


def test_payloads_are_live_when_unpickled_unsafely(tmp_path):
    """The control: an unsafe load of each file does create the marker."""
    marker = str(tmp_path / "LIVE")
    files = _evil_files(tmp_path / "evil", marker)
    p = subprocess.run([sys.executable, "-c", _UNSAFE_LOAD, marker, str(tmp_path / "c.bin"),
                        *files.values()], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    ran = dict(line.split() for line in p.stdout.splitlines())
    assert ran == {name: "True" for name in files}, (ran, p.stderr[-2000:])


@pytest.fixture(scope="module")
def small_wsdnet():
    from zoo.engine.families import make_task

    cfg = load_config("quickstart", ["train.device=cpu"] + SMALL_MODEL)
    torch.manual_seed(0)
    return cfg, make_task(cfg).build_model()


def test_malicious_pickles_are_refused_without_running(tmp_path, small_wsdnet, capsys):
    from zoo.backbones.resnet import ResNet18V1c, load_resnet18_imagenet
    from zoo.cli.evaluate import main as eval_main
    from zoo.cli.infer import main as infer_main
    from zoo.cli.train import main as train_main

    cfg, model = small_wsdnet
    marker = str(tmp_path / "PWNED")
    files = _evil_files(tmp_path / "evil", marker)
    cfg_path = str(tmp_path / "config.yaml")
    with open(cfg_path, "w") as f:
        yaml.safe_dump(cfg, f)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for name, path in files.items():
        for how, call, etype in [
            ("read_checkpoint", lambda: read_checkpoint(path), CheckpointError),
            ("load_checkpoint", lambda: load_checkpoint(path, model), CheckpointError),
            ("read_state_dict", lambda: read_state_dict(path), WeightsError),
            ("load_resnet18_imagenet", lambda: load_resnet18_imagenet(ResNet18V1c(), path),
             WeightsError),
        ]:
            with pytest.raises(etype) as info:
                call()
            refused("malicious pickle", f"{name} via {how}", info.value, path)
            assert not os.path.exists(marker), f"{name} via {how}: the payload ran"
    # the command-line tools: exit status 2, one line naming the file, nothing executed
    path = files["weights.pth"]
    runs = [
        ("zoo.infer --checkpoint", lambda: infer_main(["--config", cfg_path, "--checkpoint",
                                                       path, str(image), "--out",
                                                       str(tmp_path / "pred")])),
        ("zoo.evaluate --checkpoint", lambda: eval_main(["--config", cfg_path, "--checkpoint",
                                                         path])),
        ("zoo.train model.init", lambda: train_main(["--out", str(tmp_path / "r1"), "--set",
                                                     f"model.init={path}"] + _set(SMALL_MODEL))),
        ("zoo.train model.pretrained", lambda: train_main(
            ["--out", str(tmp_path / "r2"), "--set",
             f"model.pretrained={{resnet18: {files['legacy.pth']}}}"] + _set(SMALL_MODEL))),
    ]
    for how, call in runs:
        capsys.readouterr()
        assert call() == 2, how
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err, (how, err)
        assert "weights.pth" in err or "legacy.pth" in err, (how, err)
        REPORT.add("files_refused", {"class": "malicious pickle", "file": f"weights via {how}",
                                     "error": "exit 2", "message": err.strip()[:200]})
        assert not os.path.exists(marker), f"{how}: the payload ran"


def _set(overrides):
    out = []
    for o in overrides:
        out += ["--set", o]
    return out


# --------------------------------------------------------------------------------------------
# truncated and corrupt checkpoints
# --------------------------------------------------------------------------------------------


def _variants(data: bytes) -> dict[str, bytes]:
    """Damaged copies of a safetensors file: every way a download or a copy can break."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {f"truncated at {k}": data[:k] for k in sorted({0, 3, 8, 8 + n // 2, 8 + n, 9 + n,
                                                         (8 + n + len(data)) // 2,
                                                         len(data) - 1})}
    out["empty header length"] = struct.pack("<Q", 0) + data[8:]
    out["header length past the end"] = struct.pack("<Q", len(data) * 4) + data[8:]
    out["header length 2^63"] = struct.pack("<Q", 2**63) + data[8:]
    garbled = bytearray(data)
    garbled[8 + n // 3: 8 + n // 3 + 6] = b"\x00\xff{]\x01\""
    out["garbled header"] = bytes(garbled)
    meta = dict(header["__metadata__"])
    for label, new_meta in [("no trainer state", {k: v for k, v in meta.items()
                                                  if k != "uhrops.state"}),
                            ("trainer state not JSON", {**meta, "uhrops.state": "{not json"}),
                            ("other format", {**meta, "uhrops.state": json.dumps(
                                {**json.loads(meta["uhrops.state"]), "format": "other-9"})})]:
        h = dict(header, __metadata__=new_meta)
        blob = json.dumps(h).encode()
        blob += b" " * (-len(blob) % 8)
        out[label] = struct.pack("<Q", len(blob)) + blob + data[8 + n:]
    key = next(k for k in header if k != "__metadata__")
    h = dict(header)
    h[key] = dict(h[key], data_offsets=[0, len(data) * 2])
    blob = json.dumps(h).encode()
    out["tensor past the end"] = struct.pack("<Q", len(blob)) + blob + data[8 + n:]
    return out


def test_broken_checkpoints_are_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    good = str(tmp_path / "good.safetensors")
    save_checkpoint(good, model, {"iteration": 3}, opt)
    assert load_checkpoint(good, model, opt)["iteration"] == 3  # the control loads
    data = open(good, "rb").read()
    for label, blob in _variants(data).items():
        path = str(tmp_path / f"bad-{label.replace(' ', '_')}.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, model, opt)
        refused("broken checkpoint", label, info.value, path)
    # a checkpoint of another model, or one missing the optimizer state
    other = torch.nn.Conv2d(3, 5, 3)
    with pytest.raises(CheckpointError, match="holds a Sequential"):
        load_checkpoint(good, other)
    lone = str(tmp_path / "weights-only.safetensors")
    save_checkpoint(lone, model, {"iteration": 1})
    with pytest.raises(CheckpointError, match="no optimizer state") as info:
        load_checkpoint(lone, model, opt)
    refused("broken checkpoint", "no optimizer state", info.value, lone)
    # truncated plain weight files go through read_state_dict
    sd = str(tmp_path / "w.pth")
    torch.save(model.state_dict(), sd)
    raw = open(sd, "rb").read()
    for k in (0, 10, len(raw) // 2, len(raw) - 3):
        path = str(tmp_path / f"w-cut{k}.pth")
        open(path, "wb").write(raw[:k])
        with pytest.raises(WeightsError) as info:
            read_state_dict(path)
        refused("broken checkpoint", f"weights .pth truncated at {k}", info.value, path)


def _tiny_run(tmp_path, name="run") -> str:
    from zoo.engine.trainer import Interrupted, train

    out = str(tmp_path / name)
    cfg = load_config("quickstart", SMALL_MODEL + [
        "train.iters=3", "train.batch_size=2", "train.val_every=1", "train.ckpt_every=1",
        "train.log_every=1", "train.predictions=0", "train.device=cpu", "train.optimizer=sgd",
        "data.synthetic_train=2", "data.synthetic_val=1", "data.synthetic_size=[48, 48]",
        "data.crop_size=[48, 48]"])
    with pytest.raises(Interrupted):
        train(cfg, out, stop_after=1)
    return out


def _digest(folder: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("run"))


def test_resume_from_a_truncated_checkpoint_loses_nothing(interrupted_run, tmp_path, capsys):
    import shutil

    from zoo.cli.train import main as train_main

    out = str(tmp_path / "copy")
    shutil.copytree(interrupted_run, out)
    last = os.path.join(out, "checkpoints", "last.safetensors")
    data = open(last, "rb").read()
    open(last, "wb").write(data[: len(data) * 2 // 3])
    before = _digest(out)
    args = ["--config", os.path.join(out, "config.yaml"), "--out", out, "--resume"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "last.safetensors" in err and "truncated" in err and "Traceback" not in err, err
    assert _digest(out) == before, "a refused resume changed files of the run"
    REPORT.add("files_refused", {"class": "broken checkpoint", "file": "truncated last on --resume",
                                 "error": "exit 2", "message": err.strip()[:200]})


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown top-level key": ("trian:\n  iters: 3\n", "trian"),
    "unknown nested key": ("train:\n  iterz: 3\n", "train.iterz"),
    "string for an int": ("train:\n  iters: many\n", "train.iters"),
    "float for an int": ("train:\n  batch_size: 2.5\n", "train.batch_size"),
    "bool for an int": ("train:\n  iters: true\n", "train.iters"),
    "list for a float": ("train:\n  lr: [0.1]\n", "train.lr"),
    "string for a bool": ("train:\n  deterministic: 'yes'\n", "train.deterministic"),
    "scalar for a section": ("train: 5\n", "train"),
    "mapping for a list": ("data:\n  crop_size: {h: 1}\n", "data.crop_size"),
    "not a choice": ("train:\n  optimizer: lbfgs\n", "train.optimizer"),
    "free-form not a mapping": ("model:\n  kwargs: [1, 2]\n", "model.kwargs"),
    "top level a list": ("- 1\n- 2\n", "top level"),
    "invalid YAML": ("train: {iters: 3\n", "not valid YAML"),
    "base not a string": ("base: 3\n", "base"),
    "base not found": ("base: no_such_config\n", "no_such_config"),
}


@pytest.mark.parametrize("label", sorted(BAD_CONFIGS))
def test_bad_config_files_are_refused_and_nothing_is_written(label, tmp_path, capsys):
    from zoo.cli.train import main as train_main

    text, key = BAD_CONFIGS[label]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    msg = str(info.value)
    assert key in msg, (label, msg)
    if label not in ("base not found",):
        assert "bad.yaml" in msg, (label, msg)
    out = tmp_path / "run"
    assert train_main(["--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "zoo.train: error:" in err and "Traceback" not in err
    assert not out.exists(), "a refused config still created the run folder"
    refused("config", label, info.value)


def test_base_chain_loop_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops") as info:
        load_config(str(tmp_path / "a.yaml"))
    refused("config", "base loop", info.value)


def _schema_keys(schema, prefix=()):
    for k, v in schema.items():
        if isinstance(v, dict) and (prefix + (k,)) not in {("model", "kwargs"),
                                                            ("model", "pretrained"),
                                                            ("loss", "kwargs")}:
            yield from _schema_keys(v, prefix + (k,))
        else:
            yield prefix + (k,), v


KEYS = sorted(_schema_keys(DEFAULTS))
YAML_VALUES = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False, width=32),
                        st.booleans(), st.none(), st.text(max_size=8),
                        st.lists(st.integers(0, 9), max_size=3),
                        st.dictionaries(st.sampled_from(["a", "h"]), st.integers(0, 3),
                                        max_size=2))


@settings(max_examples=int(os.environ.get("UHROPS_RELI_EXAMPLES", "30")) * 3, deadline=None,
          database=None, suppress_health_check=list(HealthCheck))
@given(key=st.one_of(st.sampled_from(KEYS).map(lambda kv: kv[0]),
                     st.lists(st.sampled_from(["train", "data", "iters", "x", "eval", "lr"]),
                              min_size=1, max_size=3).map(tuple)),
       value=YAML_VALUES)
def test_fuzzed_overrides_are_typed_or_refused(key, value):
    """--set KEY=VALUE with random keys and values: the override is taken with the schema's
    type, or refused with a ConfigError naming the key; never any other exception."""
    dotted = ".".join(key)
    item = f"{dotted}={yaml.safe_dump(value, default_flow_style=True).strip()}"
    if item.endswith("\n..."):
        item = item[:-4]
    schema = dict(KEYS)
    try:
        cfg = load_config("quickstart", [item])
    except ConfigError as exc:
        assert dotted.split(".")[0] in str(exc) or "--set" in str(exc), str(exc)
        REPORT.case("--set", "rejected", exc, family="config_overrides")
        return
    REPORT.case("--set", "valid", family="config_overrides")
    section = DEFAULTS
    for part in key:
        section = section.get(part) if isinstance(section, dict) else None
    if isinstance(section, dict) and key not in schema:  # a whole section: merged into
        assert isinstance(value, dict) and set(value) <= set(section), item
        return
    assert key in schema, f"an unknown key was accepted: {item}"
    node = cfg
    for part in key:
        node = node[part]
    default = schema[key]
    if node is None:
        from zoo.config import NULLABLE

        assert default is None or key in NULLABLE, f"null accepted for {item}"
    elif default is not None and not isinstance(default, dict):
        if isinstance(default, bool):
            assert isinstance(node, bool), item
        elif isinstance(default, float):
            assert isinstance(node, float), item
        elif isinstance(default, int):
            assert isinstance(node, int) and not isinstance(node, bool), item
        else:
            assert isinstance(node, type(default)), item


# --------------------------------------------------------------------------------------------
# corrupt images, masks outside the palette, images smaller than a patch
# --------------------------------------------------------------------------------------------


def _image(h=24, w=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _corrupt_files(folder) -> dict[str, str]:
    os.makedirs(folder, exist_ok=True)
    out = {}
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("TIFF", "tif")):
        buf = io.BytesIO()
        Image.fromarray(_image(64, 64)).save(buf, fmt)
        data = buf.getvalue()
        variants = {"truncated": data[: len(data) * 3 // 5], "header only": data[:40],
                    "garbage": bytes(range(256)) * 8, "empty": b""}
        if fmt == "PNG":
            bad = bytearray(data)
            bad[60:70] = b"\x00" * 10  # inside the first chunk: CRC mismatch
            variants["bad CRC"] = bytes(bad)
        if fmt == "TIFF":
            bad = bytearray(data)
            bad[4:8] = struct.pack("<I", len(data) + 1000)  # first IFD past the end
            variants["IFD past the end"] = bytes(bad)
        for label, blob in variants.items():
            path = os.path.join(folder, f"{label.replace(' ', '_')}.{ext}")
            with open(path, "wb") as f:
                f.write(blob)
            out[f"{fmt} {label}"] = path
    return out


def test_corrupt_images_are_reported_by_path(tmp_path):
    for label, path in _corrupt_files(tmp_path / "bad").items():
        for reader in (read_image, read_mask_array):
            with pytest.raises(DataFileError) as info:
                reader(path)
            assert path in str(info.value)
        refused("corrupt image", label, info.value, path)


def _folder_dataset(root, n=3, size=(24, 32), classes=7, bad: dict | None = None) -> str:
    """root/{train,val}/{images,masks} with n pairs each; ``bad`` replaces files."""
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, split, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, split, "masks"), exist_ok=True)
        for i in range(n):
            Image.fromarray(_image(*size, seed=i)).save(
                os.path.join(root, split, "images", f"t{i}.png"))
            mask = (np.arange(size[0] * size[1]).reshape(size) % classes).astype(np.uint8)
            Image.fromarray(mask).save(os.path.join(root, split, "masks", f"t{i}.png"))
    for rel, blob in (bad or {}).items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(blob)
    return str(root)


def _folder_args(root, out, iters=2, extra=()):
    return ["--out", str(out), *_set(SMALL_MODEL + [
        "data.dataset=folder", f"data.root={root}", f"train.iters={iters}",
        "train.batch_size=2", "train.val_every=0", "train.ckpt_every=1", "train.log_every=1",
        "train.predictions=0", "train.device=cpu", "train.optimizer=sgd",
        "data.crop_size=[32, 32]", *extra])]


def test_training_stops_cleanly_on_a_corrupt_file_and_keeps_its_checkpoints(tmp_path, capsys):
    """Two iterations on good files, then a file goes bad and the run is resumed: exit 2 with
    the file named, the resume hint, and every file of the run unchanged."""
    from zoo.cli.train import main as train_main

    root = _folder_dataset(tmp_path / "data")
    out = tmp_path / "run"
    assert train_main(_folder_args(root, out, iters=2)) == 0
    capsys.readouterr()
    before = _digest(str(out))
    jpeg = io.BytesIO()
    Image.fromarray(_image()).save(jpeg, "PNG")
    for i in range(3):  # every training image truncated: the first sample read fails
        with open(os.path.join(root, "train", "images", f"t{i}.png"), "wb") as f:
            f.write(jpeg.getvalue()[:50])
    assert train_main(_folder_args(root, out, iters=4) + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot decode" in err and any(f"t{i}.png" in err for i in range(3)), err
    assert "--resume" in err and "Traceback" not in err, err
    after = _digest(str(out))
    assert {k: v for k, v in after.items() if k != "config.yaml"} == \
        {k: v for k, v in before.items() if k != "config.yaml"}, "files of the run changed"
    REPORT.add("files_refused", {"class": "corrupt image", "file": "truncated PNG in training",
                                 "error": "exit 2", "message": err.strip()[:200]})


def test_masks_outside_the_palette_or_classes_are_refused(tmp_path, capsys):
    from zoo.data.deepglobe import rgb_to_index
    from zoo.data.folder import ImageFolderSegmentation
    from zoo.data.inria import binary_mask
    from zoo.data.urur import URUR
    from zoo.cli.train import main as train_main

    # an index mask with class 9 of 7
    root = str(tmp_path / "data")
    _folder_dataset(root)
    bad = np.full((24, 32), 9, np.uint8)
    Image.fromarray(bad).save(os.path.join(root, "train", "masks", "t1.png"))
    ds = ImageFolderSegmentation(os.path.join(root, "train", "images"),
                                 os.path.join(root, "train", "masks"), num_classes=7)
    with pytest.raises(DataFileError, match=r"values \[9\]") as info:
        ds[1]
    refused("mask outside the classes", "index 9 of 7 classes", info.value, "t1.png")
    assert train_main(_folder_args(root, tmp_path / "run", iters=3)) == 2
    err = capsys.readouterr().err
    assert "t1.png" in err and "outside the classes" in err and "Traceback" not in err, err
    # a colour mask with a colour outside the given palette
    croot = tmp_path / "colour"
    os.makedirs(croot / "images")
    os.makedirs(croot / "masks")
    Image.fromarray(_image(8, 8)).save(croot / "images" / "a.png")
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    m = np.zeros((8, 8, 3), np.uint8)
    m[2:4, 2:4] = (12, 34, 56)
    Image.fromarray(m).save(croot / "masks" / "a.png")
    ds = ImageFolderSegmentation(str(croot / "images"), str(croot / "masks"), 3, palette=palette)
    with pytest.raises(DataFileError, match=r"\(12, 34, 56\)") as info:
        ds[0]
    refused("mask outside the palette", "folder colour mask", info.value, "a.png")
    # URUR colour labels are mapped by its palette exactly
    uroot = tmp_path / "urur"
    os.makedirs(uroot / "train" / "image")
    os.makedirs(uroot / "train" / "label")
    Image.fromarray(_image(8, 8)).save(uroot / "train" / "image" / "u.png")
    Image.fromarray(m).save(uroot / "train" / "label" / "u.png")
    with pytest.raises(DataFileError, match="outside the palette") as info:
        URUR(str(uroot), "train")[0]
    refused("mask outside the palette", "URUR colour label", info.value, "u.png")
    # Inria: a grey level that is neither 0/255 nor 0/1
    with pytest.raises(DataFileError, match=r"values \[128\]") as info:
        binary_mask(np.array([[0, 128], [255, 0]], np.uint8), "gt/x.tif")
    refused("mask outside the classes", "Inria grey 128", info.value, "x.tif")
    # DeepGlobe's documented rule instead: binarise at 128; pure red -> 0 "unknown"
    got = rgb_to_index(np.array([[[255, 0, 0], [250, 250, 5], [3, 240, 251]]], np.uint8))
    assert got.tolist() == [[0, 2, 1]]


def _checkpoint_and_config(tmp_path, overrides=()) -> tuple[str, str]:
    from zoo.config import dump_config
    from zoo.engine.families import make_task

    cfg = load_config("quickstart", ["train.device=cpu"] + SMALL_MODEL + list(overrides))
    cfg_path = str(tmp_path / "config.yaml")
    dump_config(cfg, cfg_path)
    torch.manual_seed(0)
    ckpt = str(tmp_path / "model.safetensors")
    save_checkpoint(ckpt, make_task(cfg).build_model(), {"iteration": 0})
    return cfg_path, ckpt


def test_folder_inference_reports_corrupt_images_and_does_the_rest(tmp_path, capsys):
    from zoo.cli.infer import main as infer_main

    cfg_path, ckpt = _checkpoint_and_config(tmp_path)
    good = []
    for i in range(2):
        p = tmp_path / f"good{i}.png"
        Image.fromarray(_image(20, 28, seed=i)).save(p)
        good.append(str(p))
    bad = list(_corrupt_files(tmp_path / "bad").values())[:4]
    out = tmp_path / "pred"
    code = infer_main(["--config", cfg_path, "--checkpoint", ckpt, *good, *bad, "--out",
                       str(out)])
    captured = capsys.readouterr()
    # non-zero, and the number of images that failed (issue 29)
    assert code == len(bad), "the exit status must count the corrupt inputs"
    for p in bad:
        assert p in captured.err, f"{p} not reported"
    for p in good:
        stem = os.path.splitext(os.path.basename(p))[0]
        for kind in ("mask", "color", "overlay"):
            assert (out / f"{stem}_{kind}.png").is_file()
    assert "Traceback" not in captured.err
    REPORT.add("handled", {"class": "corrupt image in a zoo.infer folder run",
                           "handling": "reported by path, the others segmented, exit 1",
                           "reported": len(bad), "segmented": len(good)})


def test_images_smaller_than_a_patch_are_padded(tmp_path, capsys):
    """WSDNet windows of 64 on 1x1 ... 3x300 images (tiled path forced) and FCtL 32-pixel
    patches on a 10x7 image: every output has the input's size (the documented zero padding),
    nothing is refused."""
    from zoo.config import load_config as lc
    from zoo.cli.infer import main as infer_main
    from zoo.engine.families import make_task

    cfg_path, ckpt = _checkpoint_and_config(tmp_path, ["eval.window=[64, 64]",
                                                       "eval.window_overlap=16",
                                                       "eval.max_whole_pixels=16"])
    sizes = [(1, 1), (5, 7), (3, 300), (65, 2)]
    paths = []
    for h, w in sizes:
        p = tmp_path / f"tiny{h}x{w}.png"
        Image.fromarray(_image(h, w)).save(p)
        paths.append(str(p))
    out = tmp_path / "pred"
    assert infer_main(["--config", cfg_path, "--checkpoint", ckpt, *paths, "--out",
                       str(out)]) == 0
    for (h, w), p in zip(sizes, paths):
        stem = os.path.splitext(os.path.basename(p))[0]
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and mask.max() < 7
    fcfg = lc("fctl_inria_fcn", ["fctl.patch_size=32", "fctl.min_overlap=8", "train.device=cpu"])
    task = make_task(fcfg)
    torch.manual_seed(0)
    with torch.no_grad():
        logits = task.predict(task.build_model().eval(), torch.rand(1, 3, 10, 7))
    assert tuple(logits.shape) == (1, 2, 10, 7) and bool(torch.isfinite(logits).all())
    REPORT.add("handled", {"class": "image smaller than one patch/window",
                           "handling": "padded (documented), output at the input size",
                           "cases": [f"WSDNet window 64: {h}x{w}" for h, w in sizes] +
                                    ["FCtL patch 32: 10x7"]})
    # training crops larger than the images (32x32 crops of 24x32 images, zero / ignore
    # padded): test_training_stops_cleanly_on_a_corrupt_file... trains on exactly that first
