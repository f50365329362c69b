"""zoo.export and ``zoo.infer --engine onnxruntime``: the exported networks equal the PyTorch
models (ONNX Runtime as the oracle of the file's meaning), the metadata is there, and the
ONNX engine gives the PyTorch engine's classes through the same pipeline."""

from __future__ import annotations

import builtins
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.config import load_config
from zoo.core.checkpoint import save_checkpoint
from zoo.engine.families import make_task

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# a small WSDNet (narrow heads; the backbones are the paper's), random weights
SMALL = ["model.kwargs={sr_channels: [8, 8, 16], aspp_dilations: [1, 2, 3, 4], "
         "aspp_channels: 32, fuse_channels: 32, head_channels: 16}"]
LONG_ONLY = pytest.mark.skipif(os.environ.get("UHROPS_LONG") != "1",
                               reason="long variant: set UHROPS_LONG=1")


def _random_model(cfg, seed=0):
    torch.manual_seed(seed)
    task = make_task(cfg)
    model = task.build_model()
    with torch.no_grad():  # BatchNorm statistics and gammas away from their identity values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            if hasattr(m, "gamma") and isinstance(m.gamma, torch.nn.Parameter):
                m.gamma.fill_(0.5)  # FCtL's correlation blocks: 0 would hide the attention
    return task, model.eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)


@pytest.fixture(scope="module")
def wsdnet_export(tmp_path_factory):
    from zoo.cli.export import main as export_main

    tmp = tmp_path_factory.mktemp("onnx")
    cfg_path = tmp / "cfg.yaml"
    cfg = load_config("quickstart", SMALL)
    from zoo.config import dump_config

    dump_config(cfg, str(cfg_path))
    task, model = _random_model(cfg)
    ckpt = str(tmp / "model.safetensors")
    save_checkpoint(ckpt, model, {"iteration": 0})
    out = str(tmp / "wsdnet.onnx")
    assert export_main(["--config", str(cfg_path), "--checkpoint", ckpt, "--out", out,
                        "--dynamic"]) == 0
    return {"cfg": cfg, "cfg_path": str(cfg_path), "ckpt": ckpt, "onnx": out, "task": task,
            "model": model, "tmp": tmp}


def test_wsdnet_logits_equal_at_two_sizes(wsdnet_export):
    from zoo.engine.onnx_engine import load_engine

    engine, _ = load_engine(wsdnet_export["onnx"])
    torch.manual_seed(1)
    # a multiple of 32 (the graph's own sizes, batch 2) and one the engine pads like WSDNet
    for shape in ((2, 3, 64, 96), (1, 3, 70, 45)):
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = wsdnet_export["model"](x)
        out = engine(x)
        assert out.shape == ref.shape
        assert _rel_err(out, ref) < 1e-4


def test_metadata_records_what_a_deployer_needs(wsdnet_export):
    import onnx

    proto = onnx.load(wsdnet_export["onnx"], load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    cfg = wsdnet_export["cfg"]
    assert meta["uhrops.format"] == "zoo-onnx/1" and meta["zoo.family"] == "wsdnet"
    norm = json.loads(meta["zoo.normalization"])
    assert norm["in_graph"] is True
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert norm["std"] == pytest.approx([0.229, 0.224, 0.225])
    classes = json.loads(meta["zoo.classes"])
    palette = json.loads(meta["zoo.palette"])
    assert len(classes) == len(palette) == cfg["model"]["num_classes"]
    assert all(len(c) == 3 for c in palette)
    assert json.loads(meta["zoo.config"])["model"] == json.loads(json.dumps(cfg["model"]))
    assert json.loads(meta["zoo.size"]) is None and meta["zoo.size_multiple"] == "32"
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits"]


def test_infer_onnxruntime_gives_pytorch_classes(wsdnet_export, tmp_path):
    from zoo.cli.infer import main as infer_main

    rng = np.random.default_rng(0)
    img = (rng.random((90, 110, 3)) * 255).astype(np.uint8)
    path = str(tmp_path / "scene.png")
    Image.fromarray(img).save(path)
    # window by window through uhrops.sliding_window (the whole-image call, with the pad to a
    # multiple of 32, is test_wsdnet_logits_equal_at_two_sizes' second size)
    for sets in (["--set", "eval.sliding=true", "--set", "eval.window=[64, 64]",
                  "--set", "eval.window_overlap=16"],):
        pt, ox = tmp_path / f"pt{len(sets)}", tmp_path / f"ox{len(sets)}"
        assert infer_main(["--config", wsdnet_export["cfg_path"], "--checkpoint",
                           wsdnet_export["ckpt"], path, "--out", str(pt), *sets]) == 0
        assert infer_main(["--engine", "onnxruntime", "--model", wsdnet_export["onnx"], path,
                           "--out", str(ox), *sets]) == 0
        a = np.asarray(Image.open(pt / "scene_mask.png"))
        b = np.asarray(Image.open(ox / "scene_mask.png"))
        assert a.shape == (90, 110)
        assert len(np.unique(a)) > 1  # a non-trivial map, not one class everywhere
        np.testing.assert_array_equal(a, b)


def test_infer_engine_errors(wsdnet_export, tmp_path, capsys):
    from zoo.cli.infer import main as infer_main

    assert infer_main(["--engine", "onnxruntime", "x.png", "--out", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err
    assert infer_main(["--engine", "onnxruntime", "--model", str(tmp_path / "none.onnx"),
                       "x.png", "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert infer_main(["--config", "quickstart", "x.png", "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_missing_onnxruntime_names_the_extra(wsdnet_export, tmp_path, monkeypatch, capsys):
    from zoo.cli.infer import main as infer_main

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert infer_main(["--engine", "onnxruntime", "--model", wsdnet_export["onnx"], "x.png",
                       "--out", str(tmp_path)]) == 2
    assert "pip install 'uhrops[onnx]'" in capsys.readouterr().err


def test_export_refuses_bad_requests(wsdnet_export, tmp_path, capsys):
    from zoo.cli.export import main as export_main

    out = str(tmp_path / "m.onnx")
    with pytest.raises(SystemExit):  # argparse: --dynamic and --size exclude each other
        export_main(["--config", wsdnet_export["cfg_path"], "--checkpoint",
                     wsdnet_export["ckpt"], "--out", out, "--dynamic", "--size", "64", "64"])
    assert export_main(["--config", wsdnet_export["cfg_path"], "--checkpoint",
                        str(tmp_path / "nope.safetensors"), "--out", out]) == 2
    assert not os.path.exists(out)


@pytest.mark.long
@LONG_ONLY
def test_wsdnet_fixed_size_graph_slides_windows(wsdnet_export, tmp_path):
    from zoo.engine.onnx_engine import load_engine
    from zoo.cli.export import main as export_main

    out = str(tmp_path / "fixed.onnx")
    assert export_main(["--config", wsdnet_export["cfg_path"], "--checkpoint",
                        wsdnet_export["ckpt"], "--out", out, "--size", "64", "80"]) == 0
    engine, cfg = load_engine(out)
    assert cfg["eval"]["sliding"] and cfg["eval"]["window"] == [64, 80]
    x = torch.rand(3, 3, 64, 80)
    with torch.no_grad():
        assert _rel_err(engine(x), wsdnet_export["model"](x)) < 1e-4
    with pytest.raises(ValueError, match="--dynamic"):
        engine(torch.rand(1, 3, 64, 64))


@pytest.mark.long
@LONG_ONLY
@pytest.mark.parametrize("variant", ["inria", "deepglobe"])
def test_fctl_local_model(variant, tmp_path):
    """FCtL's full local model (patch + two contexts; DeepGlobe's second is the global
    image): 170 M parameters, a 650 MB file, hence a long variant."""
    from zoo.config import dump_config
    from zoo.engine.onnx_engine import load_engine
    from zoo.cli.export import main as export_main
    from zoo.cli.infer import main as infer_main

    cfg = load_config(f"fctl_{variant}_fcn", [
        f"model.kwargs={{variant: {variant}, stage: full}}", "model.pretrained=none",
        "data.dataset=synthetic", "fctl.patch_size=64", "fctl.min_overlap=8",
        "fctl.init_stage=null", "fctl.context_checkpoints=[]"])
    cfg_path = str(tmp_path / "cfg.yaml")
    dump_config(cfg, cfg_path)
    task, model = _random_model(cfg)
    ckpt = str(tmp_path / "m.safetensors")
    save_checkpoint(ckpt, model, {"iteration": 0})
    out = str(tmp_path / "fctl.onnx")
    assert export_main(["--config", cfg_path, "--checkpoint", ckpt, "--out", out]) == 0
    engine, _ = load_engine(out)
    patches = torch.rand(3, 3, 64, 64)
    scales = model.context_scales
    ctxs = [torch.rand(1 if s == "global" else 3, 3, 64, 64) for s in scales]
    from zoo.engine.onnx_export import FCtLExportWrapper

    with torch.no_grad():
        ref = FCtLExportWrapper(model, scales)(patches, *ctxs)
    out_t = engine._run(patches, *ctxs)
    assert _rel_err(out_t, ref) < 1e-4
    rng = np.random.default_rng(0)
    path = str(tmp_path / "scene.png")
    Image.fromarray((rng.random((100, 90, 3)) * 255).astype(np.uint8)).save(path)
    assert infer_main(["--config", cfg_path, "--checkpoint", ckpt, path, "--out",
                       str(tmp_path / "pt")]) == 0
    assert infer_main(["--engine", "onnxruntime", "--model", out, path, "--out",
                       str(tmp_path / "ox")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pt" / "scene_mask.png")),
                                  np.asarray(Image.open(tmp_path / "ox" / "scene_mask.png")))
