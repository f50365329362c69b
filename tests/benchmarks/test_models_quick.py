"""benchmarks.models end to end on tiny inputs on the CPU (--quick), and its variant parser."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import models
from zoo.engine.inference import fold_batch_norms


def test_parse_variant():
    v = models.parse_variant("bf16+cl", "cpu")
    assert (v.precision, v.channels_last, v.autocast_dtype) == ("bf16", True, torch.bfloat16)
    assert models.parse_variant("fp32+cl+compile", "cpu").compile_mode == "default"
    g = models.parse_variant("bf16+cl+bench+cudagraph", "cuda")
    assert g.cuda_graph and g.cudnn_benchmark
    assert models.parse_variant("fp32+device", "cuda").image_on_device
    with pytest.raises(ValueError, match="unknown token"):
        models.parse_variant("fp64", "cpu")
    with pytest.raises(ValueError, match="CUDA-only"):
        models.parse_variant("bf16+bench", "cpu")
    with pytest.raises(ValueError, match="precisions"):
        models.parse_variant("bf16+fp16", "cpu")
    with pytest.raises(ValueError, match="compile-graphs"):
        models.parse_variant("compile+cudagraph", "cuda")


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, capsys):
    path = tmp_path / "cpu.json"
    threads = torch.get_num_threads()
    try:
        assert models.main(["--quick", "--device", "cpu", "--model", "wsdnet", "--variants",
                            "fp32,bf16+cl", "--json", str(path), "--threads", "1"]) == 0
        assert models.main(["--quick", "--device", "cpu", "--model", "fctl", "--patch",
                            "--fctl-batch", "1", "--warmup", "0", "--variants", "fp32,bf16",
                            "--json", str(path), "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    doc = json.loads(path.read_text())
    wsd = doc["sections"]["models.wsdnet"]["rows"]
    assert [r["variant"] for r in wsd] == ["fp32", "bf16+cl"]
    for r in wsd:
        assert "error" not in r, r.get("error")
        assert r["size"] == models.QUICK_SIZE["wsdnet"] and r["quick"] is True
        assert r["fps"] == pytest.approx(1 / r["median_s"])
        assert r["median_cpu_s"] > 0 and len(r["cpu_times_s"]) == r["repeats"]
        assert r["peak_mb"] > 0 and r["peak_kind"].startswith("process_rss")
    assert "argmax_agree_pct" not in wsd[0]  # the reference itself
    assert 50 <= wsd[1]["argmax_agree_pct"] <= 100
    assert 0 <= wsd[1]["max_abs_logit_diff"] < 0.5
    fctl = doc["sections"]["models.fctl"]["rows"]
    assert [(r["scope"], r["variant"]) for r in fctl] == [("patch", "fp32"), ("patch", "bf16")]
    assert all("error" not in r and r["median_s"] > 0 for r in fctl)
    assert all(r["size"] == models.QUICK_FCTL_PATCH[0] for r in fctl)  # keyed by patch side
    assert "argmax_agree_pct" in fctl[1]
    assert "merged 2 row(s)" in capsys.readouterr().out


def test_bad_arguments_are_reported():
    with pytest.raises(SystemExit):
        models.main(["--device", "cpu", "--variants", "bf16+bench", "--quick", "--json",
                     "/nonexistent/x.json"])
    with pytest.raises(SystemExit):
        models.main(["--size", "1000"])


def test_fold_conv_bn_is_exact():
    """Folding every batch norm of WSDNet (random statistics) keeps its output (the folding
    the ``fold`` variants use, now the zoo's ``fold_batch_norms``)."""
    model, _ = models.build_model("wsdnet", 64)
    gen = torch.Generator().manual_seed(3)
    n_bn = 0
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n_bn += 1
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)
    x = torch.rand(1, 3, 64, 64, generator=gen)
    with torch.inference_mode():
        ref = model(x)
        assert len(fold_batch_norms(model).folded) == n_bn
        out = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model.train())
